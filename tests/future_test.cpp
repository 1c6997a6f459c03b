// mp::future, mp::wait and mp::as_completed, driven through the producer
// side (mp::detail::promise) so that every state is reached on purpose:
// the scenarios of CPython's test_future.py, test_wait.py and
// test_as_completed.py. No test depends on timing: threads are ordered with
// latches and promises; timeouts only bound waits that must end.
#include "mp/future.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <latch>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

using mp::detail::promise;

// A future in each of CPython's states (PENDING_FUTURE, RUNNING_FUTURE, ...).
struct states {
    promise<int> pending_p, running_p, cancelled_p, exception_p, successful_p;
    mp::future<int> pending = pending_p.get_future();
    mp::future<int> running = running_p.get_future();
    mp::future<int> cancelled = cancelled_p.get_future();
    mp::future<int> exception = exception_p.get_future();
    mp::future<int> successful = successful_p.get_future();

    states() {
        EXPECT_TRUE(running_p.set_running_or_notify_cancel());
        EXPECT_TRUE(cancelled.cancel());
        EXPECT_TRUE(exception_p.set_exception(std::make_exception_ptr(std::runtime_error("os error"))));
        EXPECT_TRUE(successful_p.set_result(42));
    }
};

// ---- test_future.py ----

TEST(future, done_callback_with_result) {
    promise<int> p;
    auto f = p.get_future();
    int seen = 0;
    f.add_done_callback([&](mp::future<int>& g) { seen = g.get(); });
    EXPECT_EQ(seen, 0);
    p.set_result(5);
    EXPECT_EQ(seen, 5);
}

TEST(future, done_callback_with_exception) {
    promise<int> p;
    auto f = p.get_future();
    std::exception_ptr seen;
    f.add_done_callback([&](mp::future<int>& g) { seen = g.exception(); });
    p.set_exception(std::make_exception_ptr(std::invalid_argument("test")));
    ASSERT_TRUE(seen);
    EXPECT_THROW(std::rethrow_exception(seen), std::invalid_argument);
}

TEST(future, done_callback_with_cancel) {
    promise<int> p;
    auto f = p.get_future();
    bool was_cancelled = false;
    f.add_done_callback([&](mp::future<int>& g) { was_cancelled = g.cancelled(); });
    EXPECT_TRUE(f.cancel());
    EXPECT_TRUE(was_cancelled);
}

TEST(future, raising_done_callback_is_logged_and_the_next_one_still_runs) {
    promise<int> p;
    auto f = p.get_future();
    bool raising_called = false, next_called = false;
    f.add_done_callback([&](mp::future<int>&) {
        raising_called = true;
        throw std::runtime_error("doh!");
    });
    f.add_done_callback([&](mp::future<int>&) { next_called = true; });
    testing::internal::CaptureStderr();
    p.set_result(5);
    std::string err = testing::internal::GetCapturedStderr();
    EXPECT_TRUE(raising_called);
    EXPECT_TRUE(next_called);
    EXPECT_NE(err.find("std::runtime_error: doh!"), std::string::npos) << err;
    EXPECT_EQ(f.get(), 5);
}

TEST(future, done_callback_on_finished_future_runs_at_once) {
    promise<int> p;
    auto f = p.get_future();
    p.set_result(5);
    int seen = 0;
    std::thread::id where;
    f.add_done_callback([&](mp::future<int>& g) {
        seen = g.get();
        where = std::this_thread::get_id();
    });
    EXPECT_EQ(seen, 5);
    EXPECT_EQ(where, std::this_thread::get_id());
}

TEST(future, done_callback_on_failed_future_runs_at_once) {
    promise<int> p;
    auto f = p.get_future();
    p.set_exception(std::make_exception_ptr(std::invalid_argument("test")));
    std::exception_ptr seen;
    f.add_done_callback([&](mp::future<int>& g) { seen = g.exception(); });
    ASSERT_TRUE(seen);
}

TEST(future, done_callback_on_cancelled_future_runs_at_once) {
    promise<int> p;
    auto f = p.get_future();
    EXPECT_TRUE(f.cancel());
    bool was_cancelled = false;
    f.add_done_callback([&](mp::future<int>& g) { was_cancelled = g.cancelled(); });
    EXPECT_TRUE(was_cancelled);
}

