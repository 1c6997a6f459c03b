// mp::mpi_pool_executor under mpiexec (static mode: rank 0 runs the tests,
// the other ranks serve), and once without mpiexec (dynamic mode). See
// tests/mpi/CMakeLists.txt for how each ctest entry runs this binary.
#include "mp/mpi.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <numeric>
#include <regex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "mp/process_pool_executor.hpp"
#include "mp/progress.hpp"
#include "mp/queue.hpp"
#include "mpi/boss.hpp"
#include "support/leak_check.hpp"

using namespace std::chrono_literals;

namespace {

int sqr(int x) { return x * x; }
int mul(int a, int b) { return a * b; }
void nothing() {}
std::string greet(std::string who) { return "hello " + who; }
std::vector<double> halves(std::vector<double> v) {
    for (auto& x : v) x /= 2;
    return v;
}
int throw_out_of_range(int) { throw std::out_of_range("out of range here"); }
int throw_invalid(int) { throw std::invalid_argument("bad argument here"); }
int throw_mp_value_error(int) { throw mp::value_error("mp value error here"); }
int throw_int(int) { throw 42; }
int sqr_or_throw(int x) {
    if (x == 13) throw std::runtime_error("thirteen");
    return x * x;
}
int sleep_ms(int ms) {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return ms;
}
int segfault(int) {
    ::raise(SIGSEGV);
    return 0;
}
int my_pid() { return static_cast<int>(::getpid()); }
int g_init = 0;
void init_worker() { g_init = 7; }
void init_worker_with(int v) { g_init = v; }
void init_worker_with_queue(mp::queue<int>, int v) { g_init = v; }
int read_init() { return g_init; }
// Blocks until the test creates the file (the tasks run on this host).
int wait_file(std::string path) {
    while (::access(path.c_str(), F_OK) != 0) std::this_thread::sleep_for(1ms);
    return 1;
}
std::string gate_path(const std::string& what) {
    return "/tmp/mp-mpi-test-" + std::to_string(::getpid()) + "-" + what;
}
void open_gate(const std::string& path) { std::ofstream(path) << "x"; }
// Says it started (creates `started`), then runs until stopped.
int announce_then_sleep(std::string started) {
    open_gate(started);
    std::this_thread::sleep_for(600s);
    return 0;
}
// As above, but lets SIGTERM pass: only the SIGKILL after the grace stops it.
int announce_then_sleep_ignoring_sigterm(std::string started) {
    ::signal(SIGTERM, SIG_IGN);
    return announce_then_sleep(std::move(started));
}
void wait_for_file(const std::string& path) {
    auto until = std::chrono::steady_clock::now() + 60s;  // only catches a hang
    while (::access(path.c_str(), F_OK) != 0) {
        ASSERT_LT(std::chrono::steady_clock::now(), until) << "the task never started: " << path;
        std::this_thread::sleep_for(1ms);
    }
}

// A large argument comes back changed at both ends: every byte travelled.
std::vector<char> flip_bytes(std::vector<char> v) {
    for (auto& c : v) c = static_cast<char>(~c);
    return v;
}

// A large argument whose task then crashes its process.
std::size_t segfault_with(std::vector<char> v) {
    if (!v.empty()) ::raise(SIGSEGV);
    return v.size();
}

// Several large blocks with small values between them: a message that
// travels as several segments (src/mpi/wire.cpp) comes back whole, in order.
std::tuple<std::string, std::vector<int>, int, std::vector<int>, std::string> swap_blocks(
    std::string a, std::vector<int> x, int n, std::vector<int> y, std::string b) {
    return {b, y, n + 1, x, a};
}

bool dynamic_run() { return mp::mpi::world_size() == 1; }

}  // namespace

TEST(mpi_executor, submit_values_of_every_shape) {
    mp::mpi_pool_executor ex;
    EXPECT_EQ(ex.submit(sqr, 7).get(), 49);
    EXPECT_EQ(ex.submit(mul, 6, 7).get(), 42);
    EXPECT_EQ(ex.submit(greet, std::string("mpi")).get(), "hello mpi");
    EXPECT_EQ(ex.submit(halves, std::vector<double>{2, 4, 8}).get(), (std::vector<double>{1, 2, 4}));
    auto v = ex.submit(nothing);
    v.get();
    EXPECT_TRUE(v.done());
    EXPECT_EQ(ex.submit([](int x) { return x + 1; }, 1).get(), 2);
}

