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
// Long enough that a done-callback is usually added before the task ends (the
// test is right either way; this only makes the interesting case the usual one).
int slow_sqr(int x) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    return x * x;
}

// 2 MiB: past the size from which a result travels through its worker's area.
constexpr int large_doubles = 1 << 18;
std::vector<double> large_result(int n) { return std::vector<double>(static_cast<std::size_t>(n), 2.5); }

void arm_kill_after_large_result() { hooks::kill_at_take = static_cast<int>(hooks::take_kill::large_result_stored); }
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

// A worker dies with its large result stored in its area but not announced:
// the task fails as crashed, and the area goes back to the slot, so that the
// replacement's large results arrive (it would wait for the area for ever).
TEST_P(pool_crash_test, worker_killed_after_storing_a_large_result_fails_only_its_task) {
    const std::string gate = hooks::kill_at_take_gate(::getpid());
    std::ofstream(gate) << "x";
    {
        mp::pool p({.processes = 1, .initializer = arm_kill_after_large_result, .context = ctx()});
        EXPECT_THROW((void)p.apply_async(large_result, large_doubles).get(30s), mp::worker_crashed);
        EXPECT_FALSE(std::filesystem::exists(gate)) << "no worker died: the hook did not fire";
        for (int i = 0; i < 3; ++i) {
            auto f = p.apply_async(large_result, large_doubles);
            if (!f.wait_for(30s)) {
                p.terminate();  // the replacement waits for an area nobody frees
                FAIL() << "the replacement worker's large result did not arrive";
            }
            auto v = std::move(f).get();
            ASSERT_EQ(v.size(), static_cast<std::size_t>(large_doubles));
            EXPECT_EQ(v.front(), 2.5);
            EXPECT_EQ(v.back(), 2.5);
        }
    }
    std::filesystem::remove(gate);
}

void arm_kill_after_result_sent() { hooks::kill_at_take = static_cast<int>(hooks::take_kill::result_sent); }

// A worker dies right after its result went into the result queue, before
// its slot let go of the task: the pool reports the task lost behind the
// result, and the result wins. Here the thread that took the result (the
// caller, receiving in get()) reports it slowly, while the result thread
// takes the loss report behind it: the loss must wait for the result.
TEST_P(pool_crash_test, worker_killed_right_after_sending_its_result_still_delivers_it) {
    const std::string gate = hooks::kill_at_take_gate(::getpid());
    {
        mp::pool p({.processes = 1, .initializer = arm_kill_after_result_sent, .context = ctx()});
        // Warm: the caller receives its results itself from now on.
        for (int i = 0; i < 200; ++i) ASSERT_EQ(p.apply_async(sqr, i).get(30s), i * i);
        std::ofstream(gate) << "x";
        hooks::result_report_delay_ms = 300;
        int got = -1;
        EXPECT_NO_THROW(got = p.apply_async(sqr, 12).get(30s));
        hooks::result_report_delay_ms = 0;
        EXPECT_EQ(got, 144);
        EXPECT_FALSE(std::filesystem::exists(gate)) << "no worker died: the hook did not fire";
        EXPECT_EQ(p.apply(sqr, 5), 25);  // the replacement works
    }
    std::filesystem::remove(gate);
}

int sleep_then_return(int ms) {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return ms;
}

