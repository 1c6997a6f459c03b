// The engine's promises of SPEC §7a under every start method: no user code
// under the engine's locks (a blocking input range holds up nothing else),
// Python's cancellation (a task is running only once a worker took it).
#include <gtest/gtest.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <algorithm>
#include <filesystem>
#include <memory>
#include <fstream>
#include <future>
#include <ranges>
#include <string>
#include <thread>
#include <vector>

#include "mp/pool.hpp"
#include "mp/process_pool_executor.hpp"
#include "support/task_gates.hpp"

using namespace std::chrono_literals;

namespace {

using namespace mp_test;

int sqr(int x) { return x * x; }

// An input range whose reading blocks at item 2 until the test opens the gate.
struct input_gate {
    std::promise<void> reached;
    std::promise<void> opener;
    std::shared_future<void> open;
    input_gate() : open(opener.get_future().share()) {}
};
input_gate* g_gate = nullptr;

auto gated_input(int n) {
    return std::views::iota(0, n) | std::views::transform([](int i) {
               if (i == 2) {
                   g_gate->reached.set_value();
                   g_gate->open.wait();
               }
               return i;
           });
}

class executor_semantics_test : public testing::TestWithParam<mp::start_method> {
protected:
    mp::context ctx() const { return mp::get_context(GetParam()); }
};

TEST_P(executor_semantics_test, blocking_input_range_holds_up_neither_submit_nor_results) {
    input_gate gate;
    g_gate = &gate;
    mp::process_pool_executor ex({.max_workers = 2, .context = ctx()});
    auto results = ex.map(sqr, gated_input(5), {.chunksize = 1});
    ASSERT_EQ(gate.reached.get_future().wait_for(30s), std::future_status::ready);
    // The range is blocked now, in the middle of being read.
    for (int i = 0; i < 20; ++i) EXPECT_EQ(ex.submit(sqr, i).get(30s), i * i);
    mp::pool p({.processes = 2, .context = ctx()});
    input_gate gate2;
    g_gate = &gate2;
    auto it = p.imap(sqr, gated_input(4), 1);
    ASSERT_EQ(gate2.reached.get_future().wait_for(30s), std::future_status::ready);
    EXPECT_EQ(p.apply_async(sqr, 7).get(30s), 49);
    EXPECT_EQ(it.next(30s), std::optional<int>(0));
    EXPECT_EQ(it.next(30s), std::optional<int>(1));
    gate2.opener.set_value();
    EXPECT_EQ(it.next(30s), std::optional<int>(4));
    EXPECT_EQ(it.next(30s), std::optional<int>(9));
    EXPECT_EQ(it.next(30s), std::nullopt);
    g_gate = &gate;
    gate.opener.set_value();
    std::vector<int> got;
    for (int x : results) got.push_back(x);
    EXPECT_EQ(got, (std::vector<int>{0, 1, 4, 9, 16}));
    g_gate = nullptr;
}

// ---- Python's cancellation: running only once a worker took it ----

TEST_P(executor_semantics_test, queued_task_is_cancellable_however_far_ahead_it_was_dispatched) {
    gate_files g;
    mp::process_pool_executor ex({.max_workers = 1, .context = ctx()});
    auto blocker = ex.submit(wait_file, g.go);
    wait_until_running(blocker);
    std::vector<mp::future<int>> fs;
    for (int i = 0; i < 8; ++i) fs.push_back(ex.submit(record, g.log, i));
    EXPECT_FALSE(fs[5].running());
    EXPECT_TRUE(fs[5].cancel());
    EXPECT_TRUE(fs[2].cancel());
    EXPECT_TRUE(fs[5].cancelled());
    EXPECT_THROW((void)fs[5].get(), mp::cancelled_error);
    EXPECT_FALSE(blocker.cancel());  // taken: running
    g.open();
    EXPECT_EQ(blocker.get(30s), 1);
    for (int i : {0, 1, 3, 4, 6, 7}) EXPECT_EQ(fs[i].get(30s), i);
    ex.shutdown(true);
    EXPECT_EQ(runs_in(g.log), (std::vector<int>{0, 1, 3, 4, 6, 7}));
}

TEST_P(executor_semantics_test, shutdown_cancel_futures_cancels_every_task_no_worker_took) {
    gate_files g;
    mp::process_pool_executor ex({.max_workers = 2, .context = ctx()});
    auto b1 = ex.submit(wait_file, g.go);
    auto b2 = ex.submit(wait_file, g.go);
    wait_until_running(b1);
    wait_until_running(b2);
    std::vector<mp::future<int>> fs;
    for (int i = 0; i < 30; ++i) fs.push_back(ex.submit(record, g.log, i));
    ex.shutdown(false, true);
    for (auto& f : fs) EXPECT_TRUE(f.cancelled());
    g.open();
    EXPECT_EQ(b1.get(30s), 1);
    EXPECT_EQ(b2.get(30s), 1);
    ex.shutdown(true);
    EXPECT_TRUE(runs_in(g.log).empty());
}

TEST_P(executor_semantics_test, map_iterator_cancels_untaken_items_on_timeout_and_destruction) {
    gate_files g;
    mp::process_pool_executor ex({.max_workers = 1, .context = ctx()});
    auto blocker = ex.submit(wait_file, g.go);
    wait_until_running(blocker);
    std::vector<std::pair<std::string, int>> items;
    for (int i = 0; i < 10; ++i) items.emplace_back(g.log, i);
    {
        auto it = ex.map(record_item, items, {.timeout = 50ms, .chunksize = 1});
        EXPECT_THROW((void)it.next(), mp::timeout_error);
    }
    {
        auto it = ex.map(record_item, items, {.chunksize = 1});
        // destroyed unread
    }
    g.open();
    EXPECT_EQ(blocker.get(30s), 1);
    EXPECT_EQ(ex.submit(sqr, 3).get(30s), 9);
    ex.shutdown(true);
    EXPECT_TRUE(runs_in(g.log).empty());
}

// ---- f.terminate(): stop a running task ----

TEST_P(executor_semantics_test, terminate_stops_a_running_task_and_cancels_a_pending_one) {
    gate_files g;
    mp::process_pool_executor ex({.max_workers = 2, .context = ctx()});
    auto running = ex.submit(wait_file, g.go);  // never opened: only terminate() ends it
    wait_until_running(running);
    auto other = ex.submit(wait_file, g.go + "-other");
    wait_until_running(other);
    auto pending = ex.submit(record, g.log, 1);
    EXPECT_TRUE(pending.terminate());
    EXPECT_TRUE(pending.cancelled());
    EXPECT_TRUE(running.terminate());
    EXPECT_THROW((void)running.get(30s), mp::cancelled_error);
    // The worker was replaced; the other task goes on.
    EXPECT_EQ(ex.submit(sqr, 5).get(30s), 25);
    EXPECT_FALSE(other.done());
    std::ofstream(g.go + "-other") << "x";
    EXPECT_EQ(other.get(30s), 1);
    EXPECT_FALSE(running.terminate());  // over
    mp::pool p({.processes = 1, .context = ctx()});
    auto r = p.apply_async(wait_file, g.go);
    wait_until_running(r);
    EXPECT_TRUE(r.terminate());
    EXPECT_THROW((void)r.get(30s), mp::cancelled_error);
    EXPECT_EQ(p.apply(sqr, 4), 16);
    ex.shutdown(true);
    std::filesystem::remove(g.go + "-other");
    EXPECT_TRUE(runs_in(g.log).empty());
}

// ---- results without extra copies (SPEC §7a) ----

struct move_only_result {
    std::unique_ptr<int> value;
    move_only_result() = default;
    explicit move_only_result(int v) : value(std::make_unique<int>(v)) {}
    move_only_result(move_only_result&&) = default;
    move_only_result& operator=(move_only_result&&) = default;
    template <class Archive>
    void save(Archive& ar) const {
        ar(*value);
    }
    template <class Archive>
    void load(Archive& ar) {
        int v = 0;
        ar(v);
        value = std::make_unique<int>(v);
    }
};
move_only_result make_move_only(int v) { return move_only_result(v); }
std::vector<int> big_vector(int n) { return std::vector<int>(static_cast<std::size_t>(n), 3); }
void touch(std::string path, int i) { std::ofstream(path, std::ios::app) << i << "\n"; }
void touch_item(std::pair<std::string, int> p) { touch(p.first, p.second); }

TEST_P(executor_semantics_test, get_returns_a_reference_and_moves_out_of_an_rvalue_future) {
    mp::process_pool_executor ex({.max_workers = 1, .context = ctx()});
    auto f = ex.submit(big_vector, 1000);
    const std::vector<int>& a = f.get();
    const std::vector<int>& b = f.get();
    EXPECT_EQ(&a, &b);  // the shared value itself: no copy
    EXPECT_EQ(a.size(), 1000u);
    std::vector<int> moved = std::move(f).get();
    EXPECT_EQ(moved.size(), 1000u);
    move_only_result m = ex.submit(make_move_only, 7).get();
    EXPECT_EQ(*m.value, 7);
    auto g = ex.submit(make_move_only, 8);
    EXPECT_EQ(*g.get().value, 8);
    EXPECT_EQ(*std::move(g).get().value, 8);
}

TEST_P(executor_semantics_test, pool_map_of_a_void_function) {
    gate_files g;
    mp::pool p({.processes = 2, .context = ctx()});
    std::vector<std::pair<std::string, int>> items;
    for (int i = 0; i < 10; ++i) items.emplace_back(g.log, i);
    auto none = p.map(touch_item, items);
    EXPECT_EQ(none.size(), 10u);
    auto runs = runs_in(g.log);
    std::sort(runs.begin(), runs.end());
    EXPECT_EQ(runs, (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
    EXPECT_EQ(p.starmap(touch, items).size(), 10u);
}


// ---- one executor shape (SPEC §1, §7a) ----

TEST_P(executor_semantics_test, context_makes_pools_and_executors_with_its_start_method) {
    auto c = ctx();
    mp::pool p = c.pool(2);
    EXPECT_EQ(p.processes(), 2);
    EXPECT_EQ(p.apply(sqr, 3), 9);
    mp::pool q = c.pool({.processes = 1});
    EXPECT_EQ(q.map(sqr, std::vector<int>{1, 2}), (std::vector<int>{1, 4}));
    mp::process_pool_executor ex = c.process_pool_executor(1);
    EXPECT_EQ(ex.submit(sqr, 4).get(), 16);
    mp::map_options shared{.chunksize = 2};
    std::vector<int> got;
    for (int x : ex.map(sqr, std::vector<int>{1, 2, 3}, shared)) got.push_back(x);
    EXPECT_EQ(got, (std::vector<int>{1, 4, 9}));
    EXPECT_THROW((void)c.pool(0), mp::value_error);
}

INSTANTIATE_TEST_SUITE_P(all, executor_semantics_test,
                         testing::Values(mp::start_method::fork, mp::start_method::spawn, mp::start_method::forkserver),
                         [](const auto& info) { return std::string(mp::to_string(info.param)); });

}  // namespace
