// mp::thread_pool_executor: the scenarios of CPython's
// test_concurrent_futures (executor.py, test_thread_pool.py,
// test_shutdown.py, and test_wait.py / test_as_completed.py with real
// tasks), plus laziness, the initializer, and use inside a child process.
// Threads are ordered with latches and semaphores; timeouts only bound.
#include "mp/thread_pool_executor.hpp"

#include <gtest/gtest.h>
#include <pthread.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <future>
#include <latch>
#include <memory>
#include <numeric>
#include <ranges>
#include <regex>
#include <semaphore>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "mp/context.hpp"
#include "mp/process.hpp"
#include "mp/queue.hpp"
#include "support/thread_pool_helpers.hpp"

using namespace std::chrono_literals;
using namespace mp_test;

namespace {

// ---- executor.py ----

TEST(thread_pool_executor, submit) {
    mp::thread_pool_executor tx(5);
    auto f = tx.submit([](int b, int e) { return static_cast<int>(std::pow(b, e)); }, 2, 8);
    EXPECT_EQ(f.get(), 256);
    EXPECT_EQ(tx.submit(mul, 2, 8).get(), 16);
}

TEST(thread_pool_executor, submit_any_callable) {
    mp::thread_pool_executor tx(2);
    int captured = 40;
    EXPECT_EQ(tx.submit([&captured] { return captured + 2; }).get(), 42);
    auto owned = std::make_unique<int>(7);
    EXPECT_EQ(tx.submit([p = std::move(owned)] { return *p; }).get(), 7);  // move-only callable
    EXPECT_EQ(tx.submit([](std::unique_ptr<int> p) { return *p * 2; }, std::make_unique<int>(4)).get(), 8);
    std::atomic<bool> ran{false};
    mp::future<void> v = tx.submit([&] { ran = true; });
    v.get();
    EXPECT_TRUE(ran);
    EXPECT_EQ(tx.submit([](const std::string& s) -> const std::string& { return s; }, std::string("copy")).get(),
              "copy");
}

TEST(thread_pool_executor, submit_keeps_the_exception_type) {
    mp::thread_pool_executor tx(2);
    auto f = tx.submit([]() -> int { throw std::out_of_range("index 3"); });
    EXPECT_THROW((void)f.get(), std::out_of_range);
    EXPECT_TRUE(f.done());
    EXPECT_FALSE(f.successful());
}

TEST(thread_pool_executor, map) {
    mp::thread_pool_executor tx(5);
    std::vector<int> xs = iota_vector(0, 10);
    std::vector<int> got;
    for (int x : tx.map([](int i) { return i * i; }, xs)) got.push_back(x);
    std::vector<int> want;
    for (int i : xs) want.push_back(i * i);
    EXPECT_EQ(got, want);

    got.clear();
    for (int x : tx.map([](int i) { return i * i; }, xs, {.chunksize = 3})) got.push_back(x);
    EXPECT_EQ(got, want);
}

TEST(thread_pool_executor, map_keeps_input_order_whatever_order_calls_finish_in) {
    mp::thread_pool_executor tx(4);
    // Item 0 finishes last: it waits until item 3 has run.
    gate three_done;
    std::vector<int> got;
    for (int x : tx.map(
             [&](int i) {
                 if (i == 0) three_done.wait();
                 if (i == 3) three_done.open();
                 return i;
             },
             iota_vector(0, 4)))
        got.push_back(x);
    EXPECT_EQ(got, (std::vector<int>{0, 1, 2, 3}));
}

TEST(thread_pool_executor, map_exception_is_thrown_at_its_index_and_iteration_goes_on) {
    mp::thread_pool_executor tx(3);
    auto divide = [](int d) {
        if (d == 0) throw std::domain_error("division by zero");
        return 12 / d;
    };
    auto results = tx.map(divide, std::vector<int>{2, 3, 0, 4});
    EXPECT_EQ(results.next(), 6);
    EXPECT_EQ(results.next(), 4);
    EXPECT_THROW((void)results.next(), std::domain_error);
    EXPECT_EQ(results.next(), 3);
    EXPECT_EQ(results.next(), std::nullopt);
}

TEST(thread_pool_executor, map_timeout) {
    mp::thread_pool_executor tx(3);
    gate release;
    std::vector<int> results;
    try {
        for (int x : tx.map(
                 [&](int i) {
                     if (i == 2) release.wait();
                     return i;
                 },
                 std::vector<int>{0, 1, 2}, {.timeout = 1s}))
            results.push_back(x);
        ADD_FAILURE() << "no timeout";
    } catch (const mp::timeout_error&) {
    }
    release.open();
    EXPECT_EQ(results, (std::vector<int>{0, 1}));
}

TEST(thread_pool_executor, map_timeout_cancels_the_calls_not_started) {
    // CPython's test_executor_map_current_future_cancel.
    std::mutex log_mutex;
    std::vector<std::string> log;
    gate stop;
    auto log_n_wait = [&](std::string ident) {
        {
            std::lock_guard l(log_mutex);
            log.push_back(ident + " started");
        }
        stop.wait();
        std::lock_guard l(log_mutex);
        log.push_back(ident + " stopped");
    };
    {
        mp::thread_pool_executor tx(1);
        auto first = tx.submit(log_n_wait, std::string("first"));
        {
            auto gen = tx.map(log_n_wait, std::vector<std::string>{"second", "third"}, {.timeout = 0s});
            EXPECT_THROW(gen.begin(), mp::timeout_error);
            stop.open();
        }
        first.get();
    }
    EXPECT_EQ(log, (std::vector<std::string>{"first started", "first stopped"}));
}

TEST(thread_pool_executor, map_with_void_function) {
    mp::thread_pool_executor tx(2);
    std::atomic<int> sum{0};
    int n = 0;
    for (std::monostate _ : tx.map([&](int i) { sum += i; }, iota_vector(0, 10))) {
        (void)_;
        ++n;
    }
    EXPECT_EQ(n, 10);
    EXPECT_EQ(sum, 45);
}

TEST(thread_pool_executor, map_submits_without_iteration) {
    // Issue 11777: the calls run even if the results are never read.
    std::atomic<int> finished{0};
    mp::thread_pool_executor tx(5);
    (void)tx.map([&](int) { ++finished; }, iota_vector(0, 10));
    tx.shutdown(true);
    EXPECT_EQ(finished, 10);
}

TEST(thread_pool_executor, map_reads_an_endless_input_lazily) {
    std::atomic<int> calls{0};
    mp::thread_pool_executor tx(4);
    int seen = 0;
    for (long x : tx.map(
             [&](long i) {
                 ++calls;
                 return i * 2;
             },
             std::views::iota(0L))) {
        EXPECT_EQ(x, 2L * seen);
        if (++seen == 100) break;
    }
    tx.shutdown(true);
    // At most the window beyond what was consumed: 2 calls per worker.
    EXPECT_LE(calls, 100 + 2 * 4);
    EXPECT_GE(calls, 100);
}

TEST(thread_pool_executor, map_over_an_rvalue_range_owns_it) {
    mp::thread_pool_executor tx(2);
    auto results = tx.map([](const std::string& s) { return s.size(); },
                          std::vector<std::string>{"a", "bb", "ccc"});
    std::vector<std::size_t> got;
    for (auto n : results) got.push_back(n);
    EXPECT_EQ(got, (std::vector<std::size_t>{1, 2, 3}));
}

TEST(thread_pool_executor, shutdown_race_issue12456) {
    mp::thread_pool_executor tx(5);
    (void)tx.map([](int x) { return std::to_string(x); }, std::vector<int>(6, 2));
    tx.shutdown();
}

TEST(thread_pool_executor, no_stale_references) {
    // Issue 16284: the executor keeps nothing of a call once its result is out.
    mp::thread_pool_executor tx(2);
    auto object = std::make_shared<int>(1);
    std::weak_ptr<int> watch = object;
    auto f = tx.submit([o = std::move(object)] { return *o; });
    EXPECT_EQ(f.get(), 1);
    EXPECT_TRUE(watch.expired());
}

TEST(thread_pool_executor, max_workers_must_be_positive) {
    EXPECT_THROW(mp::thread_pool_executor(0), mp::value_error);
    EXPECT_THROW(mp::thread_pool_executor(-1), mp::value_error);
    EXPECT_THROW(mp::thread_pool_executor({.max_workers = -1}), mp::value_error);
    try {
        mp::thread_pool_executor tx(0);
    } catch (const mp::value_error& e) {
        EXPECT_NE(std::string(e.what()).find("max_workers must be greater than 0"), std::string::npos);
    }
}

TEST(thread_pool_executor, map_does_not_keep_yielded_results) {
    // Issue 14406.
    mp::thread_pool_executor tx(3);
    for (auto& obj : tx.map([](int i) { return std::make_shared<int>(i); }, iota_vector(0, 10))) {
        std::weak_ptr<int> watch = obj;
        obj.reset();
        EXPECT_TRUE(watch.expired());
    }
}

// ---- test_thread_pool.py ----

TEST(thread_pool_executor, default_workers) {
    mp::thread_pool_executor tx;
    EXPECT_EQ(tx.max_workers(), std::min(32, mp::cpu_count() + 4));
    mp::thread_pool_executor ty({.max_workers = 0});
    EXPECT_EQ(ty.max_workers(), std::min(32, mp::cpu_count() + 4));
}

TEST(thread_pool_executor, saturation) {
    mp::thread_pool_executor tx(4);
    std::counting_semaphore<> sem(0);
    std::vector<mp::future<void>> fs;
    for (int i = 0; i < 15 * 4; ++i) fs.push_back(tx.submit([&] { sem.acquire(); }));
    EXPECT_EQ(tx.thread_count(), 4u);
    sem.release(15 * 4);
    tx.shutdown(true);
    for (auto& f : fs) EXPECT_TRUE(f.done());
}

TEST(thread_pool_executor, idle_thread_reuse) {
    mp::thread_pool_executor tx;
    EXPECT_EQ(tx.submit(mul, 21, 2).get(), 42);
    EXPECT_EQ(tx.submit(mul, 6, 7).get(), 42);
    EXPECT_EQ(tx.submit(mul, 3, 14).get(), 42);
    EXPECT_EQ(tx.thread_count(), 1u);
}

// Sleeping threads are woken for calls that need them: a burst of calls
// that can only finish together (each waits until all have started) finds
// every thread asleep, and submit wakes each one, even though the first
// wakes are still pending when the later calls are queued.
TEST(thread_pool_executor, sleeping_threads_are_woken_for_calls_that_need_them_all) {
    constexpr int workers = 4;
    mp::thread_pool_executor tx(workers);
    for (int round = 0; round < 3; ++round) {
        std::latch all_started(workers);
        std::vector<mp::future<bool>> fs;
        for (int i = 0; i < workers; ++i)
            fs.push_back(tx.submit([&] {
                all_started.count_down();
                // Generous bound that only catches a thread never woken.
                auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
                while (!all_started.try_wait())
                    if (std::chrono::steady_clock::now() > until) return false;
                return true;
            }));
        for (auto& f : fs) EXPECT_TRUE(f.get()) << "round " << round;
        // Past the idle threads' spin: every thread sleeps before the next burst.
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    EXPECT_EQ(tx.thread_count(), static_cast<std::size_t>(workers));
}

TEST(thread_pool_executor, threads_start_lazily) {
    mp::thread_pool_executor tx(8);
    EXPECT_EQ(tx.thread_count(), 0u);
}

int zero() { return 0; }
void do_nothing() {}

TEST(thread_pool_executor, fork_a_process_from_a_pool_thread) {
    // bpo-43944: a fork child started from a pool thread exits normally.
    mp::thread_pool_executor tx(1);
    auto code = tx.submit([] {
        mp::process p({.context = mp::get_context(mp::start_method::fork)}, do_nothing);
        testing::internal::CaptureStderr();  // the fork-with-threads warning
        p.start();
        (void)testing::internal::GetCapturedStderr();
        p.join();
        return p.exitcode();
    });
    EXPECT_EQ(code.get(), 0);
}

// ---- initializer ----

thread_local int initialized_value = 0;

TEST(thread_pool_executor, initializer_runs_in_each_thread_before_its_first_call) {
    std::atomic<int> inits{0};
    mp::thread_pool_executor tx({.max_workers = 3, .initializer = [&] {
                                     ++inits;
                                     initialized_value = 42;
                                 }});
    std::counting_semaphore<> sem(0);
    std::vector<mp::future<int>> fs;
    for (int i = 0; i < 3; ++i)
        fs.push_back(tx.submit([&] {
            sem.acquire();
            return initialized_value;
        }));
    sem.release(3);
    for (auto& f : fs) EXPECT_EQ(f.get(), 42);
    tx.shutdown();
    EXPECT_EQ(inits, 3);
}

TEST(thread_pool_executor, failing_initializer_breaks_the_executor) {
    mp::thread_pool_executor tx({.max_workers = 2, .initializer = [] { throw std::invalid_argument("bad init"); }});
    auto f = tx.submit(zero);
    EXPECT_THROW((void)f.get(60s), std::invalid_argument);
    try {
        (void)tx.submit(zero);
        ADD_FAILURE() << "submit on a broken executor did not throw";
    } catch (const mp::closed_error&) {
        ADD_FAILURE() << "a broken executor is not a closed one";
    } catch (const mp::error& e) {
        EXPECT_NE(std::string(e.what()).find("broken"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("bad init"), std::string::npos) << e.what();
    }
}

// ---- futures from real calls: test_wait.py, test_as_completed.py ----

TEST(thread_pool_executor, wait_first_completed) {
    mp::thread_pool_executor tx(2);
    gate release;
    auto slow = tx.submit([&] {
        release.wait();
        return 1;
    });
    auto quick = tx.submit(zero);
    auto [done, not_done] = mp::wait(std::vector{slow, quick}, 60s, mp::return_when::first_completed);
    ASSERT_EQ(done.size(), 1u);
    EXPECT_TRUE(done[0] == quick);
    ASSERT_EQ(not_done.size(), 1u);
    EXPECT_TRUE(not_done[0] == slow);
    release.open();
}

TEST(thread_pool_executor, wait_first_exception) {
    mp::thread_pool_executor tx(3);
    gate release;
    auto slow = tx.submit([&] {
        release.wait();
        return 1;
    });
    auto bad = tx.submit([]() -> int { throw std::runtime_error("x"); });
    auto [done, not_done] = mp::wait(std::vector{slow, bad}, mp::return_when::first_exception);
    ASSERT_EQ(done.size(), 1u);
    EXPECT_TRUE(done[0] == bad);
    EXPECT_EQ(not_done.size(), 1u);
    release.open();
}

TEST(thread_pool_executor, wait_all_completed_with_timeout_bound) {
    mp::thread_pool_executor tx(4);
    std::vector<mp::future<int>> fs;
    for (int i = 0; i < 8; ++i) fs.push_back(tx.submit(mul, i, i));
    auto [done, not_done] = mp::wait(fs, 60s);
    EXPECT_EQ(done.size(), 8u);
    EXPECT_TRUE(not_done.empty());
}

TEST(thread_pool_executor, wait_timeout) {
    mp::thread_pool_executor tx(2);
    gate release;
    auto quick = tx.submit(zero);
    quick.wait();
    auto slow = tx.submit([&] {
        release.wait();
        return 1;
    });
    auto [done, not_done] = mp::wait(std::vector{quick, slow}, 50ms, mp::return_when::all_completed);
    EXPECT_EQ(done.size(), 1u);
    EXPECT_EQ(not_done.size(), 1u);
    release.open();
}

TEST(thread_pool_executor, as_completed_yields_each_once_in_completion_order) {
    mp::thread_pool_executor tx(3);
    gate second;
    auto a = tx.submit([&] {
        second.wait();
        return 1;
    });
    auto b = tx.submit([] { return 2; });
    std::vector<int> order;
    for (auto& f : mp::as_completed(std::vector{a, b, a, b}, 60s)) {
        order.push_back(f.get());
        if (order.size() == 1) second.open();
    }
    EXPECT_EQ(order, (std::vector<int>{2, 1}));
}

TEST(thread_pool_executor, as_completed_timeout) {
    mp::thread_pool_executor tx(2);
    gate release;
    auto slow = tx.submit([&] {
        release.wait();
        return 1;
    });
    auto quick = tx.submit(zero);
    quick.wait();
    std::vector<int> seen;
    EXPECT_THROW(
        {
            for (auto& f : mp::as_completed(std::vector{slow, quick}, 50ms)) seen.push_back(f.get());
        },
        mp::timeout_error);
    EXPECT_EQ(seen, (std::vector<int>{0}));
    release.open();
}

TEST(thread_pool_executor, done_callback_runs_in_the_worker_thread) {
    mp::thread_pool_executor tx({.max_workers = 1, .thread_name_prefix = "cbpool"});
    std::promise<std::string> where;
    gate release;
    auto f = tx.submit([&] {
        release.wait();
        return 1;
    });
    f.add_done_callback([&](mp::future<int>&) { where.set_value(this_thread_name()); });
    release.open();
    EXPECT_EQ(where.get_future().get(), "cbpool_0");
}

TEST(thread_pool_executor, cancel_a_queued_call) {
    mp::thread_pool_executor tx(1);
    std::latch started(1);
    gate release;
    auto running = tx.submit([&] {
        started.count_down();
        release.wait();
    });
    started.wait();
    std::atomic<bool> ran{false};
    auto queued = tx.submit([&] { ran = true; });
    EXPECT_TRUE(running.running());
    EXPECT_FALSE(running.cancel());
    EXPECT_TRUE(queued.cancel());
    release.open();
    tx.shutdown();
    EXPECT_FALSE(ran);
    EXPECT_THROW(queued.get(), mp::cancelled_error);
}

TEST(thread_pool_executor, submit_from_inside_a_call_and_from_many_threads) {
    mp::thread_pool_executor tx(4);
    auto outer = tx.submit([&tx] { return tx.submit(mul, 6, 7).get(); });
    EXPECT_EQ(outer.get(), 42);

    std::vector<std::thread> ts;
    std::atomic<int> sum{0};
    for (int t = 0; t < 4; ++t)
        ts.emplace_back([&] {
            std::vector<mp::future<int>> fs;
            for (int i = 0; i < 100; ++i) fs.push_back(tx.submit(mul, i, 1));
            for (auto& f : fs) sum += f.get();
        });
    for (auto& t : ts) t.join();
    EXPECT_EQ(sum, 4 * 4950);
}

TEST(thread_pool_executor, shutdown_from_inside_a_call) {
    mp::thread_pool_executor tx(2);
    auto f = tx.submit([&tx] {
        tx.shutdown(true);  // does not wait for its own thread
        return 1;
    });
    EXPECT_EQ(f.get(), 1);
    EXPECT_THROW((void)tx.submit(zero), mp::closed_error);
}

// ---- inside other processes ----

void run_pool_in_child(mp::queue<int> q) {
    mp::thread_pool_executor tx(4);
    std::vector<mp::future<int>> fs;
    for (int i = 0; i < 10; ++i) fs.push_back(tx.submit(mul, i, i));
    int sum = 0;
    for (auto& f : fs) sum += f.get();
    for (int x : tx.map([](int i) { return i + 1; }, iota_vector(0, 10))) sum += x;
    q.put(sum);
}

class thread_pool_in_child : public testing::TestWithParam<mp::start_method> {};

TEST_P(thread_pool_in_child, works) {
    mp::queue<int> q;
    mp::process p({.context = mp::get_context(GetParam())}, run_pool_in_child, q);
    p.start();
    EXPECT_EQ(q.get(60s), 285 + 55);
    p.join();
    EXPECT_EQ(p.exitcode(), 0);
}

INSTANTIATE_TEST_SUITE_P(start_methods, thread_pool_in_child,
                         testing::Values(mp::start_method::fork, mp::start_method::spawn,
                                         mp::start_method::forkserver),
                         [](const auto& info) {
                             switch (info.param) {
                                 case mp::start_method::fork: return std::string("fork");
                                 case mp::start_method::spawn: return std::string("spawn");
                                 default: return std::string("forkserver");
                             }
                         });

TEST(thread_pool_executor, an_executor_inherited_through_fork_refuses_work_in_the_child) {
    mp::thread_pool_executor tx(2);
    EXPECT_EQ(tx.submit(zero).get(), 0);  // its thread exists in the parent
    mp::queue<std::string> q;
    mp::process p({.context = mp::get_context(mp::start_method::fork)}, [&tx, q]() mutable {
        try {
            (void)tx.submit(zero);
            q.put("submitted");
        } catch (const mp::closed_error&) {
            q.put("closed");
        } catch (const mp::error& e) {
            q.put(e.what());
        }
    });
    testing::internal::CaptureStderr();
    p.start();
    (void)testing::internal::GetCapturedStderr();
    std::string what = q.get(60s);
    p.join();
    EXPECT_NE(what.find("inherited through fork"), std::string::npos) << what;
    EXPECT_EQ(p.exitcode(), 0);
}

}  // namespace
