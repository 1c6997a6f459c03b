// manager_bench.cpp — managers and proxies, timed the same way as
// bench/python/manager_bench.py times CPython's multiprocessing.managers, and
// both printed side by side with their ratio (the Python script is run from
// here, so one command gives both):
//
//   raw_socketpair_rtt_us     median round trip of a 16-byte message over a
//                             socketpair to a forked echo process (read/write,
//                             no library): the floor a proxy call sits on
//   dict_call_us              median time of one call in 10,000 set+get pairs
//                             on an mp::manager dict<int,int> proxy
//   method_call_us            median time of 10,000 calls of a registered
//                             class's method through mp::proxy
//   clients_1_calls_per_s     10,000 calls from one client process
//   clients_16_calls_per_s    10,000 calls in total from 16 client processes
//                             at once (625 each), from the first start to the
//                             last finish
//   raw_clients_16_calls_per_s  the same shape with no library: 16 forked
//                             processes each writing 16 bytes and reading
//                             them back over a socketpair, served by a thread
//                             per connection (blocking read/write): what 16
//                             clients that sleep for their replies can reach
//                             on this machine at all, as raw_socketpair_rtt_us
//                             is for one call
//
// Options: --reps N, --quick, --no-python, --only NAME (one of the names
// above; repeatable) to run only some workloads (e.g. under perf or strace).
//
// All over the default address (a private Unix socket), the fork start method.
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.hpp"
#include "mp/manager.hpp"
#include "mp/process.hpp"
#include "mp/queue.hpp"
#include "mp/synchronize.hpp"

namespace {

struct Adder {
    long add(long a, long b) { return a + b; }
};

double us(bench::clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

double raw_socketpair(int round_trips) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) throw std::runtime_error("socketpair");
    pid_t pid = ::fork();
    if (pid == 0) {
        ::close(sv[0]);
        char buf[16];
        for (;;) {
            ssize_t n = ::read(sv[1], buf, sizeof buf);
            if (n <= 0) ::_exit(0);
            if (::write(sv[1], buf, static_cast<std::size_t>(n)) != n) ::_exit(1);
        }
    }
    ::close(sv[1]);
    char buf[16] = {};
    std::vector<double> t;
    t.reserve(static_cast<std::size_t>(round_trips));
    for (int i = 0; i < round_trips; ++i) {
        auto t0 = bench::clock::now();
        if (::write(sv[0], buf, sizeof buf) != sizeof buf || ::read(sv[0], buf, sizeof buf) != sizeof buf)
            throw std::runtime_error("raw socketpair: short read/write");
        t.push_back(us(bench::clock::now() - t0));
    }
    ::close(sv[0]);
    ::waitpid(pid, nullptr, 0);
    return bench::median(t);
}

double raw_clients(int clients, int total_calls) {
    const int calls = total_calls / clients;
    int go[2];
    if (::pipe(go) != 0) throw std::runtime_error("pipe");
    std::vector<int> server_ends;
    std::vector<pid_t> pids;
    for (int i = 0; i < clients; ++i) {
        int sv[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) throw std::runtime_error("socketpair");
        pid_t pid = ::fork();
        if (pid == 0) {
            ::close(sv[0]);
            for (int fd : server_ends) ::close(fd);  // so that each connection sees its own client's end
            char buf[16] = {};
            if (::read(go[0], buf, 1) != 1) ::_exit(1);
            for (int k = 0; k < calls; ++k)
                if (::write(sv[1], buf, sizeof buf) != sizeof buf || ::read(sv[1], buf, sizeof buf) != sizeof buf)
                    ::_exit(1);
            ::_exit(0);
        }
        ::close(sv[1]);
        server_ends.push_back(sv[0]);
        pids.push_back(pid);
    }
    std::vector<std::thread> servers;
    for (int fd : server_ends)
        servers.emplace_back([fd] {
            char buf[16];
            for (;;) {
                ssize_t n = ::read(fd, buf, sizeof buf);
                if (n <= 0 || ::write(fd, buf, static_cast<std::size_t>(n)) != n) return;
            }
        });
    double start = bench::now_seconds();
    std::vector<char> starts(static_cast<std::size_t>(clients), 'g');
    if (::write(go[1], starts.data(), starts.size()) != clients) throw std::runtime_error("raw clients: start");
    for (auto& t : servers) t.join();  // each ends when its client has made its calls and exited
    double seconds = bench::now_seconds() - start;
    for (int fd : server_ends) ::close(fd);
    for (pid_t pid : pids) ::waitpid(pid, nullptr, 0);
    ::close(go[0]);
    ::close(go[1]);
    return calls * clients / seconds;
}

