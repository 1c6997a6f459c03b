// mpi_bench — mp::mpi_pool_executor against raw MPI and mpi4py.futures, one
// worker rank, in one run:
//
//   raw_rtt_us           MPI ping-pong, 64 B, MPI_Mprobe/MPI_Mrecv       µs
//   raw_gb_s             MPI ping-pong, 256 MiB each way                 GB/s (both directions)
//   raw_by_value_gb_s    the same, plus the four copies any call that takes and returns a
//                        vector by value makes, done by hand: the argument into the task,
//                        into the callee's vector, the result out of it, and into the
//                        caller's vector (fresh memory each time, prepared as mp prepares
//                        it). The floor for big_roundtrip_gb_s: no executor copies less.
//   submit_rtt_us        ex.submit(inc, i).get(), one at a time          µs
//   map_chunk1_per_s     ex.map(inc, 5,000 ints, chunksize 1)            tasks/s
//   map_chunk1000_per_s  ex.map(inc, 1,000,000 ints, chunksize 1000)     items/s
//   big_roundtrip_gb_s   a 256 MiB vector<char> argument, returned       GB/s (both directions;
//                        after one untimed round trip)
//   idle_rank_cpu_pct    CPU of the worker rank (all its threads) over 3 s with an executor
//                        open and no task, % of one core (read from /proc by two tiny
//                        tasks, which run in the rank's local worker process)
//   local_*              the same on mp::process_pool_executor(1) on rank 0: a worker rank
//                        runs each task in such a local pool, so these bound the mp figures
//
// Run without arguments (and without mpiexec) it is the driver: it runs
// itself under `mpiexec -n 2` over shared memory and over TCP, then
// mpi4py.futures (bench/python/mpi_bench.py) under `mpiexec -n 2`, and prints
// every median with the ratios. --quick: tiny sizes. Under mpiexec with
// --child, `--only <workload>` (raw, submit, chunk1, chunk1000, big, local;
// repeatable) runs only those: for profiling one path.
//
// For diagnosis (environment, passed with mpiexec -x): MP_BENCH_EACH=1
// prints every repetition of a map to stderr (runs on 2 cores swing with
// where the scheduler places the three busy parties); MP_BENCH_PIN_WORKER=<cpu>
// pins the worker rank's local worker process to that CPU (with `taskset`
// on each rank, every placement can be measured on its own).
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <thread>
#include <sched.h>
#include <unistd.h>
#include <numeric>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "mp/detail/archive.hpp"
#include "mp/mpi.hpp"
#include "mp/process_pool_executor.hpp"

#ifndef MP_BENCH_PYTHON_DIR
#define MP_BENCH_PYTHON_DIR "bench/python"
#endif

namespace {

int inc(int x) { return x + 1; }

// The parent of a process, from /proc/<pid>/stat (0 if unreadable).
long parent_of(long pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    std::getline(in, line);
    auto close = line.rfind(')');
    if (close == std::string::npos) return 0;
    std::istringstream rest(line.substr(close + 2));
    char state = 0;
    long ppid = 0;
    rest >> state >> ppid;
    return ppid;
}

// In a worker rank's local worker process: the CPU seconds the rank has used
// so far (the process's parent is mp's forkserver, whose parent is the rank).
double rank_cpu_seconds() {
    const long rank = parent_of(parent_of(static_cast<long>(::getpid())));
    std::ifstream in("/proc/" + std::to_string(rank) + "/stat");
    std::string line;
    std::getline(in, line);
    auto close = line.rfind(')');
    if (rank <= 0 || close == std::string::npos) return -1;
    std::istringstream rest(line.substr(close + 2));
    std::string field;
    unsigned long utime = 0, stime = 0;
    for (int i = 3; i <= 13; ++i) rest >> field;  // state .. cmajflt
    rest >> utime >> stime;
    return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}
std::vector<char> echo(std::vector<char> v) { return v; }
// In the worker rank's local worker process: runs it on `cpu` only.
int pin_self(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof set, &set);
}

struct sizes {
    int rtt_calls = 2000;
    int chunk1_items = 5000;
    int chunk1000_items = 1'000'000;
    std::size_t big = 256u << 20;
};

constexpr int raw_tag = 77;

