// pool_bench — mp::pool and mp::process_pool_executor against CPython's
// multiprocessing.Pool and ProcessPoolExecutor, 2 workers each:
//
//   map_default     pool.map(inc, 1,000,000 ints), default chunksize   items/s
//   map_chunk1      pool.map(inc, 100,000 ints, chunksize=1)           tasks/s
//   apply_rtt       pool.apply_async(inc, i).get(), one at a time      µs
//   idle_cpu        after apply_rtt, the pool left idle for 0.5 s: CPU
//                   used by the parent and its workers, % of one core
//                   (spinning for results must stop when nobody waits)
//   submit_rtt      executor.submit(inc, i).get(), one at a time       µs
//   exmap_chunk1000 executor.map(inc, 1,000,000 ints, chunksize=1000)  items/s
//   cpu_speedup     8 tasks of 2e7 multiply-adds: sequential time / pool time
//   big_result      pool.apply of a task returning a 256 MiB std::vector<double>,
//                   timed from when the worker's data is ready until the caller
//                   holds it (GB/s; CPython: bench/python/foundation.py's Pool
//                   figure), and memcpy into fresh pages in this process, the
//                   bound that result path is held to
//
// Prints "result <key> <value>" lines (for bench/run.py), then runs
// bench/python/pool_bench.py with the same sizes and prints both figures and
// their ratio. --quick: tiny sizes; --no-python: mp only.
#include <mp/pool.hpp>
#include <mp/process_pool_executor.hpp>

#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "bench_util.hpp"

#ifndef MP_BENCH_PYTHON_DIR
#define MP_BENCH_PYTHON_DIR "bench/python"
#endif

