// thread_pool_bench — mp::thread_pool_executor against what a C++ programmer
// would otherwise use, a plain std::future thread pool: Debian's
// libthread-pool-dev (thread_pool::ThreadPool, <thread_pool/thread_pool.hpp>),
// both on 2 threads, in the same run, repetitions interleaved:
//
//   tiny_tasks    200,000 tiny tasks submitted, then every future collected  tasks/s
//   submit_rtt    submit(f, i).get(), one at a time                          µs
//
// Prints "result <key> <value>" lines (medians; for bench/run.py), then a
// table with the ratios. --quick: tiny sizes; --reps N.
#include <mp/thread_pool_executor.hpp>

#include <thread_pool/thread_pool.hpp>

#include <cstdio>
#include <cstdlib>
#include <future>
#include <vector>

#include "bench_util.hpp"

namespace {

int inc(int x) { return x + 1; }

struct sizes {
    int tiny_tasks = 200'000;
    int rtt_calls = 20'000;
};

template <class Submit, class Get>
double tiny_tasks_rate(int n, Submit submit, Get get) {
    double t = bench::seconds_of([&] {
        auto futures = submit(n);
        long sum = 0;
        for (auto& f : futures) sum += get(f);
        if (sum != static_cast<long>(n) * (n + 1) / 2) std::abort();
    });
    return n / t;
}

template <class Call>
double rtt_us(int n, Call call) {
    double t = bench::seconds_of([&] {
        for (int k = 0; k < n; ++k)
            if (call(k) != k + 1) std::abort();
    });
    return t / n * 1e6;
}

}  // namespace

int main(int argc, char** argv) {
    auto o = bench::options::parse(argc, argv);
    sizes s;
    if (o.quick) s = {2'000, 200};
    const int threads = 2;
    mp::thread_pool_executor tx(threads);
    thread_pool::ThreadPool ref(threads);
    // Warm up: both pools start their threads.
    (void)tx.submit(inc, 0).get();
    (void)ref.Submit(inc, 0).get();

    std::vector<double> mp_rate, ref_rate, mp_rtt, ref_rtt;
    for (int rep = 0; rep < o.reps; ++rep) {
        if (o.wants("tiny_tasks")) {
            mp_rate.push_back(tiny_tasks_rate(
                s.tiny_tasks,
                [&](int n) {
                    std::vector<mp::future<int>> fs;
                    fs.reserve(static_cast<std::size_t>(n));
                    for (int i = 0; i < n; ++i) fs.push_back(tx.submit(inc, i));
                    return fs;
                },
                [](mp::future<int>& f) { return f.get(); }));
            ref_rate.push_back(tiny_tasks_rate(
                s.tiny_tasks,
                [&](int n) {
                    std::vector<std::future<int>> fs;
                    fs.reserve(static_cast<std::size_t>(n));
                    for (int i = 0; i < n; ++i) fs.push_back(ref.Submit(inc, i));
                    return fs;
                },
                [](std::future<int>& f) { return f.get(); }));
        }
        if (o.wants("submit_rtt")) {
            mp_rtt.push_back(rtt_us(s.rtt_calls, [&](int k) { return tx.submit(inc, k).get(); }));
            ref_rtt.push_back(rtt_us(s.rtt_calls, [&](int k) { return ref.Submit(inc, k).get(); }));
        }
    }

    std::printf("%-34s %14s %14s %12s %8s\n", "workload (2 threads, medians)", "mp", "thread_pool", "mp/ref", "target");
    if (!mp_rate.empty()) {
        double m = bench::median(mp_rate), r = bench::median(ref_rate);
        bench::result("tiny_tasks_per_s", m);
        bench::result("tiny_tasks_ref_per_s", r);
        std::printf("%-34s %14.4g %14.4g %11.2fx %8s\n", "tiny_tasks_per_s (more is better)", m, r, m / r, ">=1.5x");
    }
    if (!mp_rtt.empty()) {
        double m = bench::median(mp_rtt), r = bench::median(ref_rtt);
        bench::result("submit_rtt_us", m);
        bench::result("submit_rtt_ref_us", r);
        std::printf("%-34s %14.4g %14.4g %11.2fx %8s\n", "submit_rtt_us (less is better)", m, r, r / m, ">=2x");
    }
    return 0;
}
