// mp::imap_iterator (mp/executor.hpp), the one iterator of pool.imap,
// pool.imap_unordered and the process executor's map, map_unordered and
// starmap, under every start method: exceptions at their item, Python's
// Executor.map cancellation on timeout and early destruction, the window
// that bounds the input read ahead, and next() shared by several threads.
#include "mp/executor.hpp"

#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <numeric>
#include <optional>
#include <ranges>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "mp/pool.hpp"
#include "mp/process_pool_executor.hpp"
#include "support/task_gates.hpp"

using namespace std::chrono_literals;

namespace {

using namespace mp_test;

int sqr(int x) { return x * x; }
int fail_at_multiples_of_five(int x) {
    if (x % 5 == 0) throw std::out_of_range("item " + std::to_string(x));
    return x;
}
std::string as_text(int x) { return std::string(static_cast<std::size_t>(x % 40), 'a') + std::to_string(x); }
bool is_odd(int x) { return x % 2 != 0; }

int record_pair(std::string log, int i) { return record_item({std::move(log), i}); }
// Records item `i`; item 2 then waits until the file `gate` exists.
int record_then_wait_at_two(std::string log, std::string gate, int i) {
    record_item({std::move(log), i});
    if (i == 2) wait_file(std::move(gate));
    return i;
}
std::vector<int> iota_vec(int n) {
    std::vector<int> v(static_cast<std::size_t>(n));
    std::iota(v.begin(), v.end(), 0);
    return v;
}

// A result whose decoding notes whether it ran on a thread that iterates,
// and fails for the values 3, 10, 17, ...
thread_local bool iterating_here = false;
std::atomic<int> decoded_off_the_iterating_thread{0};
struct picky_result {
    int value = 0;
    template <class Archive>
    void save(Archive& ar) const {
        ar(value);
    }
    template <class Archive>
    void load(Archive& ar) {
        ar(value);
        if (!iterating_here) decoded_off_the_iterating_thread.fetch_add(1);
        if (value % 7 == 3) throw std::domain_error("cannot decode " + std::to_string(value));
    }
};
picky_result make_picky(int x) { return picky_result{x}; }

class map_iterator_test : public testing::TestWithParam<mp::start_method> {
protected:
    mp::context ctx() const { return mp::get_context(GetParam()); }
};

// Each failed item throws at its own place; the items around it, in the
// same chunk, keep their values, and the iteration goes on after it.
TEST_P(map_iterator_test, exception_at_its_index_in_every_map) {
    mp::process_pool_executor ex({.max_workers = 2, .context = ctx()});
    mp::pool p({.processes = 2, .context = ctx()});
    auto check_ordered = [](auto it) {
        for (int i = 0; i < 23; ++i) {
            if (i % 5 == 0)
                EXPECT_THROW((void)it.next(30s), std::out_of_range) << "item " << i;
            else
                EXPECT_EQ(it.next(30s), std::optional<int>(i));
        }
        EXPECT_EQ(it.next(30s), std::nullopt);
    };
    for (std::size_t cs : {1u, 4u, 23u}) {
        check_ordered(ex.map(fail_at_multiples_of_five, iota_vec(23), {.chunksize = cs}));
        check_ordered(p.imap(fail_at_multiples_of_five, iota_vec(23), cs));
        std::multiset<int> values;
        int failures = 0;
        auto u = ex.map_unordered(fail_at_multiples_of_five, iota_vec(23), {.chunksize = cs});
        for (int i = 0; i < 23; ++i) {
            try {
                values.insert(u.next(30s).value());
            } catch (const std::out_of_range&) {
                ++failures;
            }
        }
        EXPECT_EQ(u.next(30s), std::nullopt);
        EXPECT_EQ(failures, 5);
        EXPECT_EQ(values.size(), 18u);
        EXPECT_EQ(values.count(0) + values.count(5), 0u);
    }
}

// A stream's results are decoded by the thread that takes them from the
// iterator (not by the pool's result thread): what it allocates it frees,
// while still in its cache. A result that fails to decode fails its chunk
// there, at the chunk's place, and the iteration goes on.
TEST_P(map_iterator_test, results_are_decoded_by_the_iterating_thread_and_a_bad_one_fails_its_chunk) {
    mp::pool p({.processes = 2, .context = ctx()});
    mp::process_pool_executor ex({.max_workers = 2, .context = ctx()});
    iterating_here = true;
    decoded_off_the_iterating_thread = 0;
    auto check_ordered = [](auto it, std::size_t chunksize) {
        for (int i = 0; i < 30; ++i) {
            const int first = i - i % static_cast<int>(chunksize);
            bool chunk_fails = false;
            for (int j = first; j < first + static_cast<int>(chunksize) && j < 30; ++j) chunk_fails |= j % 7 == 3;
            if (chunk_fails)
                EXPECT_THROW((void)it.next(30s), std::domain_error) << "item " << i;
            else
                EXPECT_EQ(it.next(30s).value().value, i);
        }
        EXPECT_EQ(it.next(30s), std::nullopt);
    };
    for (std::size_t cs : {1u, 3u}) {
        check_ordered(p.imap(make_picky, iota_vec(30), cs), cs);
        check_ordered(ex.map(make_picky, iota_vec(30), {.chunksize = cs}), cs);
        std::multiset<int> values;
        int failures = 0;
        auto u = p.imap_unordered(make_picky, iota_vec(30), 1);
        for (int i = 0; i < 30; ++i) {
            try {
                values.insert(u.next(30s).value().value);
            } catch (const std::domain_error&) {
                ++failures;
            }
        }
        EXPECT_EQ(u.next(30s), std::nullopt);
        EXPECT_EQ(failures, 4);  // 3, 10, 17, 24
        EXPECT_EQ(values.size(), 26u);
    }
    iterating_here = false;
    EXPECT_EQ(decoded_off_the_iterating_thread.load(), 0);
}

// Values that are not trivially movable, and bool (a std::vector<bool> of
// results inside), come out whole, over many chunks.
TEST_P(map_iterator_test, results_of_every_kind_over_many_chunks) {
    mp::process_pool_executor ex({.max_workers = 2, .context = ctx()});
    std::vector<std::string> texts;
    for (const std::string& s : ex.map(as_text, iota_vec(3000), {.chunksize = 13})) texts.push_back(s);
    ASSERT_EQ(texts.size(), 3000u);
    for (int i = 0; i < 3000; ++i) ASSERT_EQ(texts[static_cast<std::size_t>(i)], as_text(i));
    int odd = 0, n = 0;
    for (bool b : ex.map(is_odd, iota_vec(1001), {.chunksize = 10})) {
        EXPECT_EQ(b, n % 2 != 0);
        odd += b;
        ++n;
    }
    EXPECT_EQ(n, 1001);
    EXPECT_EQ(odd, 500);
}

// Python's Executor.map: past its timeout the iterator raises, the items no
// worker has taken are cancelled (never run), and the iteration is over.
TEST_P(map_iterator_test, overall_timeout_cancels_untaken_items_and_ends_the_iteration) {
    gate_files g;
    mp::process_pool_executor ex({.max_workers = 1, .context = ctx()});
    auto blocker = ex.submit(wait_file, g.go);
    wait_until_running(blocker);
    std::vector<std::pair<std::string, int>> items;
    std::vector<std::tuple<std::string, int>> tuples;
    for (int i = 0; i < 10; ++i) {
        items.emplace_back(g.log, i);
        tuples.emplace_back(g.log, 100 + i);
    }
    auto it = ex.map(record_item, items, {.timeout = 50ms, .chunksize = 2});
    EXPECT_THROW((void)it.next(), mp::timeout_error);
    EXPECT_EQ(it.next(), std::nullopt);
    auto u = ex.map_unordered(record_item, items, {.timeout = 50ms});
    EXPECT_THROW((void)u.next(), mp::timeout_error);
    auto s = ex.starmap(record_pair, tuples, {.timeout = 50ms, .chunksize = 3});
    EXPECT_THROW((void)s.begin(), mp::timeout_error);
    g.open();
    EXPECT_EQ(blocker.get(30s), 1);
    EXPECT_EQ(ex.submit(sqr, 3).get(30s), 9);
    ex.shutdown(true);
    EXPECT_TRUE(runs_in(g.log).empty());
}

// A per-call timeout (pool.imap's next(timeout)) only says "not yet": the
// items still run and the iterator can be asked again.
TEST_P(map_iterator_test, per_call_timeout_can_be_asked_again) {
    gate_files g;
    mp::pool p({.processes = 1, .context = ctx()});
    auto it = p.imap(wait_file, std::vector<std::string>{g.go, g.go});
    EXPECT_THROW((void)it.next(50ms), mp::timeout_error);
    g.open();
    EXPECT_EQ(it.next(30s), std::optional<int>(1));
    EXPECT_EQ(it.next(30s), std::optional<int>(1));
    EXPECT_EQ(it.next(30s), std::nullopt);
}

// Destroyed before its end (here after one result, while the only worker is
// inside item 2), the iterator cancels the items no worker has taken; the
// chunk that was running finishes, and the executor goes on.
TEST_P(map_iterator_test, early_destruction_cancels_untaken_items) {
    gate_files g;
    mp::process_pool_executor ex({.max_workers = 1, .context = ctx()});
    std::vector<std::tuple<std::string, std::string, int>> items;
    for (int i = 0; i < 40; ++i) items.emplace_back(g.log, g.go, i);
    {
        auto it = ex.starmap(record_then_wait_at_two, items, {.chunksize = 2});
        EXPECT_EQ(it.next(30s), std::optional<int>(0));
        for (int i = 0; i < 30000 && runs_in(g.log).size() < 3; ++i) std::this_thread::sleep_for(1ms);
        ASSERT_EQ(runs_in(g.log), (std::vector<int>{0, 1, 2}));
    }
    g.open();
    EXPECT_EQ(ex.submit(sqr, 3).get(30s), 9);
    ex.shutdown(true);
    EXPECT_EQ(runs_in(g.log), (std::vector<int>{0, 1, 2, 3}));
}

// A moved iterator goes on where the other stopped; assigning over an
// iterator abandons what it was reading.
TEST_P(map_iterator_test, move_keeps_the_position) {
    mp::process_pool_executor ex({.max_workers = 2, .context = ctx()});
    auto a = ex.map(sqr, iota_vec(10), {.chunksize = 4});
    EXPECT_EQ(a.next(30s), std::optional<int>(0));
    auto b = std::move(a);
    EXPECT_EQ(a.next(), std::nullopt);  // NOLINT(bugprone-use-after-move): moved from is empty
    std::vector<int> rest;
    for (int x : b) rest.push_back(x);
    EXPECT_EQ(rest, (std::vector<int>{1, 4, 9, 16, 25, 36, 49, 64, 81}));
    b = ex.map(sqr, iota_vec(3));
    EXPECT_EQ(b.next(30s), std::optional<int>(0));
}

// The input is read ahead by a bounded window of chunks, however slowly the
// results are consumed: an endless range works, and memory stays flat.
TEST_P(map_iterator_test, endless_input_is_read_a_bounded_window_ahead) {
    mp::process_pool_executor ex({.max_workers = 2, .context = ctx()});
    std::atomic<long> read{0};
    auto endless = std::views::iota(0) | std::views::transform([&read](int i) {
                       read.fetch_add(1);
                       return i;
                   });
    const std::size_t chunksize = 5;
    auto it = ex.map(sqr, endless, {.chunksize = chunksize});
    for (int i = 0; i < 100; ++i) ASSERT_EQ(it.next(30s), std::optional<int>(i * i));
    std::this_thread::sleep_for(200ms);  // let the feeder read all it may
    // Taken: 100 items (20 chunks, one more held by the iterator); ahead: the window.
    const long bound = static_cast<long>((100 / chunksize + 2) * chunksize +
                                         chunksize * (std::max<std::size_t>(16, 4 * 2) + 1));
    EXPECT_LE(read.load(), bound);
}

// Large tasks wait for a worker only a few megabytes deep (the task queue
// then stays in its warm pages instead of running through fresh ones): with
// the one worker held at the first item, an input of 1 MiB items is read two
// items ahead, not the whole window (16 chunks).
int size_after_gate(std::pair<std::string, std::string> gate_and_text) {
    wait_file(gate_and_text.first);
    return static_cast<int>(gate_and_text.second.size());
}
TEST_P(map_iterator_test, large_items_are_sent_only_a_few_megabytes_ahead) {
    gate_files g;
    mp::pool p({.processes = 1, .context = ctx()});
    std::atomic<int> read{0};
    auto items = std::views::iota(0, 12) | std::views::transform([&](int) {
                     read.fetch_add(1);
                     return std::make_pair(g.go, std::string(std::size_t{1} << 20, 'x'));
                 });
    auto it = p.imap(size_after_gate, items, 1);
    for (int i = 0; i < 30000 && read.load() < 2; ++i) std::this_thread::sleep_for(1ms);
    std::this_thread::sleep_for(200ms);  // let the feeder read all it may
    EXPECT_LE(read.load(), 3);
    g.open();
    for (int i = 0; i < 12; ++i) EXPECT_EQ(it.next(30s), std::optional<int>(1 << 20));
    EXPECT_EQ(it.next(30s), std::nullopt);
}

// next() from several threads at once hands each result to exactly one.
TEST_P(map_iterator_test, next_from_several_threads_hands_each_result_once) {
    mp::process_pool_executor ex({.max_workers = 2, .context = ctx()});
    auto it = ex.map(sqr, iota_vec(2000), {.chunksize = 7});
    std::mutex m;
    std::vector<int> got;
    std::vector<std::thread> readers;
    for (int t = 0; t < 4; ++t)
        readers.emplace_back([&] {
            while (auto x = it.next(30s)) {
                std::lock_guard lock(m);
                got.push_back(*x);
            }
        });
    for (auto& r : readers) r.join();
    std::sort(got.begin(), got.end());
    std::vector<int> want;
    for (int i = 0; i < 2000; ++i) want.push_back(i * i);
    EXPECT_EQ(got, want);
}

INSTANTIATE_TEST_SUITE_P(all, map_iterator_test,
                         testing::Values(mp::start_method::fork, mp::start_method::spawn, mp::start_method::forkserver),
                         [](const auto& info) { return std::string(mp::to_string(info.param)); });

}  // namespace
