// mp::queue, simple_queue, joinable_queue across processes under every start
// method: order, the seed's deadlock, dead producers and consumers, bounds.
#include "mp/queue.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <set>
#include <thread>

#include "mp/process.hpp"

using namespace std::chrono_literals;

namespace {

class queue_test : public testing::TestWithParam<mp::start_method> {
protected:
    mp::process_options opts() { return {.context = mp::get_context(GetParam())}; }
};

void put_range(mp::queue<int> q, int from, int to) {
    for (int i = from; i < to; ++i) q.put(i);
}

void put_big_string(mp::queue<std::string> q) { q.put(std::string(1'000'000, 'X')); }

void put_big_vector(mp::queue<std::vector<double>> q, std::size_t n) {
    std::vector<double> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<double>(i);
    q.put(v);
}

// An item whose loading hangs in a consumer that asked for it: lets a test
// kill a consumer in the middle of get().
std::atomic<bool> hang_while_loading{false};
struct sticky {
    int value = 0;
    template <class Archive>
    void save(Archive& ar) const {
        ar(value);
    }
    template <class Archive>
    void load(Archive& ar) {
        ar(value);
        while (hang_while_loading) ::pause();
    }
};

void hanging_consumer(mp::queue<sticky> q, mp::queue<int> started) {
    hang_while_loading = true;
    started.put(1);
    (void)q.get();
}

void consume_and_mark_done(mp::joinable_queue<int> q, mp::queue<int> out) {
    for (;;) {
        int v = q.get();
        if (v < 0) {
            q.task_done();
            return;
        }
        out.put(v * 10);
        q.task_done();
    }
}

}  // namespace

TEST_P(queue_test, items_from_a_child_arrive_in_order) {
    mp::queue<int> q;
    mp::process p(opts(), put_range, q, 0, 10000);
    p.start();
    for (int i = 0; i < 10000; ++i) ASSERT_EQ(q.get(10s), i);
    p.join();
    EXPECT_TRUE(q.empty());
}

TEST_P(queue_test, the_seeds_deadlock_example_completes) {
    // Python: the child's feeder thread blocks until the parent reads, and the
    // parent joins first: deadlock. Here the item is already in shared memory.
    mp::queue<std::string> q;
    mp::process p(opts(), put_big_string, q);
    p.start();
    p.join();
    EXPECT_EQ(p.exitcode(), 0);
    EXPECT_EQ(q.get(10s), std::string(1'000'000, 'X'));
}

TEST_P(queue_test, producers_may_exit_before_anyone_reads) {
    mp::queue<int> q;
    std::vector<mp::process> producers;
    for (int k = 0; k < 3; ++k) producers.emplace_back(opts(), put_range, q, k * 1000, (k + 1) * 1000);
    for (auto& p : producers) p.start();
    for (auto& p : producers) p.join();
    EXPECT_EQ(q.size(), 3000u);
    std::set<int> seen;
    for (int i = 0; i < 3000; ++i) seen.insert(q.get(1s));
    EXPECT_EQ(seen.size(), 3000u);
    EXPECT_EQ(*seen.rbegin(), 2999);
}

TEST_P(queue_test, a_large_item_arrives_whole) {
    mp::queue<std::vector<double>> q;
    const std::size_t n = 4 << 20;  // 32 MiB
    mp::process p(opts(), put_big_vector, q, n);
    p.start();
    auto v = q.get(30s);
    p.join();
    ASSERT_EQ(v.size(), n);
    for (std::size_t i = 0; i < n; i += 1021) ASSERT_EQ(v[i], static_cast<double>(i));
}

TEST_P(queue_test, a_consumer_killed_inside_get_loses_nothing_else) {
    mp::queue<sticky> q;
    mp::queue<int> started;
    for (int i = 0; i < 5; ++i) q.put(sticky{i});
    mp::process p(opts(), hanging_consumer, q, started);
    p.start();
    EXPECT_EQ(started.get(10s), 1);
    // Wait until the child holds the consumers' lock, inside get().
    std::this_thread::sleep_for(100ms);
    p.kill();
    p.join();
    // The item it was reading was never taken out: all five are still there.
    for (int i = 0; i < 5; ++i) EXPECT_EQ(q.get(10s).value, i);
    q.put(sticky{99});
    EXPECT_EQ(q.get(1s).value, 99);
}