// The supervisor that stops a task past its deadline may not get to run
// before the task ends (on a loaded machine; the 10-minute executor soak saw
// late tasks deliver their results so). A run past its deadline fails with
// timeout_error all the same; a run within it keeps its result.
TEST_P(pool_crash_test, task_ending_past_its_deadline_before_it_is_stopped_still_times_out) {
    mp::pool p({.processes = 1, .context = ctx()});
    hooks::deadline_scan_paused = true;
    auto late = p.submit_with({.timeout = 50ms}, sleep_then_return, 300);
    auto on_time = p.submit_with({.timeout = 30s}, sleep_then_return, 1);
    EXPECT_THROW((void)late.get(30s), mp::timeout_error);
    EXPECT_EQ(on_time.get(30s), 1);
    hooks::deadline_scan_paused = false;
    EXPECT_EQ(p.apply(sqr, 4), 16);  // the same worker goes on: nothing was stopped

    mp::process_pool_executor ex({.max_workers = 1, .context = ctx()});
    hooks::deadline_scan_paused = true;
    auto late_too = ex.submit_with({.timeout = 50ms}, sleep_then_return, 300);
    EXPECT_THROW((void)late_too.get(30s), mp::timeout_error);
    hooks::deadline_scan_paused = false;
    EXPECT_EQ(ex.submit(sqr, 5).get(30s), 25);
}

// ---- a pool inherited by a fork child (11.8) ----

std::optional<mp::pool> g_inherited_pool;  // a static: std::exit() in a fork child destroys its copy

void exit_through_static_destructors() { std::exit(0); }
int exit_from_a_task(int code) { std::exit(code); }

TEST_P(pool_crash_test, fork_child_exiting_through_static_destructors_leaves_the_pool_working) {
    g_inherited_pool.emplace(mp::pool_options{.processes = 2, .context = ctx()});
    EXPECT_EQ(g_inherited_pool->apply(sqr, 3), 9);
    mp::process child({.context = mp::get_context(mp::start_method::fork)}, exit_through_static_destructors);
    child.start();
    child.join();
    // It ended (under LeakSanitizer its exit code reports the stacks of the
    // parent's threads, which a fork child does not have; not this test's subject).
    EXPECT_TRUE(child.exitcode().has_value());
    EXPECT_EQ(g_inherited_pool->apply_async(sqr, 4).get(20s), 16);
    EXPECT_EQ(g_inherited_pool->map(sqr, std::vector<int>{1, 2, 3}), (std::vector<int>{1, 4, 9}));
    g_inherited_pool.reset();
}

TEST_P(pool_crash_test, worker_exiting_through_static_destructors_fails_only_its_task) {
    // Under fork the worker inherited g_inherited_pool too.
    g_inherited_pool.emplace(mp::pool_options{.processes = 2, .context = ctx()});
    EXPECT_THROW((void)g_inherited_pool->apply_async(exit_from_a_task, 3).get(20s), mp::worker_crashed);
    EXPECT_EQ(g_inherited_pool->apply_async(sqr, 5).get(20s), 25);
    g_inherited_pool.reset();
}

// ---- a helper thread that cannot be created (11.9) ----

TEST_P(pool_crash_test, constructor_throws_and_leaves_nothing_when_a_helper_thread_cannot_start) {
    for (int refused : {1, 2}) {  // the first helper thread, then the second
        hooks::refuse_thread_start = refused;
        EXPECT_THROW(mp::pool p({.processes = 2, .context = ctx()}), mp::system_error) << "thread " << refused;
        hooks::refuse_thread_start = refused;
        EXPECT_THROW(mp::process_pool_executor ex({.max_workers = 2, .context = ctx()}), mp::system_error);
        hooks::refuse_thread_start = 0;
    }
    mp::pool p({.processes = 2, .context = ctx()});
    EXPECT_EQ(p.apply(sqr, 6), 36);
    // The leak listener checks that no worker process and no fd was left behind.
}

// ---- shutdown and terminate from a done-callback (11.10) ----

TEST_P(pool_crash_test, terminate_from_a_done_callback) {
    mp::pool p({.processes = 2, .context = ctx()});
    std::promise<void> called;
    auto f = p.apply_async(sqr, 3);
    f.add_done_callback([&](mp::future<int>&) {
        p.terminate();
        called.set_value();
    });
    EXPECT_EQ(called.get_future().wait_for(20s), std::future_status::ready);
    EXPECT_EQ(f.get(), 9);
    EXPECT_THROW((void)p.apply_async(sqr, 2), mp::closed_error);
}

