// A program whose rank 0 is killed (SIGKILL) while its worker ranks run
// tasks leaves nothing behind: no worker rank, no local worker process, no
// helper process, no shared memory of mp's. In dynamic mode (ranks spawned
// with MPI_Comm_spawn) and in static mode (under mpiexec, which then aborts
// the job). The parent test runs no MPI itself: it starts the victim (this
// binary, filtered to mpi_victim.*) with a marker in its environment, which
// every process of the victim's family inherits, then finds that family in
// /proc. A binary of its own, so that the victim is this small program.
#include "mp/mp.hpp"
#include "mp/mpi.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "support/leak_check.hpp"

using namespace std::chrono_literals;

namespace {

constexpr const char* marker_variable = "MP_MPI_TEST_VICTIM";

int nap_long(int) {
    std::this_thread::sleep_for(300s);
    return 0;
}
int quick(int x) { return x + 1; }

// Live processes whose environment holds `marker`.
std::set<int> family_of(const std::string& marker) {
    const std::string wanted = std::string(marker_variable) + "=" + marker;
    std::set<int> out;
    DIR* proc = ::opendir("/proc");
    if (!proc) return out;
    while (auto* e = ::readdir(proc)) {
        const int pid = std::atoi(e->d_name);
        if (pid <= 0) continue;
        std::ifstream env("/proc/" + std::string(e->d_name) + "/environ", std::ios::binary);
        std::string all((std::istreambuf_iterator<char>(env)), std::istreambuf_iterator<char>());
        for (std::size_t at = 0; at < all.size();) {
            const std::size_t end = all.find('\0', at);
            if (all.compare(at, (end == std::string::npos ? all.size() : end) - at, wanted) == 0) {
                // A zombie has no environment left: what is read here lives.
                out.insert(pid);
                break;
            }
            if (end == std::string::npos) break;
            at = end + 1;
        }
    }
    ::closedir(proc);
    return out;
}

// mp's shared memory names carry their creator's pid: /mp-<pid>-..., /mp-mpi-<pid>-...
std::vector<std::string> shm_of(const std::set<int>& pids) {
    std::vector<std::string> out;
    DIR* shm = ::opendir("/dev/shm");
    if (!shm) return out;
    while (auto* e = ::readdir(shm)) {
        const std::string name = e->d_name;
        if (name.rfind("mp-", 0) != 0) continue;
        for (int pid : pids) {
            std::string tag = "-";
            tag.append(std::to_string(pid)).push_back('-');
            if (name.find(tag) != std::string::npos) out.push_back(name);
        }
    }
    ::closedir(shm);
    return out;
}

// Starts `argv` with the marker set, its standard output into a pipe.
pid_t start_victim(const std::vector<std::string>& args, const std::string& marker, int& out_fd) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return -1;
    const pid_t pid = ::fork();
    if (pid == 0) {
        ::dup2(fds[1], STDOUT_FILENO);
        ::setenv(marker_variable, marker.c_str(), 1);
        ::setenv("MP_TEST_LEAK_CHECK", "0", 1);  // the victim dies: nothing of it is checked
        std::vector<char*> argv;
        for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
        argv.push_back(nullptr);
        ::execvp(argv[0], argv.data());
        ::_exit(127);
    }
    ::close(fds[1]);
    out_fd = fds[0];
    return pid;
}

// Reads the victim's "ready <rank 0 pid>" line; -1 if none within `limit`.
int read_ready(int fd, std::chrono::seconds limit) {
    std::string text;
    const auto until = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < until) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 200) <= 0) continue;
        char buf[256];
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n <= 0) return -1;
        text.append(buf, static_cast<std::size_t>(n));
        const auto at = text.find("ready ");
        if (at != std::string::npos && text.find('\n', at) != std::string::npos) return std::atoi(text.c_str() + at + 6);
    }
    return -1;
}