TEST_P(queue_test, joinable_queue_join_waits_for_task_done) {
    mp::joinable_queue<int> q;
    mp::queue<int> out;
    mp::process p(opts(), consume_and_mark_done, q, out);
    p.start();
    for (int i = 1; i <= 100; ++i) q.put(i);
    q.put(-1);
    q.join();
    EXPECT_EQ(out.size(), 100u);
    p.join();
    EXPECT_THROW(q.task_done(), mp::value_error);
}

INSTANTIATE_TEST_SUITE_P(each_start_method, queue_test,
                         testing::Values(mp::start_method::fork, mp::start_method::spawn,
                                         mp::start_method::forkserver),
                         [](const auto& info) { return std::string(mp::to_string(info.param)); });

TEST(queue, timeouts_and_non_blocking_calls) {
    mp::queue<int> q;
    EXPECT_THROW((void)q.get(10ms), mp::queue_empty);
    EXPECT_EQ(q.try_get(), std::nullopt);
    EXPECT_THROW((void)q.get_nowait(), mp::queue_empty);
    q.put(3);
    EXPECT_EQ(q.size(), 1u);
    EXPECT_EQ(q.get_nowait(), 3);
}

TEST(queue, a_bounded_queue_refuses_when_full) {
    mp::queue<int> q(2);
    EXPECT_EQ(q.maxsize(), 2u);
    q.put(1);
    EXPECT_TRUE(q.try_put(2));
    EXPECT_TRUE(q.full());
    EXPECT_FALSE(q.try_put(3));
    EXPECT_THROW(q.put(3, 10ms), mp::queue_full);
    EXPECT_THROW(q.put_nowait(3), mp::queue_full);
    std::thread consumer([&] {
        std::this_thread::sleep_for(20ms);
        (void)q.get();
    });
    q.put(3);  // waits for the consumer to make room
    consumer.join();
    EXPECT_EQ(q.get(), 2);
    EXPECT_EQ(q.get(), 3);
}

TEST(queue, a_closed_handle_refuses_puts_and_gets) {
    mp::queue<int> q;
    auto other = q;
    q.put(1);
    q.close();
    EXPECT_THROW(q.put(2), mp::closed_error);
    EXPECT_THROW((void)q.get(), mp::closed_error);
    EXPECT_EQ(other.get(), 1);
}

TEST(queue, simple_queue_puts_and_gets) {
    mp::simple_queue<std::string> q;
    EXPECT_TRUE(q.empty());
    q.put("a");
    EXPECT_FALSE(q.empty());
    EXPECT_EQ(q.get(), "a");
}

TEST(queue, many_threads_put_and_get_everything_exactly_once) {
    mp::queue<int> q;
    constexpr int producers = 4, consumers = 3, each = 5000;
    std::vector<std::thread> threads;
    std::atomic<long> sum{0};
    std::atomic<int> got{0};
    for (int p = 0; p < producers; ++p)
        threads.emplace_back([&, p] {
            for (int i = 0; i < each; ++i) q.put(p * each + i);
        });
    for (int c = 0; c < consumers; ++c)
        threads.emplace_back([&] {
            while (got.fetch_add(1) < producers * each) sum += q.get();
        });
    for (auto& t : threads) t.join();
    long n = producers * each;
    EXPECT_EQ(sum.load(), n * (n - 1) / 2);
}

TEST(queue, memory_is_given_back_as_the_queue_drains) {
    // Push far more than the warm window through the queue; it must keep
    // working across the jumps back to the start of its region.
    mp::queue<std::string> q;
    std::string item(100'000, 'q');
    for (int round = 0; round < 5; ++round) {
        for (int i = 0; i < 100; ++i) q.put(item);
        for (int i = 0; i < 100; ++i) ASSERT_EQ(q.get().size(), item.size());
    }
}
