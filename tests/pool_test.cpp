// mp::pool under every start method: the scenarios of CPython's _TestPool
// (apply, map, map_async, chunksize, starmap, imap, imap_unordered, an input
// that throws, async timeout, terminate, empty input, maxtasksperchild,
// worker names, initializer), plus what Python's Pool cannot do: workers
// killed mid-task, per-task deadlines, endless lazy input.
#include "mp/pool.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <future>
#include <numeric>
#include <ranges>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "mp/queue.hpp"
#include "worker/test_hooks.hpp"
#include <cstdio>

using namespace std::chrono_literals;

namespace {

int sqr(int x) { return x * x; }
int sqr_slowly(int x, int ms) {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return x * x;
}
int mul(int a, int b) { return a * b; }
// 3 MiB, marked at both ends and in the middle.
constexpr std::size_t block_doubles = 3 << 17;
std::vector<double> filled_block(int seed) {
    std::vector<double> v(block_doubles, seed + 0.5);
    v.front() = seed;
    v.back() = -seed;
    return v;
}
int fail_at_five(int x) {
    if (x == 5) throw std::invalid_argument("five is not allowed");
    return x * x;
}
int my_pid(int) { return static_cast<int>(::getpid()); }
std::string my_name(int) { return mp::current_process().name(); }
int die_by(int how) {
    switch (how) {
        case 0: ::raise(SIGKILL); break;
        case 1: std::abort();
        case 2:
            // A segmentation fault, as the kernel delivers it. Not a null
            // store: under UBSan that first prints a report with a symbolised
            // stack, which in a fork child of a threaded parent can hang on
            // locks or the symbolizer pipe that the parent's threads held.
            ::raise(SIGSEGV);
            break;
        default: std::_Exit(how);
    }
    return 0;
}
int sleep_ms(int ms) {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return ms;
}
double sum_all(std::vector<double> v) { return std::accumulate(v.begin(), v.end(), 0.0); }
std::size_t string_size(std::string s) { return s.size(); }
// Position-weighted, so a byte moved, lost or repeated changes it.
std::uint64_t string_checksum(const std::string& s) {
    std::uint64_t sum = s.size();
    for (std::size_t i = 0; i < s.size(); ++i) sum += (i + 1) * static_cast<unsigned char>(s[i]);
    return sum;
}
std::vector<int> make_vector(int n) { return std::vector<int>(static_cast<std::size_t>(n), 7); }

// A file as a gate between the test and a task: tasks travel as bytes, so
// they cannot take a queue or an event.
std::string gate_path(const std::string& what) {
    return "/tmp/mp-pool-test-" + std::to_string(::getpid()) + "-" + what;
}
void wait_for_file(const std::string& path) {
    while (::access(path.c_str(), F_OK) != 0) std::this_thread::sleep_for(1ms);
}
void touch_then_hang(std::string path) {
    std::ofstream(path) << "x";
    for (;;) ::pause();
}

int g_initialized = 0;
void init_worker() { g_initialized = 42; }
int read_initialized() { return g_initialized; }

class pool_test : public testing::TestWithParam<mp::start_method> {
protected:
    mp::pool_options opts(int n = 2) { return {.processes = n, .context = mp::get_context(GetParam())}; }
    std::string name_prefix() const {
        switch (GetParam()) {
            case mp::start_method::fork: return "ForkPoolWorker-";
            case mp::start_method::spawn: return "SpawnPoolWorker-";
            case mp::start_method::forkserver: return "ForkServerPoolWorker-";
        }
        return "";
    }
};

std::vector<int> iota_vec(int n) {
    std::vector<int> v(static_cast<std::size_t>(n));
    std::iota(v.begin(), v.end(), 0);
    return v;
}
std::vector<int> squares(int n) {
    std::vector<int> v;
    for (int i = 0; i < n; ++i) v.push_back(i * i);
    return v;
}

TEST_P(pool_test, apply) {
    mp::pool p(opts());
    EXPECT_EQ(p.apply(sqr, 5), 25);
    EXPECT_EQ(p.apply(mul, 6, 7), 42);
    EXPECT_EQ(p.apply([](int a, int b) { return a - b; }, 10, 3), 7);
    EXPECT_EQ(p.apply(mp::fn<&sqr>, 4), 16);
    mp::function<int(int, int)> f = mp::fn<&mul>;
    EXPECT_EQ(p.apply(f, 3, 7), 21);
}

TEST_P(pool_test, apply_async_and_exception_type) {
    mp::pool p(opts());
    auto a = p.apply_async(sqr, 9);
    auto b = p.apply_async(fail_at_five, 5);
    EXPECT_EQ(a.get(), 81);
    EXPECT_TRUE(a.successful());
    try {
        (void)b.get();
        FAIL() << "expected std::invalid_argument";
    } catch (const std::invalid_argument& e) {
        EXPECT_STREQ(e.what(), "five is not allowed");
    }
    EXPECT_FALSE(b.successful());
    EXPECT_THROW(p.apply(fail_at_five, 5), std::invalid_argument);
}

TEST_P(pool_test, map) {
    mp::pool p(opts());
    EXPECT_EQ(p.map(sqr, iota_vec(10)), squares(10));
    EXPECT_EQ(p.map(sqr, iota_vec(100)), squares(100));
    EXPECT_EQ(p.map(sqr, std::views::iota(0, 50)), squares(50));
}

// Results of a MiB and more come back through each worker's own area; a
// worker whose area the parent still reads waits for it, so many large
// results from few workers arrive whole and in order.
TEST_P(pool_test, large_results_arrive_whole) {
    mp::pool p(opts());
    std::vector<int> seeds(12);
    std::iota(seeds.begin(), seeds.end(), 1);
    auto all = p.map(filled_block, seeds, 1);
    ASSERT_EQ(all.size(), seeds.size());
    for (std::size_t i = 0; i < all.size(); ++i) {
        ASSERT_EQ(all[i].size(), block_doubles);
        EXPECT_EQ(all[i].front(), seeds[i]);
        EXPECT_EQ(all[i][block_doubles / 2], seeds[i] + 0.5);
        EXPECT_EQ(all[i].back(), -seeds[i]);
    }
    // One large, one small, one failing, in turn: each kind still arrives.
    for (int i = 0; i < 3; ++i) {
        EXPECT_EQ(p.apply(filled_block, 40 + i).back(), -(40 + i));
        EXPECT_EQ(p.apply(sqr, i), i * i);
    }
}

std::vector<double> sized_block(std::size_t doubles, int seed) {
    std::vector<double> v(doubles);
    for (std::size_t i = 0; i < doubles; ++i) v[i] = seed * 1e6 + static_cast<double>(i);
    return v;
}

bool is_sized_block(const std::vector<double>& v, std::size_t doubles, int seed) {
    if (v.size() != doubles) return false;
    for (std::size_t i = 0; i < doubles; ++i)
        if (v[i] != seed * 1e6 + static_cast<double>(i)) return false;
    return true;
}

// A worker's area keeps its pages from result to result, grows for a larger
// one and gives back its spare pages once the worker idles: results that
// grow, shrink and come after an idle spell all arrive whole.
TEST_P(pool_test, large_results_of_changing_sizes_arrive_whole) {
    mp::pool p(opts(1));
    constexpr std::size_t mib_doubles = (1 << 20) / sizeof(double);
    int seed = 0;
    for (std::size_t mib : {2u, 24u, 3u, 40u, 40u, 1u}) {
        ++seed;
        EXPECT_TRUE(is_sized_block(p.apply(sized_block, mib * mib_doubles + 3, seed), mib * mib_doubles + 3, seed))
            << mib << " MiB";
    }
    std::this_thread::sleep_for(1500ms);  // the worker gives back its spare pages
    for (std::size_t mib : {32u, 2u}) {
        ++seed;
        EXPECT_TRUE(is_sized_block(p.apply(sized_block, mib * mib_doubles, seed), mib * mib_doubles, seed))
            << mib << " MiB after an idle spell";
    }
}

TEST_P(pool_test, map_chunksize) {
    mp::pool p(opts());
    for (std::size_t cs : {1u, 3u, 7u, 1000u}) EXPECT_EQ(p.map(sqr, iota_vec(37), cs), squares(37)) << cs;
}

// Tiny tasks in bursts, and single calls between them: every ring of the
// workers' doorbell that skipped its wake-up (one was pending) must be made
// up for, or a task waits in the queue with every worker asleep (a pending
// mark left by a ring that woke nobody hung map_chunk1 of pool_bench).
void slow_to_leave_the_doorbell() { mp::detail::test_hooks::doorbell_leave_delay_us = 300; }

TEST_P(pool_test, bursts_of_tiny_tasks_never_leave_a_task_with_every_worker_asleep) {
    // Workers that linger as counted sleepers after they woke: rings then
    // count them and wake nobody.
    auto o = opts();
    o.initializer = slow_to_leave_the_doorbell;
    mp::pool p(o);
    for (int round = 0; round < 30; ++round) {
        auto r = p.map_async(sqr, iota_vec(3000), 1);
        ASSERT_TRUE(r.wait_for(60s)) << "round " << round << ": a task was stranded";
        EXPECT_EQ(r.get(), squares(3000));
        auto one = p.apply_async(sqr, round);
        ASSERT_TRUE(one.wait_for(60s)) << "round " << round << ": a single task was stranded";
        std::this_thread::sleep_for(std::chrono::microseconds(200 * (round % 4)));  // workers fall asleep
    }
}

// A burst of tiny tasks leaves the other worker asleep (a worker about to
// take the queue drains it alone), but on call: a task that turns out long
// must not hold up the tiny ones queued behind it until it ends.
int sqr_or_linger(int x) {
    if (x == 100) std::this_thread::sleep_for(1s);
    return x * x;
}

TEST_P(pool_test, tiny_tasks_queued_behind_a_long_one_go_to_the_other_worker) {
    mp::pool p(opts());
    for (int round = 0; round < 3; ++round) {
        (void)p.map(sqr, iota_vec(2000), 1);  // the workers' tasks have been quick
        std::vector<int> arrived;
        for (int r : p.imap_unordered(sqr_or_linger, iota_vec(300), 1)) arrived.push_back(r);
        ASSERT_EQ(arrived.size(), 300u);
        // Every other item ran on the other worker while the long one ran
        // (without the on-call sleep, those queued behind it waited for it).
        EXPECT_EQ(arrived.back(), 100 * 100) << "round " << round;
    }
}

TEST_P(pool_test, map_async) {
    mp::pool p(opts());
    auto r = p.map_async(sqr, iota_vec(10));
    EXPECT_EQ(r.get(), squares(10));
    auto bad = p.map_async(fail_at_five, iota_vec(10), 2);
    EXPECT_THROW((void)bad.get(), std::invalid_argument);
}

TEST_P(pool_test, map_exception_is_rethrown) {
    mp::pool p(opts());
    EXPECT_THROW((void)p.map(fail_at_five, iota_vec(20)), std::invalid_argument);
    EXPECT_THROW((void)p.map(fail_at_five, iota_vec(20), 1), std::invalid_argument);
    EXPECT_EQ(p.map(sqr, iota_vec(5)), squares(5));  // still usable
}

TEST_P(pool_test, starmap) {
    mp::pool p(opts());
    std::vector<std::tuple<int, int>> args;
    for (int i = 0; i < 10; ++i) args.emplace_back(i, 7);
    auto r = p.starmap(mul, args);
    for (int i = 0; i < 10; ++i) EXPECT_EQ(r[i], i * 7);
    auto a = p.starmap_async(mul, args, 3);
    EXPECT_EQ(a.get(), r);
    std::vector<std::pair<int, int>> pairs{{2, 3}, {4, 5}};
    EXPECT_EQ(p.starmap(mul, pairs), (std::vector<int>{6, 20}));
}

TEST_P(pool_test, imap) {
    mp::pool p(opts());
    auto it = p.imap(sqr, iota_vec(10));
    for (int i = 0; i < 10; ++i) EXPECT_EQ(it.next(), std::optional<int>(i * i));
    EXPECT_EQ(it.next(), std::nullopt);
    EXPECT_EQ(it.next(), std::nullopt);

    auto it2 = p.imap(sqr, iota_vec(1000), 100);
    for (int i = 0; i < 1000; ++i) EXPECT_EQ(it2.next(), std::optional<int>(i * i));
    EXPECT_EQ(it2.next(), std::nullopt);

    std::vector<int> seen;
    for (int x : p.imap(sqr, iota_vec(20), 3)) seen.push_back(x);
    EXPECT_EQ(seen, squares(20));
}

TEST_P(pool_test, imap_exception_at_its_index_and_goes_on) {
    mp::pool p(opts());
    for (std::size_t cs : {1u, 3u}) {
        auto it = p.imap(fail_at_five, iota_vec(10), cs);
        for (int i = 0; i < 5; ++i) EXPECT_EQ(it.next(), std::optional<int>(i * i));
        EXPECT_THROW((void)it.next(), std::invalid_argument);
        for (int i = 6; i < 10; ++i) EXPECT_EQ(it.next(), std::optional<int>(i * i));
        EXPECT_EQ(it.next(), std::nullopt);
    }
    auto u = p.imap_unordered(fail_at_five, iota_vec(10), 2);
    int ok = 0, failed = 0;
    for (;;) {
        try {
            if (!u.next()) break;
            ++ok;
        } catch (const std::invalid_argument&) {
            ++failed;
        }
    }
    EXPECT_EQ(ok, 9);
    EXPECT_EQ(failed, 1);
}

auto throwing_input(int n, int when) {
    return std::views::iota(0, n) | std::views::transform([when](int i) {
               if (i == when) throw std::runtime_error("the input failed");
               return i;
           });
}

TEST_P(pool_test, imap_handle_iterable_exception) {
    mp::pool p(opts());
    auto it = p.imap(sqr, throwing_input(10, 3), 1);
    for (int i = 0; i < 3; ++i) EXPECT_EQ(it.next(), std::optional<int>(i * i));
    EXPECT_THROW((void)it.next(), std::runtime_error);
    EXPECT_EQ(it.next(), std::nullopt);

    auto it2 = p.imap(sqr, throwing_input(20, 7), 2);
    for (int i = 0; i < 6; ++i) EXPECT_EQ(it2.next(), std::optional<int>(i * i));
    // Items pulled before the failure in the same chunk still run.
    EXPECT_EQ(it2.next(), std::optional<int>(36));
    EXPECT_THROW((void)it2.next(), std::runtime_error);
    EXPECT_EQ(it2.next(), std::nullopt);

    auto u = p.imap_unordered(sqr, throwing_input(10, 5), 1);
    std::vector<int> got;
    bool threw = false;
    for (;;) {
        try {
            auto x = u.next();
            if (!x) break;
            got.push_back(*x);
        } catch (const std::runtime_error&) {
            threw = true;
        }
    }
    std::sort(got.begin(), got.end());
    EXPECT_TRUE(threw);
    EXPECT_EQ(got, squares(5));

    EXPECT_THROW((void)p.map(sqr, throwing_input(10, 0), 1), std::runtime_error);
}

TEST_P(pool_test, imap_unordered) {
    mp::pool p(opts());
    for (std::size_t cs : {1u, 7u}) {
        std::vector<int> got;
        auto it = p.imap_unordered(sqr, iota_vec(100), cs);
        while (auto x = it.next()) got.push_back(*x);
        std::sort(got.begin(), got.end());
        EXPECT_EQ(got, squares(100));
    }
}

TEST_P(pool_test, async_timeout) {
    mp::pool p(opts());
    auto r = p.apply_async(sqr_slowly, 6, 1000);
    EXPECT_THROW((void)r.get(20ms), mp::timeout_error);
    auto it = p.imap(sleep_ms, std::vector<int>{1000}, 1);
    (void)p.apply_async(sleep_ms, 0);
    EXPECT_THROW((void)it.next(1ms), mp::timeout_error);
    p.terminate();
}

TEST_P(pool_test, terminate) {
    mp::pool p(opts());
    auto r = p.map_async(sleep_ms, std::vector<int>(10000, 10), 1);
    p.terminate();
    p.join();
    EXPECT_THROW((void)r.get(), mp::closed_error);
    EXPECT_THROW((void)p.apply_async(sqr, 1), mp::closed_error);
}

TEST_P(pool_test, empty_iterable) {
    mp::pool p(opts());
    EXPECT_EQ(p.map(sqr, std::vector<int>{}), std::vector<int>{});
    EXPECT_EQ(p.map(sqr, std::views::iota(0, 0), 1), std::vector<int>{});
    EXPECT_EQ(p.map_async(sqr, std::vector<int>{}).get(), std::vector<int>{});
    EXPECT_EQ(p.imap(sqr, std::vector<int>{}).next(), std::nullopt);
    EXPECT_EQ(p.imap_unordered(sqr, std::vector<int>{}).next(), std::nullopt);
    EXPECT_EQ(p.starmap(mul, std::vector<std::tuple<int, int>>{}), std::vector<int>{});
}

TEST_P(pool_test, destructor_waits_for_queued_work) {
    std::vector<mp::async_result<int>> results;
    {
        mp::pool p(opts());
        for (int i = 0; i < 20; ++i) results.push_back(p.apply_async(sqr_slowly, i, 5));
    }
    for (int i = 0; i < 20; ++i) EXPECT_EQ(results[i].get(), i * i);
}

TEST_P(pool_test, close_and_join) {
    mp::pool p(opts());
    auto r = p.apply_async(sqr_slowly, 3, 20);
    EXPECT_THROW(p.join(), mp::value_error);
    p.close();
    EXPECT_THROW((void)p.apply_async(sqr, 1), mp::closed_error);
    EXPECT_THROW((void)p.map(sqr, iota_vec(3)), mp::closed_error);
    p.join();
    EXPECT_EQ(r.get(), 9);
    p.join();  // again: harmless
}

TEST_P(pool_test, imap_results_survive_join) {
    // Python allows reading an imap's results after close() and join().
    mp::pool p(opts());
    auto it = p.imap(sqr, iota_vec(500), 1);
    p.close();
    p.join();
    for (int i = 0; i < 500; ++i) ASSERT_EQ(it.next(), std::optional<int>(i * i));
    EXPECT_EQ(it.next(), std::nullopt);
}

TEST_P(pool_test, maxtasksperchild) {
    mp::pool p({.processes = 2, .maxtasksperchild = 3, .context = mp::get_context(GetParam())});
    std::vector<mp::async_result<int>> rs;
    for (int i = 0; i < 30; ++i) rs.push_back(p.apply_async(my_pid, i));
    std::set<int> pids;
    for (auto& r : rs) pids.insert(r.get());
    EXPECT_GE(pids.size(), 10u);
    EXPECT_EQ(p.map(sqr, iota_vec(50), 1), squares(50));
}

TEST_P(pool_test, worker_names) {
    mp::pool p(opts());
    auto names = p.map(my_name, iota_vec(40), 1);
    for (auto& n : names) EXPECT_EQ(n.rfind(name_prefix(), 0), 0u) << n;
}

TEST_P(pool_test, initializer) {
    mp::pool p({.processes = 2, .initializer = init_worker, .context = mp::get_context(GetParam())});
    EXPECT_EQ(p.apply(read_initialized), 42);
    for (int i = 0; i < 10; ++i) EXPECT_EQ(p.apply_async(read_initialized).get(), 42);
}

TEST_P(pool_test, large_arguments_and_results) {
    mp::pool p(opts());
    std::vector<double> big(1 << 20, 0.5);
    EXPECT_EQ(p.apply(sum_all, big), 0.5 * (1 << 20));
    std::vector<std::string> strings(6, std::string(200000, 'x'));
    strings[3].resize(100);
    auto sizes = p.map(string_size, strings, 2);
    EXPECT_EQ(sizes, (std::vector<std::size_t>{200000, 200000, 200000, 100, 200000, 200000}));
    auto v = p.apply(make_vector, 1 << 20);
    EXPECT_EQ(v.size(), std::size_t{1} << 20);
    EXPECT_EQ(v.back(), 7);
}

// Items of a vector of strings are written straight from the vector (no
// copy of the chunk): each arrives whole, byte for byte, in its own place.
TEST_P(pool_test, string_items_arrive_intact_from_lvalue_and_owned_ranges) {
    mp::pool p(opts());
    std::vector<std::string> strings;
    for (int i = 0; i < 7; ++i) {
        std::string s(70'000 + 1000 * i, ' ');
        for (std::size_t k = 0; k < s.size(); ++k) s[k] = static_cast<char>('a' + (k * 7 + i) % 26);
        strings.push_back(std::move(s));
    }
    strings[2] = "short";
    strings[4].clear();
    std::vector<std::uint64_t> expected;
    for (const auto& s : strings) expected.push_back(string_checksum(s));
    EXPECT_EQ(p.map(string_checksum, strings, 3), expected);
    std::vector<std::uint64_t> unordered;
    for (std::uint64_t c : p.imap_unordered(string_checksum, strings)) unordered.push_back(c);
    std::sort(unordered.begin(), unordered.end());
    auto sorted = expected;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(unordered, sorted);
    auto copy = strings;
    EXPECT_EQ(p.map(string_checksum, std::move(copy), 2), expected);  // the pool owns the range
}

TEST_P(pool_test, workers_ignore_sigint) {
    mp::pool p(opts());
    auto sigint_ignored = [](int pid) {
        std::ifstream status("/proc/" + std::to_string(pid) + "/status");
        std::string line;
        while (std::getline(status, line))
            if (line.rfind("SigIgn:", 0) == 0)
                return (std::stoull(line.substr(7), nullptr, 16) & (1ull << (SIGINT - 1))) != 0;
        return false;
    };
    EXPECT_EQ(p.map(sqr, iota_vec(8), 1), squares(8));
    for (int pid : p.worker_pids()) {
        // A worker still starting up (a fresh spawn child) sets it soon.
        auto until = std::chrono::steady_clock::now() + 10s;
        while (!sigint_ignored(pid) && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(1ms);
        EXPECT_TRUE(sigint_ignored(pid)) << "worker " << pid << " does not ignore SIGINT";
    }
}

// ---- beyond Python ----------------------------------------------------------

TEST_P(pool_test, worker_killed_fails_only_its_task) {
    mp::pool p(opts());
    for (int how : {0, 1, 2, 3}) {
        std::vector<mp::async_result<int>> before, after;
        for (int i = 0; i < 20; ++i) before.push_back(p.apply_async(sqr, i));
        auto dead = p.apply_async(die_by, how);
        for (int i = 0; i < 20; ++i) after.push_back(p.apply_async(sqr, i));
        try {
            (void)dead.get();
            FAIL() << "expected mp::worker_crashed";
        } catch (const mp::worker_crashed& e) {
            std::string what = e.what();
            if (how == 0) {
                EXPECT_NE(what.find("signal 9"), std::string::npos) << what;
                EXPECT_NE(what.find("SIGKILL"), std::string::npos) << what;
            }
            if (how == 3) {
                EXPECT_NE(what.find("exited with code 3"), std::string::npos) << what;
            }
        }
        for (int i = 0; i < 20; ++i) EXPECT_EQ(before[i].get(), i * i);
        for (int i = 0; i < 20; ++i) EXPECT_EQ(after[i].get(), i * i);
    }
    EXPECT_EQ(p.map(sqr, iota_vec(100), 1), squares(100));
    EXPECT_LE(p.worker_pids().size(), 2u);  // a replacement may still be starting
}

TEST_P(pool_test, worker_killed_from_outside) {
    mp::pool p(opts(1));
    auto flag = gate_path("started");
    auto stuck = p.apply_async(touch_then_hang, flag);
    auto next = p.apply_async(sqr, 12);
    wait_for_file(flag);
    auto pids = p.worker_pids();
    ASSERT_EQ(pids.size(), 1u);
    ::kill(pids[0], SIGKILL);
    EXPECT_THROW((void)stuck.get(), mp::worker_crashed);
    EXPECT_EQ(next.get(), 144);
    std::remove(flag.c_str());
}

TEST_P(pool_test, fd_arguments_are_refused_at_submit) {
    mp::pool p(opts(1));
    mp::queue<int> q;
    EXPECT_THROW((void)p.apply_async([](mp::queue<int> x) { x.put(1); }, q), mp::serialization_error);
    std::vector<mp::queue<int>> qs(3);
    EXPECT_THROW((void)p.map([](mp::queue<int>) { return 1; }, qs), mp::serialization_error);
}

TEST_P(pool_test, crash_inside_imap_fails_only_that_item) {
    mp::pool p(opts());
    auto it = p.imap(
        [](int x) {
            if (x == 100) return x;
            return die_by(0);
        },
        std::vector<int>{100, 100, 100, 0, 100, 100}, 1);
    for (int i = 0; i < 3; ++i) EXPECT_EQ(it.next(), std::optional<int>(100));
    EXPECT_THROW((void)it.next(), mp::worker_crashed);
    for (int i = 0; i < 2; ++i) EXPECT_EQ(it.next(), std::optional<int>(100));
    EXPECT_EQ(it.next(), std::nullopt);
}

TEST_P(pool_test, deadline_stops_the_worker) {
    mp::pool p(opts());
    auto slow = p.submit_with({.timeout = 100ms}, sleep_ms, 60000);
    std::vector<mp::future<int>> others;
    for (int i = 0; i < 30; ++i) others.push_back(p.apply_async(sqr, i));
    auto fine = p.submit_with({.timeout = 60s}, sqr, 11);
    EXPECT_THROW((void)slow.get(), mp::timeout_error);
    for (int i = 0; i < 30; ++i) EXPECT_EQ(others[i].get(), i * i);
    EXPECT_EQ(fine.get(), 121);
    EXPECT_EQ(p.map(sqr, iota_vec(20)), squares(20));
}

TEST_P(pool_test, endless_input_is_read_lazily) {
    auto pulled = std::make_shared<std::atomic<long>>(0);
    {
        mp::pool p(opts());
        auto endless = std::views::iota(0) | std::views::transform([pulled](int i) {
                           pulled->fetch_add(1);
                           return i;
                       });
        {
            auto it = p.imap(sqr, endless, 1);
            for (int i = 0; i < 200; ++i) ASSERT_EQ(it.next(), std::optional<int>(i * i));
            long after = pulled->load();
            EXPECT_GE(after, 200);
            EXPECT_LT(after, 200 + 200);  // bounded read-ahead
            // Nothing consumed: the read-ahead stays bounded.
            std::this_thread::sleep_for(50ms);
            EXPECT_LT(pulled->load(), 200 + 200);
        }  // dropping the iterator stops reading the input
        auto u = p.imap_unordered(sqr, endless, 4);
        for (int i = 0; i < 100; ++i) ASSERT_TRUE(u.next().has_value());
    }  // ~pool joins: nothing left to wait for
    SUCCEED();
}

TEST_P(pool_test, many_concurrent_submitters) {
    mp::pool p(opts());
    std::vector<std::thread> threads;
    std::atomic<int> wrong{0};
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&, t] {
            for (int i = 0; i < 200; ++i)
                if (p.apply(mul, i, t) != i * t) ++wrong;
        });
    for (auto& t : threads) t.join();
    EXPECT_EQ(wrong.load(), 0);
}

TEST_P(pool_test, done_callback_runs) {
    mp::pool p(opts());
    auto f = p.apply_async(sqr, 8);
    std::promise<int> seen;
    f.add_done_callback([&](mp::future<int>& g) { seen.set_value(g.get()); });
    EXPECT_EQ(seen.get_future().get(), 64);
}

TEST(pool, rejects_zero_processes) {
    EXPECT_THROW(mp::pool p(0), mp::value_error);
    EXPECT_THROW(mp::pool p({.processes = -1}), mp::value_error);
}

TEST(pool, default_process_count_is_cpu_count) {
    mp::pool p;
    EXPECT_EQ(p.processes(), mp::cpu_count());
}

INSTANTIATE_TEST_SUITE_P(all, pool_test,
                         testing::Values(mp::start_method::fork, mp::start_method::spawn, mp::start_method::forkserver),
                         [](const auto& info) { return std::string(mp::to_string(info.param)); });

}  // namespace