TEST(future, raising_done_callback_on_finished_future_is_logged) {
    promise<int> p;
    auto f = p.get_future();
    p.set_result(5);
    testing::internal::CaptureStderr();
    f.add_done_callback([](mp::future<int>&) { throw std::runtime_error("doh!"); });
    std::string err = testing::internal::GetCapturedStderr();
    EXPECT_NE(err.find("done callback"), std::string::npos) << err;
    EXPECT_NE(err.find("doh!"), std::string::npos) << err;
}

TEST(future, done_callback_runs_in_the_completing_thread_in_order) {
    promise<int> p;
    auto f = p.get_future();
    std::vector<int> order;
    std::thread::id where;
    for (int i = 0; i < 3; ++i)
        f.add_done_callback([&, i](mp::future<int>&) {
            order.push_back(i);
            where = std::this_thread::get_id();
        });
    std::thread::id producer;
    std::thread t([&] {
        producer = std::this_thread::get_id();
        p.set_result(1);
    });
    t.join();
    EXPECT_EQ(order, (std::vector<int>{0, 1, 2}));
    EXPECT_EQ(where, producer);
}

TEST(future, cancel_succeeds_only_while_pending) {
    states s;
    EXPECT_TRUE(s.pending.cancel());
    EXPECT_TRUE(s.pending.cancelled());
    EXPECT_FALSE(s.running.cancel());
    EXPECT_TRUE(s.running.running());
    EXPECT_TRUE(s.cancelled.cancel());  // already cancelled: still true
    EXPECT_TRUE(s.cancelled.cancelled());
    EXPECT_FALSE(s.exception.cancel());
    EXPECT_FALSE(s.successful.cancel());
    EXPECT_EQ(s.successful.get(), 42);
}

TEST(future, cancelled) {
    states s;
    EXPECT_FALSE(s.pending.cancelled());
    EXPECT_FALSE(s.running.cancelled());
    EXPECT_TRUE(s.cancelled.cancelled());
    EXPECT_FALSE(s.exception.cancelled());
    EXPECT_FALSE(s.successful.cancelled());
}

TEST(future, done) {
    states s;
    EXPECT_FALSE(s.pending.done());
    EXPECT_FALSE(s.running.done());
    EXPECT_TRUE(s.cancelled.done());
    EXPECT_TRUE(s.exception.done());
    EXPECT_TRUE(s.successful.done());
}

TEST(future, running) {
    states s;
    EXPECT_FALSE(s.pending.running());
    EXPECT_TRUE(s.running.running());
    EXPECT_FALSE(s.cancelled.running());
    EXPECT_FALSE(s.exception.running());
    EXPECT_FALSE(s.successful.running());
}

TEST(future, get_with_zero_timeout) {
    states s;
    EXPECT_THROW((void)s.pending.get(0s), mp::timeout_error);
    EXPECT_THROW((void)s.running.get(0s), mp::timeout_error);
    EXPECT_THROW((void)s.cancelled.get(0s), mp::cancelled_error);
    EXPECT_THROW((void)s.exception.get(0s), std::runtime_error);
    EXPECT_EQ(s.successful.get(0s), 42);
    EXPECT_THROW((void)s.pending.get(-1s), mp::timeout_error);
}

TEST(future, get_waits_for_a_result_from_another_thread) {
    promise<int> p;
    auto f = p.get_future();
    std::thread t([p] { p.set_result(42); });
    EXPECT_EQ(f.get(60s), 42);
    t.join();
}

TEST(future, get_wakes_up_on_cancel_from_another_thread) {
    promise<int> p;
    auto f = p.get_future();
    std::thread t([f] { (void)f.cancel(); });
    EXPECT_THROW((void)f.get(60s), mp::cancelled_error);
    t.join();
}

TEST(future, exception_with_zero_timeout) {
    states s;
    EXPECT_THROW((void)s.pending.exception(0s), mp::timeout_error);
    EXPECT_THROW((void)s.running.exception(0s), mp::timeout_error);
    EXPECT_THROW((void)s.cancelled.exception(0s), mp::cancelled_error);
    auto e = s.exception.exception(0s);
    ASSERT_TRUE(e);
    EXPECT_THROW(std::rethrow_exception(e), std::runtime_error);
    EXPECT_EQ(s.successful.exception(0s), nullptr);
}

