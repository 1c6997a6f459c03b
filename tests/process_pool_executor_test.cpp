// mp::process_pool_executor under every start method: the ideas of CPython's
// test_concurrent_futures (test_process_pool, test_shutdown, test_deadlock),
// with mp's promise where Python breaks: a crashed worker fails only its task.
#include "mp/process_pool_executor.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <numeric>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "mp/queue.hpp"

using namespace std::chrono_literals;

namespace {

int sqr(int x) { return x * x; }
int mul(int a, int b) { return a * b; }
void nothing() {}
int raise_value_error(int) { throw std::out_of_range("out of range here"); }
int sleep_ms(int ms) {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return ms;
}
// Blocks until the test creates the file: the test decides when it ends
// (tasks travel as bytes, so they cannot take a queue or an event).
int wait_file(std::string path) {
    while (::access(path.c_str(), F_OK) != 0) std::this_thread::sleep_for(1ms);
    return 1;
}
std::string gate_path(const std::string& what) {
    return "/tmp/mp-executor-test-" + std::to_string(::getpid()) + "-" + what;
}
void open_gate(const std::string& path) { std::ofstream(path) << "x"; }
// An item with a gate waits for it and returns -1; any other returns its value.
int wait_gate_or_return(std::pair<std::string, int> item) {
    if (item.first.empty()) return item.second;
    wait_file(item.first);
    return -1;
}
int kill_self(int) {
    ::raise(SIGKILL);
    return 0;
}
int my_pid() { return static_cast<int>(::getpid()); }
std::string my_name() { return mp::current_process().name(); }
int g_init = 0;
void init_worker() { g_init = 7; }
int read_init() { return g_init; }

struct adder {
    int add = 0;
    template <class Archive>
    void serialize(Archive& ar) {
        ar(add);
    }
    int operator()(int x) const { return x + add; }
};

class executor_test : public testing::TestWithParam<mp::start_method> {
protected:
    mp::process_pool_executor_options opts(int n = 2) {
        return {.max_workers = n, .context = mp::get_context(GetParam())};
    }
};

TEST_P(executor_test, submit) {
    mp::process_pool_executor ex(opts());
    auto f = ex.submit(mul, 6, 7);
    EXPECT_EQ(f.get(), 42);
    EXPECT_TRUE(f.done());
    EXPECT_FALSE(f.cancelled());
    auto v = ex.submit(nothing);
    v.get();
    EXPECT_EQ(ex.submit(adder{5}, 10).get(), 15);
    EXPECT_EQ(ex.submit([](int x) { return x + 1; }, 1).get(), 2);
}

TEST_P(executor_test, exception_keeps_its_type) {
    mp::process_pool_executor ex(opts());
    auto f = ex.submit(raise_value_error, 1);
    EXPECT_THROW((void)f.get(), std::out_of_range);
    auto e = f.exception();
    ASSERT_TRUE(e);
    EXPECT_THROW(std::rethrow_exception(e), std::out_of_range);
}

TEST_P(executor_test, map) {
    mp::process_pool_executor ex(opts());
    std::vector<int> xs(100);
    std::iota(xs.begin(), xs.end(), 0);
    std::vector<int> got;
    for (int x : ex.map(sqr, xs)) got.push_back(x);
    ASSERT_EQ(got.size(), 100u);
    for (int i = 0; i < 100; ++i) EXPECT_EQ(got[i], i * i);
    got.clear();
    for (int x : ex.map(sqr, xs, {.chunksize = 16})) got.push_back(x);
    EXPECT_EQ(got.size(), 100u);
    EXPECT_EQ(got[99], 99 * 99);
}

TEST_P(executor_test, map_timeout) {
    mp::process_pool_executor ex(opts());
    // The workers are up first, and the limit is generous: it must not
    // measure starting a spawn worker under a sanitizer on a loaded machine.
    EXPECT_EQ(ex.submit(sqr, 2).get(), 4);
    EXPECT_EQ(ex.submit(sqr, 3).get(), 9);
    auto it = ex.map(sleep_ms, std::vector<int>{0, 0, 4000}, {.timeout = 1500ms});
    EXPECT_EQ(it.next(), std::optional<int>(0));
    EXPECT_EQ(it.next(), std::optional<int>(0));
    EXPECT_THROW((void)it.next(), mp::timeout_error);
    ex.shutdown(false);
}

TEST_P(executor_test, map_exception) {
    mp::process_pool_executor ex(opts());
    auto it = ex.map(raise_value_error, std::vector<int>{1, 2});
    EXPECT_THROW((void)it.next(), std::out_of_range);
    EXPECT_THROW((void)it.next(), std::out_of_range);
    EXPECT_EQ(it.next(), std::nullopt);
}

TEST_P(executor_test, map_unordered) {
    mp::process_pool_executor ex(opts());
    std::vector<int> xs(200);
    std::iota(xs.begin(), xs.end(), 0);
    for (std::size_t chunksize : {1u, 7u, 64u}) {
        std::multiset<int> got;
        for (int x : ex.map_unordered(sqr, xs, {.chunksize = chunksize})) got.insert(x);
        std::multiset<int> want;
        for (int x : xs) want.insert(x * x);
        EXPECT_EQ(got, want) << "chunksize " << chunksize;
    }
    // Results come as they finish: an item blocked until the test opens its
    // gate does not hold up the items after it.
    std::string gate = gate_path("unordered");
    std::vector<std::pair<std::string, int>> items{{gate, 0}, {"", 1}, {"", 2}, {"", 3}};
    auto it = ex.map_unordered(wait_gate_or_return, items);
    std::set<int> first;
    for (int i = 0; i < 3; ++i) first.insert(it.next(30s).value());
    EXPECT_EQ(first, (std::set<int>{1, 2, 3}));
    open_gate(gate);
    EXPECT_EQ(it.next(30s), std::optional<int>(-1));
    EXPECT_EQ(it.next(30s), std::nullopt);
    std::remove(gate.c_str());
}

TEST_P(executor_test, starmap) {
    mp::process_pool_executor ex(opts());
    std::vector<std::tuple<int, int>> tuples;
    std::vector<std::pair<int, int>> pairs;
    for (int i = 0; i < 50; ++i) {
        tuples.emplace_back(i, i + 1);
        pairs.emplace_back(i, 2);
    }
    std::vector<int> got;
    for (int x : ex.starmap(mul, tuples)) got.push_back(x);
    ASSERT_EQ(got.size(), 50u);
    for (int i = 0; i < 50; ++i) EXPECT_EQ(got[i], i * (i + 1));
    got.clear();
    for (int x : ex.starmap(mul, pairs, {.chunksize = 8})) got.push_back(x);
    ASSERT_EQ(got.size(), 50u);
    for (int i = 0; i < 50; ++i) EXPECT_EQ(got[i], 2 * i);
    ex.shutdown();
    EXPECT_THROW((void)ex.starmap(mul, pairs), mp::closed_error);
    EXPECT_THROW((void)ex.map_unordered(sqr, std::vector<int>{1}), mp::closed_error);
}

TEST_P(executor_test, submit_after_shutdown) {
    mp::process_pool_executor ex(opts());
    ex.shutdown();
    EXPECT_THROW((void)ex.submit(sqr, 1), mp::closed_error);
    ex.shutdown();  // again: harmless
}

TEST_P(executor_test, shutdown_waits) {
    std::vector<mp::future<int>> fs;
    {
        mp::process_pool_executor ex(opts());
        for (int i = 0; i < 10; ++i) fs.push_back(ex.submit(sleep_ms, 10));
        ex.shutdown(true);
        for (auto& f : fs) EXPECT_TRUE(f.done());
    }
    for (auto& f : fs) EXPECT_EQ(f.get(), 10);
}

TEST_P(executor_test, shutdown_no_wait_then_destructor) {
    std::vector<mp::future<int>> fs;
    {
        mp::process_pool_executor ex(opts());
        for (int i = 0; i < 10; ++i) fs.push_back(ex.submit(sqr, i));
        ex.shutdown(false);
    }
    for (int i = 0; i < 10; ++i) EXPECT_EQ(fs[i].get(), i * i);
}

TEST_P(executor_test, cancel_pending_future) {
    mp::process_pool_executor ex(opts(1));
    auto go = gate_path("go");
    auto blocker = ex.submit(wait_file, go);
    std::vector<mp::future<int>> fs;
    for (int i = 0; i < 100; ++i) fs.push_back(ex.submit(sqr, i));
    // The first few are in the workers' queue ("running"); the last is not.
    EXPECT_TRUE(fs.back().cancel());
    EXPECT_TRUE(fs.back().cancelled());
    EXPECT_THROW((void)fs.back().get(), mp::cancelled_error);
    open_gate(go);
    EXPECT_EQ(blocker.get(), 1);
    for (int i = 0; i < 99; ++i) EXPECT_EQ(fs[i].get(), i * i);
    std::remove(go.c_str());
}

TEST_P(executor_test, shutdown_cancel_futures) {
    mp::process_pool_executor ex(opts(1));
    auto go = gate_path("go");
    auto blocker = ex.submit(wait_file, go);
    std::vector<mp::future<int>> fs;
    for (int i = 0; i < 100; ++i) fs.push_back(ex.submit(sqr, i));
    // SPEC §7a: shutdown(cancel_futures) cancels every task no worker has
    // taken, the blocker too if the worker has not taken it yet.
    while (!blocker.running()) std::this_thread::sleep_for(1ms);
    std::thread releaser([&] {
        std::this_thread::sleep_for(20ms);
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
    std::remove(go.c_str());
}

TEST_P(executor_test, crashed_worker_fails_only_its_future) {
    mp::process_pool_executor ex(opts());
    std::vector<mp::future<int>> fs;
    for (int i = 0; i < 20; ++i) fs.push_back(ex.submit(sqr, i));
    auto dead = ex.submit(kill_self, 0);
    for (int i = 20; i < 40; ++i) fs.push_back(ex.submit(sqr, i));
    try {
        (void)dead.get();
        FAIL() << "expected mp::worker_crashed";
    } catch (const mp::worker_crashed& e) {
        EXPECT_NE(std::string(e.what()).find("SIGKILL"), std::string::npos) << e.what();
    }
    for (int i = 0; i < 40; ++i) EXPECT_EQ(fs[i].get(), i * i);
    EXPECT_EQ(ex.submit(sqr, 3).get(), 9);
}

TEST_P(executor_test, deadline) {
    mp::process_pool_executor ex(opts());
    auto slow = ex.submit_with({.timeout = 50ms}, sleep_ms, 60000);
    auto quick = ex.submit(sqr, 5);
    EXPECT_THROW((void)slow.get(), mp::timeout_error);
    EXPECT_EQ(quick.get(), 25);
    EXPECT_EQ(ex.submit(sqr, 6).get(), 36);
}

TEST_P(executor_test, initializer_and_max_tasks_per_child) {
    mp::process_pool_executor ex({.max_workers = 2,
                                  .context = mp::get_context(GetParam()),
                                  .initializer = init_worker,
                                  .max_tasks_per_child = 2});
    std::set<int> pids;
    for (int i = 0; i < 12; ++i) {
        EXPECT_EQ(ex.submit(read_init).get(), 7);
        pids.insert(ex.submit(my_pid).get());
    }
    EXPECT_GE(pids.size(), 6u);
}

TEST_P(executor_test, worker_names) {
    mp::process_pool_executor ex(opts());
    std::string prefix = GetParam() == mp::start_method::fork    ? "ForkProcess-"
                         : GetParam() == mp::start_method::spawn ? "SpawnProcess-"
                                                                 : "ForkServerProcess-";
    auto name = ex.submit(my_name).get();
    EXPECT_EQ(name.rfind(prefix, 0), 0u) << name;
}

TEST_P(executor_test, done_callbacks_and_wait) {
    mp::process_pool_executor ex(opts());
    std::vector<mp::future<int>> fs;
    for (int i = 0; i < 10; ++i) fs.push_back(ex.submit(sqr, i));
    auto [done, not_done] = mp::wait(fs);
    EXPECT_EQ(done.size(), 10u);
    EXPECT_TRUE(not_done.empty());
    int total = 0;
    for (auto& f : mp::as_completed(fs)) total += f.get();
    EXPECT_EQ(total, 285);
}

INSTANTIATE_TEST_SUITE_P(all, executor_test,
                         testing::Values(mp::start_method::fork, mp::start_method::spawn, mp::start_method::forkserver),
                         [](const auto& info) { return std::string(mp::to_string(info.param)); });

}  // namespace
