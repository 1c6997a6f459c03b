// Soak of mp::manager: 16 client processes call the server through proxies
// without pause; every couple of seconds one of them, chosen at random, is
// SIGKILLed (often in the middle of a call) and replaced. The promise checked:
// a client that dies mid-call costs the server that one connection, so every
// other client's calls keep being answered, correctly, and the parent's own
// calls (a correct client too) are answered throughout.
#include <gtest/gtest.h>
#include <mp/mp.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "soak_support.hpp"

using namespace std::chrono_literals;

namespace {

constexpr int clients = 16;

using clock_type = std::chrono::steady_clock;

long long now_ns() { return std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now().time_since_epoch()).count(); }

// Writes and reads back its own key until `end_ns` (steady clock, the same in
// every process), then reports how many round trips it made. A wrong answer
// is exit code 3.
void client(long long key, long long end_ns, mp::dict_proxy<long long, long long> d, mp::list_proxy<long long> log,
            mp::queue<std::array<long long, 2>> done) {
    long long k = 0;
    while (now_ns() < end_ns) {
        d.set(key, k);
        if (d.get(key) != k) std::exit(3);
        if (k % 64 == 0) log.append(key);
        ++k;
    }
    done.put({key, k});
}

TEST(manager_soak, sixteen_clients_one_killed_at_a_time_the_others_are_served) {
    const auto length = soak::seconds_from_env(20);
    const std::uint64_t seed = soak::seed_from_env();
    soak::report("manager: seed " + std::to_string(seed) + ", " + std::to_string(length.count()) + " s");
    const auto start = clock_type::now();
    const long long end_ns = now_ns() + std::chrono::duration_cast<std::chrono::nanoseconds>(length).count();
    std::mt19937_64 rng(seed);

    mp::manager sm;
    sm.start();
    auto d = sm.dict<long long, long long>();
    auto log = sm.list<long long>();
    mp::queue<std::array<long long, 2>> done;

    struct slot {
        long long key;
        std::unique_ptr<mp::process> p;
    };
    long long next_key = 0;
    std::vector<slot> live;
    auto launch = [&] {
        long long key = next_key++;
        auto p = std::make_unique<mp::process>(client, key, end_ns, d, log, done);
        p->start();
        live.push_back({key, std::move(p)});
    };
    for (int i = 0; i < clients; ++i) launch();

    long long kills = 0, parent_calls = 0;
    std::vector<long long> killed_keys;
    // The parent's own calls, between kills; a kill every 1.5–2.5 s, the last
    // one at least 1 s before the clients' end: a victim is then still in its
    // loop (one that had finished would have reported, and exited 0).
    const auto last_kill = clock_type::time_point(std::chrono::nanoseconds(end_ns - 1'000'000'000LL));
    while (now_ns() < end_ns - 2'000'000'000LL) {
        auto until = std::min(clock_type::now() + std::chrono::milliseconds(1500 + rng() % 1000), last_kill);
        while (clock_type::now() < until) {
            d.set(-1, parent_calls);
            ASSERT_EQ(d.get(-1), parent_calls);
            ++parent_calls;
        }
        auto victim = rng() % live.size();
        live[victim].p->kill();
        live[victim].p->join();
        EXPECT_EQ(live[victim].p->exitcode(), -9);
        ++kills;
        killed_keys.push_back(live[victim].key);
        live.erase(live.begin() + static_cast<long>(victim));
        launch();
    }

    // Every live client finishes correctly and says how far it got.
    std::map<long long, long long> finished;
    for (std::size_t i = 0; i < live.size(); ++i) {
        auto r = done.get(120s);  // a bound that only catches a hang
        finished[r[0]] = r[1];
    }
    long long client_calls = 0;
    for (auto& s : live) {
        s.p->join();
        EXPECT_EQ(s.p->exitcode(), 0) << "client " << s.key << " (MP_SOAK_SEED=" << seed << ")";
        ASSERT_TRUE(finished.count(s.key)) << "client " << s.key << " never reported";
        EXPECT_GT(finished[s.key], 0) << "client " << s.key << " was never answered";
        EXPECT_EQ(d.get(s.key), finished[s.key] - 1);
        client_calls += 2 * finished[s.key];
    }
    // The server is still whole: a fresh object and the old ones answer.
    auto v = sm.value<long long>(7);
    EXPECT_EQ(v.get(), 7);
    EXPECT_EQ(static_cast<long long>(d.size()), next_key + 1 - [&] {
        long long never = 0;  // a client killed before its first set has no key
        for (long long k : killed_keys) never += d.get(k, -1) == -1;
        return never;
    }());
    sm.shutdown();
    auto secs = std::chrono::duration<double>(clock_type::now() - start).count();
    soak::report("manager: " + std::to_string(secs) + " s, kills " + std::to_string(kills) + ", clients " +
                 std::to_string(next_key) + ", calls by surviving clients " + std::to_string(client_calls) +
                 ", parent calls " + std::to_string(2 * parent_calls));
}

}  // namespace
