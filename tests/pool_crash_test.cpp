// Regression tests for the engine's crash windows and lifetime defects
// (issue 11): a task taken exactly once when its worker dies while taking
// it; a pool inherited by a fork child that exits; a helper thread the system
// refuses; shutdown and terminate from a done-callback.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <optional>
#include <string>
#include <system_error>
#include <thread>

#include "mp/pool.hpp"
#include "mp/process.hpp"
#include "mp/process_pool_executor.hpp"
#include "worker/test_hooks.hpp"

using namespace std::chrono_literals;
namespace hooks = mp::detail::test_hooks;

namespace {

std::string run_log_path() { return "/tmp/mp-pool-crash-test-" + std::to_string(::getpid()) + "-runs"; }

// Appends one byte to `path` per run: the number of times the task ran.
int record_run(std::string path) {
    std::ofstream(path, std::ios::app) << "x";
    return 7;
}
std::size_t runs_recorded(const std::string& path) {
    std::error_code ec;
    auto n = std::filesystem::file_size(path, ec);
    return ec ? 0 : static_cast<std::size_t>(n);
}
int sqr(int x) { return x * x; }

void arm_kill_while_reading() { hooks::kill_at_take = static_cast<int>(hooks::take_kill::while_reading); }
void arm_kill_before_claim() { hooks::kill_at_take = static_cast<int>(hooks::take_kill::before_claim); }

class pool_crash_test : public testing::TestWithParam<mp::start_method> {
protected:
    mp::context ctx() const { return mp::get_context(GetParam()); }

    // One worker dies at `where` while taking the first task; the task must
    // be taken exactly once: it either ran (once) and returned its value, or
    // it failed with worker_crashed and never ran.
    void check_taken_exactly_once(void (*arm)()) {
        const std::string log = run_log_path();
        std::filesystem::remove(log);
        const std::string gate = hooks::kill_at_take_gate(::getpid());
        std::ofstream(gate) << "x";
        {
            mp::pool p({.processes = 2, .initializer = arm, .context = ctx()});
            auto r = p.apply_async(record_run, log);
            bool crashed = false;
            try {
                EXPECT_EQ(r.get(30s), 7);
            } catch (const mp::worker_crashed&) {
                crashed = true;
            }
            // The pool goes on.
            EXPECT_EQ(p.apply(sqr, 9), 81);
            p.close();
            p.join();  // a second copy of the task, if any, has run by now
            EXPECT_FALSE(std::filesystem::exists(gate)) << "no worker died: the hook did not fire";
            EXPECT_EQ(runs_recorded(log), crashed ? 0u : 1u)
                << (crashed ? "reported worker_crashed, yet the task ran" : "the task ran more than once");
        }
        std::filesystem::remove(log);
        std::filesystem::remove(gate);
    }
};

TEST_P(pool_crash_test, worker_killed_while_reading_a_task_takes_it_exactly_once) {
    check_taken_exactly_once(arm_kill_while_reading);
}

TEST_P(pool_crash_test, worker_killed_before_claiming_a_task_takes_it_exactly_once) {
    check_taken_exactly_once(arm_kill_before_claim);
}

INSTANTIATE_TEST_SUITE_P(all, pool_crash_test,
                         testing::Values(mp::start_method::fork, mp::start_method::spawn, mp::start_method::forkserver),
                         [](const auto& info) { return std::string(mp::to_string(info.param)); });

}  // namespace