TEST(mpi_executor, exceptions_keep_their_type_and_message) {
    mp::mpi_pool_executor ex;
    try {
        (void)ex.submit(throw_out_of_range, 1).get();
        FAIL() << "expected std::out_of_range";
    } catch (const std::out_of_range& e) {
        EXPECT_STREQ(e.what(), "out of range here");
    }
    EXPECT_THROW((void)ex.submit(throw_invalid, 1).get(), std::invalid_argument);
    try {
        (void)ex.submit(throw_mp_value_error, 1).get();
        FAIL() << "expected mp::value_error";
    } catch (const mp::value_error& e) {
        EXPECT_STREQ(e.what(), "mp value error here");
    }
    EXPECT_THROW((void)ex.submit(throw_int, 1).get(), mp::remote_error);
    auto f = ex.submit(throw_out_of_range, 1);
    f.wait();
    EXPECT_TRUE(f.exception() != nullptr);
    EXPECT_EQ(ex.submit(sqr, 3).get(), 9);  // the worker goes on
}

TEST(mpi_executor, map_keeps_order_for_every_chunksize) {
    mp::mpi_pool_executor ex;
    std::vector<int> xs(500);
    std::iota(xs.begin(), xs.end(), 0);
    for (std::size_t chunk : {1u, 7u, 64u, 1000u}) {
        std::vector<int> got;
        for (int y : ex.map(sqr, xs, {.chunksize = chunk})) got.push_back(y);
        ASSERT_EQ(got.size(), xs.size()) << "chunksize " << chunk;
        for (int i = 0; i < 500; ++i) EXPECT_EQ(got[i], i * i) << "chunksize " << chunk;
    }
}

TEST(mpi_executor, map_unordered_and_starmap) {
    mp::mpi_pool_executor ex;
    std::vector<int> xs(200);
    std::iota(xs.begin(), xs.end(), 0);
    std::multiset<int> got;
    for (int y : ex.map_unordered(sqr, xs, {.chunksize = 3})) got.insert(y);
    std::multiset<int> want;
    for (int x : xs) want.insert(x * x);
    EXPECT_EQ(got, want);
    std::vector<std::tuple<int, int>> pairs{{1, 2}, {3, 4}, {5, 6}};
    std::vector<int> products;
    for (int p : ex.starmap(mul, pairs)) products.push_back(p);
    EXPECT_EQ(products, (std::vector<int>{2, 12, 30}));
}

TEST(mpi_executor, map_exception_at_its_item_and_timeout) {
    mp::mpi_pool_executor ex;
    std::vector<int> xs(20);
    std::iota(xs.begin(), xs.end(), 0);
    auto it = ex.map(sqr_or_throw, xs, {.chunksize = 4});
    for (int i = 0; i < 13; ++i) EXPECT_EQ(*it.next(), i * i);
    EXPECT_THROW((void)it.next(), std::runtime_error);
    EXPECT_EQ(*it.next(), 14 * 14);  // the items around a failure keep their values

    auto slow = ex.map(sleep_ms, std::vector<int>{2000, 2000}, {.timeout = 100ms});
    EXPECT_THROW((void)slow.next(), mp::timeout_error);
}

TEST(mpi_executor, lazy_endless_input) {
    mp::mpi_pool_executor ex;
    int seen = 0;
    for (int y : ex.map(sqr, std::views::iota(0), {.chunksize = 8})) {
        EXPECT_EQ(y, seen * seen);
        if (++seen == 1000) break;
    }
    EXPECT_EQ(seen, 1000);
}

// Regression: a job's room arriving while another thread produced from it
// was lost, and a long ordered map stalled for good (2 runs in 3 before).
TEST(mpi_executor, long_ordered_map_never_stalls) {
    mp::mpi_pool_executor ex({.max_workers = 1});
    for (int i = 0; i < 2000; ++i) ASSERT_EQ(ex.submit(sqr, 3).get(), 9);
    std::vector<int> xs(1'000'000, 2);
    for (int rep = 0; rep < 2; ++rep) {
        long long sum = 0;
        for (int y : ex.map(sqr, xs, {.timeout = 120s, .chunksize = 1000})) sum += y;
        EXPECT_EQ(sum, 4'000'000);
    }
}

