// thread_pool_executor.cpp — the threads and queue behind mp::thread_pool_executor.
#include "mp/thread_pool_executor.hpp"


#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

#include "mp/context.hpp"
#include "sys/after_fork.hpp"
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

// This process's id without a system call per submit: refreshed in every
// fork child (an executor inherited through fork must know it is not its
// owner's), computed at first use.
std::atomic<int> cached_pid{0};
void refresh_cached_pid() { cached_pid.store(sys::current_pid(), std::memory_order_relaxed); }
int current_pid() noexcept {
    int pid = cached_pid.load(std::memory_order_relaxed);
    if (pid != 0) return pid;
    static const bool registered = (sys::register_after_fork(&refresh_cached_pid), true);
    (void)registered;
    refresh_cached_pid();
    return cached_pid.load(std::memory_order_relaxed);
}

}  // namespace

int default_thread_pool_workers() { return std::min(32, cpu_count() + 4); }

/// The queued calls, first in first out, in a ring that grows and never
/// shrinks: pushing and taking allocate nothing once it is big enough. (A
/// std::deque frees a block every few dozen calls in the taking thread, a
/// block the submitting thread allocated: in glibc that frees into another
/// thread's arena, under its lock.)
class task_ring {
public:
    [[nodiscard]] bool empty() const noexcept { return count_ == 0; }
    [[nodiscard]] std::size_t size() const noexcept { return count_; }
    void push_back(std::shared_ptr<thread_task> t) {
        if (count_ == slots_.size()) grow();
        slots_[(head_ + count_) & (slots_.size() - 1)] = std::move(t);
        ++count_;
    }
    std::shared_ptr<thread_task> pop_front() noexcept {
        auto t = std::move(slots_[head_]);
        head_ = (head_ + 1) & (slots_.size() - 1);
        --count_;
        return t;
    }
    void pop_back() noexcept {
        --count_;
        slots_[(head_ + count_) & (slots_.size() - 1)].reset();
    }
    /// Empties the ring, returning its calls in order.
    std::vector<std::shared_ptr<thread_task>> take_all() {
        std::vector<std::shared_ptr<thread_task>> out;
        out.reserve(count_);
        while (count_ > 0) out.push_back(pop_front());
        return out;
    }

private:
    void grow() {
        std::vector<std::shared_ptr<thread_task>> bigger(std::max<std::size_t>(64, 2 * slots_.size()));
        for (std::size_t i = 0; i < count_; ++i) bigger[i] = std::move(slots_[(head_ + i) & (slots_.size() - 1)]);
        slots_.swap(bigger);
        head_ = 0;
    }

    std::vector<std::shared_ptr<thread_task>> slots_;  // a power of two in size
    std::size_t head_ = 0;
    std::size_t count_ = 0;
};

// How long an idle thread spins for the next call before it sleeps. Only
// one idle thread spins at a time, so spinning never takes more than one core
// from the callers. Trade-off as for a future's waiter (future.cpp): a call
// submitted within this starts without a futex wake (a submit().get() round
// trip costs less than half); longer burns more of an idle thread's CPU.
constexpr auto spin_for_work = std::chrono::microseconds(50);

struct thread_pool_core::state {
    int max_workers = 0;
    std::function<void()> initializer;
    std::string name_prefix;
    int owner_pid = 0;  // the process that made the executor; its threads exist only there
    std::weak_ptr<state> self;  // for the timer thread, which keeps the state alive as the workers do

    std::mutex mutex;
    std::condition_variable work_ready;                 // notified when a sleeper is needed
    task_ring queue;                                    // guarded by mutex
    std::atomic<std::size_t> queued{0};                 // written under mutex: queue.size(), for the spinner
    std::vector<std::thread> threads;                   // guarded by mutex; appended only before shutdown
    std::atomic<std::size_t> idle{0};                   // threads holding no call (read by submit under mutex)
    std::size_t sleepers = 0;                           // guarded by mutex: threads waiting on work_ready
    std::size_t wakes_pending = 0;                      // guarded by mutex: notified sleepers not yet out of the wait
    bool spinning = false;                              // guarded by mutex: an idle thread spins for work
    sys::spin_history work_spins;                       // whether spinning for work pays off (not under overload)
    std::size_t started = 0;                            // guarded by mutex: threads ever started
    bool shut_down = false;                             // guarded by mutex
    std::string broken;                                 // guarded by mutex: why, when broken
    std::atomic<bool> stopping{false};                  // shut_down or broken, for the spinner

    std::mutex join_mutex;  // serialises shutdown(true) callers while they join