TEST(future, exception_waits_for_another_thread) {
    promise<int> p;
    auto f = p.get_future();
    std::thread t([p] { p.set_exception(std::make_exception_ptr(std::out_of_range("x"))); });
    auto e = f.exception(60s);
    ASSERT_TRUE(e);
    EXPECT_THROW(std::rethrow_exception(e), std::out_of_range);
    t.join();
}

TEST(future, a_second_result_is_ignored) {
    promise<int> p;
    auto f = p.get_future();
    EXPECT_TRUE(p.set_result(1));
    EXPECT_FALSE(p.set_result(2));
    EXPECT_FALSE(p.set_exception(std::make_exception_ptr(std::runtime_error("late"))));
    EXPECT_TRUE(f.done());
    EXPECT_EQ(f.get(), 1);
}

TEST(future, a_second_exception_is_ignored) {
    promise<int> p;
    auto f = p.get_future();
    EXPECT_TRUE(p.set_exception(std::make_exception_ptr(std::invalid_argument("first"))));
    EXPECT_FALSE(p.set_exception(std::make_exception_ptr(std::runtime_error("second"))));
    EXPECT_THROW((void)f.get(), std::invalid_argument);
}

TEST(future, a_result_after_cancel_is_ignored) {
    promise<int> p;
    auto f = p.get_future();
    EXPECT_TRUE(f.cancel());
    EXPECT_TRUE(p.cancelled());
    EXPECT_FALSE(p.set_running_or_notify_cancel());
    EXPECT_FALSE(p.set_result(1));
    EXPECT_THROW((void)f.get(), mp::cancelled_error);
}

TEST(future, many_threads_read_one_finished_future) {
    promise<std::string> p;
    auto f = p.get_future();
    p.set_result("hundred");
    std::atomic<int> good{0};
    std::vector<std::thread> ts;
    for (int i = 0; i < 4; ++i)
        ts.emplace_back([&, f] {
            for (int k = 0; k < 1000; ++k)
                if (f.done() && !f.cancelled() && f.get() == "hundred" && !f.exception()) ++good;
        });
    for (auto& t : ts) t.join();
    EXPECT_EQ(good, 4000);
}

TEST(future, many_concurrent_waiters_all_wake) {
    promise<int> p;
    auto f = p.get_future();
    constexpr int n = 8;
    std::latch started(n);
    std::atomic<int> sum{0};
    std::vector<std::thread> ts;
    for (int i = 0; i < n; ++i)
        ts.emplace_back([&, f] {
            started.count_down();
            sum += f.get(60s);
        });
    started.wait();
    p.set_result(3);
    for (auto& t : ts) t.join();
    EXPECT_EQ(sum, 3 * n);
}

TEST(future, copies_share_one_result) {
    promise<int> p;
    auto a = p.get_future();
    mp::future<int> b = a;
    mp::future<int> c;
    c = b;
    EXPECT_TRUE(a == b);
    EXPECT_TRUE(b == c);
    p.set_result(7);
    EXPECT_EQ(c.get(), 7);
}

TEST(future, default_constructed_is_invalid) {
    mp::future<int> f;
    EXPECT_FALSE(f.valid());
    EXPECT_THROW((void)f.get(), mp::error);
    EXPECT_THROW((void)f.done(), mp::error);
    EXPECT_THROW((void)f.cancel(), mp::error);
    EXPECT_THROW(f.wait(), mp::error);
    EXPECT_THROW((void)f.wait_for(1ms), mp::error);
    EXPECT_THROW(f.add_done_callback([](mp::future<int>&) {}), mp::error);
    std::vector<mp::future<int>> fs{f};
    EXPECT_THROW((void)mp::wait(fs), mp::error);
    EXPECT_THROW((void)mp::as_completed(fs), mp::error);
}