TEST(mpi_executor, segfault_fails_only_its_task) {
    mp::mpi_pool_executor ex;
    std::vector<mp::future<int>> fs;
    for (int i = 0; i < 20; ++i) fs.push_back(ex.submit(sqr, i));
    auto dead = ex.submit(segfault, 0);
    for (int i = 20; i < 40; ++i) fs.push_back(ex.submit(sqr, i));
    try {
        (void)dead.get();
        FAIL() << "expected mp::worker_crashed";
    } catch (const mp::worker_crashed& e) {
        EXPECT_NE(std::string(e.what()).find("SIGSEGV"), std::string::npos) << e.what();
    }
    for (int i = 0; i < 40; ++i) EXPECT_EQ(fs[i].get(), i * i);
    EXPECT_EQ(ex.submit(sqr, 3).get(), 9);
}

TEST(mpi_executor, deadline_on_the_worker_host) {
    mp::mpi_pool_executor ex;
    auto slow = ex.submit_with({.timeout = 100ms}, sleep_ms, 60000);
    auto quick = ex.submit(sqr, 5);
    EXPECT_THROW((void)slow.get(30s), mp::timeout_error);
    EXPECT_EQ(quick.get(), 25);
    EXPECT_EQ(ex.submit(sqr, 6).get(), 36);
}

// future.terminate() on a task that runs on a worker rank: the rank stops
// the local process running it (SIGTERM, then SIGKILL for one that ignores
// SIGTERM) and replaces it; the future fails with mp::cancelled_error and
// every other task goes on, on that rank and the others.
TEST(mpi_executor, terminate_stops_a_running_task) {
    mp::mpi_pool_executor ex;
    for (auto* fn : {announce_then_sleep, announce_then_sleep_ignoring_sigterm}) {
        const auto started = gate_path("started");
        std::remove(started.c_str());
        std::vector<mp::future<int>> before;
        for (int i = 0; i < 10; ++i) before.push_back(ex.submit(sqr, i));
        auto running = ex.submit(fn, started);
        std::vector<mp::future<int>> after;  // some queue behind it on its rank
        for (int i = 0; i < 10; ++i) after.push_back(ex.submit(sqr, i));
        wait_for_file(started);
        EXPECT_TRUE(running.terminate());
        try {
            (void)running.get(60s);  // the bound only catches a hang
            FAIL() << "expected mp::cancelled_error";
        } catch (const mp::cancelled_error& e) {
            EXPECT_NE(std::string(e.what()).find("terminate"), std::string::npos) << e.what();
        }
        for (int i = 0; i < 10; ++i) EXPECT_EQ(before[i].get(60s), i * i);
        for (int i = 0; i < 10; ++i) EXPECT_EQ(after[i].get(60s), i * i);
        EXPECT_FALSE(running.terminate());  // over
        std::remove(started.c_str());
    }
    // The stopped processes were replaced: every rank still serves.
    std::vector<mp::future<int>> fs;
    for (int i = 0; i < 20; ++i) fs.push_back(ex.submit(sqr, i));
    for (int i = 0; i < 20; ++i) EXPECT_EQ(fs[i].get(60s), i * i);
}

// terminate() on a task a rank has received but not started (its local
// process is busy): it never runs.
TEST(mpi_executor, terminate_a_task_waiting_on_its_rank) {
    mp::mpi_pool_executor ex({.max_workers = 1});
    auto go = gate_path("terminate-waiting");
    const auto started = gate_path("terminate-waiting-started");
    std::remove(started.c_str());
    auto blocker = ex.submit(wait_file, go);
    auto waiting = ex.submit(announce_then_sleep, started);  // sent to the rank (depth > 1), not started
    auto next = ex.submit(sqr, 4);
    EXPECT_TRUE(waiting.terminate());
    EXPECT_THROW((void)waiting.get(60s), mp::cancelled_error);
    open_gate(go);
    EXPECT_EQ(blocker.get(60s), 1);
    EXPECT_EQ(next.get(60s), 16);
    EXPECT_NE(::access(started.c_str(), F_OK), 0) << "the terminated task ran";
    std::remove(go.c_str());
}

