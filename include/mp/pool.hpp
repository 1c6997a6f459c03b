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
// - Future callbacks (add_done_callback) run on the thread that receives the
//   result: the pool's result thread, or a thread of the program that was
//   waiting in get() or wait() for a result of the same pool (it receives
//   results itself while it waits briefly, which spares a wake-up per round
//   trip). They must not wait for other results of the same pool.
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
#include "mp/detail/executor_front.hpp"
#include "mp/detail/map_jobs.hpp"
#include "mp/detail/range_reader.hpp"
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
        return detail::submit_call(engine_, options, "apply_async", std::forward<F>(f), std::forward<Args>(args)...);
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

    /// Results of f over `range` in order, as they become available (an mp::imap_iterator).
    template <class F, class Range>
    [[nodiscard]] auto imap(F&& f, Range&& range, std::size_t chunksize = 1) {
        if (chunksize == 0) chunksize = detail::default_map_chunksize(range, engine_.workers());
        return detail::start_stream<detail::ordered_job, false>(engine_, "imap", std::forward<F>(f),
                                                                std::forward<Range>(range), chunksize);
    }
    /// Results of f over `range` in the order they finish.
    template <class F, class Range>
    [[nodiscard]] auto imap_unordered(F&& f, Range&& range, std::size_t chunksize = 1) {
        if (chunksize == 0) chunksize = detail::default_map_chunksize(range, engine_.workers());
        return detail::start_stream<detail::unordered_job, false>(engine_, "imap_unordered", std::forward<F>(f),
                                                                  std::forward<Range>(range), chunksize);
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
    // map/map_async/starmap: every result collected at once (gather_job).
    template <bool Star, class F, class Range>
    auto make_gather(F&& f, Range&& range, std::size_t chunksize) {
        if (chunksize == 0) chunksize = detail::default_map_chunksize(range, engine_.workers());
        std::size_t size_hint = 0;
        if constexpr (std::ranges::sized_range<Range>) size_hint = static_cast<std::size_t>(std::ranges::size(range));
        // Every result is kept anyway: a wider window costs only read-ahead,
        // and lets the result thread refill without a detour.
        std::size_t window = 4 * detail::default_window_chunks(engine_.workers());
        auto job = detail::make_map_job<detail::gather_job, Star>(std::forward<F>(f), std::forward<Range>(range),
                                                                  chunksize, window);
        job->reserve(size_hint);
        return job;
    }
    template <bool Star, class F, class Range>
    auto run_all(F&& f, Range&& range, std::size_t chunksize) {
        auto job = make_gather<Star>(std::forward<F>(f), std::forward<Range>(range), chunksize);
        engine_.add(job, "map");
        return job->take_all();
    }
    template <bool Star, class F, class Range>
    auto start_all(F&& f, Range&& range, std::size_t chunksize) {
        auto job = make_gather<Star>(std::forward<F>(f), std::forward<Range>(range), chunksize);
        auto fut = job->get_future();
        engine_.add(job, "map_async");
        return fut;
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
