// mp/thread_pool_executor.hpp — Python's concurrent.futures.ThreadPoolExecutor:
// a pool of threads in this process that runs calls and hands back futures.
//
//     mp::thread_pool_executor tx(8);     // or ({.max_workers = 8, .initializer = init})
//     mp::future<int> f = tx.submit(square, 7);
//     mp::future<int> g = tx.submit_with({.timeout = 2s}, slow, 7);  // fails with mp::timeout_error past it
//     for (int x : tx.map(square, xs, {.timeout = 10s})) ...;   // in input order
//     tx.shutdown(/*wait=*/true, /*cancel_futures=*/false);    // ~thread_pool_executor: shutdown(true)
//
// Promises:
// - Threads start lazily, one per submit that finds no idle thread, up to
//   max_workers, and every one is joined by shutdown(true) or the destructor:
//   none outlives the executor.
// - Calls run in submission order (first queued, first started).
// - A per-call deadline (submit_with) counts from when a thread starts the
//   call: past it the future fails with mp::timeout_error and a call taking
//   a std::stop_token first is asked to stop; a thread cannot be stopped from
//   outside, so any other call runs on (its result discarded).
// - An idle thread spins briefly for the next call before it sleeps (one at
//   a time), and get() spins briefly for the result: a submit().get() round
//   trip needs no futex wake while both sides are quick.
// - Once max_workers threads have started, submit() takes no lock (the
//   queue costs it two atomic instructions; the call and its future's state
//   are one allocation unless the call takes a std::stop_token) and wakes a
//   sleeping thread only when no thread is already on its way to the queue;
//   a thread that takes a call and sees more queued wakes the next. Calls
//   submitted while a thread spins for work, or while a woken one is on its
//   way, cost the submitter no system call.
// - map() reads its input lazily with a bounded number of calls in flight,
//   so an endless input range works; results come in input order, and an
//   exception in one call is thrown when iteration reaches it.
// - An initializer that throws breaks the executor (Python's
//   BrokenThreadPool): queued futures fail with the initializer's exception
//   and later submits throw mp::error.
// - Nothing here crosses a process boundary, so anything callable may be
//   submitted, including lambdas with captures and move-only callables. An
//   executor works in any process, including a forked child, but an executor
//   inherited through fork belongs to the parent: in the child, submit()
//   throws mp::error and its destructor does not wait for the parent's threads.
// Thread-safety: every member may be called from several threads at once,
// including from inside a task (but a task that calls shutdown(true) does not
// wait for its own thread).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <ranges>
#include <stop_token>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "mp/executor.hpp"
#include "mp/error.hpp"
#include "mp/future.hpp"
#include "mp/timeout.hpp"

namespace mp {

/// Options of mp::thread_pool_executor, in Python's order.
struct thread_pool_options {
    int max_workers = 0;                  // 0: min(32, mp::cpu_count() + 4), as Python
    std::function<void()> initializer{};  // run by each thread before its first call
    std::string thread_name_prefix{};     // thread names: prefix_N (the kernel keeps 15 bytes)
};

/// Options of thread_pool_executor::map: mp::map_options, shared by every
/// executor (chunksize batches small calls; Python ignores it for threads).
using thread_pool_map_options = map_options;

namespace detail {

/// A link of the executor's queue (thread_pool_executor.cpp): the queued
/// calls are chained through themselves, so queueing allocates nothing.
struct thread_queue_link {
    std::atomic<thread_queue_link*> next{nullptr};
};

/// One queued call of a thread_pool_executor.
class thread_task : public thread_queue_link {
public:
    virtual ~thread_task() = default;
    /// Runs the call (unless its future was cancelled) and keeps the outcome.
    virtual void execute() noexcept = 0;
    /// Gives the outcome to the future (runs its done callbacks).
    virtual void publish() noexcept = 0;
    /// Fails the future without running the call.
    virtual void fail(std::exception_ptr e) noexcept = 0;
    /// Cancels the future without running the call.
    virtual void cancel_unrun() noexcept = 0;
    /// The call is past its deadline: fails the future with `e` (unless it
    /// is done) and requests stop from a call that takes a std::stop_token.
    virtual void expire(std::exception_ptr e) noexcept = 0;

