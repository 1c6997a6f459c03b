// mp::queue (unbounded): a large item in one piece (a vector or string of at
// least 1 MiB) is written in pieces, and a consumer waiting for it copies
// each piece while the producer writes the next. The item is still taken
// only once it is stamped: a producer killed in the middle loses that item
// only, and a consumer killed in the middle takes nothing.
//
// The producer and the consumer meet through a pipe at the test hooks
// (src/queue_hooks.hpp): the producer stops after its first piece until the
// consumer has copied it, so that the copy while written is what happens,
// whatever the machine's load.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "mp/connection.hpp"
#include "mp/process.hpp"
#include "mp/queue.hpp"
#include "queue/layout.hpp"
#include "queue_hooks.hpp"

using namespace std::chrono_literals;

namespace {

namespace hooks = mp::detail::queue_hooks;
using mp::detail::queue_layout::large_piece;

class queue_large_test : public testing::TestWithParam<mp::start_method> {
protected:
    mp::process_options opts() { return {.context = mp::get_context(GetParam())}; }
};

struct hook_for_test {
    explicit hook_for_test(hooks::hook h) { hooks::installed = h; }
    ~hook_for_test() { hooks::installed = nullptr; }
};

// Three pieces and a bit (not a whole number of pages): the last piece is short.
constexpr std::size_t large_doubles = (3 * large_piece + 4096 + 24) / sizeof(double);

std::vector<double> counting(std::size_t n, double from = 0) {
    std::vector<double> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = from + static_cast<double>(i);
    return v;
}

// The meeting point of a producer and a consumer (one end in each process).
std::optional<mp::connection> gate;
std::atomic<int> pieces_seen{0};
bool die_after_first_piece = false;

/// Puts a large item; after its first piece stops until the consumer says it
/// copied it, then goes on (or is killed there).
void put_large_in_step(mp::queue<std::vector<double>> q, mp::connection g, bool die) {
    gate = std::move(g);
    die_after_first_piece = die;
    hooks::installed = [](hooks::point p) {
        if (p != hooks::point::large_piece_announced || pieces_seen++ != 0) return;
        (void)gate->recv<int>();
        if (die_after_first_piece) ::raise(SIGKILL);
    };
    q.put(counting(large_doubles));
}

void put_small(mp::queue<std::vector<double>> q) { q.put(std::vector<double>{1, 2, 3}); }

/// Gets, and is killed right after it copied the first piece of a large item.
void get_then_die_inside_a_large_item(mp::queue<std::vector<double>> q) {
    hooks::installed = [](hooks::point p) {
        if (p == hooks::point::large_piece_read) ::raise(SIGKILL);
    };
    (void)q.get();
}

void tell_the_producer_at_the_first_piece(hooks::point p) {
    if (p == hooks::point::large_piece_read && pieces_seen++ == 0) gate->send(1);
}

}  // namespace

TEST_P(queue_large_test, a_large_item_is_copied_while_its_producer_writes_it_and_arrives_whole) {
    mp::queue<std::vector<double>> q;
    auto [here, there] = mp::pipe();
    gate = std::move(here);
    pieces_seen = 0;
    hook_for_test hook(tell_the_producer_at_the_first_piece);
    mp::process producer(opts(), put_large_in_step, q, std::move(there), false);
    producer.start();
    // The producer waits after its first piece until this get copied it: a
    // get that waited for the stamp instead would wait for ever (bounded here).
    auto got = q.get(60s);
    EXPECT_GE(pieces_seen.load(), 1) << "the item was not copied while it was written";
    EXPECT_TRUE(got == counting(large_doubles)) << "the item arrived changed";
    ASSERT_TRUE(producer.join(30s));
    EXPECT_EQ(producer.exitcode(), 0);
    EXPECT_EQ(q.size(), 0u);
    gate.reset();
}

TEST_P(queue_large_test, a_producer_killed_while_its_large_item_is_copied_loses_only_that_item) {
    mp::queue<std::vector<double>> q;
    auto [here, there] = mp::pipe();
    gate = std::move(here);
    pieces_seen = 0;
    hook_for_test hook(tell_the_producer_at_the_first_piece);
    mp::process dying(opts(), put_large_in_step, q, std::move(there), true);
    dying.start();
    // Once the producer is dead, another puts a small item behind its claim.
    std::thread next([&] {
        if (!dying.join(60s)) return;
        mp::process after(opts(), put_small, q);
        after.start();
        (void)after.join(30s);
    });
    std::optional<std::vector<double>> got;
    try {
        got = q.get(60s);
    } catch (const mp::queue_empty&) {
    }
    next.join();
    EXPECT_EQ(dying.exitcode(), -SIGKILL);
    EXPECT_GE(pieces_seen.load(), 1) << "the item was not copied while it was written";
    EXPECT_TRUE(got == std::vector<double>({1, 2, 3})) << "the half-written item arrived, or nothing did";
    EXPECT_EQ(q.try_get(), std::nullopt);
    EXPECT_EQ(q.size(), 0u);
    q.put({4});
    EXPECT_TRUE(q.get(1s) == std::vector<double>{4});
    gate.reset();
}

namespace {
mp::process* consumer_to_wait_for = nullptr;
}

TEST_P(queue_large_test, a_consumer_killed_while_copying_a_large_item_leaves_it_whole) {
    mp::queue<std::vector<double>> q;
    mp::process consumer(opts(), get_then_die_inside_a_large_item, q);
    consumer.start();
    consumer_to_wait_for = &consumer;
    {
        // This put goes on after its first piece only once the consumer died
        // copying it (whenever that consumer gets there).
        hook_for_test hook([](hooks::point p) {
            if (p == hooks::point::large_piece_announced) (void)consumer_to_wait_for->join(60s);
        });
        q.put(counting(large_doubles, 0.5));
    }
    ASSERT_TRUE(consumer.join(1s));
    EXPECT_EQ(consumer.exitcode(), -SIGKILL) << "the consumer did not die copying the item";
    EXPECT_EQ(q.size(), 1u);
    EXPECT_TRUE(q.get(10s) == counting(large_doubles, 0.5)) << "the item arrived changed";
    EXPECT_EQ(q.size(), 0u);
}

TEST(queue_large, large_strings_and_vectors_of_every_length_around_a_piece_arrive_whole) {
    mp::queue<std::string> qs;
    mp::queue<std::vector<std::int32_t>> qv;
    for (std::size_t size : {std::size_t{1} << 20, large_piece - 1, large_piece, large_piece + 1, 2 * large_piece + 4093}) {
        std::string s(size, '\0');
        for (std::size_t i = 0; i < size; ++i) s[i] = static_cast<char>('a' + i % 23);
        std::thread producer([&] { qs.put(s); });
        auto got = qs.get(30s);
        producer.join();
        EXPECT_TRUE(got == s) << size << " bytes";
        std::vector<std::int32_t> v(size / 4);
        for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<std::int32_t>(i * 7);
        std::thread vproducer([&] { qv.put(v); });
        auto gotv = qv.get(30s);
        vproducer.join();
        EXPECT_TRUE(gotv == v) << v.size() << " ints";
    }
}

INSTANTIATE_TEST_SUITE_P(each_start_method, queue_large_test,
                         testing::Values(mp::start_method::fork, mp::start_method::spawn,
                                         mp::start_method::forkserver),
                         [](const auto& info) { return std::string(mp::to_string(info.param)); });