    // Deadlines of running calls (submit_with), watched by the timer thread,
    // started with the first one. An entry whose call is over is dropped when due.
    std::mutex timer_mutex;
    std::condition_variable timer_wake;
    std::multimap<std::chrono::steady_clock::time_point, std::pair<std::weak_ptr<thread_task>, std::chrono::nanoseconds>>
        deadlines;          // guarded by timer_mutex
    std::thread timer;      // guarded by timer_mutex
    bool timer_stop = false;  // guarded by timer_mutex

    [[nodiscard]] bool inherited() const noexcept { return current_pid() != owner_pid; }
    void worker_main(std::size_t index);
    std::shared_ptr<thread_task> take(std::unique_lock<std::mutex>& lock);
    void break_pool(std::exception_ptr e);
    void arm_deadline(const std::shared_ptr<thread_task>& task);
    void timer_main();
    void stop_timer() noexcept;
};

namespace {

/// Starts a thread for `s`; requires s->mutex held. The thread keeps the
/// state alive, so the last owner may let go of it from inside a call.
void start_thread(const std::shared_ptr<thread_pool_core::state>& s) {
    std::size_t index = s->threads.size();
    s->idle.fetch_add(1, std::memory_order_relaxed);  // a new thread holds no call yet; it takes one from the queue
    try {
        s->threads.emplace_back([s, index] { s->worker_main(index); });
    } catch (...) {
        s->idle.fetch_sub(1, std::memory_order_relaxed);
        throw;
    }
    ++s->started;
}

}  // namespace

// The next call for an idle thread, or null when the executor stops. Under
// `lock`. One idle thread spins (without the lock) before sleeping, so that
// a call submitted soon after needs no wake-up.
std::shared_ptr<thread_task> thread_pool_core::state::take(std::unique_lock<std::mutex>& lock) {
    for (;;) {
        if (!queue.empty()) {
            std::shared_ptr<thread_task> task = queue.pop_front();
            queued.store(queue.size(), std::memory_order_relaxed);
            idle.fetch_sub(1, std::memory_order_relaxed);
            return task;
        }
        if (shut_down || !broken.empty()) return nullptr;
        if (!spinning) {
            spinning = true;
            lock.unlock();
            sys::spinner spin(spin_for_work, &work_spins);
            while (spin.step())
                if (queued.load(std::memory_order_relaxed) != 0 || stopping.load(std::memory_order_relaxed)) break;
            lock.lock();
            spinning = false;
            if (!queue.empty() || shut_down || !broken.empty()) continue;
        }
        ++sleepers;
        work_ready.wait(lock);
        // Whichever sleeper leaves the wait (notified or spuriously) answers
        // one pending wake: it is awake now and takes the queued call.
        --sleepers;
        if (wakes_pending > 0) --wakes_pending;
    }
}

void thread_pool_core::state::worker_main(std::size_t index) {
    const std::string name = name_prefix + "_" + std::to_string(index);
    sys::set_thread_name(name);

    if (initializer) {
        try {
            initializer();
        } catch (...) {
            break_pool(std::current_exception());
            idle.fetch_sub(1, std::memory_order_relaxed);
            return;
        }
    }

    std::unique_lock lock(mutex);
    for (;;) {
        std::shared_ptr<thread_task> task = take(lock);
        if (!task) {
            idle.fetch_sub(1, std::memory_order_relaxed);
            return;
        }
        lock.unlock();
        if (task->timeout) arm_deadline(task);
        task->execute();
        // Idle again before the future is set: a caller that waits on this
        // result and submits the next call finds this thread idle rather
        // than starting another one (Python's test_idle_thread_reuse).
        idle.fetch_add(1, std::memory_order_relaxed);
        task->publish();  // done callbacks run here, outside the lock
        task.reset();     // the call's captures are destroyed outside the lock too
        lock.lock();
    }
}

void thread_pool_core::state::break_pool(std::exception_ptr e) {
    std::vector<std::shared_ptr<thread_task>> failed;
    {
        std::lock_guard lock(mutex);
        if (broken.empty())
            broken = "a thread's initializer threw (" + describe(e) +
                     "), so the executor is broken; create a new executor (and fix the initializer)";
        failed = queue.take_all();
        queued.store(0, std::memory_order_relaxed);
        stopping.store(true, std::memory_order_relaxed);
    }
    work_ready.notify_all();
    for (auto& t : failed) t->fail(e);
}

void thread_pool_core::state::arm_deadline(const std::shared_ptr<thread_task>& task) {
    auto when = std::chrono::steady_clock::now() + *task->timeout;
    std::lock_guard lock(timer_mutex);
    if (timer_stop) return;
    if (!timer.joinable()) timer = std::thread([s = self.lock()] { s->timer_main(); });  // joined by stop_timer()
    bool earliest = deadlines.empty() || when < deadlines.begin()->first;
    deadlines.emplace(when, std::pair{std::weak_ptr<thread_task>(task), *task->timeout});
    if (earliest) timer_wake.notify_one();
}

