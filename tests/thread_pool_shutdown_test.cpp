// mp::thread_pool_executor: shutting down and stopping calls, the scenarios
// of CPython's test_concurrent_futures/test_shutdown.py, plus thread names,
// terminate() of a running call and submit_with deadlines (SPEC §7, §7a).
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
#include <optional>
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
#include "thread_pool_test_hooks.hpp"

using namespace std::chrono_literals;
using namespace mp_test;
namespace hooks = mp::detail::thread_pool_test_hooks;

namespace {

// ---- test_shutdown.py ----

TEST(thread_pool_executor, submit_after_shutdown_throws_closed_error) {
    mp::thread_pool_executor tx(2);
    tx.shutdown();
    EXPECT_THROW((void)tx.submit(mul, 2, 5), mp::closed_error);
    EXPECT_THROW((void)tx.map([](int x) { return x; }, std::vector<int>{1}), mp::closed_error);
    tx.shutdown();  // again: harmless
}

TEST(thread_pool_executor, shutdown_waits_for_queued_calls_issue12364) {
    mp::thread_pool_executor tx(5);
    std::vector<mp::future<int>> fs;
    for (int i = 0; i < 50; ++i) fs.push_back(tx.submit([i] { return i; }));
    tx.shutdown();
    for (int i = 0; i < 50; ++i) {
        ASSERT_TRUE(fs[i].done());
        EXPECT_EQ(fs[i].get(), i);
    }
}

TEST(thread_pool_executor, shutdown_cancel_futures) {
    mp::thread_pool_executor tx(1);
    std::latch started(1);
    gate release;
    auto blocker = tx.submit([&] {
        started.count_down();
        release.wait();
        return 1;
    });
    started.wait();
    std::vector<mp::future<int>> fs;
    for (int i = 0; i < 50; ++i) fs.push_back(tx.submit([i] { return i; }));
    tx.shutdown(/*wait=*/false, /*cancel_futures=*/true);
    for (auto& f : fs) {
        EXPECT_TRUE(f.cancelled());
        EXPECT_THROW((void)f.get(), mp::cancelled_error);
    }
    EXPECT_FALSE(blocker.cancelled());  // it was running
    release.open();
    tx.shutdown(true);
    EXPECT_EQ(blocker.get(), 1);
}

TEST(thread_pool_executor, shutdown_after_a_cancelled_submit_does_not_hang_gh94440) {
    mp::thread_pool_executor tx(1);
    EXPECT_EQ(tx.submit(zero).get(), 0);
    (void)tx.submit(zero).cancel();
    tx.shutdown(true);
}

TEST(thread_pool_executor, threads_terminate) {
    auto tx = std::make_unique<mp::thread_pool_executor>(5);
    std::counting_semaphore<> sem(0);
    for (int i = 0; i < 3; ++i) (void)tx->submit([&] { sem.acquire(); });
    EXPECT_EQ(tx->thread_count(), 3u);
    sem.release(3);
    tx->shutdown();
    tx.reset();
}

TEST(thread_pool_executor, scope_exit_shuts_down) {
    std::vector<int> got;
    {
        mp::thread_pool_executor tx(5);
        for (int x : tx.map([](int i) { return std::abs(i); }, iota_vector(-5, 5))) got.push_back(x);
    }
    EXPECT_EQ(got, (std::vector<int>{5, 4, 3, 2, 1, 0, 1, 2, 3, 4}));
}

TEST(thread_pool_executor, map_results_outlive_the_executor) {
    // test_del_shutdown: the calls submitted by map() run before the
    // executor's destructor returns, and their results stay readable.
    auto tx = std::make_unique<mp::thread_pool_executor>(5);
    auto xs = iota_vector(-5, 5);
    auto res = tx->map([](int i) { return std::abs(i); }, xs);
    tx.reset();
    std::vector<int> got;
    for (int x : res) got.push_back(x);
    EXPECT_EQ(got, (std::vector<int>{5, 4, 3, 2, 1, 0, 1, 2, 3, 4}));
}

TEST(thread_pool_executor, map_past_its_window_after_shutdown_throws_closed_error) {
    mp::thread_pool_executor tx(1);  // a window of 2 calls
    auto res = tx.map([](int i) { return i; }, iota_vector(0, 10));
    tx.shutdown(true);
    EXPECT_EQ(res.next(), 0);
    EXPECT_EQ(res.next(), 1);
    EXPECT_THROW((void)res.next(), mp::closed_error);
}

TEST(thread_pool_executor, shutdown_no_wait) {
    mp::thread_pool_executor tx(5);
    auto xs = iota_vector(-5, 5);
    auto res = tx.map([](int i) { return std::abs(i); }, xs);
    tx.shutdown(false);
    std::vector<int> got;
    for (int x : res) got.push_back(x);
    EXPECT_EQ(got, (std::vector<int>{5, 4, 3, 2, 1, 0, 1, 2, 3, 4}));
}

TEST(thread_pool_executor, thread_names_assigned) {
    mp::thread_pool_executor tx({.max_workers = 5, .thread_name_prefix = "SpecialPool"});
    std::counting_semaphore<> sem(0);
    std::vector<mp::future<std::string>> names;
    for (int i = 0; i < 5; ++i)
        names.push_back(tx.submit([&] {
            sem.acquire();  // hold every thread, so that five start
            return this_thread_name();
        }));
    sem.release(5);
    for (auto& n : names) EXPECT_TRUE(std::regex_match(n.get(), std::regex("SpecialPool_[0-4]"))) << n.get();
}

TEST(thread_pool_executor, thread_names_default) {
    mp::thread_pool_executor tx(5);
    auto name = tx.submit(this_thread_name).get();
    // ThreadPool-<executor number>_<thread number>, of which the kernel keeps
    // 15 bytes (the executor number grows with every executor of the process).
    if (name.size() < 15)
        EXPECT_TRUE(std::regex_match(name, std::regex("ThreadPool-[0-9]+_0"))) << name;
    else
        EXPECT_TRUE(std::regex_match(name, std::regex("ThreadPool-[0-9]+_?0?"))) << name;
}

}  // namespace

