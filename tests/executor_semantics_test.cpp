// The engine's promises of SPEC §7a under every start method: no user code
// under the engine's locks (a blocking input range holds up nothing else),
// Python's cancellation (a task is running only once a worker took it).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <ranges>
#include <string>
#include <thread>
#include <vector>

#include "mp/pool.hpp"
#include "mp/process_pool_executor.hpp"

using namespace std::chrono_literals;

namespace {

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

INSTANTIATE_TEST_SUITE_P(all, executor_semantics_test,
                         testing::Values(mp::start_method::fork, mp::start_method::spawn, mp::start_method::forkserver),
                         [](const auto& info) { return std::string(mp::to_string(info.param)); });

}  // namespace