    /// Deadline counted from when a thread starts the call (submit_with).
    std::optional<std::chrono::nanoseconds> timeout;
    /// The queue's reference to this call, while queued.
    std::shared_ptr<thread_task> queued_self;
};

/// A call and its future's state in one allocation: the queue and the
/// caller's future share it.
template <class R, class Call>
class thread_call final : public future_state<R>, public thread_task {
public:
    explicit thread_call(Call call) : call_(std::in_place, std::move(call)) { this->spin_when_waited(); }

    [[nodiscard]] future<R> get_future() {
        return future_access::make(std::static_pointer_cast<future_state<R>>(this->shared_from_this()));
    }
    /// The call takes a std::stop_token from `stop`: terminate() and a
    /// passed deadline request stop through it.
    void set_stop_source(std::stop_source stop) {
        stop_.emplace(std::move(stop));
        this->set_stop_request([this] { return stop_->request_stop() || stop_->stop_requested(); });
    }

    void execute() noexcept override {
        if (!this->set_running_or_notify_cancel()) return;
        ran_ = true;
        try {
            if constexpr (std::is_void_v<R>)
                std::move(*call_)();
            else
                value_.emplace(std::move(*call_)());
        } catch (...) {
            error_ = std::current_exception();
        }
        // The call's captures go before the future is set: once a caller
        // sees the result, the executor holds nothing of the call.
        call_.reset();
    }
    void publish() noexcept override {
        if (!ran_) return;
        try {
            if (error_) {
                this->set_exception(error_);
            } else if constexpr (std::is_void_v<R>) {
                this->set_value();
            } else {
                this->set_value(std::move(*value_));
            }
        } catch (...) {
            // Moving the value into the future threw: report that instead.
            this->set_exception(std::current_exception());
        }
    }
    void fail(std::exception_ptr e) noexcept override { this->set_exception(std::move(e)); }
    void cancel_unrun() noexcept override { (void)this->cancel(); }
    void expire(std::exception_ptr e) noexcept override {
        if (this->set_exception(std::move(e)) && stop_) stop_->request_stop();
    }

private:
    std::optional<Call> call_;
    std::optional<std::stop_source> stop_;
    bool ran_ = false;
    std::optional<std::conditional_t<std::is_void_v<R>, char, R>> value_;
    std::exception_ptr error_;
};

/// The threads and the queue of a thread_pool_executor. Thread-safe.
class thread_pool_core {
public:
    explicit thread_pool_core(thread_pool_options options);
    thread_pool_core(const thread_pool_core&) = delete;
    thread_pool_core& operator=(const thread_pool_core&) = delete;
    /// shutdown(true, false). Never throws.
    ~thread_pool_core();

    /// Queues `task`, starting a thread if none is idle. Throws
    /// mp::closed_error after shutdown, mp::error when broken or in a forked child.
    void submit(std::shared_ptr<thread_task> task);
    void shutdown(bool wait, bool cancel_futures) noexcept;

    [[nodiscard]] int max_workers() const noexcept;
    [[nodiscard]] std::size_t thread_count() const;

    struct state;

private:
    /// Requires state::mutex held: throws if broken or shut down.
    void throw_if_closed() const;

    std::shared_ptr<state> s_;  // shared with the threads
};

[[nodiscard]] int default_thread_pool_workers();

/// Calls in flight per worker thread for map(): more keeps threads busy when
/// calls vary in length; fewer holds fewer results and makes a timeout or an
/// early stop cancel more of the input's calls before they start.
inline constexpr std::size_t map_chunks_per_worker = 2;

/// What one item of a map() call gave: a value or an exception.
template <class V>
struct map_outcome {
    std::optional<V> value;
    std::exception_ptr error;
};

/// The input side of a map(): reads items and submits chunks of them.
template <class V>
class map_source {
public:
    using chunk = std::vector<map_outcome<V>>;
    virtual ~map_source() = default;
    /// Submits the next chunk; nullopt when the input is exhausted.
    /// Throws what submit throws.
    virtual std::optional<future<chunk>> submit_next() = 0;
};

template <class V, class Fn, class View>
class map_source_of final : public map_source<V> {
public:
    using chunk = typename map_source<V>::chunk;
    using item = std::ranges::range_value_t<View>;

    map_source_of(std::shared_ptr<thread_pool_core> core, Fn fn, View view, std::size_t chunksize)
        : core_(std::move(core)),
          fn_(std::make_shared<Fn>(std::move(fn))),
          view_(std::move(view)),
          it_(std::ranges::begin(view_)),
          chunksize_(chunksize < 1 ? 1 : chunksize) {}

