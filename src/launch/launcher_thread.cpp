// Children are started from the main thread or from one long-lived launcher
// thread, never from a short-lived user thread: the kernel's parent-death
// signal, which kills a child when its parent dies, fires when the *thread*
// that started the child exits, so a child started from a worker thread would
// be killed as soon as that thread ended.
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

#include "launch/launch.hpp"

namespace mp::detail::launch {
namespace {

struct launcher {
    std::mutex mutex;
    std::condition_variable wake;
    std::deque<std::function<void()>> jobs;  // guarded by mutex

    void run() {
        for (;;) {
            std::function<void()> job;
            {
                std::unique_lock lock(mutex);
                wake.wait(lock, [&] { return !jobs.empty(); });
                job = std::move(jobs.front());
                jobs.pop_front();
            }
            job();
        }
    }
};

launcher* the_launcher = nullptr;  // guarded by launcher_mutex
sys::fork_guarded_mutex launcher_mutex;

launcher& get_launcher() {
    static const bool hooked = [] {
        // A fork child does not have the parent's launcher thread: it makes
        // its own when it needs one. The old object is left alone: its mutex
        // may be locked for ever.
        sys::register_after_fork([] { the_launcher = nullptr; });
        return true;
    }();
    static_cast<void>(hooked);
    std::lock_guard guard(launcher_mutex);
    if (!the_launcher) {
        // Never destroyed: the thread blocks on it until the process ends.
        the_launcher = new launcher;
        std::thread([l = the_launcher] { l->run(); }).detach();
    }
    return *the_launcher;
}

}  // namespace

void run_where_children_may_start(const std::function<void()>& job) {
    if (sys::current_tid() == sys::current_pid()) {
        job();
        return;
    }
    auto& l = get_launcher();
    std::mutex done_mutex;
    std::condition_variable done_cv;
    bool done = false;
    std::exception_ptr error;
    {
        std::lock_guard guard(l.mutex);
        l.jobs.emplace_back([&] {
            try {
                job();
            } catch (...) {
                error = std::current_exception();
            }
            std::lock_guard g(done_mutex);
            done = true;
            done_cv.notify_one();
        });
    }
    l.wake.notify_one();
    std::unique_lock lock(done_mutex);
    done_cv.wait(lock, [&] { return done; });
    if (error) std::rethrow_exception(error);
}

}  // namespace mp::detail::launch

namespace mp::detail {

std::unique_lock<sys::fork_guarded_mutex> lock_launcher_for_test() {
    return std::unique_lock(launch::launcher_mutex);
}

}  // namespace mp::detail