// An executor whose engine the test can terminate (as a failing program's
// would be): its tasks leave the ranks at once, all their slots together.
struct terminable_executor : mp::mpi_pool_executor {
    using mp::mpi_pool_executor::mpi_pool_executor;
    void terminate_now() noexcept { engine_.terminate(); }
};

// Tasks queued on rank 0 that get room on a rank together leave as one
// `tasks` message (src/mpi/boss.cpp): executor a fills every slot of the
// rank (depth_per_rank, 16), b's tasks queue on rank 0 behind them, and a's
// termination frees the slots at once. Each of b's tasks then runs and
// answers, and one of them, running, is still stopped by terminate().
TEST(mpi_executor, tasks_that_get_room_together_travel_together) {
    auto& boss = mp::detail::boss_transport::get(0);
    const auto go = gate_path("batch-go");  // never opened: a's tasks wait until terminated
    const auto started = gate_path("batch-started");
    std::remove(started.c_str());
    mp::mpi_pool_executor b({.max_workers = 1});
    {
        terminable_executor a({.max_workers = 1});
        std::vector<mp::future<int>> held;
        for (int i = 0; i < 16; ++i) held.push_back(a.submit(wait_file, go));
        std::vector<mp::future<int>> fs;
        for (int i = 0; i < 12; ++i) fs.push_back(i == 6 ? b.submit(announce_then_sleep, started) : b.submit(sqr, i));
        const auto until = std::chrono::steady_clock::now() + 60s;  // only catches a hang
        while (boss.queued_tasks() < 12) {
            ASSERT_LT(std::chrono::steady_clock::now(), until) << "b's tasks never queued on rank 0";
            std::this_thread::sleep_for(1ms);
        }
        const auto batches_before = boss.task_batches_sent();
        a.terminate_now();
        EXPECT_GT(boss.task_batches_sent(), batches_before);
        for (auto& f : held) EXPECT_ANY_THROW((void)f.get(60s));
        wait_for_file(started);
        EXPECT_TRUE(fs[6].terminate());
        EXPECT_THROW((void)fs[6].get(60s), mp::cancelled_error);
        for (int i = 0; i < 12; ++i)
            if (i != 6) {
                EXPECT_EQ(fs[i].get(60s), i * i);
            }
    }
    std::remove(started.c_str());
    // The rank serves on, one task at a time again.
    EXPECT_EQ(b.submit(sqr, 9).get(60s), 81);
}

// A small task handed out for a rank that has several tasks to run waits in
// the rank's batch until the next poll; terminate() then still reaches it
// (the batch leaves before the stop), and it never runs.
TEST(mpi_executor, terminate_a_task_handed_out_behind_others) {
    mp::mpi_pool_executor ex({.max_workers = 1});
    const auto go = gate_path("behind-go");
    const auto started = gate_path("behind-started");
    std::remove(started.c_str());
    std::vector<mp::future<int>> held;
    for (int i = 0; i < 6; ++i) held.push_back(ex.submit(wait_file, go));
    auto victim = ex.submit(announce_then_sleep, started);
    EXPECT_TRUE(victim.terminate());
    EXPECT_THROW((void)victim.get(60s), mp::cancelled_error);
    open_gate(go);
    for (auto& f : held) EXPECT_EQ(f.get(60s), 1);
    EXPECT_NE(::access(started.c_str(), F_OK), 0) << "the terminated task ran";
    std::remove(go.c_str());
}

TEST(mpi_executor, initializer_and_max_tasks_per_child) {
    mp::mpi_pool_executor ex({.max_workers = 1, .initializer = init_worker, .max_tasks_per_child = 2});
    EXPECT_EQ(ex.max_workers(), 1);
    std::set<int> pids;
    for (int i = 0; i < 6; ++i) {
        EXPECT_EQ(ex.submit(read_init).get(), 7);
        pids.insert(ex.submit(my_pid).get());
    }
    EXPECT_EQ(pids.size(), 6u);  // each local process ran two tasks
    mp::mpi_pool_executor plain({.max_workers = 1});
    std::set<int> same;
    for (int i = 0; i < 6; ++i) same.insert(plain.submit(my_pid).get());
    EXPECT_EQ(same.size(), 1u);
}

