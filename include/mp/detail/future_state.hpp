// mp/detail/future_state.hpp — the shared state behind mp::future and the
// producer side (promise) that executors and pools set results through. Not
// public API: include <mp/future.hpp>.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "mp/detail/deadline.hpp"
#include "mp/error.hpp"

namespace mp {

template <class R>
class future;

namespace detail {

enum class future_status : unsigned char { pending, running, cancelled, finished };

class future_state_base;

/// A task that its producer handed to workers: a future is "running" only
/// once a worker has taken the task, and until then cancel() withdraws it.
class task_control {
public:
    virtual ~task_control() = default;
    /// Withdraws the task if no worker has taken it: true when it will never
    /// run (the producer then cancels the future).
    virtual bool withdraw() noexcept = 0;
    /// Whether a worker has taken the task.
    [[nodiscard]] virtual bool taken() const noexcept = 0;
    /// Stops the task even though a worker runs it; the future then fails
    /// with mp::cancelled_error. False when it cannot (already over).
    virtual bool stop() noexcept = 0;
    /// Called by a thread about to wait for this task's result: a producer
    /// may let that thread receive results itself for a short while (until
    /// `done` is set or `deadline`), instead of waking it from another
    /// thread. Returns early (the caller then waits as usual) at any time.
    virtual void help_wait(const std::atomic<bool>& done, steady_deadline deadline) noexcept {
        (void)done;
        (void)deadline;
    }
};

/// Watches several futures at once (CPython's _Waiter): a finishing or
/// cancelled future appends itself to finished_ and wakes the watcher.
class future_waiter {
public:
    void notify(const future_state_base* state, bool failed);

    std::mutex mutex_;
    std::condition_variable cv_;
    std::vector<const future_state_base*> finished_;  // guarded by mutex_
    bool any_failed_ = false;                          // guarded by mutex_
};

/// The shared state of a future, apart from its value. Thread-safe.
class future_state_base : public std::enable_shared_from_this<future_state_base> {
public:
    future_state_base() = default;
    future_state_base(const future_state_base&) = delete;
    future_state_base& operator=(const future_state_base&) = delete;
    virtual ~future_state_base() = default;

    [[nodiscard]] future_status status() const;
    [[nodiscard]] bool done() const;
    /// Done, not cancelled, and finished with an exception.
    [[nodiscard]] bool failed() const;

    void wait() const;
    /// false if the deadline passed first.
    [[nodiscard]] bool wait_until(steady_deadline deadline) const;

    /// Python's Future.cancel(): only a pending future can be cancelled.
    bool cancel();
    /// Python's Future.set_running_or_notify_cancel(): false if cancelled.
    bool set_running_or_notify_cancel();
    /// The task was handed to workers (it stays pending until one takes it):
    /// false if the future was cancelled meanwhile.
    bool set_dispatched(std::shared_ptr<task_control> control);
    /// The producer cancelled the task before it ran: false if already done.
    bool set_cancelled();
    /// How terminate() stops the task once it runs (a thread pool's
    /// cooperative stop request).
    void set_stop_request(std::function<bool()> request);
    /// Beyond Python: cancels a pending task, stops a running one (its
    /// future then fails with mp::cancelled_error). False if already done,
    /// or running where it cannot be stopped.
    bool terminate();
    /// false (and nothing changes) if the future was already done.
    bool set_exception(std::exception_ptr e);
    /// Finishes with a "broken promise" error unless already done.
    void abandon() noexcept;

    /// Requires done(). Throws mp::cancelled_error if cancelled; nullptr on success.
    [[nodiscard]] std::exception_ptr exception_when_done() const;

    /// Registers `w` unless the future is done; returns false (not
    /// registered) when it is done, setting `failed` to failed().
    bool add_waiter(const std::shared_ptr<future_waiter>& w, bool& failed);
    void remove_waiter(const future_waiter* w) noexcept;

    /// Runs `fn` when the future is done: now, in this thread, if it already
    /// is. Exceptions from `fn` are printed to stderr and swallowed.
    void add_callback(std::function<void()> fn);

protected:
    /// A waiter spins briefly before it sleeps. Only for a state completed
    /// by a thread of this process that runs the task itself (a thread
    /// pool's). A process pool's waiter instead receives results itself for
    /// a moment (task_control::help_wait): spinning on a future that the
    /// pool's result thread completes would keep that thread from a core
    /// (measured on 2 cores: apply().get() 18 µs with the spin, 14 µs without).
    void spin_when_waited() noexcept { spin_when_waited_ = true; }

    /// Under the lock: if not done, runs `commit` and moves to `to`, then
    /// wakes waiters and runs callbacks outside the lock. false if done.
    template <class Commit>
    bool complete(future_status to, Commit&& commit) {
        std::unique_ptr<extras> taken;
        std::shared_ptr<task_control> control;
        bool failed = false;
        {
            std::lock_guard lock(mutex_);
            if (status_ == future_status::cancelled || status_ == future_status::finished) return false;
            std::forward<Commit>(commit)();
            failed = to == future_status::finished && exception_;
            status_ = to;
            finished_.store(true, std::memory_order_release);
            control.swap(control_);  // released outside the lock
            taken.swap(extras_);     // its callbacks run, and it is freed, outside the lock
        }
        cv_.notify_all();
        if (taken) notify_all(*taken, failed);
        return true;
    }

private:
    /// What few futures need (mp::wait, as_completed, done callbacks, a
    /// thread pool call's stop request), in one block allocated when first
    /// needed: the state of a plain submit().get() stays small, and a
    /// thread pool call (state and task in one allocation) with it.
    struct extras {
        std::function<bool()> stop_request;                  // until done
        std::vector<std::shared_ptr<future_waiter>> waiters;
        std::vector<std::function<void()>> callbacks;
    };
    /// Requires mutex_ held.
    extras& extras_locked() {
        if (!extras_) extras_ = std::make_unique<extras>();
        return *extras_;
    }

