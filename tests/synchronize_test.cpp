// mp::lock, rlock, semaphore, bounded_semaphore, condition, event and barrier,
// between threads and between real processes under every start method.
// Timeouts here are only upper bounds that stop a broken build from hanging;
// no test is decided by how long something took.
#include "mp/synchronize.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "mp/process.hpp"
#include "mp/queue.hpp"
#include "mp/value.hpp"
#include "sys/memory.hpp"

using namespace std::chrono_literals;

namespace {

constexpr auto patience = 20s;  // upper bound for anything that should happen

class sync_test : public testing::TestWithParam<mp::start_method> {
protected:
    mp::process_options opts() { return {.context = mp::get_context(GetParam())}; }
};

void join_ok(mp::process& p) {
    ASSERT_TRUE(p.join(patience));
    EXPECT_EQ(p.exitcode(), 0);
}

[[noreturn]] void sleep_forever() {
    for (;;) ::pause();
}

// ---- lock ---------------------------------------------------------------------

void lock_prober(mp::lock lk, mp::queue<int> q) {
    q.put(lk.try_lock() ? 1 : 0);  // the parent holds it: must fail
    std::lock_guard guard(lk);      // blocks until the parent releases
    q.put(2);
}

TEST_P(sync_test, a_lock_passed_to_a_child_excludes_the_parent) {
    mp::lock lk;
    mp::queue<int> q;
    lk.lock();
    mp::process p(opts(), lock_prober, lk, q);
    p.start();
    EXPECT_EQ(q.get(patience), 0);
    EXPECT_FALSE(q.try_get().has_value());  // still blocked behind us
    lk.unlock();
    EXPECT_EQ(q.get(patience), 2);
    join_ok(p);
    EXPECT_TRUE(lk.try_lock());
    lk.unlock();
}

void hold_lock_forever(mp::lock lk, mp::queue<int> q) {
    lk.lock();
    q.put(1);
    sleep_forever();
}

TEST_P(sync_test, a_lock_whose_holder_is_killed_is_recovered_and_says_so) {
    mp::lock lk;
    mp::queue<int> q;
    mp::process p(opts(), hold_lock_forever, lk, q);
    p.start();
    ASSERT_EQ(q.get(patience), 1);
    EXPECT_FALSE(lk.try_lock());
    p.kill();
    ASSERT_TRUE(p.join(patience));
    EXPECT_EQ(p.exitcode(), -9);

    ASSERT_TRUE(lk.acquire(patience));
    EXPECT_TRUE(lk.owner_died());
    lk.release();
    ASSERT_TRUE(lk.acquire(patience));
    EXPECT_FALSE(lk.owner_died());  // a normal hand-over clears it
    lk.release();
}

void hold_rlock_forever(mp::rlock lk, mp::queue<int> q) {
    lk.lock();
    lk.lock();
    q.put(1);
    sleep_forever();
}

TEST_P(sync_test, an_rlock_whose_holder_is_killed_is_recovered_at_depth_one) {
    mp::rlock lk;
    mp::queue<int> q;
    mp::process p(opts(), hold_rlock_forever, lk, q);
    p.start();
    ASSERT_EQ(q.get(patience), 1);
    p.kill();
    ASSERT_TRUE(p.join(patience));
    ASSERT_TRUE(lk.acquire(patience));
    EXPECT_TRUE(lk.owner_died());
    lk.release();
    EXPECT_THROW(lk.release(), mp::lock_error);
}

void rlock_prober(mp::rlock lk, mp::queue<int> q) {
    q.put(lk.try_lock() ? 1 : 0);
    lk.lock();
    q.put(2);
    lk.unlock();
}

TEST_P(sync_test, an_rlock_is_held_until_released_as_often_as_acquired) {
    mp::rlock lk;
    mp::queue<int> q;
    lk.lock();
    lk.lock();
    ASSERT_TRUE(lk.try_lock());
    mp::process p(opts(), rlock_prober, lk, q);
    p.start();
    EXPECT_EQ(q.get(patience), 0);
    lk.unlock();
    lk.unlock();
    EXPECT_FALSE(q.try_get().has_value());
    lk.unlock();
    EXPECT_EQ(q.get(patience), 2);
    join_ok(p);
}

// ---- semaphore ----------------------------------------------------------------------

void release_semaphore(mp::semaphore s, std::uint32_t n) { s.release(n); }

TEST_P(sync_test, a_semaphore_counts_releases_from_another_process) {
    mp::semaphore s(0);
    EXPECT_FALSE(s.acquire(false));
    mp::process p(opts(), release_semaphore, s, 3u);
    p.start();
    for (int i = 0; i < 3; ++i) EXPECT_TRUE(s.acquire(patience));
    join_ok(p);
    EXPECT_EQ(s.get_value(), 0u);
    EXPECT_FALSE(s.acquire(1ms));
}

void take_one(mp::semaphore s, mp::queue<int> q) {
    q.put(s.acquire(patience) ? 1 : 0);
}

TEST_P(sync_test, a_semaphore_wakes_as_many_sleepers_as_released) {
    mp::semaphore s(0);
    mp::queue<int> q;
    std::vector<std::unique_ptr<mp::process>> ps;
    for (int i = 0; i < 3; ++i) {
        ps.push_back(std::make_unique<mp::process>(opts(), take_one, s, q));
        ps.back()->start();
    }
    s.release(3);
    int got = 0;
    for (int i = 0; i < 3; ++i) got += q.get(patience);
    EXPECT_EQ(got, 3);
    for (auto& p : ps) join_ok(*p);
}

TEST(semaphore, a_bounded_semaphore_refuses_to_go_above_its_initial_value) {
    mp::bounded_semaphore b(2);
    EXPECT_THROW(b.release(), mp::value_error);
    ASSERT_TRUE(b.acquire());
    b.release();
    ASSERT_TRUE(b.acquire());
    ASSERT_TRUE(b.acquire());
    EXPECT_THROW(b.release(3), mp::value_error);
    EXPECT_EQ(b.get_value(), 0u);
    b.release(2);
    EXPECT_EQ(b.get_value(), 2u);

    mp::semaphore plain(1);
    plain.release(5);
    EXPECT_EQ(plain.get_value(), 6u);
}

TEST(semaphore, is_lockable) {
    mp::semaphore s(1);
    {
        std::lock_guard guard(s);
        EXPECT_EQ(s.get_value(), 0u);
    }
    EXPECT_EQ(s.get_value(), 1u);
}

// ---- condition -----------------------------------------------------------------------

void wait_for_flag(mp::condition c, mp::value<int> flag, mp::queue<int> q) {
    std::unique_lock guard(c);
    q.put(1);  // we hold the lock: the parent's notify cannot come before our wait
    bool ok = c.wait_for([&] { return flag.get() == 1; }, patience);
    q.put(ok ? 2 : 0);
}

TEST_P(sync_test, a_condition_notify_wakes_a_waiting_process) {
    mp::condition c;
    mp::value<int> flag(0);
    mp::queue<int> q;
    mp::process p(opts(), wait_for_flag, c, flag, q);
    p.start();
    ASSERT_EQ(q.get(patience), 1);
    {
        std::lock_guard guard(c);
        flag.set(1);
        c.notify();
    }
    EXPECT_EQ(q.get(patience), 2);
    join_ok(p);
}

void wait_on_plain_lock(mp::condition c, mp::value<int> flag, mp::queue<int> q) {
    c.acquire();
    q.put(1);
    while (flag.get() == 0)
        if (!c.wait(patience)) break;
    q.put(flag.get() == 1 ? 2 : 0);
    c.release();
}

TEST_P(sync_test, a_condition_over_a_plain_lock_notify_all_wakes_every_process) {
    mp::lock lk;
    mp::condition c(lk);
    mp::value<int> flag(0, mp::no_lock);
    mp::queue<int> q;
    std::vector<std::unique_ptr<mp::process>> ps;
    for (int i = 0; i < 3; ++i) {
        ps.push_back(std::make_unique<mp::process>(opts(), wait_on_plain_lock, c, flag, q));
        ps.back()->start();
    }
    for (int i = 0; i < 3; ++i) ASSERT_EQ(q.get(patience), 1);
    {
        std::lock_guard guard(lk);  // the same lock the condition uses
        flag.set(1);
        c.notify_all();
    }
    for (int i = 0; i < 3; ++i) EXPECT_EQ(q.get(patience), 2);
    for (auto& p : ps) join_ok(*p);
}

TEST(condition, wait_keeps_the_rlock_depth_and_times_out) {
    mp::condition c;  // over a new rlock
    c.acquire();
    c.acquire();
    EXPECT_FALSE(c.wait(1ms));
    // Still held twice: two releases succeed, a third does not.
    c.release();
    c.release();
    EXPECT_THROW(c.release(), mp::lock_error);
}

TEST(condition, needs_its_lock_held) {
    mp::condition c;
    EXPECT_THROW((void)c.wait(1ms), mp::lock_error);
    EXPECT_THROW(c.notify(), mp::lock_error);
}

TEST(condition, notify_wakes_a_waiting_thread) {
    mp::condition c;
    int stage = 0;  // guarded by c
    std::thread t([&] {
        std::unique_lock guard(c);
        stage = 1;
        c.notify_all();
        c.wait_for([&] { return stage == 2; }, patience);
        stage = 3;
        c.notify_all();
    });
    {
        std::unique_lock guard(c);
        ASSERT_TRUE(c.wait_for([&] { return stage == 1; }, patience));
        stage = 2;
        c.notify_all();
        EXPECT_TRUE(c.wait_for([&] { return stage == 3; }, patience));
    }
    t.join();
}

// ---- event ---------------------------------------------------------------------------

void wait_then_set(mp::event go, mp::event done, mp::queue<int> q) {
    q.put(go.wait(patience) ? 1 : 0);
    done.set();
}

TEST_P(sync_test, an_event_is_seen_across_processes_both_ways) {
    mp::event go, done;
    mp::queue<int> q;
    mp::process p(opts(), wait_then_set, go, done, q);
    p.start();
    EXPECT_FALSE(done.is_set());
    go.set();
    EXPECT_EQ(q.get(patience), 1);
    EXPECT_TRUE(done.wait(patience));
    join_ok(p);
}

TEST(event, set_clear_and_timed_wait) {
    mp::event e;
    EXPECT_FALSE(e.is_set());
    EXPECT_FALSE(e.wait(1ms));
    e.set();
    e.set();
    EXPECT_TRUE(e.is_set());
    EXPECT_TRUE(e.wait(0ms));
    EXPECT_TRUE(e.wait());
    e.clear();
    EXPECT_FALSE(e.is_set());
    EXPECT_FALSE(e.wait(1ms));
}

TEST(event, wakes_many_threads) {
    mp::event e;
    std::atomic<int> woke{0};
    std::vector<std::thread> ts;
    for (int i = 0; i < 4; ++i) ts.emplace_back([&] { woke += e.wait(patience) ? 1 : 0; });
    e.set();
    for (auto& t : ts) t.join();
    EXPECT_EQ(woke.load(), 4);
}

// ---- barrier -------------------------------------------------------------------------

void arrive(mp::barrier b, mp::queue<int> q) {
    try {
        q.put(static_cast<int>(b.wait(patience)));
    } catch (const mp::broken_barrier_error&) {
        q.put(-1);
    }
}

TEST_P(sync_test, a_barrier_releases_all_parties_with_distinct_indexes) {
    mp::barrier b(4);
    mp::queue<int> q;
    std::vector<std::unique_ptr<mp::process>> ps;
    for (int i = 0; i < 3; ++i) {
        ps.push_back(std::make_unique<mp::process>(opts(), arrive, b, q));
        ps.back()->start();
    }
    std::set<int> indexes{static_cast<int>(b.wait(patience))};
    for (int i = 0; i < 3; ++i) indexes.insert(q.get(patience));
    EXPECT_EQ(indexes, (std::set<int>{0, 1, 2, 3}));
    for (auto& p : ps) join_ok(*p);
    EXPECT_FALSE(b.broken());
    EXPECT_EQ(b.n_waiting(), 0u);
}

void arrive_and_time_out(mp::barrier b, mp::queue<int> q) {
    try {
        (void)b.wait(50ms);
        q.put(0);
    } catch (const mp::broken_barrier_error&) {
        q.put(-1);
    }
}

TEST_P(sync_test, a_barrier_wait_that_times_out_breaks_it_for_everyone) {
    mp::barrier b(3);  // three parties, only two ever come
    mp::queue<int> q;
    mp::process p(opts(), arrive_and_time_out, b, q);
    p.start();
    EXPECT_THROW((void)b.wait(patience), mp::broken_barrier_error);
    EXPECT_EQ(q.get(patience), -1);
    join_ok(p);
    EXPECT_TRUE(b.broken());
    EXPECT_THROW((void)b.wait(1ms), mp::broken_barrier_error);
    b.reset();
    EXPECT_FALSE(b.broken());
}

std::atomic<int> action_runs{0};
void count_action() { ++action_runs; }

TEST(barrier, runs_its_action_once_per_round_and_is_reusable) {
    action_runs = 0;
    mp::barrier b(3, count_action);
    EXPECT_EQ(b.parties(), 3u);
    for (int round = 0; round < 3; ++round) {
        std::vector<std::thread> ts;
        std::atomic<int> index_sum{0};
        for (int i = 0; i < 3; ++i) ts.emplace_back([&] { index_sum += static_cast<int>(b.wait(patience)); });
        for (auto& t : ts) t.join();
        EXPECT_EQ(index_sum.load(), 0 + 1 + 2);
    }
    EXPECT_EQ(action_runs.load(), 3);
}

TEST(barrier, abort_breaks_waiters) {
    mp::barrier b(2);
    std::thread t([&] { EXPECT_THROW((void)b.wait(patience), mp::broken_barrier_error); });
    while (b.n_waiting() == 0) std::this_thread::sleep_for(1ms);
    b.abort();
    t.join();
    EXPECT_TRUE(b.broken());
    EXPECT_THROW(mp::barrier(0), mp::value_error);
}

// ---- locks between threads, misuse -----------------------------------------------------

TEST(lock, excludes_threads_and_meets_lockable) {
    mp::lock lk;
    long total = 0;  // guarded by lk
    std::vector<std::thread> ts;
    for (int i = 0; i < 4; ++i)
        ts.emplace_back([&] {
            for (int k = 0; k < 20000; ++k) {
                std::lock_guard guard(lk);
                ++total;
            }
        });
    for (auto& t : ts) t.join();
    EXPECT_EQ(total, 80000);

    std::unique_lock timed(lk, std::defer_lock);
    EXPECT_TRUE(timed.try_lock_for(10ms));
    std::thread other([&] {
        EXPECT_FALSE(lk.try_lock());
        EXPECT_FALSE(lk.acquire(1ms));
        EXPECT_FALSE(lk.try_lock_until(std::chrono::system_clock::now() + 1ms));
    });
    other.join();
}

TEST(lock, misuse_throws_instead_of_corrupting) {
    mp::lock lk;
    EXPECT_THROW(lk.release(), mp::lock_error);  // not held
    lk.lock();
    EXPECT_THROW(lk.lock(), mp::lock_error);     // held by us: a certain deadlock
    EXPECT_FALSE(lk.try_lock());
    EXPECT_FALSE(lk.acquire(1ms));
    std::thread other([&] { EXPECT_THROW(lk.unlock(), mp::lock_error); });
    other.join();
    EXPECT_TRUE(lk.is_owned());
    lk.unlock();
    EXPECT_FALSE(lk.is_owned());
}

TEST(lock, copies_are_the_same_lock) {
    mp::lock a;
    mp::lock b = a;
    mp::lock c;
    EXPECT_TRUE(a == b);
    EXPECT_FALSE(a == c);
    a.lock();
    std::thread t([&] { EXPECT_FALSE(b.try_lock()); });
    t.join();
    a.unlock();
}

INSTANTIATE_TEST_SUITE_P(each_start_method, sync_test,
                         testing::Values(mp::start_method::fork, mp::start_method::spawn,
                                         mp::start_method::forkserver),
                         [](const auto& info) { return std::string(mp::to_string(info.param)); });

}  // namespace

TEST(synchronize, full_shared_memory_is_an_error_when_an_object_is_made) {
    // Issue 11.4: objects live in memfds sized with ftruncate only; with shared
    // memory full, the first write into one died of SIGBUS. Simulated full:
    // no reservation succeeds.
    mp::sys::test_hooks::fail_reservations_over = 0;
    auto expect_full = [](auto make, const char* what) {
        try {
            make();
            ADD_FAILURE() << what << " was made in full shared memory";
        } catch (const mp::system_error& e) {
            EXPECT_EQ(e.code().value(), ENOSPC) << what;
            EXPECT_NE(std::string(e.what()).find("--shm-size"), std::string::npos) << e.what();
        }
    };
    expect_full([] { mp::lock l; }, "mp::lock");
    expect_full([] { mp::event e; }, "mp::event");
    expect_full([] { mp::value<int> v(1); }, "mp::value");
    expect_full([] { mp::array<double> a(1000); }, "mp::array");
    expect_full([] { mp::queue<int> q; }, "mp::queue");
    mp::sys::test_hooks::fail_reservations_over = SIZE_MAX;
    mp::lock l;
    std::lock_guard guard(l);
    mp::value<int> v(3);
    EXPECT_EQ(v.get(), 3);
}
