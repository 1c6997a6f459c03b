// foundation_bench.cpp — mp's basic workloads, timed the same way as
// bench/python/foundation.py times CPython's multiprocessing:
//
//   queue_msgs_per_s        one producer process puts 1,000,000 64-byte strings
//                           on an mp::queue, the parent gets them (CPython's
//                           workload: bytes objects of 64 B)
//   queue_fixed_msgs_per_s  the same with a fixed 64-byte message
//                           (mp::queue<std::array<std::byte, 64>>), copied into
//                           the caller's memory: Boost.Interprocess
//                           message_queue's workload (bench/baselines.cpp)
//   pipe_rtt_us             100,000 ping-pongs of an int over mp::pipe()
//   start_<method>_ms       start + join of a no-op child, per start method
//   big_result_gbps         a child returns 256 MiB (std::vector<double>) through
//                           an mp::queue; timed from the child's last write to
//                           the data until the parent holds it
//   big_array_gbps          a child returns 256 MiB as mp::shared_array<double>
//                           through an mp::queue; timed from before the child
//                           creates the array from its data (copy_of: the one
//                           write a shared_array costs) until the parent holds it
//
// Each figure is the median over several repetitions. The fork method is used
// where the start method does not matter (as CPython 3.11 on Linux does).
#include <array>
#include <cstddef>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "mp/connection.hpp"
#include "mp/context.hpp"
#include "mp/process.hpp"
#include "mp/queue.hpp"
#include "mp/shared_array.hpp"