TEST(future, void_result) {
    promise<void> p;
    mp::future<void> f = p.get_future();
    bool called = false;
    f.add_done_callback([&](mp::future<void>& g) {
        g.get();
        called = true;
    });
    EXPECT_FALSE(f.wait_for(0s));
    EXPECT_TRUE(p.set_result());
    f.get();
    EXPECT_TRUE(called);
    EXPECT_TRUE(f.successful());
}

TEST(future, set_from_stores_a_result_or_an_exception) {
    promise<int> a, b;
    promise<void> c;
    a.set_from([] { return 6 * 7; });
    b.set_from([]() -> int { throw std::length_error("long"); });
    c.set_from([] {});
    EXPECT_EQ(a.get_future().get(), 42);
    EXPECT_THROW((void)b.get_future().get(), std::length_error);
    c.get_future().get();
}

TEST(future, move_only_producer_values_and_big_values) {
    promise<std::vector<int>> p;
    auto f = p.get_future();
    p.set_result(std::vector<int>(1000, 1));
    EXPECT_EQ(f.get().size(), 1000u);
    EXPECT_EQ(f.get().size(), 1000u);  // get() copies: the result stays
}

TEST(future, async_result_names) {
    promise<int> p;
    mp::async_result<int> r = p.get_future();
    EXPECT_FALSE(r.ready());
    EXPECT_THROW((void)r.successful(), mp::value_error);
    p.set_result(1);
    EXPECT_TRUE(r.ready());
    EXPECT_TRUE(r.successful());

    promise<int> q;
    q.set_exception(std::make_exception_ptr(std::runtime_error("x")));
    EXPECT_FALSE(q.get_future().successful());

    promise<int> c;
    auto cf = c.get_future();
    (void)cf.cancel();
    EXPECT_TRUE(cf.ready());
    EXPECT_FALSE(cf.successful());
}

TEST(future, a_dropped_producer_breaks_the_promise) {
    mp::future<int> f;
    {
        promise<int> p;
        promise<int> copy = p;
        f = p.get_future();
    }
    ASSERT_TRUE(f.done());
    try {
        (void)f.get();
        FAIL() << "no exception";
    } catch (const mp::error& e) {
        EXPECT_NE(std::string(e.what()).find("broken promise"), std::string::npos);
    }
}

TEST(future, a_producer_that_finished_leaves_the_result_alone_when_dropped) {
    mp::future<int> f;
    {
        promise<int> p;
        f = p.get_future();
        p.set_result(3);
    }
    EXPECT_EQ(f.get(), 3);
}

// ---- test_wait.py ----

TEST(wait, first_completed_returns_when_one_finishes) {
    promise<int> p1, p2;
    std::vector<mp::future<int>> fs{p1.get_future(), p2.get_future()};
    std::thread t([p2] { p2.set_result(2); });
    auto [done, not_done] = mp::wait(fs, 60s, mp::return_when::first_completed);
    t.join();
    ASSERT_EQ(done.size(), 1u);
    EXPECT_TRUE(done[0] == fs[1]);
    ASSERT_EQ(not_done.size(), 1u);
    EXPECT_TRUE(not_done[0] == fs[0]);
}

TEST(wait, first_completed_with_some_already_done) {
    states s;
    std::vector<mp::future<int>> fs{s.cancelled, s.successful, s.pending};
    auto [done, not_done] = mp::wait(fs, mp::return_when::first_completed);
    ASSERT_EQ(done.size(), 2u);
    EXPECT_TRUE(done[0] == s.cancelled);
    EXPECT_TRUE(done[1] == s.successful);
    ASSERT_EQ(not_done.size(), 1u);
    EXPECT_TRUE(not_done[0] == s.pending);
}

TEST(wait, first_exception_returns_at_the_first_failure) {
    promise<int> ok, bad, never;
    std::vector<mp::future<int>> fs{ok.get_future(), bad.get_future(), never.get_future()};
    std::thread t([ok, bad] {
        ok.set_result(1);
        bad.set_exception(std::make_exception_ptr(std::runtime_error("x")));
    });
    auto [done, not_done] = mp::wait(fs, 60s, mp::return_when::first_exception);
    t.join();
    EXPECT_EQ(done.size(), 2u);
    ASSERT_EQ(not_done.size(), 1u);
    EXPECT_TRUE(not_done[0] == fs[2]);
}

