// mp/pool.hpp — a pool of worker processes: Python's multiprocessing.Pool.
//
//     mp::pool pool(4);               // or mp::pool pool({.processes = 4, .initializer = init,
//                                     //                   .maxtasksperchild = 100, .context = ctx});
//     int r = pool.apply(f, 1, 2);
//     mp::async_result<int> a = pool.apply_async(f, 1, 2);   // an mp::future<int>
//     std::vector<int> v = pool.map(square, xs);            // pool.map(square, xs, chunksize)
//     for (int x : pool.imap(square, xs)) ...;               // ordered, lazy
//     auto it = pool.imap_unordered(square, xs, 16);
//     std::optional<int> x = it.next();                      // nullopt at the end
//     pool.close(); pool.join();                             // ~pool() does both
//
// Promises:
// - Tasks are plain functions, captureless lambdas, mp::fn<&f>, mp::function
//   or default-constructible/serializable function objects; arguments and
//   results must be able to cross a process boundary. Anything else is a
//   compile-time error naming the culprit.
// - An exception in a task reaches get(), map() or the imap iterator (at the
//   item where it happened; the iterator goes on after it) with its type, as
//   mp/serialize.hpp describes.
// - A worker that dies (killed, crashed, exited) fails only the task it was
//   running, with mp::worker_crashed naming the signal or exit code; the pool
//   starts a replacement and every other task completes.
// - The initializer runs once in each worker, replacements included;
//   mp::bind(init, q, lock) gives it arguments, which may be queues, locks,
//   values and shared memory. If it throws, the tasks that worker takes fail
//   with its exception (type kept, message naming the initializer), unrun.
// - submit_with({.timeout = d}, f, args...): a task still running d after a
//   worker started it has its worker stopped (SIGTERM, SIGKILL after a short
//   grace) and replaced; its future fails with mp::timeout_error.
// - imap, imap_unordered and map_async read their input lazily with a bounded
//   number of chunks in flight, so an endless range works and memory stays
//   flat. The input range is read on the pool's own threads, one call at a
//   time; it must outlive the call if it was passed as an lvalue.
// - Workers are named "ForkPoolWorker-N", "SpawnPoolWorker-N" or
//   "ForkServerPoolWorker-N" and ignore SIGINT: Ctrl-C reaches the parent,
//   and workers die with the parent however it ends.
// - Future callbacks (add_done_callback) run on the pool's result thread:
//   they must not wait for other results of the same pool.
// Thread-safety: every member may be called from several threads at once.
#pragma once

#include <chrono>
#include <cstddef>
#include <iterator>
#include <memory>
#include <optional>
#include <ranges>
#include <utility>
#include <vector>

#include "mp/bind.hpp"
#include "mp/context.hpp"
#include "mp/detail/task.hpp"
#include "mp/executor.hpp"
#include "mp/function.hpp"
#include "mp/future.hpp"
#include "mp/timeout.hpp"

namespace mp {

/// Options of mp::pool, in Python's order.
struct pool_options {
    int processes = 0;                     // 0: mp::cpu_count()
    mp::function<void()> initializer{};    // run by each worker before its first task; mp::bind(init, q, lock)
                                           // gives it arguments (Python's initargs)
    int maxtasksperchild = 0;              // a worker is replaced after this many tasks; 0: never
    std::optional<mp::context> context{};  // start method; default: mp::get_start_method()
};

/// The results of imap, imap_unordered and executor.map, as they come:
/// Python's IMapIterator. next() returns the next result (nullopt after the
/// last), rethrows a task's exception at its item (the next call goes on
/// after it), and, with a timeout, throws mp::timeout_error if no result
/// arrives in time. Also a range: `for (R x : pool.imap(f, xs))`.
/// Move-only; destroying it before the end stops reading the input.
/// Thread-safe (next() from several threads hands each result to one).
template <class R>
class imap_iterator {
public:
    class iterator {
    public:
        using value_type = R;
        using difference_type = std::ptrdiff_t;
        using iterator_concept = std::input_iterator_tag;
        iterator() = default;
        R& operator*() const { return *owner_->current_; }
        R* operator->() const { return &*owner_->current_; }
        iterator& operator++() {
            owner_->advance();
            return *this;
        }
        void operator++(int) { ++*this; }
        bool operator==(std::default_sentinel_t) const { return owner_->at_end(); }

    private:
        friend class imap_iterator;
        explicit iterator(imap_iterator* owner) : owner_(owner) {}
        imap_iterator* owner_ = nullptr;
    };