    std::optional<future<chunk>> submit_next() override {
        if (it_ == std::ranges::end(view_)) return std::nullopt;
        std::vector<item> items;
        items.reserve(chunksize_);
        for (; items.size() < chunksize_ && it_ != std::ranges::end(view_); ++it_) items.emplace_back(*it_);
        auto work = [fn = fn_, items = std::move(items)]() mutable {
            chunk out(items.size());
            for (std::size_t i = 0; i < items.size(); ++i) {
                try {
                    if constexpr (std::is_same_v<V, std::monostate>) {
                        std::invoke(*fn, items[i]);
                        out[i].value.emplace();
                    } else {
                        out[i].value.emplace(std::invoke(*fn, items[i]));
                    }
                } catch (...) {
                    out[i].error = std::current_exception();
                }
            }
            return out;
        };
        auto task = std::make_shared<thread_call<chunk, decltype(work)>>(std::move(work));
        auto f = task->get_future();
        core_->submit(std::move(task));
        return f;
    }

private:
    std::shared_ptr<thread_pool_core> core_;
    std::shared_ptr<Fn> fn_;  // shared by the chunks' calls, which may run at once
    View view_;
    std::ranges::iterator_t<View> it_;
    std::size_t chunksize_;
};

}  // namespace detail

/// The results of thread_pool_executor::map, in input order: an input range
/// (iterate it once, from one thread). begin(), the iterator's increment and
/// next() wait for the next result and throw the call's exception when they
/// reach a failed item (iteration may go on past it), mp::timeout_error past
/// the map's timeout, and mp::closed_error if the executor was shut down
/// before all the input was submitted. Destroying the range after iteration
/// began cancels the calls that have not started (as closing Python's map
/// generator does); a range never iterated lets its submitted calls run.
/// V is the function's result type, or std::monostate for void.
template <class V>
class thread_pool_map_range {
public:
    class iterator {
    public:
        using value_type = V;
        using difference_type = std::ptrdiff_t;
        using iterator_concept = std::input_iterator_tag;

        iterator() = default;
        V& operator*() const { return *owner_->current_; }
        V* operator->() const { return &*owner_->current_; }
        iterator& operator++() {
            owner_->advance();
            return *this;
        }
        void operator++(int) { ++*this; }
        friend bool operator==(const iterator& it, std::default_sentinel_t) noexcept { return it.at_end(); }

    private:
        friend class thread_pool_map_range;
        [[nodiscard]] bool at_end() const noexcept { return !owner_->current_; }
        explicit iterator(thread_pool_map_range* owner) : owner_(owner) {}
        thread_pool_map_range* owner_ = nullptr;
    };

    thread_pool_map_range(std::unique_ptr<detail::map_source<V>> source, std::size_t window,
                          detail::steady_deadline deadline)
        : source_(std::move(source)), window_(window < 1 ? 1 : window), deadline_(deadline) {
        refill();  // as Python, the first calls are submitted by map() itself
        if (submit_error_ && in_flight_.empty()) std::rethrow_exception(submit_error_);
    }
    thread_pool_map_range(thread_pool_map_range&& other) noexcept
        : source_(std::move(other.source_)),
          window_(other.window_),
          deadline_(other.deadline_),
          in_flight_(std::exchange(other.in_flight_, {})),
          chunk_(std::exchange(other.chunk_, {})),
          chunk_pos_(std::exchange(other.chunk_pos_, 0)),
          current_(std::exchange(other.current_, std::nullopt)),
          submit_error_(std::exchange(other.submit_error_, nullptr)),
          started_(std::exchange(other.started_, false)),
          timed_out_(other.timed_out_) {}
    thread_pool_map_range& operator=(thread_pool_map_range&& other) noexcept {
        if (this != &other) {
            abandon();
            std::destroy_at(this);
            std::construct_at(this, std::move(other));
        }
        return *this;
    }
    ~thread_pool_map_range() { abandon(); }

    /// The next result; nullopt after the last. Throws as described above.
    [[nodiscard]] std::optional<V> next() { return next_until(deadline_); }
    /// As next(), waiting at most `timeout` (and never past the map's
    /// timeout); throws mp::timeout_error. A timeout of this call alone
    /// cancels nothing: call again to go on waiting.
    template <class Rep, class Period>
    [[nodiscard]] std::optional<V> next(std::chrono::duration<Rep, Period> timeout) {
        auto d = detail::deadline_after(timeout);
        if (deadline_ && (!d || *deadline_ < *d)) d = deadline_;
        return next_until(d);
    }