// Python's initargs: a bound initializer's values reach every local worker
// process on the worker ranks; a bound queue (file descriptors) cannot.
TEST(mpi_executor, initializer_arguments) {
    mp::mpi_pool_executor ex({.max_workers = 1, .initializer = mp::bind(init_worker_with, 11),
                              .max_tasks_per_child = 1});
    for (int i = 0; i < 3; ++i) EXPECT_EQ(ex.submit(read_init).get(), 11);  // replacements too
    mp::queue<int> q;
    EXPECT_THROW(mp::mpi_pool_executor({.max_workers = 1, .initializer = mp::bind(init_worker_with_queue, q, 1)}),
                 mp::value_error);
}

TEST(mpi_executor, cancel_pending_future) {
    mp::mpi_pool_executor ex({.max_workers = 1});
    auto go = gate_path("cancel");
    auto blocker = ex.submit(wait_file, go);
    std::vector<mp::future<int>> fs;
    for (int i = 0; i < 100; ++i) fs.push_back(ex.submit(sqr, i));
    EXPECT_TRUE(fs.back().cancel());  // not yet sent to a rank
    EXPECT_TRUE(fs.back().cancelled());
    EXPECT_THROW((void)fs.back().get(), mp::cancelled_error);
    open_gate(go);
    EXPECT_EQ(blocker.get(), 1);
    for (int i = 0; i < 99; ++i) EXPECT_EQ(fs[i].get(), i * i);
    std::remove(go.c_str());
}

TEST(mpi_executor, shutdown_cancel_futures_and_submit_after_shutdown) {
    mp::mpi_pool_executor ex({.max_workers = 1});
    auto go = gate_path("shutdown");
    auto blocker = ex.submit(wait_file, go);
    std::vector<mp::future<int>> fs;
    for (int i = 0; i < 100; ++i) fs.push_back(ex.submit(sqr, i));
    std::thread releaser([&] {
        std::this_thread::sleep_for(50ms);
        open_gate(go);
    });
    ex.shutdown(true, true);
    releaser.join();
    int cancelled = 0;
    for (auto& f : fs) {
        EXPECT_TRUE(f.done());
        if (f.cancelled()) ++cancelled;
    }
    EXPECT_GT(cancelled, 0);
    EXPECT_EQ(blocker.get(), 1);
    EXPECT_THROW((void)ex.submit(sqr, 1), mp::closed_error);
    std::remove(go.c_str());
}

TEST(mpi_executor, wait_as_completed_and_progress) {
    mp::mpi_pool_executor ex;
    std::vector<mp::future<int>> fs;
    for (int i = 0; i < 10; ++i) fs.push_back(ex.submit(sqr, i));
    auto [done, not_done] = mp::wait(fs);
    EXPECT_EQ(done.size(), 10u);
    EXPECT_TRUE(not_done.empty());
    int total = 0;
    for (auto& f : mp::as_completed(fs)) total += f.get();
    EXPECT_EQ(total, 285);
    std::vector<int> xs{1, 2, 3};
    int sum = 0;
    for (int y : mp::progress(ex.map(sqr, xs), xs.size())) sum += y;
    EXPECT_EQ(sum, 14);
}

// A thread waiting in get() receives results itself for a moment (and runs
// their done-callbacks there): a callback that shuts the executor down and
// waits must not wait for its own delivery.
TEST(mpi_executor, done_callback_shutting_down_on_the_waiting_thread) {
    for (int i = 0; i < 20; ++i) {
        mp::mpi_pool_executor ex({.max_workers = 1});
        auto f = ex.submit(sqr, i);
        std::atomic<bool> ran{false};
        f.add_done_callback([&](mp::future<int>&) {
            try {
                ex.shutdown(true);
            } catch (const mp::value_error&) {  // on the service thread: refused (it would wait for itself)
            }
            ran = true;
        });
        EXPECT_EQ(f.get(), i * i);
        ex.shutdown(true);  // returns once every delivery, and so the callback, is over
        EXPECT_TRUE(ran);
    }
}