void kill_rank0_and_expect_nothing_left(const std::vector<std::string>& args) {
    const std::string marker = std::to_string(::getpid()) + "-" + std::to_string(std::rand());
    int out = -1;
    const pid_t child = start_victim(args, marker, out);
    ASSERT_GT(child, 0);
    const int rank0 = read_ready(out, 120s);
    ::close(out);
    if (rank0 <= 0) {  // nothing of a victim that failed to start may outlive the test either
        for (int pid : family_of(marker)) ::kill(pid, SIGKILL);
        ::kill(child, SIGKILL);
        int status = 0;
        ::waitpid(child, &status, 0);
        FAIL() << "the victim never said it was ready";
    }
    const auto family = family_of(marker);
    // rank 0, a worker rank, its local worker process (and their helpers)
    EXPECT_GE(family.size(), 3u);
    ASSERT_EQ(::kill(rank0, SIGKILL), 0);
    std::set<int> left = family_of(marker);
    const auto until = std::chrono::steady_clock::now() + 60s;
    int status = 0;
    bool reaped = false;
    while ((!left.empty() || !reaped) && std::chrono::steady_clock::now() < until) {
        if (!reaped) reaped = ::waitpid(child, &status, WNOHANG) == child;
        std::this_thread::sleep_for(50ms);
        left = family_of(marker);
    }
    std::string names;
    for (int pid : left) {
        std::ifstream comm("/proc/" + std::to_string(pid) + "/comm");
        std::string c;
        std::getline(comm, c);
        names += " " + std::to_string(pid) + ":" + c;
    }
    EXPECT_TRUE(left.empty()) << "still running 60 s after rank 0 was killed:" << names;
    if (!reaped) {
        ::kill(child, SIGKILL);
        ::waitpid(child, &status, 0);
    }
    EXPECT_TRUE(reaped) << "the victim's launcher did not end";
    EXPECT_EQ(shm_of(family), std::vector<std::string>{}) << "mp's shared memory left in /dev/shm";
}

std::string self_path() {
    char buf[4096];
    const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
}

}  // namespace

// Not a test of its own: the body of the victim, run by the tests below (no
// ctest entry selects it; without the marker it does nothing). Rank 0 starts
// a task on each of two worker ranks, says it is ready, and waits to be killed.
TEST(mpi_victim, runs_tasks_until_killed) {
    if (!std::getenv(marker_variable)) return;
    mp::mpi_pool_executor ex({.max_workers = 2});
    EXPECT_EQ(ex.submit(quick, 1).get(), 2);
    auto a = ex.submit(nap_long, 0);
    auto b = ex.submit(nap_long, 1);
    std::this_thread::sleep_for(500ms);  // both tasks are in their local worker processes
    std::printf("ready %d\n", static_cast<int>(::getpid()));
    std::fflush(stdout);
    std::this_thread::sleep_for(300s);
}

// Dynamic mode: the spawned ranks, their local worker processes and
// OpenMPI's daemon end with the program.
TEST(mpi_lost_boss, dynamic_program_killed_leaves_nothing_behind) {
    ASSERT_EQ(mp::mpi::world_size(), 1) << "this test runs without mpiexec, under its own ctest entry";
    kill_rank0_and_expect_nothing_left({self_path(), "--gtest_filter=mpi_victim.*"});
}

// Static mode: mpiexec aborts the job when rank 0 dies (OpenMPI's rule);
// the worker ranks' local worker processes end with their ranks.
TEST(mpi_lost_boss, static_rank0_killed_leaves_nothing_behind) {
    ASSERT_EQ(mp::mpi::world_size(), 1) << "this test runs without mpiexec, under its own ctest entry";
    const char* mpiexec = std::getenv("MP_TEST_MPIEXEC");
    ASSERT_NE(mpiexec, nullptr) << "its ctest entry names mpiexec in MP_TEST_MPIEXEC";
    kill_rank0_and_expect_nothing_left({mpiexec, "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-n",
                                        "3", self_path(), "--gtest_filter=mpi_victim.*"});
}

int main(int argc, char** argv) {
    mp::init(argc, argv);
    mp::mpi::init(argc, argv);  // in the victim under mpiexec, ranks other than 0 serve here and exit
    testing::InitGoogleTest(&argc, argv);
    mp_test::install_leak_check();
    return RUN_ALL_TESTS();
}
