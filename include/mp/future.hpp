// mp/future.hpp — the result of a task that runs elsewhere: Python's
// concurrent.futures.Future (and multiprocessing's AsyncResult), plus
// mp::wait and mp::as_completed.
//
//     mp::future<int> f = ex.submit(square, 7);
//     f.add_done_callback([](mp::future<int>& g) { ... });
//     int r = f.get();                 // or f.get(1s): throws mp::timeout_error
//     auto [done, not_done] = mp::wait(fs, mp::return_when::first_completed);
//     for (mp::future<int>& g : mp::as_completed(fs, 10s)) use(g.get());
//
// Promises:
// - mp::future<R> is a copyable handle: copies share one result. It is the
//   same type whichever executor or pool made it. R may be void; R may not be
//   a reference.
// - Every member may be called from any number of threads at once.
// - A future lives in one process: it holds a mutex and a condition variable,
//   so it cannot be sent to another process (that fails to compile, with a
//   message saying to return the future's value instead). A forked child must
//   not wait on futures whose producer was a thread of its parent.
// - A future whose producer is destroyed without giving a result finishes
//   with mp::error ("broken promise") instead of leaving its waiters hanging.
#pragma once

#include <chrono>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "mp/detail/deadline.hpp"
#include "mp/detail/future_state.hpp"
#include "mp/error.hpp"

namespace mp {

/// A handle to the result of a task: Python's concurrent.futures.Future.
/// Copies share the same result. A default-constructed future is invalid:
/// valid() is false and every other member throws mp::error. All members are
/// thread-safe.
template <class R>
class [[nodiscard]] future {
    static_assert(!std::is_reference_v<R>, "mp::future<R>: R must not be a reference; return a value");

public:
    using value_type = R;

    /// An invalid future (no shared state).
    future() noexcept = default;

    /// Whether this future refers to a task (false only when default-constructed).
    [[nodiscard]] bool valid() const noexcept { return state_ != nullptr; }

    /// Waits for the task and returns its result, without a copy: the
    /// reference lives as long as a copy of this future. Rethrows the task's
    /// exception; throws mp::cancelled_error if it was cancelled.
    decltype(auto) get() const& {
        wait();
        return result_when_done();
    }
    /// On an rvalue future (`std::move(f).get()`, `ex.submit(...).get()`):
    /// moves the result out of the shared state (other copies of the future
    /// then see a moved-from value). Works for move-only results.
    R get() && {
        wait();
        return take_when_done();
    }
    /// As get(), waiting at most `timeout`; throws mp::timeout_error if the
    /// task is not done by then.
    template <class Rep, class Period>
    decltype(auto) get(std::chrono::duration<Rep, Period> timeout) const& {
        if (!wait_for(timeout)) detail::throw_future_timeout();
        return result_when_done();
    }
    template <class Rep, class Period>
    R get(std::chrono::duration<Rep, Period> timeout) && {
        if (!wait_for(timeout)) detail::throw_future_timeout();
        return take_when_done();
    }

    /// Waits until the task is done (finished or cancelled).
    void wait() const { checked().wait(); }
    /// Waits at most `timeout`; true when the task is done.
    template <class Rep, class Period>
    [[nodiscard]] bool wait_for(std::chrono::duration<Rep, Period> timeout) const {
        return checked().wait_until(detail::deadline_after(timeout));
    }

    /// Finished (with a value or an exception) or cancelled.
    [[nodiscard]] bool done() const { return checked().done(); }
    /// Running now (taken by a worker, not yet finished).
    [[nodiscard]] bool running() const { return checked().status() == detail::future_status::running; }
    /// Cancelled before it ran.
    [[nodiscard]] bool cancelled() const { return checked().status() == detail::future_status::cancelled; }
    /// Cancels the task if no worker has taken it yet (however far ahead it
    /// was dispatched): true if it is (now) cancelled and will never run,
    /// false if it is running or finished. Then get() throws mp::cancelled_error.
    bool cancel() const { return checked().cancel(); }
    /// Beyond Python (as pebble): cancels the task if pending; if a process
    /// pool's or process executor's worker runs it, stops that worker
    /// (SIGTERM, then SIGKILL after a short grace; the pool replaces it) and
    /// the future fails with mp::cancelled_error. On a thread pool, requests
    /// stop from a callable that takes a std::stop_token first. True when
    /// the task will not finish normally; false when it already finished or
    /// cannot be stopped.
    bool terminate() const { return checked().terminate(); }

    /// Waits, then returns the task's exception, or nullptr if it returned
    /// normally. Throws mp::cancelled_error if it was cancelled.
    [[nodiscard]] std::exception_ptr exception() const {
        wait();
        return state_->exception_when_done();
    }
    /// As exception(), waiting at most `timeout` (then mp::timeout_error).
    template <class Rep, class Period>
    [[nodiscard]] std::exception_ptr exception(std::chrono::duration<Rep, Period> timeout) const {
        if (!wait_for(timeout)) detail::throw_future_timeout();
        return state_->exception_when_done();
    }

