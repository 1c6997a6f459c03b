// A program that uses the installed mp::mpi as a user would: run under
// `mpiexec -n 2`, rank 1 serves from mp::mpi::init and rank 0 maps a
// function over it, then checks that the tasks ran on the other rank.
#include <mp/mpi.hpp>

#include <unistd.h>

#include <cstdio>
#include <vector>

namespace {

int square(int x) { return x * x; }
int pid_of_runner() { return static_cast<int>(::getpid()); }

}  // namespace

int main(int argc, char** argv) {
    mp::init(argc, argv);
    mp::mpi::init(argc, argv);  // rank 1 serves here and exits with rank 0
    if (mp::mpi::world_size() != 2) {
        std::printf("run this under mpiexec -n 2 (world size %d)\n", mp::mpi::world_size());
        return 1;
    }
    mp::mpi_pool_executor ex;
    long sum = 0;
    std::vector<int> xs;
    for (int i = 0; i < 100; ++i) xs.push_back(i);
    for (int y : ex.map(square, xs, {.chunksize = 7})) sum += y;
    if (sum != 328350) {
        std::printf("map gave %ld, expected 328350\n", sum);
        return 1;
    }
    if (ex.submit(pid_of_runner).get() == static_cast<int>(::getpid())) {
        std::printf("the task ran in rank 0's process\n");
        return 1;
    }
    std::printf("mp::mpi consumer: ok\n");
    return 0;
}