TEST(wait, first_exception_with_one_already_failed) {
    states s;
    std::vector<mp::future<int>> fs{s.successful, s.cancelled, s.exception, s.pending};
    auto [done, not_done] = mp::wait(fs, mp::return_when::first_exception);
    EXPECT_EQ(done.size(), 3u);
    ASSERT_EQ(not_done.size(), 1u);
    EXPECT_TRUE(not_done[0] == s.pending);
}

TEST(wait, first_exception_without_failures_waits_for_all) {
    promise<int> a, b;
    std::vector<mp::future<int>> fs{a.get_future(), b.get_future()};
    std::thread t([a, b] {
        a.set_result(1);
        b.set_result(2);
    });
    auto [done, not_done] = mp::wait(fs, 60s, mp::return_when::first_exception);
    t.join();
    EXPECT_EQ(done.size(), 2u);
    EXPECT_TRUE(not_done.empty());
}

TEST(wait, cancelled_does_not_count_as_an_exception) {
    states s;
    std::vector<mp::future<int>> fs{s.cancelled, s.pending};
    auto [done, not_done] = mp::wait(fs, 0s, mp::return_when::first_exception);
    EXPECT_EQ(done.size(), 1u);
    EXPECT_EQ(not_done.size(), 1u);
}

TEST(wait, all_completed) {
    states s;
    promise<int> late;
    std::vector<mp::future<int>> fs{s.successful, s.cancelled, s.exception, late.get_future()};
    std::thread t([late] { late.set_result(1); });
    auto [done, not_done] = mp::wait(fs, mp::return_when::all_completed);
    t.join();
    EXPECT_EQ(done.size(), 4u);
    EXPECT_TRUE(not_done.empty());
    auto r = mp::wait(fs);  // the default is all_completed
    EXPECT_EQ(r.done.size(), 4u);
}

TEST(wait, timeout_returns_what_is_done) {
    states s;
    std::vector<mp::future<int>> fs{s.successful, s.exception, s.cancelled, s.pending, s.running};
    auto [done, not_done] = mp::wait(fs, 10ms, mp::return_when::all_completed);
    EXPECT_EQ(done.size(), 3u);
    ASSERT_EQ(not_done.size(), 2u);
    EXPECT_TRUE(not_done[0] == s.pending);
    EXPECT_TRUE(not_done[1] == s.running);
}

TEST(wait, duplicates_count_once) {
    states s;
    std::vector<mp::future<int>> fs{s.successful, s.pending, s.successful, s.pending};
    auto [done, not_done] = mp::wait(fs, 0s);
    EXPECT_EQ(done.size(), 1u);
    EXPECT_EQ(not_done.size(), 1u);
}

TEST(wait, empty_list_returns_at_once) {
    std::vector<mp::future<int>> none;
    for (auto when : {mp::return_when::first_completed, mp::return_when::first_exception,
                      mp::return_when::all_completed}) {
        auto [done, not_done] = mp::wait(none, when);
        EXPECT_TRUE(done.empty());
        EXPECT_TRUE(not_done.empty());
    }
}

TEST(wait, leaves_no_waiter_behind) {
    promise<int> p;
    std::vector<mp::future<int>> fs{p.get_future()};
    for (int i = 0; i < 100; ++i) (void)mp::wait(fs, 0s);
    // The waiters were removed: completing the future notifies nobody.
    p.set_result(1);
    EXPECT_EQ(fs[0].get(), 1);
}

TEST(wait, many_watchers_at_once) {
    promise<int> p;
    std::vector<mp::future<int>> fs{p.get_future()};
    constexpr int n = 6;
    std::latch started(n);
    std::atomic<int> woke{0};
    std::vector<std::thread> ts;
    for (int i = 0; i < n; ++i)
        ts.emplace_back([&] {
            started.count_down();
            auto r = mp::wait(fs, 60s, mp::return_when::first_completed);
            if (r.done.size() == 1) ++woke;
        });
    started.wait();
    p.set_result(1);
    for (auto& t : ts) t.join();
    EXPECT_EQ(woke, n);
}

// ---- test_as_completed.py ----

