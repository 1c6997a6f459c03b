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
#include "thread_pool_test_hooks.hpp"

namespace mp {
namespace detail {

namespace thread_pool_test_hooks {
std::atomic<int> link_delay_us{0};
std::atomic<int> links_delayed{0};
}  // namespace thread_pool_test_hooks

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

/// The queued calls, first in first out, chained through the calls
/// themselves (no allocation per call). A submitter takes no lock: it is
/// admitted by one atomic add to the count of pushes (which also holds the
/// queue's "closed" mark, so that shutdown can close it) and appends with one
/// atomic exchange; workers take from the other end one at a time under the
/// queue's taking lock. The queue holds a reference to each call
/// (thread_task::queued_self).
///
/// The chain is Vyukov's intrusive queue: `back_` is the last link, `front_`
/// the next to take, `sentinel_` a link of the queue's own that keeps the chain
/// from ever being empty. A link is taken only once its successor is known;
/// the last call is taken by appending the sentinel behind it. Between a
/// submitter's count and its link store the chain is briefly cut: then
/// take() finds nothing although `nonempty()` says a call is queued, and the
/// worker retries.
///
/// The submitter's end (back_, pushed_), the workers' end (the lock, front_,
/// taken_) and the sentinel are on cache lines of their own: a submit writes
/// only lines that the workers read when the queue runs empty.
class task_queue {
public:
    task_queue() = default;
    task_queue(const task_queue&) = delete;
    task_queue& operator=(const task_queue&) = delete;
    ~task_queue() {
        // Only pushes admitted while the executor still ran can be left:
        // their futures are abandoned ("broken promise") with the calls.
        bool more = false;
        while (take(more) != nullptr) {
        }
    }

    /// Appends `t` unless the queue is closed: false then (and `t` is left
    /// with the caller).
    bool push(std::shared_ptr<thread_task>& t) noexcept {
        // Counted first, so that taken_ never passes the count. seq_cst:
        // pairs with a worker's registration as a sleeper
        // (thread_pool_core::state::take) and with close().
        if (pushed_.fetch_add(2, std::memory_order_seq_cst) & closed_mark) {
            pushed_.fetch_sub(2, std::memory_order_relaxed);
            return false;
        }
        thread_task* raw = t.get();
        raw->queued_self = std::move(t);
        if (int delay = thread_pool_test_hooks::link_delay_us.load(std::memory_order_relaxed); delay > 0) {
            thread_pool_test_hooks::links_delayed.fetch_add(1);
            std::this_thread::sleep_for(std::chrono::microseconds(delay));
        }
        link(raw);
        return true;
    }

    /// No push succeeds after this. A push admitted before it may still be
    /// linking: nonempty() counts it.
    void close() noexcept { pushed_.fetch_or(closed_mark, std::memory_order_seq_cst); }

    /// The next call, or null when none is queued or the chain is cut at a
    /// submitter in the middle of push(); `more`: whether another call
    /// follows it. The caller holds taking_lock().
    std::shared_ptr<thread_task> take(bool& more) noexcept {
        thread_queue_link* front = front_;
        thread_queue_link* next = front->next.load(std::memory_order_acquire);
        if (front == &sentinel_) {
            if (next == nullptr) return nullptr;
            front_ = front = next;
            next = next->next.load(std::memory_order_acquire);
        }
        if (next == nullptr) {
            if (front != back_.load(std::memory_order_acquire)) return nullptr;  // cut: a push in progress
            link(&sentinel_);
            next = front->next.load(std::memory_order_acquire);
            if (next == nullptr) return nullptr;  // a push came between: cut until it links
        }
        front_ = next;
        more = next != &sentinel_ || sentinel_.next.load(std::memory_order_acquire) != nullptr;
        taken_.store(taken_.load(std::memory_order_relaxed) + 1, std::memory_order_release);
        // front->next is left as it is: the call is never linked again, and
        // not writing it spares the worker a write to a line the submitter wrote.
        return std::move(static_cast<thread_task*>(front)->queued_self);  // front is never the sentinel here
    }

    [[nodiscard]] std::mutex& taking_lock() noexcept { return taking_; }

    /// Whether calls are queued (pushed and not yet taken; possibly still
    /// being linked).
    [[nodiscard]] bool nonempty() const noexcept {
        std::size_t taken = taken_.load(std::memory_order_acquire);  // first: it never passes the count
        return (pushed_.load(std::memory_order_seq_cst) >> 1) != taken;
    }

private:
    void link(thread_queue_link* l) noexcept {
        l->next.store(nullptr, std::memory_order_relaxed);
        thread_queue_link* prev = back_.exchange(l, std::memory_order_acq_rel);
        prev->next.store(l, std::memory_order_release);
    }

    alignas(64) std::atomic<thread_queue_link*> back_{&sentinel_};  // written by submitters
    static constexpr std::size_t closed_mark = 1;
    std::atomic<std::size_t> pushed_{0};                       // 2 * pushes | closed_mark
    alignas(64) std::mutex taking_;
    thread_queue_link* front_ = &sentinel_;                         // guarded by taking_
    std::atomic<std::size_t> taken_{0};                         // written under taking_
    alignas(64) thread_queue_link sentinel_;
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

