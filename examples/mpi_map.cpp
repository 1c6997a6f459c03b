// mpi_map — the same map, locally and over MPI.
//
//     ./mpi_map                                   # one machine: a process pool, then 2 spawned MPI ranks
//     mpiexec -n 3 ./mpi_map                      # rank 0 maps, ranks 1 and 2 serve
//     mpiexec --hostfile hosts -n 17 ./mpi_map    # across machines (the same build on each)
//
// mp::mpi::init comes right after mp::init: on every rank but 0 it serves
// tasks and exits with rank 0, so the rest of main runs on rank 0 only.
#include <cmath>
#include <cstdio>
#include <vector>

#include "mp/mpi.hpp"
#include "mp/process_pool_executor.hpp"

// Any function, no registration: every rank runs this same executable.
double simulate(double x) {
    double y = x;
    for (int i = 0; i < 20000; ++i) y = std::sin(y) + x;
    return y;
}

int main(int argc, char** argv) {
    mp::init(argc, argv);
    mp::mpi::init(argc, argv);

    std::vector<double> params;
    for (int i = 0; i < 64; ++i) params.push_back(i / 8.0);

    double local_sum = 0;
    {
        mp::process_pool_executor local(2);
        for (double y : local.map(simulate, params, {.chunksize = 8})) local_sum += y;
    }

    // Under mpiexec with several ranks: the other ranks (static mode).
    // Otherwise: two ranks spawned for this program (dynamic mode).
    mp::mpi_pool_executor_options options;
    if (mp::mpi::world_size() == 1) options.max_workers = 2;
    double mpi_sum = 0;
    int workers = 0;
    {
        mp::mpi_pool_executor ex(options);
        workers = ex.max_workers();
        for (double y : ex.map(simulate, params, {.chunksize = 8})) mpi_sum += y;
    }

    std::printf("local pool:        sum = %.6f\n", local_sum);
    std::printf("MPI, %d worker ranks: sum = %.6f (%s mode)\n", workers, mpi_sum,
                mp::mpi::world_size() > 1 ? "static" : "dynamic");
    std::printf("%s\n", local_sum == mpi_sum ? "same results" : "DIFFERENT results");
    return local_sum == mpi_sum ? 0 : 1;
}