    imap_iterator(imap_iterator&&) noexcept = default;
    imap_iterator& operator=(imap_iterator&& other) noexcept {
        if (this != &other) {
            abandon();
            job_ = std::move(other.job_);
            deadline_ = other.deadline_;
            current_ = std::move(other.current_);
            started_ = other.started_;
        }
        return *this;
    }
    ~imap_iterator() { abandon(); }

    /// The next result; nullopt after the last.
    [[nodiscard]] std::optional<R> next() { return next_until(deadline_); }
    /// As next(), waiting at most `timeout`; throws mp::timeout_error.
    template <class Rep, class Period>
    [[nodiscard]] std::optional<R> next(std::chrono::duration<Rep, Period> timeout) {
        auto d = detail::deadline_after(timeout);
        if (deadline_ && (!d || *deadline_ < *d)) d = deadline_;
        return next_until(d);
    }

    /// Fetches the first result (range-for). Throws as next() does.
    iterator begin() {
        if (!started_) {
            started_ = true;
            advance();
        }
        return iterator(this);
    }
    std::default_sentinel_t end() const noexcept { return {}; }

    /// For mp's pools: wraps a job.
    explicit imap_iterator(std::shared_ptr<detail::chunked_job<R>> job, detail::steady_deadline deadline = std::nullopt)
        : job_(std::move(job)), deadline_(deadline) {}

private:
    [[nodiscard]] bool at_end() const noexcept { return !current_; }
    void advance() {
        current_.reset();
        current_ = next_until(deadline_);
    }
    std::optional<R> next_until(detail::steady_deadline d) {
        try {
            return job_->next(d);
        } catch (const timeout_error&) {
            // An executor map's overall timeout passed: as Python's
            // Executor.map, the items no worker has taken are cancelled.
            if (deadline_ && d == deadline_) abandon();
            throw;
        }
    }
    void abandon() noexcept {
        if (job_) job_->abandon();
    }

    std::shared_ptr<detail::chunked_job<R>> job_;
    detail::steady_deadline deadline_;  // executor.map's overall timeout
    std::optional<R> current_;
    bool started_ = false;
};

/// A pool of worker processes (Python's multiprocessing.Pool).
class pool {
public:
    /// Starts `processes` workers (Python's Pool(processes)). Throws
    /// mp::value_error if processes < 1, and what starting a process throws
    /// (mp::bootstrap_error without mp::init under spawn/forkserver).
    explicit pool(int processes = cpu_count());
    explicit pool(pool_options options);
    pool(const pool&) = delete;
    pool& operator=(const pool&) = delete;
    /// close(), then join(): waits for every queued task. Never throws.
    ~pool();

    /// Runs f(args...) in a worker and returns its result (rethrowing its exception).
    template <class F, class... Args>
    auto apply(F&& f, Args&&... args) -> detail::task_result_t<F, Args...> {
        return apply_async(std::forward<F>(f), std::forward<Args>(args)...).get();
    }

    /// Queues f(args...); the future gives its result. Throws mp::closed_error after close().
    template <class F, class... Args>
    [[nodiscard]] auto apply_async(F&& f, Args&&... args) -> async_result<detail::task_result_t<F, Args...>> {
        return submit_with({}, std::forward<F>(f), std::forward<Args>(args)...);
    }

    /// As apply_async, with per-task options ({.timeout = 2s}).
    template <class F, class... Args>
    [[nodiscard]] auto submit_with(submit_options options, F&& f, Args&&... args)
        -> future<detail::task_result_t<F, Args...>> {
        static_assert(detail::check_call_task<F, Args...>());
        using R = detail::task_result_t<F, Args...>;
        auto job = detail::call_job<R>::make(std::forward<F>(f), std::forward<Args>(args)...);
        if (options.timeout) job->timeout = std::chrono::duration_cast<std::chrono::nanoseconds>(*options.timeout);
        auto fut = job->get_future();
        engine_.add(job, "apply_async");
        return fut;
    }