// Before mp::mpi::init: plain MPI between ranks 0 and 1, the floor.
void raw_ping_pong(const bench::options& o, const sizes& s, int rank) {
    std::vector<char> small(64), big(s.big);
    auto exchange = [&](std::vector<char>& buf, int count) {
        for (int i = 0; i < count; ++i) {
            if (rank == 0) {
                MPI_Send(buf.data(), static_cast<int>(buf.size()), MPI_BYTE, 1, raw_tag, MPI_COMM_WORLD);
                MPI_Message m;
                MPI_Mprobe(1, raw_tag, MPI_COMM_WORLD, &m, MPI_STATUS_IGNORE);
                MPI_Mrecv(buf.data(), static_cast<int>(buf.size()), MPI_BYTE, &m, MPI_STATUS_IGNORE);
            } else {
                MPI_Message m;
                MPI_Mprobe(0, raw_tag, MPI_COMM_WORLD, &m, MPI_STATUS_IGNORE);
                MPI_Mrecv(buf.data(), static_cast<int>(buf.size()), MPI_BYTE, &m, MPI_STATUS_IGNORE);
                MPI_Send(buf.data(), static_cast<int>(buf.size()), MPI_BYTE, 0, raw_tag, MPI_COMM_WORLD);
            }
        }
    };
    std::vector<char> argument(s.big, 'x'), reply(s.big);
    auto fresh_copy = [](const std::vector<char>& from) {
        auto to = std::make_unique_for_overwrite<char[]>(from.size());
        mp::detail::prepare_item_buffer(to.get(), from.size());
        std::memcpy(to.get(), from.data(), from.size());
        return to;
    };
    auto by_value_round_trip = [&] {
        if (rank == 0) {
            auto task = fresh_copy(argument);
            MPI_Send(task.get(), static_cast<int>(s.big), MPI_BYTE, 1, raw_tag, MPI_COMM_WORLD);
            MPI_Message m;
            MPI_Mprobe(1, raw_tag, MPI_COMM_WORLD, &m, MPI_STATUS_IGNORE);
            MPI_Mrecv(big.data(), static_cast<int>(big.size()), MPI_BYTE, &m, MPI_STATUS_IGNORE);
            auto result = fresh_copy(big);
            asm volatile("" : : "r"(result.get()) : "memory");
        } else {
            MPI_Message m;
            MPI_Mprobe(0, raw_tag, MPI_COMM_WORLD, &m, MPI_STATUS_IGNORE);
            MPI_Mrecv(big.data(), static_cast<int>(big.size()), MPI_BYTE, &m, MPI_STATUS_IGNORE);
            auto callee = fresh_copy(big);
            std::memcpy(reply.data(), callee.get(), s.big);
            MPI_Send(reply.data(), static_cast<int>(s.big), MPI_BYTE, 0, raw_tag, MPI_COMM_WORLD);
        }
    };
    exchange(small, 100);
    exchange(big, 1);
    by_value_round_trip();
    std::vector<double> rtts, rates, by_value_rates;
    for (int r = 0; r < o.reps; ++r) {
        rtts.push_back(bench::seconds_of([&] { exchange(small, s.rtt_calls); }) / s.rtt_calls * 1e6);
        rates.push_back(2.0 * static_cast<double>(s.big) / bench::seconds_of([&] { exchange(big, 1); }) /
                        bench::gigabyte);
        by_value_rates.push_back(2.0 * static_cast<double>(s.big) / bench::seconds_of(by_value_round_trip) /
                                 bench::gigabyte);
    }
    if (rank == 0) {
        bench::result("raw_rtt_us", bench::median(rtts));
        bench::result("raw_gb_s", bench::median(rates));
        bench::result("raw_by_value_gb_s", bench::median(by_value_rates));
    }
}