namespace {

int inc(int x) { return x + 1; }

double cpu_task(long n) {
    double a = 1.0, b = 1.000000001, c = 1e-9;
    for (long i = 0; i < n; ++i) a = a * b + c;
    return a;
}

std::vector<double> return_big(std::size_t doubles) {
    std::vector<double> data(doubles, 1.0);
    data[0] = bench::now_seconds();  // the clock starts when the data is ready
    return data;
}

// memcpy of `bytes` into pages never touched before (page faults included).
double memcpy_fresh_gbps(std::size_t bytes, int reps) {
    std::vector<std::byte> src(bytes, std::byte{1});
    std::vector<double> gbps;
    for (int rep = 0; rep < reps; ++rep) {
        void* fresh = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (fresh == MAP_FAILED) std::abort();
        double t = bench::seconds_of([&] { std::memcpy(fresh, src.data(), bytes); });
        asm volatile("" : : "r"(fresh) : "memory");
        ::munmap(fresh, bytes);
        gbps.push_back(static_cast<double>(bytes) / t / bench::gigabyte);
    }
    return bench::median(gbps);
}

// CPU time (user + system) a process has used so far, in seconds (/proc).
double cpu_seconds_of(int pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto close = text.rfind(')');  // the name may hold spaces
    if (close == std::string::npos) return 0;
    std::istringstream fields(text.substr(close + 2));
    std::string field;
    double ticks = 0;
    for (int i = 3; i <= 15 && fields >> field; ++i)
        if (i == 14 || i == 15) ticks += std::stod(field);
    return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// Percent of one core the parent and `workers` use while the program sleeps.
double idle_cpu_percent(const std::vector<int>& workers, std::chrono::milliseconds span) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // the last spins end
    auto total = [&] {
        double t = cpu_seconds_of(::getpid());
        for (int pid : workers) t += cpu_seconds_of(pid);
        return t;
    };
    double before = total();
    double wall = bench::seconds_of([&] { std::this_thread::sleep_for(span); });
    return (total() - before) / wall * 100;
}

struct sizes {
    int map_items = 1'000'000;
    int chunk1_items = 100'000;
    int rtt_calls = 20'000;
    int exmap_items = 1'000'000;
    long cpu_n = 20'000'000;
    int cpu_tasks = 8;
    std::size_t big_bytes = std::size_t{256} << 20;
};

std::map<std::string, double> run_mp(const bench::options& o, const sizes& s) {
    std::map<std::string, double> r;
    const int workers = 2;
    std::vector<int> items(static_cast<std::size_t>(s.map_items));
    std::iota(items.begin(), items.end(), 0);
    {
        mp::pool pool(workers);
        (void)pool.map(inc, std::vector<int>(1000, 1));  // warm up
        if (o.wants("map_default")) {
            std::vector<double> rates;
            for (int i = 0; i < o.reps; ++i) {
                double t = bench::seconds_of([&] {
                    if (pool.map(inc, items).back() != s.map_items) std::abort();
                });
                rates.push_back(s.map_items / t);
            }
            r["map_default_items_per_s"] = bench::best_high(rates);
        }
        if (o.wants("map_chunk1")) {
            std::vector<int> few(items.begin(), items.begin() + s.chunk1_items);
            std::vector<double> rates;
            for (int i = 0; i < o.reps; ++i) {
                double t = bench::seconds_of([&] {
                    if (pool.map(inc, few, 1).back() != s.chunk1_items) std::abort();
                });
                rates.push_back(s.chunk1_items / t);
            }
            r["map_chunk1_tasks_per_s"] = bench::best_high(rates);
        }
        if (o.wants("apply_rtt")) {
            std::vector<double> us;
            for (int i = 0; i < o.reps; ++i) {
                double t = bench::seconds_of([&] {
                    for (int k = 0; k < s.rtt_calls; ++k)
                        if (pool.apply_async(inc, k).get() != k + 1) std::abort();
                });
                us.push_back(t / s.rtt_calls * 1e6);
            }
            r["apply_rtt_us"] = bench::best_low(us);
            r["idle_cpu_percent"] = idle_cpu_percent(pool.worker_pids(), std::chrono::milliseconds(500));
        }
        if (o.wants("cpu_speedup")) {
            std::vector<long> ns(static_cast<std::size_t>(s.cpu_tasks), s.cpu_n);
            double seq = bench::seconds_of([&] {
                double sum = 0;
                for (long n : ns) sum += cpu_task(n);
                if (sum == 0) std::abort();
            });
            std::vector<double> par;
            for (int i = 0; i < std::max(1, o.reps / 2); ++i)
                par.push_back(bench::seconds_of([&] { (void)pool.map(cpu_task, ns, 1); }));
            r["cpu_speedup"] = seq / bench::best_low(par);
        }
        if (o.wants("big_result")) {
            const std::size_t doubles = s.big_bytes / sizeof(double);
            std::vector<double> gbps;
            for (int i = 0; i < o.reps; ++i) {
                std::vector<double> data = pool.apply(return_big, doubles);
                double elapsed = bench::now_seconds() - data.at(0);
                if (data.size() != doubles || data.back() != 1.0) std::abort();
                gbps.push_back(static_cast<double>(s.big_bytes) / elapsed / bench::gigabyte);
            }
            r["big_result_gbps"] = bench::median(gbps);
        }
    }
    if (o.wants("big_result")) r["memcpy_fresh_gbps"] = memcpy_fresh_gbps(s.big_bytes, o.reps);
    {
        mp::process_pool_executor ex(workers);
        (void)ex.submit(inc, 1).get();
        if (o.wants("submit_rtt")) {
            std::vector<double> us;
            for (int i = 0; i < o.reps; ++i) {
                double t = bench::seconds_of([&] {
                    for (int k = 0; k < s.rtt_calls; ++k)
                        if (ex.submit(inc, k).get() != k + 1) std::abort();
                });
                us.push_back(t / s.rtt_calls * 1e6);
            }
            r["submit_rtt_us"] = bench::best_low(us);
        }
        if (o.wants("exmap_chunk1000")) {
            std::vector<int> xs(items.begin(), items.begin() + s.exmap_items);
            std::vector<double> rates;
            for (int i = 0; i < o.reps; ++i) {
                double t = bench::seconds_of([&] {
                    long last = 0;
                    for (int x : ex.map(inc, xs, {.chunksize = 1000})) last = x;
                    if (last != s.exmap_items) std::abort();
                });
                rates.push_back(s.exmap_items / t);
            }
            r["exmap_chunk1000_items_per_s"] = bench::best_high(rates);
        }
    }
    return r;
}

std::map<std::string, double> run_python(const bench::options& o) {
    std::map<std::string, double> r;
    std::string cmd = "python3 " MP_BENCH_PYTHON_DIR "/pool_bench.py --reps " + std::to_string(o.reps);
    if (o.quick) cmd += " --quick";
    for (auto& w : o.only) cmd += " --only " + w;
    bench::collect_results(cmd, r);
    if (o.wants("big_result")) {
        // CPython's Pool returning the same 256 MiB list of floats.
        std::string big = "python3 " MP_BENCH_PYTHON_DIR "/foundation.py --only big --reps " + std::to_string(o.reps);
        if (o.quick) big += " --quick";
        bench::collect_results(big, r);
    }
    return r;
}

}  // namespace

int main(int argc, char** argv) {
    mp::init(argc, argv);
    auto o = bench::options::parse(argc, argv);
    bool python = true;
    for (int i = 1; i < argc; ++i)
        if (std::strcmp(argv[i], "--no-python") == 0) python = false;
    sizes s;
    if (o.quick) s = {20'000, 2'000, 200, 20'000, 200'000, 4, std::size_t{8} << 20};
    auto mine = run_mp(o, s);
    for (auto& [k, v] : mine) bench::result(k.c_str(), v);
    if (!python) return 0;
    auto py = run_python(o);
    std::printf("\n%-30s %14s %14s %10s\n", "workload (2 workers)", "mp", "CPython", "mp/CPython");
    for (auto& [k, v] : mine) {
        auto it = py.find(k);
        if (it == py.end() || it->second == 0) {
            std::printf("%-30s %14.4g %14s %10s\n", k.c_str(), v, "-", "-");
            continue;
        }
        // For times, lower is better: the ratio says how many times faster mp is.
        bool lower_better = k.ends_with("_us");
        double ratio = lower_better ? it->second / v : v / it->second;
        std::printf("%-30s %14.4g %14.4g %9.1fx\n", k.c_str(), v, it->second, ratio);
    }
    if (mine.count("big_result_gbps") && mine.count("memcpy_fresh_gbps"))
        std::printf("%-30s %14.4g %14.4g %9.2fx\n", "big_result vs memcpy (fresh)", mine["big_result_gbps"],
                    mine["memcpy_fresh_gbps"], mine["big_result_gbps"] / mine["memcpy_fresh_gbps"]);
    return 0;
}
