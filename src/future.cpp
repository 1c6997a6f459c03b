// future.cpp — the non-template half of mp::future, mp::wait and mp::as_completed.
#include "mp/future.hpp"

#include <cstdio>
#include <cstdlib>
#include <string>
#include <typeinfo>

#include <cxxabi.h>

#include "log.hpp"
#include "sys/sys.hpp"

namespace mp::detail {

namespace {

std::string describe(std::exception_ptr e) {
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& x) {
        int status = 0;
        char* name = abi::__cxa_demangle(typeid(x).name(), nullptr, nullptr, &status);
        std::string out = (status == 0 && name) ? name : typeid(x).name();
        std::free(name);
        return out + ": " + x.what();
    } catch (...) {
        return "an exception that is not a std::exception";
    }
}

void log_callback_exception(std::exception_ptr e) noexcept {
    try {
        detail::log(log_level::error, "mp: exception in a future's done callback (ignored): " + describe(e));
    } catch (...) {
        detail::log(log_level::error, "mp: exception in a future's done callback (ignored)");
    }
}

}  // namespace

void throw_invalid_future() {
    throw error(
        "mp::future: this future has no shared state (it was default-constructed); "
        "use a future returned by submit(), apply_async() or map_async()");
}

void throw_future_timeout() {
    throw timeout_error(
        "mp::future: the task did not finish within the timeout; wait longer, or check done() first");
}

void throw_as_completed_timeout(std::size_t unfinished, std::size_t total) {
    throw timeout_error("mp::as_completed: " + std::to_string(unfinished) + " (of " + std::to_string(total) +
                        ") futures unfinished when the timeout passed; give a longer timeout or none");
}

void future_waiter::notify(const future_state_base* state, bool failed) {
    {
        std::lock_guard lock(mutex_);
        finished_.push_back(state);
        any_failed_ = any_failed_ || failed;
    }
    cv_.notify_all();
}

future_status future_state_base::status() const {
    std::shared_ptr<task_control> control;
    {
        std::lock_guard lock(mutex_);
        if (status_ != future_status::pending || !control_) return status_;
        control = control_;
    }
    // Asked outside the lock: the producer may be completing this future.
    return control->taken() ? future_status::running : future_status::pending;
}

bool future_state_base::done() const {
    auto s = status();
    return s == future_status::cancelled || s == future_status::finished;
}

bool future_state_base::failed() const {
    std::lock_guard lock(mutex_);
    return status_ == future_status::finished && exception_;
}

namespace {
// How long a waiter spins before it sleeps on the condition variable.
// Trade-off: a result that arrives within this is picked up without the two
// futex calls (sleep, wake) that cost about as much as a tiny task itself;
// longer burns more CPU of a waiter whose result is slow. Per thread, the
// spin is skipped for a while after it failed (sys::spin_history), so a
// thread that waits on slow results soon stops spinning. Only a thread
// pool's futures spin (future_state_base::spin_when_waited); its worker
// spins as long for its next task (thread_pool_executor.cpp).
constexpr auto spin_before_sleep = std::chrono::microseconds(50);
thread_local sys::spin_history wait_spins;
}  // namespace

bool future_state_base::spin_until_done(steady_deadline deadline) const noexcept {
    if (finished_.load(std::memory_order_acquire) || !spin_when_waited_) return finished_.load(std::memory_order_acquire);
    auto budget = spin_before_sleep;
    if (deadline) {
        auto left = std::chrono::duration_cast<std::chrono::microseconds>(*deadline - std::chrono::steady_clock::now());
        if (left < budget) budget = left;
        if (budget.count() <= 0) return false;
    }
    sys::spinner spin(budget, &wait_spins);
    while (spin.step())
        if (finished_.load(std::memory_order_acquire)) return true;
    return finished_.load(std::memory_order_acquire);
}

void future_state_base::help_producer(steady_deadline deadline) const noexcept {
    // A thread pool's states spin instead (no lock taken for them here).
    if (spin_when_waited_ || finished_.load(std::memory_order_acquire)) return;
    std::shared_ptr<task_control> control;
    {
        std::lock_guard lock(mutex_);
        control = control_;
    }
    if (control) control->help_wait(finished_, deadline);
}

void future_state_base::wait() const {
    help_producer(std::nullopt);
    if (spin_until_done(std::nullopt)) return;
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return status_ == future_status::cancelled || status_ == future_status::finished; });
}

bool future_state_base::wait_until(steady_deadline deadline) const {
    if (!deadline) {
        wait();
        return true;
    }
    help_producer(deadline);
    if (spin_until_done(deadline)) return true;
    std::unique_lock lock(mutex_);
    return cv_.wait_until(lock, *deadline,
                          [&] { return status_ == future_status::cancelled || status_ == future_status::finished; });
}

bool future_state_base::cancel() {
    std::unique_ptr<extras> taken;
    std::shared_ptr<task_control> control;
    {
        std::lock_guard lock(mutex_);
        if (status_ == future_status::running || status_ == future_status::finished) return false;
        if (status_ == future_status::cancelled) return true;
        control = control_;
    }
    if (control) {
        // Dispatched: it is cancelled only if no worker has taken it. The
        // producer, withdrawing it, cancels this future (set_cancelled).
        if (!control->withdraw()) return false;
        std::lock_guard lock(mutex_);
        return status_ == future_status::cancelled;
    }
    {
        std::lock_guard lock(mutex_);
        if (status_ == future_status::running || status_ == future_status::finished) return false;
        if (status_ == future_status::cancelled) return true;
        if (control_) return false;  // dispatched meanwhile: retry via cancel() again is the caller's choice
        status_ = future_status::cancelled;
        finished_.store(true, std::memory_order_release);
        taken.swap(extras_);
    }
    cv_.notify_all();
    if (taken) notify_all(*taken, false);
    return true;
}