namespace {

constexpr std::size_t message_size = 64;

void produce(mp::queue<std::string> q, int count) {
    const std::string message(message_size, 'x');
    for (int i = 0; i < count; ++i) q.put(message);
}

using fixed_message = std::array<std::byte, message_size>;

void produce_fixed(mp::queue<fixed_message> q, int count) {
    fixed_message message;
    message.fill(std::byte{'x'});
    for (int i = 0; i < count; ++i) q.put(message);
}

void echo(mp::connection c, int round_trips) {
    for (int i = 0; i < round_trips; ++i) c.send(c.recv<int>() + 1);
}

void noop() {}

void return_big(mp::queue<std::vector<double>> q, std::size_t doubles) {
    std::vector<double> data(doubles, 1.0);
    data[0] = bench::now_seconds();  // the clock starts when the data is ready
    q.put(data);
}

void return_big_array(mp::queue<mp::shared_array<double>> q, std::size_t doubles) {
    const std::vector<double> source(doubles, 1.0);  // the data the child computed
    double start = bench::now_seconds();             // the clock starts before the one copy
    auto a = mp::shared_array<double>::copy_of(source);
    a[0] = start;
    q.put(a);
}

mp::process_options with(mp::start_method m) { return {.context = mp::get_context(m)}; }

void queue_throughput(const bench::options& o) {
    const int count = o.quick ? 10000 : 1000000;
    std::vector<double> rates;
    for (int rep = 0; rep < o.reps; ++rep) {
        mp::queue<std::string> q;
        mp::process producer(with(mp::start_method::fork), produce, q, count);
        double s = bench::seconds_of([&] {
            producer.start();
            for (int i = 0; i < count; ++i) {
                std::string m = q.get();
                if (m.size() != message_size) throw std::runtime_error("queue bench: wrong message");
            }
        });
        producer.join();
        rates.push_back(count / s);
    }
    bench::result("queue_msgs_per_s", bench::median(rates));
}

void queue_fixed_throughput(const bench::options& o) {
    const int count = o.quick ? 10000 : 1000000;
    std::vector<double> rates;
    for (int rep = 0; rep < o.reps; ++rep) {
        mp::queue<fixed_message> q;
        mp::process producer(with(mp::start_method::fork), produce_fixed, q, count);
        double s = bench::seconds_of([&] {
            producer.start();
            for (int i = 0; i < count; ++i) {
                fixed_message m = q.get();
                if (m[message_size - 1] != std::byte{'x'}) throw std::runtime_error("queue bench: wrong message");
            }
        });
        producer.join();
        rates.push_back(count / s);
    }
    bench::progress_figures("queue_fixed_msgs_per_s", rates);
    bench::result("queue_fixed_msgs_per_s", bench::median(rates));
}

void pipe_round_trip(const bench::options& o) {
    const int round_trips = o.quick ? 1000 : 100000;
    std::vector<double> per_rep_us;
    for (int rep = 0; rep < o.reps; ++rep) {
        auto [a, b] = mp::pipe();
        mp::process child(with(mp::start_method::fork), echo, std::move(b), round_trips);
        child.start();
        // The child is running before the clock starts: one exchange first.
        a.send(-1);
        if (a.recv<int>() != 0) throw std::runtime_error("pipe bench: wrong echo");
        double s = bench::seconds_of([&] {
            for (int i = 1; i < round_trips; ++i) {
                a.send(i);
                if (a.recv<int>() != i + 1) throw std::runtime_error("pipe bench: wrong echo");
            }
        });
        child.join();
        per_rep_us.push_back(s / (round_trips - 1) * 1e6);
    }
    bench::result("pipe_rtt_us", bench::median(per_rep_us));
}

void process_start(const bench::options& o, mp::start_method m, int starts, const char* key) {
    {  // A forkserver is started on first use; that is not what this measures.
        mp::process warm(with(m), noop);
        warm.start();
        warm.join();
    }
    std::vector<double> per_rep_ms;
    for (int rep = 0; rep < o.reps; ++rep) {
        double s = bench::seconds_of([&] {
            for (int i = 0; i < starts; ++i) {
                mp::process p(with(m), noop);
                p.start();
                p.join();
                if (p.exitcode() != 0) throw std::runtime_error("start bench: child failed");
            }
        });
        per_rep_ms.push_back(s / starts * 1e3);
    }
    bench::result(key, bench::median(per_rep_ms));
}

void big_result(const bench::options& o) {
    const std::size_t bytes = o.quick ? (std::size_t(8) << 20) : (std::size_t(256) << 20);
    const std::size_t doubles = bytes / sizeof(double);
    std::vector<double> gbps;
    for (int rep = 0; rep < o.reps; ++rep) {
        mp::queue<std::vector<double>> q;
        mp::process child(with(mp::start_method::fork), return_big, q, doubles);
        child.start();
        std::vector<double> data = q.get();
        double elapsed = bench::now_seconds() - data.at(0);
        if (data.size() != doubles || data.back() != 1.0) throw std::runtime_error("big result bench: wrong data");
        child.join();
        gbps.push_back(static_cast<double>(bytes) / elapsed / bench::gigabyte);
    }
    bench::progress_figures("big_result_gbps", gbps);
    bench::result("big_result_gbps", bench::median(gbps));
}

void big_array(const bench::options& o) {
    const std::size_t bytes = o.quick ? (std::size_t(8) << 20) : (std::size_t(256) << 20);
    const std::size_t doubles = bytes / sizeof(double);
    std::vector<double> gbps;
    for (int rep = 0; rep < o.reps; ++rep) {
        mp::queue<mp::shared_array<double>> q;
        mp::process child(with(mp::start_method::fork), return_big_array, q, doubles);
        child.start();
        mp::shared_array<double> data = q.get();
        double elapsed = bench::now_seconds() - data[0];
        if (data.size() != doubles || data[doubles - 1] != 1.0) throw std::runtime_error("big array bench: wrong data");
        child.join();
        gbps.push_back(static_cast<double>(bytes) / elapsed / bench::gigabyte);
    }
    bench::progress_figures("big_array_gbps", gbps);
    bench::result("big_array_gbps", bench::median(gbps));
}

int run(const bench::options& o) {
    if (o.wants("start")) {
        // First, while this process is small: fork time grows with its memory.
        bench::progress("mp: process start + join, fork");
        process_start(o, mp::start_method::fork, o.quick ? 5 : 100, "start_fork_ms");
        bench::progress("mp: process start + join, forkserver");
        process_start(o, mp::start_method::forkserver, o.quick ? 5 : 50, "start_forkserver_ms");
        bench::progress("mp: process start + join, spawn");
        process_start(o, mp::start_method::spawn, o.quick ? 3 : 20, "start_spawn_ms");
    }
    if (o.wants("queue")) {
        bench::progress("mp: queue throughput, 64-byte strings");
        queue_throughput(o);
    }
    if (o.wants("queue_fixed")) {
        bench::progress("mp: queue throughput, fixed 64-byte messages");
        queue_fixed_throughput(o);
    }
    if (o.wants("pipe")) {
        bench::progress("mp: pipe round trip");
        pipe_round_trip(o);
    }
    if (o.wants("big")) {
        bench::progress("mp: 256 MiB result through a queue");
        big_result(o);
        bench::progress("mp: 256 MiB result as an mp::shared_array through a queue");
        big_array(o);
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    mp::init(argc, argv);
    try {
        return run(bench::options::parse(argc, argv));
    } catch (const std::exception& e) {
        std::fprintf(stderr, "foundation_bench: %s\n", e.what());
        return 1;
    }
}