    /// Waits for the first result (range-for). Throws as next() does.
    iterator begin() {
        if (!started_) advance();
        return iterator(this);
    }
    std::default_sentinel_t end() const noexcept { return {}; }

private:
    using chunk = typename detail::map_source<V>::chunk;

    void advance() {
        current_.reset();
        current_ = next_until(deadline_);
    }

    std::optional<V> next_until(detail::steady_deadline deadline) {
        started_ = true;
        for (;;) {
            if (chunk_pos_ < chunk_.size()) {
                auto& o = chunk_[chunk_pos_++];
                if (o.error) {
                    auto e = std::move(o.error);
                    std::rethrow_exception(e);
                }
                std::optional<V> v(std::move(*o.value));
                o.value.reset();
                return v;
            }
            chunk_.clear();
            chunk_pos_ = 0;
            if (timed_out_) throw_timeout();
            refill();
            if (in_flight_.empty()) {
                if (submit_error_) std::rethrow_exception(submit_error_);
                return std::nullopt;
            }
            auto& front = in_flight_.front();
            if (!detail::future_access::state(front)->wait_until(deadline)) {
                if (deadline == deadline_) {
                    // The map's own timeout: as Python, give up on the rest.
                    timed_out_ = true;
                    cancel_in_flight();
                }
                throw_timeout();
            }
            auto state = detail::future_access::state(front);
            in_flight_.pop_front();
            // A chunk's call catches per item: this throws only if the call
            // was cancelled (shutdown with cancel_futures) or never ran
            // (a broken executor).
            if (auto e = state->exception_when_done()) std::rethrow_exception(e);
            chunk_ = std::move(*state->mutable_value());  // only this range holds the future
            refill();
        }
    }

    void refill() {
        if (!source_ || submit_error_ || timed_out_) return;
        while (in_flight_.size() < window_) {
            try {
                auto f = source_->submit_next();
                if (!f) {
                    source_.reset();  // input exhausted; let go of it
                    return;
                }
                in_flight_.push_back(std::move(*f));
            } catch (...) {
                submit_error_ = std::current_exception();
                return;
            }
        }
    }

    void cancel_in_flight() noexcept {
        for (auto& f : in_flight_) (void)f.cancel();
    }
    void abandon() noexcept {
        if (started_) cancel_in_flight();
    }
    [[noreturn]] static void throw_timeout() {
        throw timeout_error(
            "mp::thread_pool_executor::map: the results were not ready within the map's timeout; "
            "the calls not yet started were cancelled; give a longer timeout or none");
    }

    std::unique_ptr<detail::map_source<V>> source_;  // null once the input is exhausted
    std::size_t window_;
    detail::steady_deadline deadline_;
    std::deque<future<chunk>> in_flight_;
    chunk chunk_;
    std::size_t chunk_pos_ = 0;
    std::optional<V> current_;
    std::exception_ptr submit_error_;
    bool started_ = false;
    bool timed_out_ = false;
};

/// A pool of threads that runs calls and returns futures (Python's
/// ThreadPoolExecutor). Not copyable or movable.
class thread_pool_executor {
public:
    /// Up to `max_workers` threads, started as work arrives. Throws
    /// mp::value_error if max_workers < 1.
    explicit thread_pool_executor(int max_workers = detail::default_thread_pool_workers());
    /// With options; max_workers 0 means the default. Throws mp::value_error
    /// if max_workers < 0.
    explicit thread_pool_executor(thread_pool_options options);
    thread_pool_executor(const thread_pool_executor&) = delete;
    thread_pool_executor& operator=(const thread_pool_executor&) = delete;
    /// shutdown(true): waits for every queued call. Never throws.
    ~thread_pool_executor();

    /// Schedules fn(args...) on a thread; fn and args are decay-copied (or
    /// moved) into the executor, and the call gets them as rvalues. Throws
    /// mp::closed_error after shutdown(), mp::error if the executor is broken.
    ///
    /// A callable whose first parameter is a std::stop_token gets one: its
    /// future's terminate() requests stop while it runs (cooperative).
    template <class F, class... Args>
    [[nodiscard]] auto submit(F&& fn, Args&&... args) {
        return submit_with({}, std::forward<F>(fn), std::forward<Args>(args)...);
    }