    /// f over every item of `range`, results in order. chunksize 0: Python's
    /// default (about four chunks per worker for a sized range, else 1).
    /// Rethrows the first exception of a task.
    template <class F, class Range>
    [[nodiscard]] auto map(F&& f, Range&& range, std::size_t chunksize = 0) {
        return run_all<false>(std::forward<F>(f), std::forward<Range>(range), chunksize);
    }
    /// As map, without waiting; the input is read lazily.
    template <class F, class Range>
    [[nodiscard]] auto map_async(F&& f, Range&& range, std::size_t chunksize = 0) {
        return start_all<false>(std::forward<F>(f), std::forward<Range>(range), chunksize);
    }
    /// f(a, b, ...) for every tuple (a, b, ...) of `range`, results in order.
    template <class F, class Range>
    [[nodiscard]] auto starmap(F&& f, Range&& range, std::size_t chunksize = 0) {
        return run_all<true>(std::forward<F>(f), std::forward<Range>(range), chunksize);
    }
    template <class F, class Range>
    [[nodiscard]] auto starmap_async(F&& f, Range&& range, std::size_t chunksize = 0) {
        return start_all<true>(std::forward<F>(f), std::forward<Range>(range), chunksize);
    }

    /// Results of f over `range` in order, as they become available.
    template <class F, class Range>
    [[nodiscard]] auto imap(F&& f, Range&& range, std::size_t chunksize = 1) {
        return start_iter(std::forward<F>(f), std::forward<Range>(range), chunksize, detail::collect_mode::ordered);
    }
    /// Results of f over `range` in the order they finish.
    template <class F, class Range>
    [[nodiscard]] auto imap_unordered(F&& f, Range&& range, std::size_t chunksize = 1) {
        return start_iter(std::forward<F>(f), std::forward<Range>(range), chunksize, detail::collect_mode::unordered);
    }

    /// No more tasks may be submitted; queued ones still run.
    void close() noexcept { engine_.close(); }
    /// Waits for the workers to finish every queued task and exit. Throws
    /// mp::value_error before close() or terminate().
    void join() { engine_.join(); }
    /// Stops the workers at once; unfinished tasks fail with mp::closed_error.
    void terminate() noexcept { engine_.terminate(); }

    /// Number of worker processes.
    [[nodiscard]] int processes() const noexcept { return engine_.workers(); }
    /// Pids of the current workers.
    [[nodiscard]] std::vector<int> worker_pids() const { return engine_.worker_pids(); }

private:
    template <bool Star, class F, class Range>
    auto make_job(F&& f, Range&& range, std::size_t chunksize, detail::collect_mode mode) {
        if (chunksize == 0) chunksize = detail::default_map_chunksize(range, engine_.workers());
        std::size_t size_hint = 0;
        if constexpr (std::ranges::sized_range<Range>) size_hint = static_cast<std::size_t>(std::ranges::size(range));
        // map/map_async keep every result anyway: a wider window costs only
        // read-ahead, and lets the result thread refill without a detour.
        std::size_t window = detail::default_window_chunks(engine_.workers());
        if (mode == detail::collect_mode::all) window *= 4;
        auto job = detail::make_range_job<Star>(std::forward<F>(f), std::forward<Range>(range), mode, chunksize,
                                                window);
        job->reserve(size_hint);
        return job;
    }
    template <bool Star, class F, class Range>
    auto run_all(F&& f, Range&& range, std::size_t chunksize) {
        auto job = make_job<Star>(std::forward<F>(f), std::forward<Range>(range), chunksize, detail::collect_mode::all);
        engine_.add(job, "map");
        return job->take_all();
    }
    template <bool Star, class F, class Range>
    auto start_all(F&& f, Range&& range, std::size_t chunksize) {
        auto job = make_job<Star>(std::forward<F>(f), std::forward<Range>(range), chunksize, detail::collect_mode::all);
        auto fut = job->get_future();
        engine_.add(job, "map_async");
        return fut;
    }
    template <class F, class Range>
    auto start_iter(F&& f, Range&& range, std::size_t chunksize, detail::collect_mode mode) {
        auto job = make_job<false>(std::forward<F>(f), std::forward<Range>(range), chunksize, mode);
        using job_type = typename decltype(job)::element_type;
        using R = std::remove_cvref_t<decltype(*std::declval<job_type&>().next(std::nullopt))>;
        engine_.add(job, "imap");
        return imap_iterator<R>(std::static_pointer_cast<detail::chunked_job<R>>(job));
    }

    detail::pool_engine engine_;
};

inline mp::pool context::pool(mp::pool_options options) const {
    options.context = *this;
    return mp::pool(std::move(options));
}
inline mp::pool context::pool(int processes) const {
    if (processes < 1)
        throw value_error("mp: a pool needs at least one worker process (asked for " + std::to_string(processes) + ")");
    return pool(mp::pool_options{.processes = processes});
}

}  // namespace mp