TEST(as_completed, yields_done_futures_first_then_in_completion_order) {
    states s;
    promise<int> a, b;
    std::vector<mp::future<int>> fs{s.cancelled, a.get_future(), s.exception, b.get_future(), s.successful};
    std::vector<mp::future<int>> seen;
    std::thread t;
    for (auto& f : mp::as_completed(fs, 60s)) {
        seen.push_back(f);
        if (seen.size() == 3) {
            // Finish b, then a, from another thread, one after the other.
            t = std::thread([a, b] {
                b.set_result(2);
                a.set_result(1);
            });
        }
    }
    t.join();
    ASSERT_EQ(seen.size(), 5u);
    EXPECT_TRUE(seen[0] == s.cancelled);
    EXPECT_TRUE(seen[1] == s.exception);
    EXPECT_TRUE(seen[2] == s.successful);
    EXPECT_TRUE(seen[3] == fs[3]);
    EXPECT_TRUE(seen[4] == fs[1]);
}

TEST(as_completed, times_out_with_unfinished_futures) {
    states s;
    std::vector<mp::future<int>> fs{s.cancelled, s.exception, s.successful, s.pending};
    std::vector<mp::future<int>> seen;
    try {
        for (auto& f : mp::as_completed(fs, 10ms)) seen.push_back(f);
        FAIL() << "no timeout";
    } catch (const mp::timeout_error& e) {
        EXPECT_NE(std::string(e.what()).find("1 (of 4) futures unfinished"), std::string::npos) << e.what();
    }
    EXPECT_EQ(seen.size(), 3u);
}

TEST(as_completed, zero_timeout_yields_what_is_done) {
    states s;
    std::vector<mp::future<int>> fs{s.successful, s.exception, s.cancelled};
    int n = 0;
    for (auto& f : mp::as_completed(fs, 0s)) {
        EXPECT_TRUE(f.done());
        ++n;
    }
    EXPECT_EQ(n, 3);
}

TEST(as_completed, duplicate_futures_are_yielded_once) {
    promise<int> a;
    states s;
    std::vector<mp::future<int>> fs{a.get_future(), a.get_future(), s.successful, s.successful};
    a.set_result(1);
    int n = 0;
    for (auto& f : mp::as_completed(fs)) {
        (void)f.get();
        ++n;
    }
    EXPECT_EQ(n, 2);
}

TEST(as_completed, empty_list) {
    std::vector<mp::future<int>> none;
    int n = 0;
    for (auto& f : mp::as_completed(none, 0s)) {
        (void)f;
        ++n;
    }
    EXPECT_EQ(n, 0);
}

TEST(as_completed, does_not_keep_yielded_futures) {
    // CPython's test_free_reference_yielded_future: once the caller lets go
    // of a yielded future, the range does not keep it (or its value) alive.
    std::weak_ptr<int> watch;
    auto a = std::make_unique<promise<std::shared_ptr<int>>>();
    promise<std::shared_ptr<int>> b;
    std::vector<mp::future<std::shared_ptr<int>>> fs{a->get_future(), b.get_future()};
    {
        auto payload = std::make_shared<int>(1);
        watch = payload;
        a->set_result(std::move(payload));
    }
    b.set_result(nullptr);
    int n = 0;
    for (auto& f : mp::as_completed(fs)) {
        if (n++ == 0) {
            EXPECT_FALSE(watch.expired());
            fs.clear();
            a.reset();
        } else {
            EXPECT_TRUE(f.get() == nullptr);
            EXPECT_TRUE(watch.expired());
        }
    }
    EXPECT_EQ(n, 2);
}

TEST(as_completed, works_with_void_futures_and_mp_wait_together) {
    promise<void> a, b;
    std::vector<mp::future<void>> fs{a.get_future(), b.get_future()};
    std::thread t([a, b] {
        a.set_result();
        b.set_result();
    });
    int n = 0;
    for (auto& f : mp::as_completed(fs, 60s)) {
        f.get();
        ++n;
    }
    t.join();
    EXPECT_EQ(n, 2);
    EXPECT_EQ(mp::wait(fs, 0s).done.size(), 2u);
}

}  // namespace