    /// Tells the waiters of `done` (the extras taken from a finished state)
    /// and runs its callbacks. `failed`: finished with an exception.
    void notify_all(extras& done, bool failed) noexcept;

    /// Spins (without the lock) until the future is done, at most
    /// spin_before_sleep or until `deadline`: true when it is done.
    bool spin_until_done(steady_deadline deadline) const noexcept;
    /// Lets the producer use the waiting thread (task_control::help_wait).
    void help_producer(steady_deadline deadline) const noexcept;

    mutable std::mutex mutex_;
    mutable std::condition_variable cv_;
    future_status status_ = future_status::pending;             // guarded by mutex_
    std::atomic<bool> finished_{false};  // written under mutex_ with status_: cancelled or finished
    bool spin_when_waited_ = false;      // set once, before the state is shared
    std::shared_ptr<task_control> control_;                      // guarded by mutex_: while dispatched
    std::exception_ptr exception_;                               // guarded by mutex_; fixed once done
    std::unique_ptr<extras> extras_;                             // guarded by mutex_: null until needed, and once done
};

/// The shared state with room for the value. The value is written once,
/// under the lock, before the status becomes finished; it is read only after
/// a waiter saw that status (under the same lock, or by the acquire load of
/// finished_ that pairs with its release store), so reads need no lock.
/// Producers may derive from it to keep their task in the same allocation
/// (thread_pool_executor's calls).
template <class R>
class future_state : public future_state_base {
public:
    template <class... V>
    bool set_value(V&&... v) {
        return complete(future_status::finished, [&] {
            if constexpr (!std::is_void_v<R>) value_.emplace(std::forward<V>(v)...);
        });
    }
    [[nodiscard]] const auto& value() const noexcept { return value_; }
    /// For a producer's own internal futures, whose value nobody else reads.
    [[nodiscard]] auto& mutable_value() noexcept { return value_; }

private:
    struct nothing {};
    std::optional<std::conditional_t<std::is_void_v<R>, nothing, R>> value_;
};

/// Reaches a future's state, for mp::wait, mp::as_completed and executors.
struct future_access {
    template <class R>
    static const std::shared_ptr<future_state<R>>& state(const future<R>& f) noexcept {
        return f.state_;
    }
    template <class R>
    static future<R> make(std::shared_ptr<future_state<R>> s) noexcept {
        return future<R>(std::move(s));
    }
};

[[noreturn]] void throw_invalid_future();
[[noreturn]] void throw_future_timeout();

/// The producer side of a future (an executor or pool sets its result).
/// Copies share the state; when the last copy is destroyed without having
/// set a result, the future finishes with a "broken promise" mp::error.
/// Setting a result on a future that is already done (finished or
/// cancelled) does nothing and returns false. Thread-safe.
template <class R>
class promise {
public:
    promise() : owner_(std::make_shared<owner>()) {}

    [[nodiscard]] future<R> get_future() const { return future_access::make(owner_->state); }

    /// Call before running the task: false if the future was cancelled (do
    /// not run it then); otherwise marks it running, so cancel() fails.
    [[nodiscard]] bool set_running_or_notify_cancel() const { return owner_->state->set_running_or_notify_cancel(); }
    /// The task was handed to workers; cancel() goes through `control` until
    /// a worker takes it. False if the future was cancelled meanwhile.
    [[nodiscard]] bool set_dispatched(std::shared_ptr<task_control> control) const {
        return owner_->state->set_dispatched(std::move(control));
    }
    /// The producer withdrew the task before it ran.
    bool set_cancelled() const { return owner_->state->set_cancelled(); }
    /// How terminate() stops the task once it runs.
    void set_stop_request(std::function<bool()> request) const {
        owner_->state->set_stop_request(std::move(request));
    }

    template <class V>
        requires(!std::is_void_v<R> && std::is_constructible_v<R, V &&>)
    bool set_result(V&& value) const {
        return owner_->state->set_value(std::forward<V>(value));
    }
    bool set_result() const
        requires std::is_void_v<R>
    {
        return owner_->state->set_value();
    }
    bool set_exception(std::exception_ptr e) const { return owner_->state->set_exception(std::move(e)); }

    /// Runs `fn()` and stores its result or exception.
    template <class F>
    bool set_from(F&& fn) const {
        try {
            if constexpr (std::is_void_v<R>) {
                std::forward<F>(fn)();
                return set_result();
            } else {
                return set_result(std::forward<F>(fn)());
            }
        } catch (...) {
            return set_exception(std::current_exception());
        }
    }

    [[nodiscard]] bool cancelled() const { return owner_->state->status() == future_status::cancelled; }
    [[nodiscard]] bool done() const { return owner_->state->done(); }

private:
    struct owner {
        std::shared_ptr<future_state<R>> state = std::make_shared<future_state<R>>();
        owner() = default;
        owner(const owner&) = delete;
        owner& operator=(const owner&) = delete;
        ~owner() { state->abandon(); }
    };
    std::shared_ptr<owner> owner_;
};

/// The core of mp::wait, on distinct states. Returns which are done.
std::vector<bool> wait_states(const std::vector<future_state_base*>& states, steady_deadline deadline,
                              int when);

/// Removes `w` from every state; never throws.
void remove_waiter_from(const std::vector<future_state_base*>& states, const future_waiter* w) noexcept;

[[noreturn]] void throw_as_completed_timeout(std::size_t unfinished, std::size_t total);

}  // namespace detail

}  // namespace mp