    // Thread starts, shutdown and breaking. A submit takes it only while
    // threads may still start; after that its admission is the queue's count.
    std::mutex mutex;
    std::vector<std::thread> threads;                   // guarded by mutex; appended only before shutdown
    std::size_t started = 0;                            // guarded by mutex: threads ever started
    bool shut_down = false;                             // guarded by mutex
    std::string broken;                                 // guarded by mutex: why, when broken
    std::atomic<bool> all_started{false};               // threads.size() == max_workers: no more to start
    std::atomic<int> idle_tokens{0};                    // Python's _idle_semaphore, while threads may start

    task_queue queue;

    // Idle workers. A submit wakes a sleeper only when no worker is already
    // on its way to the queue (spinning for work, or woken and not yet out
    // of the wait); a worker that takes a call and sees more queued wakes
    // the next one, so the submitter does not pay for those wakes.
    // Read by every submit, written when a worker goes to sleep or wakes.
    alignas(64) std::atomic<std::size_t> sleepers{0};   // written under sleep_mutex: threads in the sleep path
    std::atomic<std::size_t> wakes_pending{0};          // written under sleep_mutex: notified, not yet out of the wait
    std::atomic<bool> stopping{false};                  // shut_down or broken: workers leave once the queue is empty
    std::atomic<bool> broken_flag{false};               // broken: workers take no more calls
    alignas(64) std::atomic<bool> spinning{false};      // an idle thread spins for work (one at a time)
    std::mutex sleep_mutex;
    std::condition_variable work_ready;
    sys::spin_history work_spins;                       // whether spinning for work pays off (not under overload)

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
    std::shared_ptr<thread_task> take();
    /// The next call, if one is queued and linked; `more`: whether another follows.
    std::shared_ptr<thread_task> try_take(bool& more);
    void wake_one_if_none_coming();
    void wake_all();
    /// Takes every queued call, in order, and hands each to `fn` (under no
    /// lock). Requires the queue closed: pushes admitted before are waited
    /// for (a submitter between its count and its link).
    template <class Fn>
    void drain(Fn fn) noexcept {
        bool more = false;
        for (unsigned cut_retries = 0; queue.nonempty();) {
            if (auto t = try_take(more))
                fn(*t);
            else
                pause_for_cut(++cut_retries);
        }
    }
    static void pause_for_cut(unsigned retries) noexcept {
        // The submitter may have been preempted between its two stores: yield to it now and then.
        if (retries % 64 == 0)
            std::this_thread::yield();
        else
            sys::cpu_relax();
    }
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
    s->threads.emplace_back([s, index] { s->worker_main(index); });
    ++s->started;
    if (s->threads.size() >= static_cast<std::size_t>(s->max_workers)) s->all_started.store(true, std::memory_order_relaxed);
}

}  // namespace

std::shared_ptr<thread_task> thread_pool_core::state::try_take(bool& more) {
    std::lock_guard lock(queue.taking_lock());
    return queue.take(more);
}

// Wakes a sleeping worker unless one is already coming for the queue.
void thread_pool_core::state::wake_one_if_none_coming() {
    if (sleepers.load(std::memory_order_seq_cst) == 0 || spinning.load(std::memory_order_seq_cst) ||
        wakes_pending.load(std::memory_order_seq_cst) != 0)
        return;
    bool wake = false;
    {
        std::lock_guard lock(sleep_mutex);
        // Under the lock every counted sleeper is in the wait (it registers
        // and waits under this lock), so a notify reaches one.
        if (sleepers.load(std::memory_order_relaxed) > wakes_pending.load(std::memory_order_relaxed) &&
            wakes_pending.load(std::memory_order_relaxed) == 0) {
            wakes_pending.fetch_add(1, std::memory_order_relaxed);
            wake = true;
        }
    }
    if (wake) work_ready.notify_one();
}

void thread_pool_core::state::wake_all() {
    { std::lock_guard lock(sleep_mutex); }  // a sleeper that checked `stopping` before it was set is in the wait now
    work_ready.notify_all();
}

// The next call for an idle thread, or null when the executor stops (once
// the queue is empty). One idle thread spins before sleeping, so that a call
// submitted soon after needs no wake-up.
std::shared_ptr<thread_task> thread_pool_core::state::take() {
    unsigned cut_retries = 0;
    bool woken = false;  // left the wait: a submit may have counted on this thread
    for (;;) {
        if (broken_flag.load(std::memory_order_relaxed)) return nullptr;  // break_pool fails the queued calls
        bool more = false;
        if (auto task = try_take(more)) {
            // More queued and nobody coming for it: the next worker is
            // woken by this one, not by the submitter. A woken thread also
            // looks at the count (seq_cst with a submit's count, as its
            // wakes_pending decrement is with the submit's load of it): a
            // call pushed while it was on its way found it pending and woke
            // nobody, and may not be linked behind this one yet.
            if (more || (woken && queue.nonempty())) wake_one_if_none_coming();
            return task;
        }
        if (queue.nonempty()) {
            // A submitter is between its count and its link store, or
            // another worker took the call.
            pause_for_cut(++cut_retries);
            continue;
        }
        if (stopping.load(std::memory_order_seq_cst)) {
            // Stopping is set after the queue is closed: looked at again
            // now, an empty queue stays empty.
            if (!queue.nonempty()) return nullptr;
            continue;
        }
        if (!spinning.exchange(true, std::memory_order_seq_cst)) {
            // The spinner stays marked until it has taken a call: a submit
            // that sees the mark wakes nobody, however soon the call is taken.
            std::shared_ptr<thread_task> task;
            {
                sys::spinner spin(spin_for_work, &work_spins);
                while (spin.step()) {
                    if (queue.nonempty() && (task = try_take(more))) break;
                    if (stopping.load(std::memory_order_relaxed)) break;
                }
            }
            // seq_cst with a submit's count: either it saw the mark (and
            // woke nobody), or this sees its call now and wakes for it.
            spinning.store(false, std::memory_order_seq_cst);
            if (task) {
                if (queue.nonempty()) wake_one_if_none_coming();
                return task;
            }
            if (queue.nonempty() || stopping.load(std::memory_order_seq_cst)) continue;
        }
        std::unique_lock lock(sleep_mutex);
        // seq_cst with the submitter's count increment: either it sees this
        // sleeper and wakes it, or this sees its call and does not sleep.
        sleepers.fetch_add(1, std::memory_order_seq_cst);
        while (!queue.nonempty() && !stopping.load(std::memory_order_seq_cst)) {
            work_ready.wait(lock);
            // Whichever sleeper leaves the wait (notified or spuriously)
            // answers one pending wake.
            if (wakes_pending.load(std::memory_order_relaxed) > 0) wakes_pending.fetch_sub(1, std::memory_order_seq_cst);
            woken = true;
        }
        sleepers.fetch_sub(1, std::memory_order_relaxed);
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
            return;
        }
    }