    /// Calls `fn(f)`, with f a copy of this future, once it is done (finished
    /// or cancelled): at once in this thread if it already is, otherwise in
    /// the thread that completes it. Callbacks run in the order they were
    /// added. An exception from `fn` is printed to stderr and swallowed.
    void add_done_callback(std::function<void(future<R>&)> fn) const {
        auto& s = checked();
        s.add_callback([raw = &s, fn = std::move(fn)] {
            // The completing thread holds a reference, so raw is alive here.
            future<R> self(std::static_pointer_cast<detail::future_state<R>>(raw->shared_from_this()));
            fn(self);
        });
    }

    /// Python's AsyncResult.ready(): the same as done().
    [[nodiscard]] bool ready() const { return done(); }
    /// Python's AsyncResult.successful(): finished without an exception.
    /// Throws mp::value_error if the task is not done yet.
    [[nodiscard]] bool successful() const {
        auto& s = checked();
        if (!s.done())
            throw value_error("mp::future::successful: the task has not finished yet; call wait() or ready() first");
        return s.status() == detail::future_status::finished && !s.failed();
    }

    /// Two futures are equal when they share one result (or are both invalid).
    friend bool operator==(const future& a, const future& b) noexcept { return a.state_ == b.state_; }

private:
    friend struct detail::future_access;
    explicit future(std::shared_ptr<detail::future_state<R>> s) noexcept : state_(std::move(s)) {}

    detail::future_state<R>& checked() const {
        if (!state_) detail::throw_invalid_future();
        return *state_;
    }
    decltype(auto) result_when_done() const {
        if (auto e = state_->exception_when_done()) std::rethrow_exception(e);
        if constexpr (!std::is_void_v<R>) return static_cast<const R&>(*state_->value());
    }
    R take_when_done() const {
        if (auto e = state_->exception_when_done()) std::rethrow_exception(e);
        if constexpr (!std::is_void_v<R>) return std::move(*state_->mutable_value());
    }

    std::shared_ptr<detail::future_state<R>> state_;
};

/// Python's multiprocessing AsyncResult: the same type as mp::future.
template <class R>
using async_result = future<R>;

/// When mp::wait returns (Python's FIRST_COMPLETED, FIRST_EXCEPTION,
/// ALL_COMPLETED).
enum class return_when { first_completed, first_exception, all_completed };

/// What mp::wait found: the futures that are done and those that are not.
template <class R>
struct wait_result {
    std::vector<future<R>> done;
    std::vector<future<R>> not_done;
};

/// Waits for the futures in `fs`, with no time limit, until `when` holds
/// (Python's concurrent.futures.wait). first_exception with no failure acts
/// as all_completed. Duplicates count once; each result list keeps the
/// order of first appearance in `fs`. Cancelled futures count as done.
/// Throws mp::error if a future is invalid. Thread-safe.
template <class R>
[[nodiscard]] wait_result<R> wait(const std::vector<future<R>>& fs, return_when when = return_when::all_completed);

/// As above, returning when `timeout` passes even if `when` does not hold
/// yet (never throws mp::timeout_error: see not_done).
template <class R, class Rep, class Period>
[[nodiscard]] wait_result<R> wait(const std::vector<future<R>>& fs, std::chrono::duration<Rep, Period> timeout,
                                  return_when when = return_when::all_completed);

namespace detail {

/// Distinct futures of `fs`, in order of first appearance; throws on an
/// invalid one.
template <class R>
std::vector<future<R>> distinct_futures(const std::vector<future<R>>& fs) {
    std::vector<future<R>> out;
    out.reserve(fs.size());
    std::unordered_map<const void*, bool> seen;
    for (const auto& f : fs) {
        if (!f.valid()) throw_invalid_future();
        if (seen.emplace(future_access::state(f).get(), true).second) out.push_back(f);
    }
    return out;
}

template <class R>
wait_result<R> wait_until(const std::vector<future<R>>& fs, steady_deadline deadline, return_when when) {
    auto distinct = distinct_futures(fs);
    std::vector<future_state_base*> states;
    states.reserve(distinct.size());
    for (auto& f : distinct) states.push_back(future_access::state(f).get());
    auto done = wait_states(states, deadline, static_cast<int>(when));
    wait_result<R> r;
    for (std::size_t i = 0; i < distinct.size(); ++i) (done[i] ? r.done : r.not_done).push_back(distinct[i]);
    return r;
}

}  // namespace detail

template <class R>
wait_result<R> wait(const std::vector<future<R>>& fs, return_when when) {
    return detail::wait_until(fs, std::nullopt, when);
}

template <class R, class Rep, class Period>
wait_result<R> wait(const std::vector<future<R>>& fs, std::chrono::duration<Rep, Period> timeout, return_when when) {
    return detail::wait_until(fs, detail::deadline_after(timeout), when);
}

namespace detail {

/// The state behind an mp::as_completed range.
template <class R>
class as_completed_core {
public:
    as_completed_core(const std::vector<future<R>>& fs, steady_deadline deadline)
        : waiter_(std::make_shared<future_waiter>()), deadline_(deadline) {
        auto distinct = distinct_futures(fs);
        total_ = distinct.size();
        try {
            for (auto& f : distinct) {
                auto* s = future_access::state(f).get();
                bool failed = false;
                if (s->add_waiter(waiter_, failed)) {
                    registered_.push_back(s);
                    pending_.emplace(s, f);
                } else {
                    ready_.push_back(f);
                }
            }
        } catch (...) {
            remove_waiter_from(registered_, waiter_.get());
            throw;
        }
    }
    as_completed_core(const as_completed_core&) = delete;
    as_completed_core& operator=(const as_completed_core&) = delete;
    ~as_completed_core() { remove_waiter_from(registered_, waiter_.get()); }

