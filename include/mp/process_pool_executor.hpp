// mp/process_pool_executor.hpp — Python's concurrent.futures.ProcessPoolExecutor.
//
//     mp::process_pool_executor ex(2);   // or ({.max_workers = 2, .context = ctx,
//                                        //      .initializer = init, .max_tasks_per_child = 100})
//     mp::future<int> f = ex.submit(square, 7);
//     mp::future<int> g = ex.submit_with({.timeout = 2s}, slow, 7);
//     for (int x : ex.map(square, xs, {.timeout = 10s, .chunksize = 64})) ...;
//     ex.shutdown(/*wait=*/true, /*cancel_futures=*/false);   // ~process_pool_executor: shutdown(true)
//
// Promises (beyond mp::pool's, whose machinery it shares):
// - A future is "running" once it is handed to the workers' queue (as in
//   Python); until then cancel() succeeds and the task never runs.
// - A worker that dies fails only its own task with mp::worker_crashed; the
//   executor replaces it and goes on (Python's breaks whole with
//   BrokenProcessPool).
// - map reads its input lazily, as pool.imap does; its timeout counts from
//   the map call, and next() throws mp::timeout_error past it.
// - Workers are named "ForkProcess-N", "SpawnProcess-N" or
//   "ForkServerProcess-N", as in Python.
// Thread-safety: every member may be called from several threads at once.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <utility>

#include "mp/bind.hpp"
#include "mp/context.hpp"
#include "mp/detail/task.hpp"
#include "mp/executor.hpp"
#include "mp/function.hpp"
#include "mp/future.hpp"
#include "mp/pool.hpp"
#include "mp/timeout.hpp"

namespace mp {

/// Options of mp::process_pool_executor, in Python's order.
struct process_pool_executor_options {
    int max_workers = 0;                   // 0: mp::cpu_count()
    std::optional<mp::context> context{};  // start method; default: mp::get_start_method()
    mp::function<void()> initializer{};    // run by each worker before its first task; mp::bind(init, q, lock)
                                           // gives it arguments (Python's initargs)
    int max_tasks_per_child = 0;           // a worker is replaced after this many tasks; 0: never
};

class process_pool_executor {
public:
    /// Starts `max_workers` worker processes. Throws mp::value_error if
    /// max_workers < 1, and what starting a process throws.
    explicit process_pool_executor(int max_workers = cpu_count());
    explicit process_pool_executor(process_pool_executor_options options);
    process_pool_executor(const process_pool_executor&) = delete;
    process_pool_executor& operator=(const process_pool_executor&) = delete;
    /// shutdown(true). Never throws.
    ~process_pool_executor();

    /// Schedules fn(args...). Throws mp::closed_error after shutdown().
    template <class F, class... Args>
    [[nodiscard]] auto submit(F&& fn, Args&&... args) -> future<detail::task_result_t<F, Args...>> {
        return submit_with({}, std::forward<F>(fn), std::forward<Args>(args)...);
    }

    /// As submit, with per-task options ({.timeout = 2s}).
    template <class F, class... Args>
    [[nodiscard]] auto submit_with(submit_options options, F&& fn, Args&&... args)
        -> future<detail::task_result_t<F, Args...>> {
        static_assert(detail::check_call_task<F, Args...>());
        using R = detail::task_result_t<F, Args...>;
        auto job = detail::call_job<R>::make(std::forward<F>(fn), std::forward<Args>(args)...);
        if (options.timeout) job->timeout = std::chrono::duration_cast<std::chrono::nanoseconds>(*options.timeout);
        auto fut = job->get_future();
        engine_.add(job, "submit");
        return fut;
    }

    /// fn over every item of `range`, results in order, input read lazily.
    template <class F, class Range>
    [[nodiscard]] auto map(F&& fn, Range&& range, map_options options = {}) {
        detail::steady_deadline deadline;
        if (options.timeout) deadline = detail::deadline_after(*options.timeout);
        auto job = detail::make_range_job<false>(std::forward<F>(fn), std::forward<Range>(range),
                                                 detail::collect_mode::ordered, options.chunksize,
                                                 detail::default_window_chunks(engine_.workers()));
        using job_type = typename decltype(job)::element_type;
        using R = std::remove_cvref_t<decltype(*std::declval<job_type&>().next(std::nullopt))>;
        engine_.add(job, "map");
        return imap_iterator<R>(std::static_pointer_cast<detail::chunked_job<R>>(job), deadline);
    }

    /// No more submissions. wait: block until every task has finished and the
    /// workers have exited. cancel_futures: cancel the tasks not yet handed to
    /// the workers. Calling it again is harmless.
    void shutdown(bool wait = true, bool cancel_futures = false);

    [[nodiscard]] int max_workers() const noexcept { return engine_.workers(); }
    /// Pids of the current workers.
    [[nodiscard]] std::vector<int> worker_pids() const { return engine_.worker_pids(); }

private:
    detail::pool_engine engine_;
};

inline mp::process_pool_executor context::process_pool_executor(mp::process_pool_executor_options options) const {
    options.context = *this;
    return mp::process_pool_executor(std::move(options));
}
inline mp::process_pool_executor context::process_pool_executor(int max_workers) const {
    if (max_workers < 1)
        throw value_error("mp: an executor needs at least one worker process (asked for " +
                          std::to_string(max_workers) + ")");
    return process_pool_executor(mp::process_pool_executor_options{.max_workers = max_workers});
}

}  // namespace mp