TEST_P(pool_crash_test, shutdown_from_a_done_callback) {
    for (bool wait : {false, true}) {
        mp::process_pool_executor ex({.max_workers = 2, .context = ctx()});
        std::promise<std::string> outcome;
        auto f = ex.submit(slow_sqr, 3);
        const auto caller = std::this_thread::get_id();
        bool on_the_callers_thread = false;  // written before outcome is set
        f.add_done_callback([&](mp::future<int>&) {
            // A task that is already done runs its callback at once, here.
            on_the_callers_thread = std::this_thread::get_id() == caller;
            try {
                ex.shutdown(wait);
                outcome.set_value("returned");
            } catch (const mp::error& e) {
                outcome.set_value(std::string("threw: ") + e.what());
            }
        });
        auto o = outcome.get_future();
        ASSERT_EQ(o.wait_for(20s), std::future_status::ready);
        auto what = o.get();
        // Waiting there would wait for the thread that runs the callback: it
        // says so instead; shutdown(false) returns, and so does a wait from
        // the caller's own thread.
        if (wait && !on_the_callers_thread)
            EXPECT_NE(what.find("threw: "), std::string::npos) << what;
        else
            EXPECT_EQ(what, "returned");
        EXPECT_EQ(f.get(), 9);
        EXPECT_THROW((void)ex.submit(sqr, 2), mp::closed_error);
    }
}

TEST_P(pool_crash_test, submit_from_a_done_callback) {
    mp::process_pool_executor ex({.max_workers = 2, .context = ctx()});
    std::promise<mp::future<int>> inner;
    auto f = ex.submit(sqr, 3);
    f.add_done_callback([&](mp::future<int>& g) { inner.set_value(ex.submit(sqr, g.get())); });
    auto fi = inner.get_future();
    ASSERT_EQ(fi.wait_for(20s), std::future_status::ready);
    EXPECT_EQ(fi.get().get(20s), 81);
}

// ---- replacement workers are never forked from the threaded pool (issue 7.5) ----

int parent_of_worker(int) { return static_cast<int>(::getppid()); }

std::size_t thread_count() {
    return static_cast<std::size_t>(std::distance(std::filesystem::directory_iterator("/proc/self/task"),
                                                  std::filesystem::directory_iterator()));
}
int die_now(int) {
    std::_Exit(3);
}

TEST_P(pool_crash_test, replacement_workers_are_not_forked_by_the_threaded_pool_process) {
    testing::internal::CaptureStderr();
    {
        // The pool forks its first workers itself only while this process
        // has one thread; earlier tests of this binary may have left threads
        // of the library running (then a helper forks them all).
        const bool single_threaded = thread_count() == 1;
        mp::pool p({.processes = 1, .context = ctx()});
        const bool fork = GetParam() == mp::start_method::fork;
        int first = p.apply(parent_of_worker, 0);
        EXPECT_THROW((void)p.apply(die_now, 0), mp::worker_crashed);
        int replacement = p.apply(parent_of_worker, 0);
        if (fork) {
            if (single_threaded) {
                EXPECT_EQ(first, ::getpid());
            }
            EXPECT_NE(replacement, ::getpid()) << "the threaded pool process forked its replacement worker";
        }
        mp::pool q({.processes = 1, .maxtasksperchild = 1, .context = ctx()});
        for (int i = 0; i < 5; ++i) EXPECT_EQ(q.apply(sqr, i), i * i);
    }
    auto err = testing::internal::GetCapturedStderr();
    EXPECT_EQ(err.find("fork"), std::string::npos) << err;
}

INSTANTIATE_TEST_SUITE_P(all, pool_crash_test,
                         testing::Values(mp::start_method::fork, mp::start_method::spawn, mp::start_method::forkserver),
                         [](const auto& info) { return std::string(mp::to_string(info.param)); });

}  // namespace