void run_mp(const bench::options& o, const sizes& s) {
    mp::mpi_pool_executor ex({.max_workers = 1});
    (void)ex.submit(inc, 1).get();
    if (const char* pin = std::getenv("MP_BENCH_PIN_WORKER")) (void)ex.submit(pin_self, std::atoi(pin)).get();
    std::vector<double> v;
    if (o.wants("submit")) {
        for (int r = 0; r < o.reps; ++r)
            v.push_back(bench::seconds_of([&] {
                            for (int i = 0; i < s.rtt_calls; ++i) (void)ex.submit(inc, i).get();
                        }) /
                        s.rtt_calls * 1e6);
        bench::result("submit_rtt_us", bench::median(v));
    }

    auto map_rate = [&](auto& executor, int n, std::size_t chunk) {
        std::vector<int> items(static_cast<std::size_t>(n));
        std::iota(items.begin(), items.end(), 0);
        std::vector<double> rates;
        for (int r = 0; r < o.reps; ++r) {
            long long sum = 0;
            double t = bench::seconds_of([&] {
                for (int y : executor.map(inc, items, {.chunksize = chunk})) sum += y;
            });
            rates.push_back(n / t);
            if (std::getenv("MP_BENCH_EACH")) std::fprintf(stderr, "rep %d chunk %zu: %.3g /s\n", r, chunk, n / t);
        }
        return bench::median(rates);
    };
    if (o.wants("chunk1")) bench::result("map_chunk1_per_s", map_rate(ex, s.chunk1_items, 1));
    if (o.wants("chunk1000")) bench::result("map_chunk1000_per_s", map_rate(ex, s.chunk1000_items, 1000));
    auto big_rate = [&](auto& executor) {
        std::vector<char> big(s.big, 'x');
        // One untimed round trip first, as raw_ping_pong's buffers are
        // touched before it is timed: the first large task and result also
        // make the receive blocks on both ranks (kept for the next ones).
        (void)executor.submit(echo, big).get();
        std::vector<double> rates;
        for (int r = 0; r < std::max(1, o.reps / 2); ++r) {
            std::size_t got = 0;
            double t = bench::seconds_of([&] { got = executor.submit(echo, big).get().size(); });
            rates.push_back(2.0 * static_cast<double>(got) / t / bench::gigabyte);
        }
        return bench::median(rates);
    };
    if (o.wants("big")) bench::result("big_roundtrip_gb_s", big_rate(ex));
    if (o.wants("idle")) {
        const double before = ex.submit(rank_cpu_seconds).get();
        const double t = bench::seconds_of([] { std::this_thread::sleep_for(std::chrono::seconds(3)); });
        const double after = ex.submit(rank_cpu_seconds).get();
        if (before >= 0 && after >= 0) bench::result("idle_rank_cpu_pct", 100.0 * (after - before) / t);
    }
    if (o.wants("local")) {
        mp::process_pool_executor local(1);
        (void)local.submit(inc, 1).get();
        v.clear();
        for (int r = 0; r < o.reps; ++r)
            v.push_back(bench::seconds_of([&] {
                            for (int i = 0; i < s.rtt_calls; ++i) (void)local.submit(inc, i).get();
                        }) /
                        s.rtt_calls * 1e6);
        bench::result("local_submit_rtt_us", bench::median(v));
        bench::result("local_chunk1_per_s", map_rate(local, s.chunk1_items, 1));
        bench::result("local_chunk1000_per_s", map_rate(local, s.chunk1000_items, 1000));
        bench::result("local_big_roundtrip_gb_s", big_rate(local));
    }
}

// ---- the driver ------------------------------------------------------------

std::map<std::string, double> run_collect(const std::string& command) {
    std::map<std::string, double> out;
    bench::progress(command);
    bench::collect_results(command, out);
    return out;
}

int drive(const char* self, bool quick) {
    const std::string mpiexec = "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpiexec "
                                "--allow-run-as-root --oversubscribe --bind-to none -n 2 ";
    const std::string q = quick ? " --quick" : "";
    auto shm = run_collect(mpiexec + "--mca btl vader,self " + self + " --child" + q);
    auto tcp = run_collect(mpiexec + "--mca btl tcp,self " + self + " --child" + q);
    auto py = run_collect(mpiexec + "--mca btl vader,self /usr/bin/python3 -m mpi4py.futures " MP_BENCH_PYTHON_DIR
                                    "/mpi_bench.py" +
                          q);
    std::printf("%-24s %14s %14s %14s %10s\n", "median", "mp shm", "mp tcp", "mpi4py shm", "mp/mpi4py");
    for (const char* key : {"raw_rtt_us", "raw_gb_s", "raw_by_value_gb_s", "submit_rtt_us", "map_chunk1_per_s", "map_chunk1000_per_s",
                            "big_roundtrip_gb_s", "idle_rank_cpu_pct", "local_submit_rtt_us", "local_chunk1_per_s",
                            "local_chunk1000_per_s", "local_big_roundtrip_gb_s"}) {
        double a = shm[key], b = tcp[key], c = py.count(key) ? py[key] : 0;
        std::string ratio = "";
        if (c > 0 && a > 0) {
            char buf[32];
            bool lower_better = std::strstr(key, "_us") != nullptr;
            std::snprintf(buf, sizeof buf, "%.1fx", lower_better ? c / a : a / c);
            ratio = buf;
        }
        std::printf("%-24s %14.4g %14.4g %14.4g %10s\n", key, a, b, c, ratio.c_str());
        bench::result((std::string("shm_") + key).c_str(), a);
        bench::result((std::string("tcp_") + key).c_str(), b);
        if (c > 0) bench::result((std::string("mpi4py_") + key).c_str(), c);
    }
    return shm.empty() || tcp.empty() ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
    mp::init(argc, argv);
    auto o = bench::options::parse(argc, argv);
    bool child = false;
    for (int i = 1; i < argc; ++i) child |= std::strcmp(argv[i], "--child") == 0;
    if (!child && !mp::mpi::launched()) return drive(argv[0], o.quick);

    sizes s;
    if (o.quick) s = {200, 500, 10'000, 1u << 20};
    // Raw MPI first, before the ranks start serving.
    int provided = 0, rank = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (o.wants("raw")) raw_ping_pong(o, s, rank);
    mp::mpi::init(argc, argv);  // rank 1 serves from here
    run_mp(o, s);
    return 0;
}