    for (;;) {
        std::shared_ptr<thread_task> task = take();
        if (!task) return;
        if (task->timeout) arm_deadline(task);
        task->execute();
        // Idle again before the future is set: a caller that waits on this
        // result and submits the next call finds this thread idle rather
        // than starting another one (Python's test_idle_thread_reuse).
        if (!all_started.load(std::memory_order_relaxed)) idle_tokens.fetch_add(1, std::memory_order_release);
        task->publish();  // done callbacks run here, under no lock of ours
        task.reset();     // the call's captures are destroyed under no lock too
    }
}

void thread_pool_core::state::break_pool(std::exception_ptr e) {
    {
        std::lock_guard lock(mutex);
        if (broken.empty())
            broken = "a thread's initializer threw (" + describe(e) +
                     "), so the executor is broken; create a new executor (and fix the initializer)";
        queue.close();
        stopping.store(true, std::memory_order_seq_cst);
        broken_flag.store(true, std::memory_order_seq_cst);
    }
    wake_all();
    drain([&](thread_task& t) { t.fail(e); });
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
    if (!s_->all_started.load(std::memory_order_relaxed)) {
        std::lock_guard lock(s_->mutex);
        throw_if_closed();
        if (!s_->all_started.load(std::memory_order_relaxed)) {
            // As Python: a thread starts unless an idle one answers for this call.
            int tokens = s_->idle_tokens.load(std::memory_order_acquire);
            while (tokens > 0 && !s_->idle_tokens.compare_exchange_weak(tokens, tokens - 1, std::memory_order_acquire)) {
            }
            if (tokens == 0) {
                try {
                    start_thread(s_);
                } catch (...) {
                    // No thread could start. If none exists at all, the call
                    // would never run: report the failure.
                    if (s_->threads.empty()) throw;
                }
            }
        }
    }
    if (!s_->queue.push(task)) {
        std::lock_guard lock(s_->mutex);
        throw_if_closed();
    }
    s_->wake_one_if_none_coming();
}

void thread_pool_core::throw_if_closed() const {
    if (!s_->broken.empty()) throw error("mp::thread_pool_executor: " + s_->broken);
    if (s_->shut_down)
        throw closed_error(
            "mp::thread_pool_executor: cannot schedule new calls after shutdown(); submit before "
            "shutting down, or create a new executor");
}

void thread_pool_core::shutdown(bool wait, bool cancel_futures) noexcept {
    if (s_->inherited()) return;  // see the destructor
    {
        std::lock_guard lock(s_->mutex);
        s_->shut_down = true;
        s_->queue.close();
        s_->stopping.store(true, std::memory_order_seq_cst);
    }
    s_->wake_all();
    if (cancel_futures) s_->drain([](thread_task& t) { t.cancel_unrun(); });
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
