// baselines.cpp — what the machine itself can do, measured in the same run as
// the mp and CPython workloads, so their figures have a floor to compare with:
//
//   raw_socketpair_rtt_us_{median,best}  ping-pong of an int over an AF_UNIX
//                                        socketpair between two processes
//   raw_ring_msgs_per_s                  one-way SPSC ring of 64-byte messages in
//                                        shared memory between two processes
//   memcpy_{warm,fresh}_gbps             memcpy of 256 MiB into touched memory,
//                                        and into fresh pages (page faults included)
//   bare_fork_ms                         fork() + _exit(0) + waitpid()
//   boost_mq_msgs_per_s                  Boost.Interprocess message_queue, the
//                                        queue a C++ programmer would pick instead
//                                        of mp's: one producer process puts
//                                        1,000,000 messages of 64 B, the parent
//                                        receives them (mp's queue workload)
#include <sched.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include <boost/interprocess/ipc/message_queue.hpp>

#include "bench_util.hpp"
#include "mp/context.hpp"

namespace {

[[noreturn]] void die(const char* what) {
    std::perror(what);
    std::exit(2);
}

void wait_child(pid_t pid) {
    int status = 0;
    if (::waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        die("baseline child failed");
}

void write_all(int fd, const void* p, std::size_t n) {
    auto* c = static_cast<const char*>(p);
    while (n) {
        ssize_t k = ::write(fd, c, n);
        if (k <= 0) die("write");
        c += k;
        n -= static_cast<std::size_t>(k);
    }
}

void read_all(int fd, void* p, std::size_t n) {
    auto* c = static_cast<char*>(p);
    while (n) {
        ssize_t k = ::read(fd, c, n);
        if (k <= 0) die("read");
        c += k;
        n -= static_cast<std::size_t>(k);
    }
}

void socketpair_pingpong(const bench::options& o) {
    const int round_trips = o.quick ? 1000 : 100000;
    std::vector<double> per_rep_us;
    for (int rep = 0; rep < o.reps; ++rep) {
        int sv[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) die("socketpair");
        pid_t pid = ::fork();
        if (pid < 0) die("fork");
        if (pid == 0) {
            ::close(sv[0]);
            for (int i = 0; i < round_trips; ++i) {
                int x;
                read_all(sv[1], &x, sizeof x);
                ++x;
                write_all(sv[1], &x, sizeof x);
            }
            ::_exit(0);
        }
        ::close(sv[1]);
        double s = bench::seconds_of([&] {
            for (int i = 0; i < round_trips; ++i) {
                int x = i;
                write_all(sv[0], &x, sizeof x);
                read_all(sv[0], &x, sizeof x);
                if (x != i + 1) die("socketpair echo mismatch");
            }
        });
        ::close(sv[0]);
        wait_child(pid);
        per_rep_us.push_back(s / round_trips * 1e6);
    }
    bench::result("raw_socketpair_rtt_us_median", bench::median(per_rep_us));
    bench::result("raw_socketpair_rtt_us_best", bench::best_low(per_rep_us));
}

// A single-producer single-consumer ring in a shared anonymous mapping. Each
// index sits on its own cache line so the two sides do not false-share; each
// side keeps a cached copy of the other's index and rereads it only when the
// ring looks full (or empty).
constexpr std::size_t ring_slots = 1024;  // 64 KiB: fits in L2, deep enough to absorb jitter
struct alignas(64) slot {
    char bytes[64];
};
struct ring {
    alignas(64) std::atomic<std::uint64_t> head{0};  // written by the producer only
    alignas(64) std::atomic<std::uint64_t> tail{0};  // written by the consumer only
    alignas(64) slot slots[ring_slots];
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

/// Spins, yielding now and then: on a busy 2-core machine the other side may
/// need this core to make progress.
inline void relax(unsigned& spins) {
    if (++spins % 256 == 0) ::sched_yield();
}

void shared_ring(const bench::options& o) {
    const std::uint64_t messages = o.quick ? 10000 : 5000000;
    std::vector<double> rates;
    for (int rep = 0; rep < o.reps; ++rep) {
        void* mem = ::mmap(nullptr, sizeof(ring), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (mem == MAP_FAILED) die("mmap");
        auto* r = new (mem) ring;
        pid_t pid = ::fork();
        if (pid < 0) die("fork");
        if (pid == 0) {  // producer
            slot msg;
            std::memset(msg.bytes, 'x', sizeof msg.bytes);
            std::uint64_t cached_tail = 0;
            for (std::uint64_t i = 0; i < messages; ++i) {
                unsigned spins = 0;
                while (i - cached_tail >= ring_slots) {
                    cached_tail = r->tail.load(std::memory_order_acquire);
                    if (i - cached_tail >= ring_slots) relax(spins);
                }
                std::memcpy(msg.bytes, &i, sizeof i);
                std::memcpy(r->slots[i % ring_slots].bytes, msg.bytes, sizeof msg.bytes);
                r->head.store(i + 1, std::memory_order_release);
            }
            ::_exit(0);
        }
        std::uint64_t sum = 0;
        double s = bench::seconds_of([&] {
            std::uint64_t cached_head = 0;
            slot msg;
            for (std::uint64_t i = 0; i < messages; ++i) {
                unsigned spins = 0;
                while (i >= cached_head) {
                    cached_head = r->head.load(std::memory_order_acquire);
                    if (i >= cached_head) relax(spins);
                }
                std::memcpy(msg.bytes, r->slots[i % ring_slots].bytes, sizeof msg.bytes);
                r->tail.store(i + 1, std::memory_order_release);
                std::uint64_t seq;
                std::memcpy(&seq, msg.bytes, sizeof seq);
                sum += seq;
            }
        });
        wait_child(pid);
        ::munmap(mem, sizeof(ring));
        if (sum != messages * (messages - 1) / 2) die("ring lost or reordered messages");
        rates.push_back(static_cast<double>(messages) / s);
    }
    bench::result("raw_ring_msgs_per_s", bench::median(rates));
}

// Boost.Interprocess's message_queue is bounded: its capacity is chosen deep
// enough (64,000 messages, 4 MiB plus index) that the producer rarely waits
// for room, as mp's unbounded queue never does.
constexpr unsigned boost_mq_capacity = 64000;

void boost_message_queue(const bench::options& o) {
    namespace bip = boost::interprocess;
    const int messages = o.quick ? 10000 : 1000000;
    const std::string name = "mp-bench-boost-mq-" + std::to_string(::getpid());
    std::vector<double> rates;
    for (int rep = 0; rep < o.reps; ++rep) {
        bip::message_queue::remove(name.c_str());
        double s = 0;
        {
            bip::message_queue mq(bip::create_only, name.c_str(), boost_mq_capacity, 64);
            s = bench::seconds_of([&] {
                pid_t pid = ::fork();
                if (pid < 0) die("fork");
                if (pid == 0) {  // producer: opens the queue by name, as a separate program would
                    bip::message_queue out(bip::open_only, name.c_str());
                    char msg[64];
                    std::memset(msg, 'x', sizeof msg);
                    for (int i = 0; i < messages; ++i) out.send(msg, sizeof msg, 0);
                    ::_exit(0);
                }
                char msg[64];
                for (int i = 0; i < messages; ++i) {
                    bip::message_queue::size_type got = 0;
                    unsigned priority = 0;
                    mq.receive(msg, sizeof msg, got, priority);
                    if (got != sizeof msg) die("boost message_queue: wrong message size");
                }
                wait_child(pid);
            });
        }
        bip::message_queue::remove(name.c_str());
        rates.push_back(static_cast<double>(messages) / s);
    }
    bench::progress_figures("boost_mq_msgs_per_s", rates);
    bench::result("boost_mq_msgs_per_s", bench::median(rates));
}

void memcpy_bandwidth(const bench::options& o) {
    const std::size_t bytes = o.quick ? (std::size_t(8) << 20) : (std::size_t(256) << 20);
    auto* src = static_cast<char*>(std::malloc(bytes));
    auto* warm = static_cast<char*>(std::malloc(bytes));
    if (!src || !warm) die("malloc");
    std::memset(src, 1, bytes);
    std::memset(warm, 0, bytes);
    std::vector<double> warm_gbps, fresh_gbps;
    for (int rep = 0; rep < o.reps; ++rep) {
        double s = bench::seconds_of([&] { std::memcpy(warm, src, bytes); });
        asm volatile("" : : "r"(warm) : "memory");
        warm_gbps.push_back(static_cast<double>(bytes) / s / bench::gigabyte);

        void* fresh = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (fresh == MAP_FAILED) die("mmap");
        s = bench::seconds_of([&] { std::memcpy(fresh, src, bytes); });
        asm volatile("" : : "r"(fresh) : "memory");
        ::munmap(fresh, bytes);
        fresh_gbps.push_back(static_cast<double>(bytes) / s / bench::gigabyte);
    }
    std::free(src);
    std::free(warm);
    bench::result("memcpy_warm_gbps", bench::median(warm_gbps));
    bench::progress_figures("memcpy_fresh_gbps", fresh_gbps);
    bench::result("memcpy_fresh_gbps", bench::median(fresh_gbps));
}

void bare_fork(const bench::options& o) {
    const int forks = o.quick ? 10 : 200;
    std::vector<double> per_rep_ms;
    for (int rep = 0; rep < o.reps; ++rep) {
        double s = bench::seconds_of([&] {
            for (int i = 0; i < forks; ++i) {
                pid_t pid = ::fork();
                if (pid < 0) die("fork");
                if (pid == 0) ::_exit(0);
                wait_child(pid);
            }
        });
        per_rep_ms.push_back(s / forks * 1e3);
    }
    bench::result("bare_fork_ms", bench::median(per_rep_ms));
}

}  // namespace

int main(int argc, char** argv) {
    mp::init(argc, argv);
    auto o = bench::options::parse(argc, argv);
    if (o.wants("fork")) {
        bench::progress("baseline: bare fork + _exit + waitpid");
        bare_fork(o);
    }
    if (o.wants("socketpair")) {
        bench::progress("baseline: socketpair ping-pong");
        socketpair_pingpong(o);
    }
    if (o.wants("ring")) {
        bench::progress("baseline: shared-memory SPSC ring, 64-byte messages");
        shared_ring(o);
    }
    if (o.wants("boost_mq")) {
        bench::progress("baseline: Boost.Interprocess message_queue, 64-byte messages");
        boost_message_queue(o);
    }
    if (o.wants("memcpy")) {
        bench::progress("baseline: memcpy 256 MiB, warm and fresh pages");
        memcpy_bandwidth(o);
    }
    return 0;
}