    /// As submit(), with per-call options. {.timeout = d}: if the call is
    /// still running d after a thread started it, its future fails with
    /// mp::timeout_error and, when the callable takes a std::stop_token
    /// first, stop is requested. A thread cannot be stopped from outside: any
    /// other call runs on to its end, its result discarded, and holds its
    /// thread until then.
    template <class F, class... Args>
    [[nodiscard]] auto submit_with(submit_options options, F&& fn, Args&&... args) {
        using fn_type = std::decay_t<F>;
        if constexpr (std::is_invocable_v<fn_type, std::stop_token, std::decay_t<Args>...>) {
            using R = std::remove_cvref_t<std::invoke_result_t<fn_type, std::stop_token, std::decay_t<Args>...>>;
            std::stop_source stop;
            auto call = [token = stop.get_token(), fn = std::forward<F>(fn),
                         ... args = std::forward<Args>(args)]() mutable -> R {
                return std::invoke(std::move(fn), std::move(token), std::move(args)...);
            };
            auto task = std::make_shared<detail::thread_call<R, decltype(call)>>(std::move(call));
            task->set_stop_source(std::move(stop));
            return enqueue(std::move(task), options);
        } else {
            static_assert(std::is_invocable_v<fn_type, std::decay_t<Args>...>,
                          "mp::thread_pool_executor::submit: fn cannot be called with these arguments (as "
                          "rvalues of their decayed types), nor with a std::stop_token before them");
            using R = std::remove_cvref_t<std::invoke_result_t<fn_type, std::decay_t<Args>...>>;
            auto call = [fn = std::forward<F>(fn), ... args = std::forward<Args>(args)]() mutable -> R {
                return std::invoke(std::move(fn), std::move(args)...);
            };
            return enqueue(std::make_shared<detail::thread_call<R, decltype(call)>>(std::move(call)), options);
        }
    }

    /// fn(item) for every item of `range`, results in input order, input read
    /// lazily (a bounded number of calls in flight; the first are submitted
    /// now). fn is called from several threads at once. An lvalue range is
    /// referenced (keep it alive while iterating), an rvalue one is moved in.
    /// Options: {.timeout, .chunksize} (thread_pool_map_options, or
    /// mp::map_options). Throws mp::closed_error after shutdown().
    template <class F, class Range, class Options = thread_pool_map_options>
        requires std::ranges::input_range<Range> && std::ranges::viewable_range<Range>
    [[nodiscard]] auto map(F&& fn, Range&& range, Options options = {}) {
        using view = std::views::all_t<Range>;
        using item = std::ranges::range_value_t<view>;
        using fn_type = std::decay_t<F>;
        using R = std::remove_cvref_t<std::invoke_result_t<fn_type&, item&>>;
        using V = std::conditional_t<std::is_void_v<R>, std::monostate, R>;
        detail::steady_deadline deadline;
        if (options.timeout) deadline = detail::deadline_after(*options.timeout);
        auto source = std::make_unique<detail::map_source_of<V, fn_type, view>>(
            core_, std::forward<F>(fn), std::views::all(std::forward<Range>(range)), options.chunksize);
        std::size_t window = detail::map_chunks_per_worker * static_cast<std::size_t>(max_workers());
        return thread_pool_map_range<V>(std::move(source), window, deadline);
    }

    /// No more submissions. wait: block until every queued call has run and
    /// the threads have exited (otherwise the destructor waits for that).
    /// cancel_futures: cancel the calls no thread has started. Calling it
    /// again is harmless. Never throws.
    void shutdown(bool wait = true, bool cancel_futures = false) noexcept;

    /// The most threads this executor runs at once.
    [[nodiscard]] int max_workers() const noexcept;
    /// How many threads it has started so far (Python's len(executor._threads)).
    [[nodiscard]] std::size_t thread_count() const;

private:
    template <class R, class Call>
    future<R> enqueue(std::shared_ptr<detail::thread_call<R, Call>> task, const submit_options& options) {
        if (options.timeout) task->timeout = std::chrono::nanoseconds(*options.timeout);
        auto f = task->get_future();
        core_->submit(std::move(task));
        return f;
    }

    std::shared_ptr<detail::thread_pool_core> core_;
};

}  // namespace mp