double dict_pairs(mp::manager& sm, int pairs) {
    auto d = sm.dict<int, int>();
    std::vector<double> t;
    t.reserve(static_cast<std::size_t>(2 * pairs));
    for (int i = 0; i < pairs; ++i) {
        auto t0 = bench::clock::now();
        d.set(i, i);
        auto t1 = bench::clock::now();
        if (d.get(i) != i) throw std::runtime_error("dict bench: wrong value");
        auto t2 = bench::clock::now();
        t.push_back(us(t1 - t0));
        t.push_back(us(t2 - t1));
    }
    return bench::median(t);
}

double method_calls(mp::manager& sm, int calls) {
    auto a = sm.make<Adder>("Adder");
    std::vector<double> t;
    t.reserve(static_cast<std::size_t>(calls));
    for (int i = 0; i < calls; ++i) {
        auto t0 = bench::clock::now();
        if (a.call<&Adder::add>(i, 1) != i + 1) throw std::runtime_error("method bench: wrong result");
        t.push_back(us(bench::clock::now() - t0));
    }
    return bench::median(t);
}

void client(mp::proxy<Adder> a, int calls, mp::queue<std::pair<double, double>> times, mp::event go) {
    (void)a.call<&Adder::add>(0, 0);  // connected before the clock starts
    times.put({0.0, 0.0});            // ready
    go.wait();
    double start = bench::now_seconds();
    for (int i = 0; i < calls; ++i)
        if (a.call<&Adder::add>(i, 1) != i + 1) throw std::runtime_error("clients bench: wrong result");
    times.put({start, bench::now_seconds()});
}

double clients_throughput(mp::manager& sm, int clients, int total_calls) {
    auto a = sm.make<Adder>("Adder");
    mp::queue<std::pair<double, double>> times;
    mp::event go;
    std::vector<mp::process> ps;
    for (int i = 0; i < clients; ++i)
        ps.emplace_back(mp::process_options{.context = mp::get_context(mp::start_method::fork)}, client, a,
                        total_calls / clients, times, go);
    for (auto& p : ps) p.start();
    for (int i = 0; i < clients; ++i) (void)times.get();
    go.set();
    double first = 1e300, last = 0;
    for (int i = 0; i < clients; ++i) {
        auto [s, e] = times.get();
        first = std::min(first, s);
        last = std::max(last, e);
    }
    for (auto& p : ps) p.join();
    return (total_calls / clients) * clients / (last - first);
}

