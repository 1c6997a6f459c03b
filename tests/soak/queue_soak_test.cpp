// Soak of mp::queue and mp::joinable_queue, unbounded and bounded: 3 producer
// and 3 consumer processes, items on both sides of each size threshold
// (small, 64 KiB, 1 MiB, 2 MiB) and a few of 9 MiB (written in pieces), a
// checksum in every item, and a random producer or consumer SIGKILLed (and
// replaced) every 0.3–0.7 s.
//
// What "nothing lost" means here (the queue's promise, mp/queue.hpp): a
// producer killed inside put() loses only that item; a consumer killed inside
// get() loses at most the item it was taking; neither leaves a bounded slot or
// a joinable unfinished count behind. An item a consumer has taken is the
// consumer's: if it is killed before it records the item, the item is gone
// with it. So the accounting is:
// - each producer marks an id "putting" before put() and "put" after it;
// - each consumer, right after get(), verifies the checksum and records the
//   id in a shared array (a second channel) before task_done();
// - at the end: an id marked "put" and never recorded can only be the item
//   of a killed consumer, so lost <= consumer kills (and 0 without consumer
//   kills); an id recorded twice is a duplicate, one never put is a phantom,
//   a bad checksum or size is corruption: each must be 0. A "putting" id
//   (its producer was killed) may appear at most once.
// - bounded: after the drain, maxsize put_nowait() succeed (no slot leaked);
// - joinable: after the drain, join() returns once at most one task_done()
//   per consumer kill has been added (a killed consumer's taken item), and
//   one more task_done() throws mp::value_error (the count is exactly 0).
#include <gtest/gtest.h>
#include <mp/mp.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "soak_support.hpp"

using namespace std::chrono_literals;