// After a run of get() calls (the waiting thread receives, the service
// thread steps aside), results that no thread waits for still arrive.
TEST(mpi_executor, results_nobody_waits_for_after_waiting_threads_received) {
    mp::mpi_pool_executor ex({.max_workers = 1});
    for (int i = 0; i < 50; ++i) EXPECT_EQ(ex.submit(sqr, i).get(), i * i);
    std::atomic<int> seen{0};
    std::vector<mp::future<int>> fs;
    for (int i = 0; i < 10; ++i) {
        fs.push_back(ex.submit(sqr, i));
        fs.back().add_done_callback([&](mp::future<int>&) { ++seen; });
    }
    const auto until = std::chrono::steady_clock::now() + 60s;  // only catches a hang
    while (seen.load() < 10 && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(1ms);
    EXPECT_EQ(seen.load(), 10);
}

TEST(mpi_executor, executors_share_the_ranks) {
    mp::mpi_pool_executor a;
    mp::mpi_pool_executor b;
    std::vector<mp::future<int>> fa, fb;
    for (int i = 0; i < 200; ++i) {
        fa.push_back(a.submit(sqr, i));
        fb.push_back(b.submit(mul, i, 2));
    }
    for (int i = 0; i < 200; ++i) {
        EXPECT_EQ(fa[i].get(), i * i);
        EXPECT_EQ(fb[i].get(), 2 * i);
    }
}

TEST(mpi_executor, large_argument_and_result_256_mib) {
    mp::mpi_pool_executor ex({.max_workers = 1});
    std::vector<char> big(256u << 20);
    for (std::size_t i = 0; i < big.size(); i += 4096) big[i] = static_cast<char>(i >> 12);
    auto back = ex.submit(flip_bytes, big).get();
    ASSERT_EQ(back.size(), big.size());
    for (std::size_t i = 0; i < big.size(); i += 4096)
        ASSERT_EQ(back[i], static_cast<char>(~big[i])) << "at " << i;
    EXPECT_EQ(back[1], static_cast<char>(~0));
}

TEST(mpi_executor, several_large_blocks_in_one_message) {
    mp::mpi_pool_executor ex;
    std::vector<int> x(1u << 20), y(3u << 18);
    std::iota(x.begin(), x.end(), 0);
    std::iota(y.begin(), y.end(), 7);
    const std::string a(300'000, 'a'), b = "small";
    std::vector<mp::future<std::tuple<std::string, std::vector<int>, int, std::vector<int>, std::string>>> fs;
    for (int i = 0; i < 6; ++i) fs.push_back(ex.submit(swap_blocks, a, x, i, y, b));  // both ranks, at once
    for (int i = 0; i < 6; ++i) {
        auto [b2, y2, n, x2, a2] = fs[i].get(120s);
        EXPECT_EQ(b2, b);
        EXPECT_EQ(a2, a);
        EXPECT_EQ(n, i + 1);
        EXPECT_EQ(x2, x);
        EXPECT_EQ(y2, y);
    }
}

// Large tasks are received into a reused shared block that the rank's local
// process maps (src/mpi/buffers.hpp): tasks of growing and shrinking sizes
// back to back, several in flight on each rank, a crash while one is mapped;
// each comes back whole and the next one is not confused with it.
TEST(mpi_executor, large_tasks_back_to_back_through_reused_blocks) {
    mp::mpi_pool_executor ex;
    for (std::size_t mib : {3u, 1u, 9u, 2u}) {
        std::vector<mp::future<std::vector<char>>> fs;
        std::vector<std::vector<char>> sent;
        for (int k = 0; k < 4; ++k) {
            std::vector<char> v((mib << 20) + static_cast<std::size_t>(k) * 4093, static_cast<char>(k + 1));
            v[v.size() / 2] = static_cast<char>(mib);
            fs.push_back(ex.submit(flip_bytes, v));
            sent.push_back(std::move(v));
        }
        auto dead = ex.submit(segfault_with, std::vector<char>(mib << 20, 'x'));
        for (int k = 0; k < 4; ++k) {
            auto back = fs[static_cast<std::size_t>(k)].get(120s);
            ASSERT_EQ(back.size(), sent[static_cast<std::size_t>(k)].size());
            for (std::size_t i = 0; i < back.size(); i += 997)
                ASSERT_EQ(back[i], static_cast<char>(~sent[static_cast<std::size_t>(k)][i])) << mib << " MiB, at " << i;
            EXPECT_EQ(back[back.size() / 2], static_cast<char>(~static_cast<char>(mib)));
        }
        EXPECT_THROW((void)dead.get(120s), mp::worker_crashed);
    }
    EXPECT_EQ(ex.submit(sqr, 4).get(), 16);
}

TEST(mpi_executor, build_ids_match) {
    mp::mpi_pool_executor ex;
    EXPECT_EQ(ex.submit(sqr, 2).get(), 4);
}

// Run with MP_MPI_TEST_FAKE_BUILD_ID=1 (the test hook: rank 1 reports a
// changed build-id for the executable); see tests/mpi/CMakeLists.txt.
TEST(mpi_executor_mismatch, build_id_mismatch_names_rank_host_and_ids) {
    ASSERT_NE(std::getenv("MP_MPI_TEST_FAKE_BUILD_ID"), nullptr) << "this test runs under its own ctest entry";
    try {
        mp::mpi_pool_executor ex;
        FAIL() << "expected mp::mpi_error";
    } catch (const mp::mpi_error& e) {
        std::string what = e.what();
        EXPECT_NE(what.find("rank 1 on host "), std::string::npos) << what;
        EXPECT_NE(what.find("rank 0's (host "), std::string::npos) << what;
        // Both ids are named, and they differ (the hook changes the first digit).
        std::smatch ids;
        ASSERT_TRUE(std::regex_search(what, ids, std::regex("build-id is ([0-9a-f]+).*rank 0's \\(host [^)]*\\) is ([0-9a-f]+)")))
            << what;
        EXPECT_NE(ids[1].str(), ids[2].str()) << what;
    }
}

// Run without mpiexec: the executor spawns its ranks (MPI_Comm_spawn, once).
TEST(mpi_dynamic, spawns_ranks_once_and_reuses_them) {
    ASSERT_TRUE(dynamic_run()) << "this test runs without mpiexec, under its own ctest entry";
    {
        mp::mpi_pool_executor ex({.max_workers = 2});
        EXPECT_EQ(ex.max_workers(), 2);
        std::vector<int> got;
        for (int y : ex.map(sqr, std::vector<int>{1, 2, 3, 4})) got.push_back(y);
        EXPECT_EQ(got, (std::vector<int>{1, 4, 9, 16}));
    }
    mp::mpi_pool_executor again;  // reuses the spawned ranks
    EXPECT_EQ(again.max_workers(), 2);
    EXPECT_EQ(again.submit(mul, 3, 4).get(), 12);
    EXPECT_THROW(mp::mpi_pool_executor({.max_workers = 5}), mp::value_error);
}

// Run with MP_MPI_TEST_SPAWN_SLOTS_ONLY=1 (the test hook: no oversubscribing,
// so 64 ranks on this machine cannot be placed and MPI_Comm_spawn fails).
TEST(mpi_dynamic_spawn_failure, throws_an_mp_error_and_the_program_goes_on) {
    ASSERT_TRUE(dynamic_run()) << "this test runs without mpiexec, under its own ctest entry";
    ASSERT_NE(std::getenv("MP_MPI_TEST_SPAWN_SLOTS_ONLY"), nullptr) << "this test runs under its own ctest entry";
    try {
        mp::mpi_pool_executor ex({.max_workers = 64});
        FAIL() << "expected mp::mpi_error";
    } catch (const mp::mpi_error& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find("MPI_Comm_spawn"), std::string::npos) << what;
        EXPECT_NE(what.find("64 worker ranks"), std::string::npos) << what;
    }
    EXPECT_THROW(mp::mpi_pool_executor({.max_workers = 64}), mp::mpi_error);  // again: the same answer
    // The program goes on: local executors work.
    mp::process_pool_executor local(1);
    EXPECT_EQ(local.submit(sqr, 9).get(), 81);
}

int main(int argc, char** argv) {
    mp::init(argc, argv);
    mp::mpi::init(argc, argv);  // ranks other than 0 serve here and exit
    testing::InitGoogleTest(&argc, argv);
    mp_test::install_leak_check();
    return RUN_ALL_TESTS();
}
