// Every timed call and timeout option takes any std::chrono::duration:
// q.get(0.5s), p.join(1500ms), conn.poll(0.1s), {.timeout = 1.5s}. Each form
// below must compile (the point of this file) and behave (a timeout that
// passes reports it; one that does not, does not).
#include "mp/timeout.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <vector>

#include "mp/mp.hpp"

using namespace std::chrono_literals;

namespace {

using base = std::chrono::steady_clock::duration;

TEST(TimeoutDuration, ConvertsAnyDurationRoundingUp) {
    static_assert(std::is_convertible_v<decltype(0.5s), mp::timeout_duration>);
    static_assert(std::is_convertible_v<std::chrono::minutes, mp::timeout_duration>);
    static_assert(std::is_convertible_v<std::chrono::duration<float, std::milli>, mp::timeout_duration>);
    static_assert(!std::is_convertible_v<int, mp::timeout_duration>);
    EXPECT_EQ(base(mp::timeout_duration(0.5s)), base(500ms));
    EXPECT_EQ(base(mp::timeout_duration(1500ms)), base(1500ms));
    EXPECT_EQ(base(mp::timeout_duration(2min)), base(120s));
    // A third of a nanosecond is not zero: a timeout never ends early.
    EXPECT_EQ(base(mp::timeout_duration(std::chrono::duration<double, std::nano>(0.3))), base(1ns));
    EXPECT_EQ(base(mp::timeout_duration()), base::zero());
}

TEST(TimeoutDuration, SaturatesInsteadOfOverflowing) {
    EXPECT_EQ(base(mp::timeout_duration(std::chrono::hours::max())), base::max());
    EXPECT_EQ(base(mp::timeout_duration(std::chrono::duration<double>(1e300))), base::max());
    EXPECT_EQ(base(mp::timeout_duration(std::chrono::hours::min())), base::min());
    EXPECT_LT(base(mp::timeout_duration(-1s)), base::zero());
}

void wait_for_event(mp::event go) { go.wait(); }

TEST(TimedCalls, QueueTakesAnyDuration) {
    mp::queue<int> q;
    EXPECT_THROW((void)q.get(0.01s), mp::queue_empty);
    EXPECT_THROW((void)q.get(std::chrono::duration<float, std::milli>(5.f)), mp::queue_empty);
    q.put(1, 1500ms);
    q.put(2, 0.5s);
    EXPECT_EQ(q.get(1.5s), 1);
    EXPECT_EQ(q.get(std::chrono::minutes(1)), 2);

    mp::joinable_queue<int> jq;
    jq.put(3);
    EXPECT_FALSE(jq.join(0.01s));
    EXPECT_EQ(jq.get(), 3);
    jq.task_done();
    EXPECT_TRUE(jq.join(10.0s));
}

TEST(TimedCalls, ProcessJoinTakesAnyDuration) {
    mp::event go;
    mp::process p({.context = mp::get_context(mp::start_method::fork)}, wait_for_event, go);
    p.start();
    EXPECT_FALSE(p.join(0.02s));
    EXPECT_FALSE(p.join(20ms));
    go.set();
    EXPECT_TRUE(p.join(std::chrono::duration<double>(60.0)));
    EXPECT_EQ(p.exitcode(), 0);
}

TEST(TimedCalls, ConnectionTakesAnyDuration) {
    auto [a, b] = mp::pipe();
    EXPECT_FALSE(b.poll(0.01s));
    EXPECT_TRUE(mp::wait(std::vector<mp::connection>{b}, 0.01s).empty());
    EXPECT_TRUE(mp::wait(std::vector<int>{b.fileno()}, 10ms).empty());
    EXPECT_THROW((void)b.recv<int>(0.01s), mp::timeout_error);
    a.send(7);
    EXPECT_TRUE(b.poll(10.0s));
    EXPECT_EQ(mp::wait(std::vector<mp::connection>{b}, 1.5s).size(), 1u);
    EXPECT_EQ(b.recv<int>(2.5s), 7);
}

TEST(TimedCalls, SynchronizationTakesAnyDuration) {
    mp::lock l;
    EXPECT_TRUE(l.acquire(0.5s));
    l.release();
    mp::semaphore s(0);
    EXPECT_FALSE(s.acquire(0.01s));
    mp::event e;
    EXPECT_FALSE(e.wait(0.01s));
    e.set();
    EXPECT_TRUE(e.wait(1500ms));
}

int twice(int x) { return 2 * x; }

TEST(TimedCalls, FuturesAndExecutorOptionsTakeAnyDuration) {
    mp::thread_pool_executor tx(2);
    mp::future<int> f = tx.submit(twice, 4);
    EXPECT_EQ(f.get(2.5s), 8);
    std::vector<mp::future<int>> fs{tx.submit(twice, 1), tx.submit(twice, 2)};
    auto done = mp::wait(fs, 10.0s);
    EXPECT_EQ(done.done.size(), 2u);
    int sum = 0;
    for (auto& g : mp::as_completed(fs, 10.0s)) sum += g.get();
    EXPECT_EQ(sum, 6);
    int mapped = 0;
    for (int y : tx.map(twice, std::vector{1, 2, 3}, {.timeout = 30.5s})) mapped += y;
    EXPECT_EQ(mapped, 12);

    mp::process_pool_executor ex({.max_workers = 1, .context = mp::get_context(mp::start_method::fork)});
    EXPECT_EQ(ex.submit_with({.timeout = 30.5s}, twice, 5).get(), 10);
    int total = 0;
    for (int y : ex.map(twice, std::vector{1, 2}, {.timeout = 1min, .chunksize = 1})) total += y;
    EXPECT_EQ(total, 6);

    mp::pool pool({.processes = 1, .context = mp::get_context(mp::start_method::fork)});
    EXPECT_EQ(pool.submit_with({.timeout = 2.5min}, twice, 6).get(), 12);
}

TEST(TimedCalls, ManagerOptionsAndProxiesTakeAnyDuration) {
    mp::manager_options options{.handshake_timeout = 2.5s};
    EXPECT_EQ(base(options.handshake_timeout), base(2500ms));
    // The manager's queue proxy: the forms compile (a manager is not started here).
    static_assert(requires(mp::queue_proxy<int> q) {
        q.put(1, 0.5s);
        q.get(1500ms);
    });
}

}  // namespace