std::map<std::string, double> run_python(const std::string& script, const bench::options& o) {
    std::map<std::string, double> out;
    std::string cmd = "python3 '" + script + "' " + (o.quick ? std::string("--quick") : "--reps " + std::to_string(o.reps));
    bench::collect_results(cmd, out);
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    mp::init(argc, argv);
    auto o = bench::options::parse(argc, argv);
    std::string python_script = MP_BENCH_PYTHON_DIR "/manager_bench.py";
    bool with_python = true;
    for (int i = 1; i < argc; ++i)
        if (std::string(argv[i]) == "--no-python") with_python = false;
    const int n = o.quick ? 500 : 10000;
    const int clients = 16;

    mp::manager sm({.context = mp::get_context(mp::start_method::fork)});
    sm.register_type<Adder>("Adder", mp::methods<&Adder::add>);
    sm.start();

    std::vector<double> raw, dict, method, one, many, raw_many;
    for (int rep = 0; rep < o.reps; ++rep) {
        bench::progress("rep " + std::to_string(rep + 1));
        if (o.wants("raw_socketpair_rtt_us")) raw.push_back(raw_socketpair(n));
        if (o.wants("dict_call_us")) dict.push_back(dict_pairs(sm, n));
        if (o.wants("method_call_us")) method.push_back(method_calls(sm, n));
        if (o.wants("clients_1_calls_per_s")) one.push_back(clients_throughput(sm, 1, n));
        if (o.wants("clients_16_calls_per_s")) many.push_back(clients_throughput(sm, clients, n));
        if (o.wants("raw_clients_16_calls_per_s")) raw_many.push_back(raw_clients(clients, n));
    }
    std::map<std::string, double> mine;
    for (auto& [k, v] : {std::pair{"raw_socketpair_rtt_us", &raw}, {"dict_call_us", &dict},
                         {"method_call_us", &method}, {"clients_1_calls_per_s", &one},
                         {"clients_16_calls_per_s", &many}, {"raw_clients_16_calls_per_s", &raw_many}})
        if (!v->empty()) mine[k] = bench::median(*v);
    for (auto& [k, v] : mine) bench::result(("manager_" + k).c_str(), v);

    auto py = with_python ? run_python(python_script, o) : std::map<std::string, double>{};
    auto get = [](const std::map<std::string, double>& m, const char* k) {
        auto it = m.find(k);
        return it == m.end() ? 0.0 : it->second;
    };
    std::fprintf(stderr, "\nmanagers: mp vs CPython %s (median of %d runs%s)\n", with_python ? "" : "(skipped)", o.reps,
                 o.quick ? ", QUICK: sizes too small to mean anything" : "");
    std::fprintf(stderr, "  %-34s %12s %12s %10s\n", "workload", "mp", "CPython", "speed-up");
    for (const char* k : {"dict_call_us", "method_call_us"}) {
        double m = get(mine, k), p = get(py, k);
        std::fprintf(stderr, "  %-34s %10.1f us %10.1f us %9.2fx\n", k, m, p, m > 0 && p > 0 ? p / m : 0.0);
    }
    for (const char* k : {"clients_1_calls_per_s", "clients_16_calls_per_s"}) {
        double m = get(mine, k), p = get(py, k);
        std::fprintf(stderr, "  %-34s %9.0f /s %9.0f /s %9.2fx\n", k, m, p, m > 0 && p > 0 ? m / p : 0.0);
    }
    // The targets, for the workloads that ran (see --only).
    double r = get(mine, "raw_socketpair_rtt_us");
    double call = get(mine, "method_call_us");
    double one_client = get(mine, "clients_1_calls_per_s"), many_clients = get(mine, "clients_16_calls_per_s");
    if (r > 0) std::fprintf(stderr, "  raw socketpair ping-pong (same run)  %8.1f us\n", r);
    if (r > 0 && call > 0)
        std::fprintf(stderr, "  proxy call / raw ping-pong           %8.2f   (target <= 1.3)  %s\n", call / r,
                     call / r <= 1.3 ? "met" : "NOT MET");
    if (call > 0 && with_python)
        std::fprintf(stderr, "  proxy call vs CPython's              %8.1f us vs %.1f us (target: faster)  %s\n", call,
                     get(py, "method_call_us"),
                     get(py, "method_call_us") == 0 ? "n/a" : (call < get(py, "method_call_us") ? "met" : "NOT MET"));
    if (one_client > 0 && many_clients > 0)
        std::fprintf(stderr, "  16 clients / 1 client throughput     %8.2f   (target >= 1.5)  %s\n",
                     many_clients / one_client, many_clients / one_client >= 1.5 ? "met" : "NOT MET");
    if (double raw_16 = get(mine, "raw_clients_16_calls_per_s"); raw_16 > 0) {
        std::fprintf(stderr, "  raw 16 clients, no library (same run) %7.0f /s\n", raw_16);
        if (many_clients > 0)
            std::fprintf(stderr, "  16 clients / raw 16 clients          %8.2f\n", many_clients / raw_16);
        if (one_client > 0)
            std::fprintf(stderr, "  raw 16 clients / 1 client            %8.2f   (above 1.5 only if the machine allows it)\n",
                         raw_16 / one_client);
    }
    return 0;
}