    /// The next finished future, or an invalid one after the last. Throws
    /// mp::timeout_error when the deadline passes first.
    future<R> next() {
        if (ready_.empty() && !pending_.empty()) {
            std::vector<const future_state_base*> finished;
            {
                std::unique_lock lock(waiter_->mutex_);
                auto some = [&] { return !waiter_->finished_.empty(); };
                if (deadline_) {
                    if (!waiter_->cv_.wait_until(lock, *deadline_, some))
                        throw_as_completed_timeout(pending_.size(), total_);
                } else {
                    waiter_->cv_.wait(lock, some);
                }
                finished.swap(waiter_->finished_);
            }
            for (auto* s : finished) {
                auto it = pending_.find(s);
                if (it == pending_.end()) continue;
                ready_.push_back(std::move(it->second));
                pending_.erase(it);
            }
        }
        if (ready_.empty()) return {};
        future<R> f = std::move(ready_.front());
        ready_.pop_front();
        return f;
    }

private:
    std::shared_ptr<future_waiter> waiter_;
    steady_deadline deadline_;
    std::size_t total_ = 0;
    std::vector<future_state_base*> registered_;  // states waiter_ is registered with
    std::unordered_map<const future_state_base*, future<R>> pending_;
    std::deque<future<R>> ready_;
};

}  // namespace detail

/// The futures of a set, yielded as they finish: what mp::as_completed
/// returns. An input range, iterated once by one thread. begin() and the
/// iterator's increment throw mp::timeout_error when the deadline given to
/// as_completed passes before every future is done (the futures already
/// yielded stay yielded; iterating again goes on from there).
template <class R>
class as_completed_range {
public:
    class iterator {
    public:
        using value_type = future<R>;
        using difference_type = std::ptrdiff_t;
        using reference = future<R>&;
        using iterator_concept = std::input_iterator_tag;

        iterator() = default;
        reference operator*() const noexcept { return *current_; }
        future<R>* operator->() const noexcept { return current_; }
        iterator& operator++() {
            *current_ = core_->next();
            return *this;
        }
        void operator++(int) { ++*this; }
        friend bool operator==(const iterator& it, std::default_sentinel_t) noexcept {
            return !it.current_ || !it.current_->valid();
        }

    private:
        friend class as_completed_range;
        iterator(detail::as_completed_core<R>* core, future<R>* current) : core_(core), current_(current) {}
        detail::as_completed_core<R>* core_ = nullptr;
        // Owned by the range, so that copies of the iterator agree.
        future<R>* current_ = nullptr;
    };

    as_completed_range(const std::vector<future<R>>& fs, detail::steady_deadline deadline)
        : core_(std::make_unique<detail::as_completed_core<R>>(fs, deadline)), current_(std::make_unique<future<R>>()) {}

    /// Yields the first finished future (waiting for it if need be).
    iterator begin() {
        if (!started_) {
            started_ = true;
            *current_ = core_->next();
        }
        return iterator(core_.get(), current_.get());
    }
    std::default_sentinel_t end() const noexcept { return {}; }

private:
    std::unique_ptr<detail::as_completed_core<R>> core_;
    std::unique_ptr<future<R>> current_;
    bool started_ = false;
};

/// Yields the distinct futures of `fs` as they finish (those already done
/// first, in the order given), with no time limit (Python's
/// concurrent.futures.as_completed). Throws mp::error if a future is invalid.
template <class R>
[[nodiscard]] as_completed_range<R> as_completed(const std::vector<future<R>>& fs) {
    return as_completed_range<R>(fs, std::nullopt);
}

/// As above; iteration throws mp::timeout_error if not every future is done
/// within `timeout` of this call.
template <class R, class Rep, class Period>
[[nodiscard]] as_completed_range<R> as_completed(const std::vector<future<R>>& fs,
                                                 std::chrono::duration<Rep, Period> timeout) {
    return as_completed_range<R>(fs, detail::deadline_after(timeout));
}

}  // namespace mp