void thread_pool_core::state::timer_main() {
    std::unique_lock lock(timer_mutex);
    while (!timer_stop) {
        if (deadlines.empty()) {
            timer_wake.wait(lock);
            continue;
        }
        auto first = deadlines.begin();
        // A copy: the wait reads it again after waking, when the entry may be gone.
        const auto due = first->first;
        if (std::chrono::steady_clock::now() < due) {
            timer_wake.wait_until(lock, due);
            continue;
        }
        auto task = first->second.first.lock();
        auto timeout = first->second.second;
        deadlines.erase(first);
        if (!task) continue;
        lock.unlock();
        task->expire(std::make_exception_ptr(timeout_error(
            "mp::thread_pool_executor: the call was still running " +
            std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count()) +
            " ms after it started, past its deadline. A thread cannot be stopped from outside: a call that "
            "takes a std::stop_token first was asked to stop; any other runs on to its end, its result "
            "discarded")));  // done callbacks run here
        task.reset();
        lock.lock();
    }
}

void thread_pool_core::state::stop_timer() noexcept {
    std::thread t;
    {
        std::lock_guard lock(timer_mutex);
        timer_stop = true;
        t = std::move(timer);
        deadlines.clear();
    }
    timer_wake.notify_all();
    if (!t.joinable()) return;
    if (t.get_id() == std::this_thread::get_id())
        t.detach();  // shutdown from a done callback the timer runs: it ends after the callback
    else
        t.join();
}

thread_pool_core::thread_pool_core(thread_pool_options options) : s_(std::make_shared<state>()) {
    if (options.max_workers < 0)
        throw value_error("mp::thread_pool_executor: max_workers must be greater than 0 (0 in the options: the default)");
    s_->max_workers = options.max_workers == 0 ? default_thread_pool_workers() : options.max_workers;
    s_->initializer = std::move(options.initializer);
    s_->name_prefix = options.thread_name_prefix.empty()
                          ? "ThreadPool-" + std::to_string(executor_counter.fetch_add(1))
                          : std::move(options.thread_name_prefix);
    s_->owner_pid = current_pid();
    s_->self = s_;
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

void thread_pool_core::submit(std::shared_ptr<thread_task> task) {
    if (s_->inherited())
        throw error(
            "mp::thread_pool_executor: this executor was inherited through fork and its threads stay "
            "in the parent; create a new executor in the child");
    bool wake = false;
    {
        std::lock_guard lock(s_->mutex);
        if (!s_->broken.empty()) throw error("mp::thread_pool_executor: " + s_->broken);
        if (s_->shut_down)
            throw closed_error(
                "mp::thread_pool_executor: cannot schedule new calls after shutdown(); submit before "
                "shutting down, or create a new executor");
        s_->queue.push_back(std::move(task));
        s_->queued.store(s_->queue.size(), std::memory_order_relaxed);
        if (s_->idle.load(std::memory_order_relaxed) < s_->queue.size() &&
            s_->threads.size() < static_cast<std::size_t>(s_->max_workers)) {
            try {
                start_thread(s_);
            } catch (...) {
                // No thread could start. If none exists at all, the call
                // would never run: take it back and report the failure.
                if (s_->threads.empty()) {
                    s_->queue.pop_back();
                    s_->queued.store(s_->queue.size(), std::memory_order_relaxed);
                    throw;
                }
            }
        }
        // A spinning thread takes the first queued call, and a sleeper
        // already notified takes one more: a sleeper is woken (a futex call)
        // only for the calls beyond those. Without counting the notified
        // ones, every submit until the woken thread runs would notify again.
        std::size_t awake_for_queue = (s_->spinning ? 1u : 0u) + s_->wakes_pending;
        wake = s_->sleepers > s_->wakes_pending && s_->queue.size() > awake_for_queue;
        if (wake) ++s_->wakes_pending;
    }
    if (wake) s_->work_ready.notify_one();
}

void thread_pool_core::shutdown(bool wait, bool cancel_futures) noexcept {
    if (s_->inherited()) return;  // see the destructor
    std::vector<std::shared_ptr<thread_task>> cancelled;
    {
        std::lock_guard lock(s_->mutex);
        s_->shut_down = true;
        s_->stopping.store(true, std::memory_order_relaxed);
        if (cancel_futures) {
            cancelled = s_->queue.take_all();
            s_->queued.store(0, std::memory_order_relaxed);
        }
    }
    s_->work_ready.notify_all();
    for (auto& t : cancelled) t->cancel_unrun();
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
    s_->stop_timer();  // after the calls: none is armed any more
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