namespace {

using item = std::vector<std::uint64_t>;
constexpr std::size_t max_ids = 1u << 21;
// Control words after the two per-id arrays (put state, times recorded).
enum control : std::size_t { stop_producers, stop_consumers, next_id, corrupt, consumer_errors, controls };
constexpr std::size_t put_state_at = 0, seen_at = max_ids, control_at = 2 * max_ids;

// The accounting lives in a named block the parent creates and unlinks (a
// shared_array would give each child its own name, which a killed child
// leaves until the program ends).
std::atomic_ref<std::uint32_t> word(mp::shared_memory& a, std::size_t i) {
    return std::atomic_ref(reinterpret_cast<std::uint32_t*>(a.data())[i]);
}

std::size_t words_for(std::uint64_t seed, std::uint64_t id) {
    auto r = soak::mix(seed ^ (id * 0x100000001b3ULL));
    auto pick = r % 100, side = (r >> 8) % 2;
    constexpr std::size_t kib64 = 65536 / 8, mib = 1048576 / 8, mib2 = 2 * mib;
    if (pick < 70) return 2 + (r >> 16) % 30;
    if (pick < 85) return side ? kib64 + 2 : kib64 - 2;
    if (pick < 95) return side ? mib + 2 : mib - 2;
    if (pick < 99) return side ? mib2 + 2 : mib2 - 2;
    // More than two of the pieces a large item is written in (queue/layout.hpp:
    // large_piece), copied by a consumer while the rest is written.
    return 9 * mib + 2;
}

std::uint64_t checksum(const item& v) {
    std::uint64_t h = 0xcbf29ce484222325ULL;
    for (std::size_t i = 2; i < v.size(); ++i) h = soak::mix(h ^ v[i]);
    return h;
}

template <class Q>
void producer(mp::shared_memory a, Q q, std::uint64_t seed) {
    while (!word(a, control_at + stop_producers).load()) {
        // Flow control, so an unbounded queue stays within memory. (Not from
        // the put and seen counts: a process killed between its operation
        // and its count makes them drift apart for good.)
        if (q.size() > 48) {
            std::this_thread::sleep_for(1ms);
            continue;
        }
        std::uint64_t id = word(a, control_at + next_id).fetch_add(1);
        if (id >= max_ids) return;
        item v(words_for(seed, id));
        v[0] = id;
        for (std::size_t i = 2; i < v.size(); ++i) v[i] = soak::mix(seed + id * 7919 + i);
        v[1] = checksum(v);
        word(a, put_state_at + id).store(1);
        q.put(v);
        word(a, put_state_at + id).store(2);
    }
}

template <class Q>
void consumer(mp::shared_memory a, Q q, std::uint64_t seed) {
    for (;;) {
        std::optional<item> v;
        try {
            v = q.get(100ms);
        } catch (const mp::queue_empty&) {
            if (word(a, control_at + stop_consumers).load()) return;
            continue;
        } catch (const mp::error& e) {
            // A get() that throws lost what it dropped: the queue promises
            // that only a dead producer's item is ever dropped.
            std::fprintf(stderr, "[soak] a consumer's get() threw: %s\n", e.what());
            word(a, control_at + consumer_errors).fetch_add(1);
            continue;
        }
        std::uint64_t id = v->size() >= 2 ? (*v)[0] : max_ids;
        if (id >= max_ids || v->size() != words_for(seed, id) || (*v)[1] != checksum(*v)) {
            word(a, control_at + corrupt).fetch_add(1);
        } else {
            word(a, seen_at + id).fetch_add(1);
        }
        if constexpr (requires { q.task_done(); }) q.task_done();
    }
}

struct variant {
    const char* name;
    std::size_t maxsize;
    bool joinable;
};

class queue_soak : public testing::TestWithParam<variant> {};

template <class Q>
void run(Q q, const variant& var) {
    const auto length = soak::seconds_from_env(6);
    const std::uint64_t seed = soak::seed_from_env();
    soak::report(std::string("queue/") + var.name + ": seed " + std::to_string(seed) + ", " +
                 std::to_string(length.count()) + " s");
    const auto start = std::chrono::steady_clock::now();
    std::mt19937_64 rng(seed);
    mp::shared_memory a((control_at + controls) * sizeof(std::uint32_t));

    std::vector<std::unique_ptr<mp::process>> producers, consumers;
    auto launch = [&](bool is_producer) {
        auto p = is_producer ? std::make_unique<mp::process>(producer<Q>, a, q, seed)
                             : std::make_unique<mp::process>(consumer<Q>, a, q, seed);
        p->start();
        (is_producer ? producers : consumers).push_back(std::move(p));
    };
    for (int i = 0; i < 3; ++i) launch(true), launch(false);

    long long producer_kills = 0, consumer_kills = 0;
    while (std::chrono::steady_clock::now() < start + length) {
        std::this_thread::sleep_for(std::chrono::milliseconds(300 + rng() % 400));
        bool on_producer = rng() % 2;
        auto& side = on_producer ? producers : consumers;
        auto victim = rng() % side.size();
        side[victim]->kill();
        side[victim]->join();
        side.erase(side.begin() + static_cast<long>(victim));
        ++(on_producer ? producer_kills : consumer_kills);
        launch(on_producer);
    }
    word(a, control_at + stop_producers).store(1);
    for (auto& p : producers) {
        p->join();
        EXPECT_EQ(p->exitcode(), 0);
    }
    word(a, control_at + stop_consumers).store(1);
    for (auto& p : consumers) {
        p->join();
        EXPECT_EQ(p->exitcode(), 0);
    }
    EXPECT_FALSE(q.try_get().has_value()) << "the drained queue still holds an item";

    const std::uint64_t ids = std::min<std::uint64_t>(word(a, control_at + next_id).load(), max_ids);
    long long put = 0, received = 0, lost = 0, duplicated = 0, phantom = 0, in_flight_kept = 0;
    for (std::uint64_t id = 0; id < ids; ++id) {
        auto state = word(a, put_state_at + id).load();
        auto seen = word(a, seen_at + id).load();
        put += state == 2;
        received += seen > 0;
        if (seen > 1) ++duplicated, ADD_FAILURE() << "item " << id << " received " << seen << " times";
        if (state == 0 && seen) ++phantom, ADD_FAILURE() << "item " << id << " received but never put";
        if (state == 2 && !seen) ++lost;
        if (state == 1 && seen) ++in_flight_kept;
    }
    const auto corrupt_items = word(a, control_at + corrupt).load();
    EXPECT_EQ(corrupt_items, 0u);
    const auto consumer_errors_seen = word(a, control_at + consumer_errors).load();
    EXPECT_EQ(consumer_errors_seen, 0u) << "a consumer's get() threw (MP_SOAK_SEED=" << seed << ")";
    EXPECT_LE(lost, consumer_kills) << "more items lost than consumers killed (MP_SOAK_SEED=" << seed << ")";

    long long added_task_done = 0;
    if constexpr (requires { q.task_done(); }) {
        // A killed consumer's taken item keeps its unfinished count: at most one per kill.
        while (!q.join(0ms) && added_task_done < consumer_kills) {
            q.task_done();
            ++added_task_done;
        }
        EXPECT_TRUE(q.join(10s)) << "join() does not return: an unfinished count was left behind";
        EXPECT_THROW(q.task_done(), mp::value_error) << "the unfinished count went below zero";
    }
    if (var.maxsize) {
        for (std::size_t i = 0; i < var.maxsize; ++i)
            EXPECT_NO_THROW(q.put_nowait(item{0})) << "a bounded slot was left behind by a killed process";
        EXPECT_THROW(q.put_nowait(item{0}), mp::queue_full);
        while (q.try_get()) {}
    }
    a.close();
    a.unlink();
    auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    soak::report(std::string("queue/") + var.name + ": " + std::to_string(secs) + " s, kills " +
                 std::to_string(producer_kills) + " producers + " + std::to_string(consumer_kills) +
                 " consumers, items put " + std::to_string(put) + ", received " + std::to_string(received) +
                 ", lost with a killed consumer " + std::to_string(lost) + ", kept of a killed put " +
                 std::to_string(in_flight_kept) + ", duplicated " + std::to_string(duplicated) + ", phantom " +
                 std::to_string(phantom) + ", corrupt " + std::to_string(corrupt_items) + ", get() errors " +
                 std::to_string(consumer_errors_seen) + ", task_done added " +
                 std::to_string(added_task_done));
}

TEST_P(queue_soak, nothing_lost_duplicated_or_corrupt_under_kills) {
    const variant& v = GetParam();
    if (v.joinable) run(mp::joinable_queue<item>(v.maxsize), v);
    else run(mp::queue<item>(v.maxsize), v);
}

INSTANTIATE_TEST_SUITE_P(variants, queue_soak,
                         testing::Values(variant{"unbounded", 0, false}, variant{"bounded", 8, false},
                                         variant{"joinable", 0, true}, variant{"bounded_joinable", 8, true}),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
