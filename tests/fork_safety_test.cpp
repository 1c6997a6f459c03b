// A fork child never inherits one of mp's process-wide locks held by another
// thread of its parent (issue 11, item 11): fork() waits until no other thread
// holds one, and the child finds it unlocked. Each case holds a lock in a
// thread while the main thread forks, and the child then takes that lock.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "launch/launch.hpp"
#include "mp/process.hpp"
#include "mp/serialize.hpp"
#include "runtime.hpp"

using namespace std::chrono_literals;

namespace {

using held_lock = std::unique_lock<mp::sys::fork_guarded_mutex>;

// What a child does with each lock.
void rebuild_an_exception() {
    mp::detail::exception_record record;
    record.type_name = "std::out_of_range";
    record.what = "rebuilt in a fork child";
    try {
        std::rethrow_exception(mp::detail::rebuild_exception(record));
    } catch (const std::out_of_range&) {
        return;
    }
}
void start_from_a_thread() {
    // A thread other than the main one starts children through the launcher.
    std::thread t([] { mp::detail::launch::run_where_children_may_start([] {}); });
    t.join();
}
void ask_who_i_am() { static_cast<void>(mp::current_process()); }
void ask_for_the_forkserver() { static_cast<void>(mp::detail::helper_pids()); }

struct lock_case {
    const char* name;
    held_lock (*lock)();
    void (*use)();
};

const lock_case lock_cases[] = {
    {"exception_registry", &mp::detail::lock_exception_registry_for_test, &rebuild_an_exception},
    {"launcher", &mp::detail::lock_launcher_for_test, &start_from_a_thread},
    {"runtime", [] { return held_lock(mp::detail::runtime::get().mutex); }, &ask_who_i_am},
    {"forkserver_handle", &mp::detail::lock_forkserver_handle_for_test, &ask_for_the_forkserver},
};

/// fork()s a child that runs `use` and exits 0; its exit code, or nullopt if
/// it was still running after `limit` (it is then killed).
std::optional<int> fork_and_wait(void (*use)(), std::chrono::milliseconds limit) {
    pid_t pid = ::fork();
    if (pid == 0) {
        use();
        ::_exit(0);
    }
    if (pid < 0) return -1;
    auto until = std::chrono::steady_clock::now() + limit;
    int status = 0;
    while (::waitpid(pid, &status, WNOHANG) == 0) {
        if (std::chrono::steady_clock::now() > until) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, &status, 0);
            return std::nullopt;
        }
        std::this_thread::sleep_for(2ms);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void PrintTo(const lock_case& c, std::ostream* os) { *os << c.name; }

class held_lock_test : public testing::TestWithParam<lock_case> {};

}  // namespace

TEST_P(held_lock_test, a_fork_child_finds_a_lock_held_by_another_thread_unlocked) {
    const lock_case& c = GetParam();
    std::promise<void> held;
    std::thread holder([&] {
        held_lock lock = c.lock();
        held.set_value();
        // Long enough that the fork below happens while this thread holds it.
        std::this_thread::sleep_for(300ms);
    });
    held.get_future().wait();
    auto code = fork_and_wait(c.use, 10s);
    holder.join();
    ASSERT_TRUE(code.has_value()) << "the fork child hung on the " << c.name << " lock";
    EXPECT_EQ(*code, 0);
}

INSTANTIATE_TEST_SUITE_P(each_lock, held_lock_test, testing::ValuesIn(lock_cases),
                         [](const auto& info) { return std::string(info.param.name); });

void use_every_lock() {
    rebuild_an_exception();
    start_from_a_thread();
    ask_who_i_am();
}

TEST(fork_safety, fork_children_of_mp_use_locks_that_parent_threads_hammer) {
    // What the issue measured: threads of the parent take the locks all the
    // time while children are started with the fork method.
#if defined(__SANITIZE_ADDRESS__)
    // The hammering threads allocate all the time, and this sanitizer's
    // allocator takes locks of its own that a fork child can inherit held (no
    // fork handler in this version of its runtime): the child may hang in
    // malloc, not in mp. The held-lock cases above run under the sanitizer.
    GTEST_SKIP() << "fork while other threads allocate is not safe under AddressSanitizer's runtime";
#endif
    std::atomic<bool> stop{false};
    std::vector<std::thread> hammers;
    hammers.emplace_back([&] {
        while (!stop) rebuild_an_exception();
    });
    hammers.emplace_back([&] {
        while (!stop) mp::detail::launch::run_where_children_may_start([] {});
    });
    hammers.emplace_back([&] {
        while (!stop) ask_who_i_am();
    });
    testing::internal::CaptureStderr();  // the warning about forking with threads
    int hung = 0, failed = 0;
    for (int i = 0; i < 40; ++i) {
        mp::process p({.context = mp::get_context(mp::start_method::fork)}, use_every_lock);
        p.start();
        if (!p.join(10s)) {
            ++hung;
            p.kill();
            p.join();
        } else if (p.exitcode() != 0) {
            ++failed;
        }
    }
    stop = true;
    for (auto& t : hammers) t.join();
    static_cast<void>(testing::internal::GetCapturedStderr());
    EXPECT_EQ(hung, 0) << "fork children hung on a lock a parent thread held";
    EXPECT_EQ(failed, 0);
}
