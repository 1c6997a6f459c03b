// thread_pool_executor.cpp — the threads and queue behind mp::thread_pool_executor.
#include "mp/thread_pool_executor.hpp"


#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "mp/context.hpp"
#include "sys/sys.hpp"

namespace mp {
namespace detail {

namespace {

std::atomic<int> executor_counter{0};

std::string describe(std::exception_ptr e) {
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& x) {
        return x.what();
    } catch (...) {
        return "an exception that is not a std::exception";
    }
}

}  // namespace

int default_thread_pool_workers() { return std::min(32, cpu_count() + 4); }

struct thread_pool_core::state {
    int max_workers = 0;
    std::function<void()> initializer;
    std::string name_prefix;
    int owner_pid = 0;  // the process that made the executor; its threads exist only there

    std::mutex mutex;
    std::condition_variable work_ready;                 // queue non-empty, or shutdown/broken
    std::deque<std::unique_ptr<thread_task>> queue;     // guarded by mutex
    std::vector<std::thread> threads;                   // guarded by mutex; appended only before shutdown
    std::size_t idle = 0;                               // guarded by mutex: threads holding no call
    std::size_t started = 0;                            // guarded by mutex: threads ever started
    bool shut_down = false;                             // guarded by mutex
    std::string broken;                                 // guarded by mutex: why, when broken

    std::mutex join_mutex;  // serialises shutdown(true) callers while they join

    [[nodiscard]] bool inherited() const noexcept { return sys::current_pid() != owner_pid; }
    void worker_main(std::size_t index);
    void break_pool(std::exception_ptr e);
};

namespace {

/// Starts a thread for `s`; requires s->mutex held. The thread keeps the
/// state alive, so the last owner may let go of it from inside a call.
void start_thread(const std::shared_ptr<thread_pool_core::state>& s) {
    std::size_t index = s->threads.size();
    ++s->idle;  // a new thread holds no call yet; it takes one from the queue
    try {
        s->threads.emplace_back([s, index] { s->worker_main(index); });
    } catch (...) {
        --s->idle;
        throw;
    }
    ++s->started;
}

}  // namespace

void thread_pool_core::state::worker_main(std::size_t index) {
    const std::string name = name_prefix + "_" + std::to_string(index);
    sys::set_thread_name(name);

    if (initializer) {
        try {
            initializer();
        } catch (...) {
            break_pool(std::current_exception());
            std::lock_guard lock(mutex);
            --idle;
            return;
        }
    }

    std::unique_lock lock(mutex);
    for (;;) {
        work_ready.wait(lock, [&] { return !queue.empty() || shut_down || !broken.empty(); });
        if (queue.empty()) {
            --idle;
            return;
        }
        std::unique_ptr<thread_task> task = std::move(queue.front());
        queue.pop_front();
        --idle;
        lock.unlock();
        task->execute();
        // Idle again before the future is set: a caller that waits on this
        // result and submits the next call finds this thread idle rather
        // than starting another one (Python's test_idle_thread_reuse).
        lock.lock();
        ++idle;
        lock.unlock();
        task->publish();  // done callbacks run here, outside the lock
        task.reset();     // the call's captures are destroyed outside the lock too
        lock.lock();
    }
}

void thread_pool_core::state::break_pool(std::exception_ptr e) {
    std::deque<std::unique_ptr<thread_task>> failed;
    {
        std::lock_guard lock(mutex);
        if (broken.empty())
            broken = "a thread's initializer threw (" + describe(e) +
                     "), so the executor is broken; create a new executor (and fix the initializer)";
        failed.swap(queue);
    }
    work_ready.notify_all();
    for (auto& t : failed) t->fail(e);
}

thread_pool_core::thread_pool_core(thread_pool_options options) : s_(std::make_shared<state>()) {
    if (options.max_workers < 0)
        throw value_error("mp::thread_pool_executor: max_workers must be greater than 0 (0 in the options: the default)");
    s_->max_workers = options.max_workers == 0 ? default_thread_pool_workers() : options.max_workers;
    s_->initializer = std::move(options.initializer);
    s_->name_prefix = options.thread_name_prefix.empty()
                          ? "ThreadPool-" + std::to_string(executor_counter.fetch_add(1))
                          : std::move(options.thread_name_prefix);
    s_->owner_pid = sys::current_pid();
}

thread_pool_core::~thread_pool_core() {
    if (s_->inherited()) {
        // A forked child: the threads are the parent's, and the mutex may
        // have been held by one of them at the fork. Touch nothing;
        // destroying the joinable std::threads would terminate.
        new std::shared_ptr<state>(std::move(s_));  // deliberately leaked
        return;
    }
    shutdown(true, false);
}

void thread_pool_core::submit(std::unique_ptr<thread_task> task) {
    if (s_->inherited())
        throw error(
            "mp::thread_pool_executor: this executor was inherited through fork and its threads stay "
            "in the parent; create a new executor in the child");
    {
        std::lock_guard lock(s_->mutex);
        if (!s_->broken.empty()) throw error("mp::thread_pool_executor: " + s_->broken);
        if (s_->shut_down)
            throw closed_error(
                "mp::thread_pool_executor: cannot schedule new calls after shutdown(); submit before "
                "shutting down, or create a new executor");
        s_->queue.push_back(std::move(task));
        if (s_->idle < s_->queue.size() && s_->threads.size() < static_cast<std::size_t>(s_->max_workers)) {
            try {
                start_thread(s_);
            } catch (...) {
                // No thread could start. If none exists at all, the call
                // would never run: take it back and report the failure.
                if (s_->threads.empty()) {
                    s_->queue.pop_back();
                    throw;
                }
            }
        }
    }
    s_->work_ready.notify_one();
}

void thread_pool_core::shutdown(bool wait, bool cancel_futures) noexcept {
    if (s_->inherited()) return;  // see the destructor
    std::deque<std::unique_ptr<thread_task>> cancelled;
    {
        std::lock_guard lock(s_->mutex);
        s_->shut_down = true;
        if (cancel_futures) cancelled.swap(s_->queue);
    }
    s_->work_ready.notify_all();
    for (auto& t : cancelled) t->cancel();
    cancelled.clear();
    if (!wait) return;

    std::lock_guard join_lock(s_->join_mutex);
    // No thread is added after shut_down was set, so this list is final.
    std::vector<std::thread> threads;
    {
        std::lock_guard lock(s_->mutex);
        threads.swap(s_->threads);
    }
    for (auto& t : threads) {
        if (t.get_id() == std::this_thread::get_id())
            t.detach();  // shutdown from inside a call: the thread ends after that call
        else
            t.join();
    }
}

int thread_pool_core::max_workers() const noexcept { return s_->max_workers; }

std::size_t thread_pool_core::thread_count() const {
    std::lock_guard lock(s_->mutex);
    return s_->started;
}

}  // namespace detail

thread_pool_executor::thread_pool_executor(int max_workers)
    : thread_pool_executor(thread_pool_options{.max_workers = max_workers < 1 ? -1 : max_workers}) {}

thread_pool_executor::thread_pool_executor(thread_pool_options options)
    : core_(std::make_shared<detail::thread_pool_core>(std::move(options))) {}

thread_pool_executor::~thread_pool_executor() { shutdown(true, false); }

void thread_pool_executor::shutdown(bool wait, bool cancel_futures) noexcept { core_->shutdown(wait, cancel_futures); }

int thread_pool_executor::max_workers() const noexcept { return core_->max_workers(); }

std::size_t thread_pool_executor::thread_count() const { return core_->thread_count(); }

}  // namespace mp