bool future_state_base::set_running_or_notify_cancel() {
    std::lock_guard lock(mutex_);
    if (status_ == future_status::cancelled) return false;
    // Running or finished already: a producer bug; leave the state as it is.
    if (status_ == future_status::pending) status_ = future_status::running;
    return true;
}

bool future_state_base::set_dispatched(std::shared_ptr<task_control> control) {
    std::lock_guard lock(mutex_);
    if (status_ == future_status::cancelled) return false;
    if (status_ == future_status::pending) control_ = std::move(control);
    return true;
}

bool future_state_base::set_cancelled() {
    return complete(future_status::cancelled, [] {});
}

void future_state_base::set_stop_request(std::function<bool()> request) {
    std::lock_guard lock(mutex_);
    if (status_ != future_status::cancelled && status_ != future_status::finished)
        extras_locked().stop_request = std::move(request);
}

bool future_state_base::terminate() {
    if (cancel()) return true;
    std::shared_ptr<task_control> control;
    std::function<bool()> request;
    {
        std::lock_guard lock(mutex_);
        if (status_ == future_status::cancelled) return true;
        if (status_ == future_status::finished) return false;
        control = control_;
        if (extras_) request = extras_->stop_request;
    }
    if (control) return control->stop();
    return request && request();
}

bool future_state_base::set_exception(std::exception_ptr e) {
    return complete(future_status::finished, [&] { exception_ = std::move(e); });
}

void future_state_base::abandon() noexcept {
    // The common case, a producer that gave its result: no error to build.
    if (finished_.load(std::memory_order_acquire)) return;
    try {
        set_exception(std::make_exception_ptr(
            error("mp::future: broken promise: the task's producer (an executor or pool) was destroyed "
                  "before the task produced a result")));
    } catch (...) {
        // Allocation failed; the waiters stay waiting, as without this guard.
    }
}

std::exception_ptr future_state_base::exception_when_done() const {
    // Once finished_ is set, status_ and exception_ never change again, and
    // the acquire load orders these reads after their writes: no lock.
    if (finished_.load(std::memory_order_acquire)) {
        if (status_ == future_status::cancelled)
            throw cancelled_error("mp::future: the task was cancelled before it ran, so it has no result");
        return exception_;
    }
    std::lock_guard lock(mutex_);
    if (status_ == future_status::cancelled)
        throw cancelled_error("mp::future: the task was cancelled before it ran, so it has no result");
    return exception_;
}

bool future_state_base::add_waiter(const std::shared_ptr<future_waiter>& w, bool& failed) {
    std::lock_guard lock(mutex_);
    if (status_ == future_status::cancelled || status_ == future_status::finished) {
        failed = status_ == future_status::finished && exception_;
        return false;
    }
    extras_locked().waiters.push_back(w);
    return true;
}

void future_state_base::remove_waiter(const future_waiter* w) noexcept {
    std::lock_guard lock(mutex_);
    if (extras_)
        std::erase_if(extras_->waiters, [&](const std::shared_ptr<future_waiter>& x) { return x.get() == w; });
}

void future_state_base::add_callback(std::function<void()> fn) {
    {
        std::lock_guard lock(mutex_);
        if (status_ != future_status::cancelled && status_ != future_status::finished) {
            extras_locked().callbacks.push_back(std::move(fn));
            return;
        }
    }
    try {
        fn();
    } catch (...) {
        log_callback_exception(std::current_exception());
    }
}

void future_state_base::notify_all(extras& done, bool failed) noexcept {
    for (auto& w : done.waiters) {
        try {
            w->notify(this, failed);
        } catch (...) {
            // notify only allocates; a watcher that misses it times out or
            // sees the state when it looks again.
        }
    }
    for (auto& fn : done.callbacks) {
        try {
            fn();
        } catch (...) {
            log_callback_exception(std::current_exception());
        }
    }
}

void remove_waiter_from(const std::vector<future_state_base*>& states, const future_waiter* w) noexcept {
    for (auto* s : states) s->remove_waiter(w);
}

std::vector<bool> wait_states(const std::vector<future_state_base*>& states, steady_deadline deadline, int when_int) {
    auto when = static_cast<return_when>(when_int);
    auto waiter = std::make_shared<future_waiter>();
    std::vector<future_state_base*> registered;
    std::size_t done_count = 0;
    bool any_failed = false;
    try {
        for (auto* s : states) {
            bool failed = false;
            if (s->add_waiter(waiter, failed)) {
                registered.push_back(s);
            } else {
                ++done_count;
                any_failed = any_failed || failed;
            }
        }
        auto satisfied = [&](std::size_t done, bool failed) {
            switch (when) {
                case return_when::first_completed:
                    return done > 0 || states.empty();
                case return_when::first_exception:
                    return failed || done == states.size();
                case return_when::all_completed:
                    break;
            }
            return done == states.size();
        };
        if (!satisfied(done_count, any_failed)) {
            std::unique_lock lock(waiter->mutex_);
            auto pred = [&] {
                return satisfied(done_count + waiter->finished_.size(), any_failed || waiter->any_failed_);
            };
            if (deadline)
                (void)waiter->cv_.wait_until(lock, *deadline, pred);
            else
                waiter->cv_.wait(lock, pred);
        }
    } catch (...) {
        remove_waiter_from(registered, waiter.get());
        throw;
    }
    remove_waiter_from(registered, waiter.get());
    std::vector<bool> done;
    done.reserve(states.size());
    for (auto* s : states) done.push_back(s->done());
    return done;
}

}  // namespace mp::detail