namespace {

// SPEC §7a: terminate() on a thread pool future requests stop from a callable
// that takes a std::stop_token first, and cancels a pending one.
TEST(thread_pool_terminate, requests_stop_from_a_running_call_and_cancels_a_pending_one) {
    mp::thread_pool_executor tx(1);
    std::promise<void> started;
    auto running = tx.submit(
        [&started](std::stop_token stop, int base) {
            started.set_value();
            int spins = 0;
            while (!stop.stop_requested()) {
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
                ++spins;
            }
            return base;
        },
        42);
    started.get_future().wait();
    auto pending = tx.submit([] { return 1; });
    EXPECT_TRUE(pending.terminate());
    EXPECT_TRUE(pending.cancelled());
    EXPECT_TRUE(running.terminate());
    EXPECT_EQ(running.get(std::chrono::seconds(30)), 42);
    EXPECT_FALSE(running.terminate());
}

}  // namespace

namespace {

// SPEC §7: submit_with({.timeout}) on a thread pool. Past the deadline the
// future fails with mp::timeout_error while the call still runs (a gate holds
// it), and a call that takes a std::stop_token is asked to stop.
TEST(thread_pool_submit_with, deadline_fails_the_future_while_the_call_runs) {
    mp::thread_pool_executor tx(1);
    std::promise<void> release;
    auto gate = release.get_future().share();
    std::atomic<bool> call_ended{false};
    auto f = tx.submit_with({.timeout = 20ms}, [gate, &call_ended] {
        gate.wait();
        call_ended = true;
        return 1;
    });
    EXPECT_THROW((void)f.get(30s), mp::timeout_error);  // only a deadline ends get() while the gate is shut
    EXPECT_FALSE(call_ended.load());
    try {
        (void)f.get();
    } catch (const mp::timeout_error& e) {
        EXPECT_NE(std::string(e.what()).find("past its deadline"), std::string::npos) << e.what();
    }
    release.set_value();
    // The thread goes on with the next call once the late one ended.
    EXPECT_EQ(tx.submit(mul, 6, 7).get(30s), 42);
    EXPECT_TRUE(call_ended.load());
}

TEST(thread_pool_submit_with, deadline_requests_stop_from_a_stop_token_call) {
    mp::thread_pool_executor tx(2);
    std::atomic<bool> saw_stop{false};
    auto f = tx.submit_with(
        {.timeout = 10ms},
        [&saw_stop](std::stop_token stop, int x) {
            while (!stop.stop_requested()) std::this_thread::sleep_for(1ms);
            saw_stop = true;
            return x;
        },
        5);
    EXPECT_THROW((void)f.get(30s), mp::timeout_error);
    tx.shutdown(true);  // returns once the call saw the stop request and ended
    EXPECT_TRUE(saw_stop.load());
}

TEST(thread_pool_submit_with, calls_within_their_deadline_keep_their_value) {
    mp::thread_pool_executor tx(2);
    std::vector<mp::future<int>> fs;
    for (int i = 0; i < 200; ++i) fs.push_back(tx.submit_with({.timeout = 30s}, mul, i, 2));
    for (int i = 0; i < 200; ++i) EXPECT_EQ(fs[static_cast<std::size_t>(i)].get(), 2 * i);
    // A deadline counts from the start of the call, not from submit: a call
    // queued behind a long one is not failed for its wait.
    std::promise<void> release;
    auto gate = release.get_future().share();
    mp::thread_pool_executor one(1);
    auto blocker = one.submit([gate] { gate.wait(); });
    auto queued = one.submit_with({.timeout = 200ms}, mul, 3, 3);
    std::this_thread::sleep_for(300ms);  // longer than the deadline, while it waits in the queue
    release.set_value();
    blocker.get();
    EXPECT_EQ(queued.get(30s), 9);
}

// ---- the queue: submitters append without a lock shared with the workers ----

// Several threads submit at once while the workers take: every call runs
// exactly once and its future gets its own result (the queue's chain is
// briefly cut while a submitter appends; workers wait that out).
TEST(thread_pool_queue, many_submitters_and_workers_lose_no_call) {
    for (int workers : {1, 2, 3}) {
        mp::thread_pool_executor tx(workers);
        constexpr int submitters = 4;
        constexpr int per_submitter = 3000;
        std::atomic<long> runs{0};
        std::vector<std::thread> ts;
        std::atomic<int> wrong{0};
        for (int t = 0; t < submitters; ++t)
            ts.emplace_back([&, t] {
                std::vector<mp::future<int>> fs;
                for (int i = 0; i < per_submitter; ++i)
                    fs.push_back(tx.submit([&runs](int x) { runs.fetch_add(1); return x; }, t * per_submitter + i));
                for (int i = 0; i < per_submitter; ++i)
                    if (fs[static_cast<std::size_t>(i)].get() != t * per_submitter + i) ++wrong;
            });
        for (auto& t : ts) t.join();
        EXPECT_EQ(wrong.load(), 0) << workers << " workers";
        EXPECT_EQ(runs.load(), submitters * per_submitter) << workers << " workers";
    }
}

// shutdown(cancel_futures) while other threads still submit: each submit
// either throws mp::closed_error or returns a future that ends cancelled or
// with its result, and exactly the calls not cancelled ran.
TEST(thread_pool_queue, shutdown_cancel_futures_while_others_submit) {
    mp::thread_pool_executor tx(2);
    std::atomic<long> runs{0};
    std::atomic<long> done_ok{0}, cancelled{0}, refused{0};
    std::latch submitting(3);
    std::vector<std::thread> ts;
    for (int t = 0; t < 3; ++t)
        ts.emplace_back([&] {
            std::vector<mp::future<int>> fs;
            submitting.count_down();
            for (int i = 0; i < 100000; ++i) {
                try {
                    fs.push_back(tx.submit([&runs](int x) { runs.fetch_add(1); return x; }, i));
                } catch (const mp::closed_error&) {
                    ++refused;
                    break;
                }
            }
            for (std::size_t i = 0; i < fs.size(); ++i) {
                try {
                    if (fs[i].get(30s) == static_cast<int>(i)) ++done_ok;
                } catch (const mp::cancelled_error&) {
                    ++cancelled;
                }
            }
        });
    submitting.wait();
    std::this_thread::sleep_for(2ms);
    tx.shutdown(/*wait=*/false, /*cancel_futures=*/true);
    for (auto& t : ts) t.join();
    tx.shutdown(true);
    EXPECT_EQ(runs.load(), done_ok.load());
    EXPECT_GT(done_ok.load() + cancelled.load(), 0);
}

// A sleeping thread is woken for a call even while another thread is busy
// with a long one: the call does not wait for the busy thread.
TEST(thread_pool_queue, a_sleeping_thread_runs_a_call_while_the_other_is_busy) {
    mp::thread_pool_executor tx(2);
    std::latch both(2);
    auto a = tx.submit([&] { both.arrive_and_wait(); });
    auto b = tx.submit([&] { both.arrive_and_wait(); });
    a.get();
    b.get();
    std::this_thread::sleep_for(50ms);  // past the idle threads' spin: both sleep
    gate release;
    std::latch started(1);
    auto blocker = tx.submit([&] {
        started.count_down();
        release.wait();
    });
    started.wait();
    std::this_thread::sleep_for(50ms);  // the other thread is asleep again
    auto quick = tx.submit(mul, 6, 7);
    EXPECT_EQ(quick.get(30s), 42);  // generous: only catches a call left waiting for the busy thread
    EXPECT_FALSE(blocker.done());
    release.open();
    blocker.get();
    EXPECT_EQ(tx.thread_count(), 2u);
}

// shutdown(wait) while other threads still submit: every submit that
// returned a future got its call run before shutdown returned; the others
// threw mp::closed_error.
TEST(thread_pool_queue, shutdown_while_others_submit_runs_every_admitted_call) {
    mp::thread_pool_executor tx(2);
    std::latch submitting(3);
    std::vector<std::vector<mp::future<int>>> futures(3);
    std::vector<std::thread> ts;
    for (std::size_t t = 0; t < 3; ++t)
        ts.emplace_back([&, t] {
            submitting.count_down();
            for (int i = 0; i < 100000; ++i) {
                try {
                    futures[t].push_back(tx.submit(mul, i, 1));
                } catch (const mp::closed_error&) {
                    return;
                }
            }
        });
    submitting.wait();
    std::this_thread::sleep_for(2ms);
    tx.shutdown(/*wait=*/true);
    for (auto& t : ts) t.join();
    // A submit admitted just before shutdown may still have been linking
    // its call when shutdown began: the threads waited for it.
    for (auto& fs : futures)
        for (std::size_t i = 0; i < fs.size(); ++i) {
            ASSERT_TRUE(fs[i].done()) << i;
            ASSERT_EQ(fs[i].get(), static_cast<int>(i));
        }
}

// A submitter held between counting its call and linking it (test hook):
// the window in which the queue's chain is cut.
struct link_delayed {
    explicit link_delayed(int us) {
        hooks::links_delayed = 0;
        hooks::link_delay_us = us;
    }
    ~link_delayed() { hooks::link_delay_us = 0; }
    link_delayed(const link_delayed&) = delete;
    link_delayed& operator=(const link_delayed&) = delete;
    /// Waits until a submit sleeps in the window (bounded: only catches a hang).
    static void wait_for_one() {
        auto until = std::chrono::steady_clock::now() + 30s;
        while (hooks::links_delayed.load() == 0 && std::chrono::steady_clock::now() < until)
            std::this_thread::sleep_for(1ms);
    }
};

// The workers wait for a counted call's link: it runs.
TEST(thread_pool_queue, a_call_counted_but_not_yet_linked_runs) {
    mp::thread_pool_executor tx(2);
    EXPECT_EQ(tx.submit(mul, 1, 1).get(), 1);  // threads started
    link_delayed delay(50'000);
    auto f = tx.submit(mul, 6, 7);
    EXPECT_EQ(f.get(30s), 42);
}

// shutdown(cancel_futures) while a submit is between its count and its
// link: the submit was admitted, so its call is cancelled with the others
// (it neither runs after shutdown nor stays queued). Fails when shutdown
// stops draining at the cut chain: the call then runs once the blocker ends.
TEST(thread_pool_queue, shutdown_cancel_futures_waits_for_a_call_being_linked) {
    mp::thread_pool_executor tx(1);
    std::latch started(1);
    gate release;
    auto blocker = tx.submit([&] {
        started.count_down();
        release.wait();
    });
    started.wait();
    link_delayed delay(100'000);
    std::atomic<bool> ran{false};
    std::optional<mp::future<void>> late;
    std::thread submitter([&] { late.emplace(tx.submit([&] { ran = true; })); });
    link_delayed::wait_for_one();
    tx.shutdown(/*wait=*/false, /*cancel_futures=*/true);
    submitter.join();
    release.open();
    tx.shutdown(true);
    ASSERT_TRUE(late.has_value());
    EXPECT_TRUE(late->cancelled());
    EXPECT_FALSE(ran.load());
    blocker.get();
}

// shutdown(wait) while a submit is between its count and its link: the
// threads wait for the call and run it before shutdown returns.
TEST(thread_pool_queue, shutdown_wait_runs_a_call_being_linked) {
    mp::thread_pool_executor tx(2);
    EXPECT_EQ(tx.submit(mul, 1, 1).get(), 1);
    std::this_thread::sleep_for(50ms);  // past the spin: the threads sleep
    link_delayed delay(100'000);
    std::optional<mp::future<int>> late;
    std::thread submitter([&] { late.emplace(tx.submit(mul, 6, 7)); });
    link_delayed::wait_for_one();
    tx.shutdown(/*wait=*/true);
    submitter.join();
    ASSERT_TRUE(late.has_value());
    EXPECT_TRUE(late->done());
    EXPECT_EQ(late->get(), 42);
}

}  // namespace
