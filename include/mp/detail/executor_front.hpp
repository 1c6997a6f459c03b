// mp/detail/executor_front.hpp — the public face every process executor
// shares over its engine: submit, submit_with, map, map_unordered, starmap,
// shutdown. mp::process_pool_executor is it over the local engine
// (detail::pool_engine), mp::mpi_pool_executor over the MPI one; mp::pool
// uses the same two building blocks (submit_call, start_stream).
//
// An Engine has add(job, what), close(), join(), cancel_pending() and
// workers(), with pool_engine's contract (detail/task.hpp).
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <type_traits>
#include <utility>

#include "mp/detail/chunked_job.hpp"
#include "mp/detail/map_jobs.hpp"
#include "mp/detail/range_reader.hpp"
#include "mp/detail/task.hpp"
#include "mp/executor.hpp"
#include "mp/future.hpp"

namespace mp::detail {

/// Queues fn(args...) as one task on `engine`; `what` names the call in a
/// closed_error. The call is serialized here, in the caller's thread.
template <class Engine, class F, class... Args>
auto submit_call(Engine& engine, const submit_options& options, const char* what, F&& fn, Args&&... args)
    -> future<task_result_t<F, Args...>> {
    static_assert(check_call_task<F, Args...>());
    using R = task_result_t<F, Args...>;
    auto job = call_job<R>::make(std::forward<F>(fn), std::forward<Args>(args)...);
    if (options.timeout) job->timeout = std::chrono::duration_cast<std::chrono::nanoseconds>(*options.timeout);
    auto fut = job->get_future();
    engine.add(job, what);
    return fut;
}

/// Queues a map over `range` whose results come as a stream (Job:
/// ordered_job or unordered_job) and returns its iterator; `deadline` is
/// the map's overall timeout.
template <template <class> class Job, bool Star, class Engine, class F, class Range>
auto start_stream(Engine& engine, const char* what, F&& fn, Range&& range, std::size_t chunksize,
                  steady_deadline deadline = std::nullopt) {
    auto job = make_map_job<Job, Star>(std::forward<F>(fn), std::forward<Range>(range), chunksize,
                                       default_window_chunks(engine.workers()));
    using R = typename std::remove_cvref_t<decltype(*job)>::value_type;
    engine.add(job, what);
    return imap_iterator<R>(std::shared_ptr<result_stream<R>>(std::move(job)), deadline);
}

/// concurrent.futures' Executor over an engine. Thread-safety: every member
/// may be called from several threads at once.
template <class Engine>
class executor_front {
public:
    executor_front(const executor_front&) = delete;
    executor_front& operator=(const executor_front&) = delete;

    /// Schedules fn(args...). Throws mp::closed_error after shutdown().
    template <class F, class... Args>
    [[nodiscard]] auto submit(F&& fn, Args&&... args) -> future<task_result_t<F, Args...>> {
        return submit_call(engine_, {}, "submit", std::forward<F>(fn), std::forward<Args>(args)...);
    }

    /// As submit, with per-task options ({.timeout = 2s}: counted from when
    /// a worker starts the task; past it the worker is stopped and replaced
    /// and the future fails with mp::timeout_error).
    template <class F, class... Args>
    [[nodiscard]] auto submit_with(submit_options options, F&& fn, Args&&... args)
        -> future<task_result_t<F, Args...>> {
        return submit_call(engine_, options, "submit", std::forward<F>(fn), std::forward<Args>(args)...);
    }

    /// fn over every item of `range`, results in input order (an
    /// mp::imap_iterator), input read lazily. Options: {.timeout} counted
    /// from this call, {.chunksize} items per task. An lvalue range is
    /// referenced (keep it alive while iterating), an rvalue one moved in.
    /// Throws mp::closed_error after shutdown().
    template <class F, class Range>
    [[nodiscard]] auto map(F&& fn, Range&& range, map_options options = {}) {
        return start_stream<ordered_job, false>(engine_, "map", std::forward<F>(fn), std::forward<Range>(range),
                                                options.chunksize, deadline_of(options));
    }

    /// As map, results in the order they finish.
    template <class F, class Range>
    [[nodiscard]] auto map_unordered(F&& fn, Range&& range, map_options options = {}) {
        return start_stream<unordered_job, false>(engine_, "map_unordered", std::forward<F>(fn),
                                                  std::forward<Range>(range), options.chunksize, deadline_of(options));
    }

    /// fn(a, b, ...) for every tuple (a, b, ...) of `range`, results in input order.
    template <class F, class Range>
    [[nodiscard]] auto starmap(F&& fn, Range&& range, map_options options = {}) {
        return start_stream<ordered_job, true>(engine_, "starmap", std::forward<F>(fn), std::forward<Range>(range),
                                               options.chunksize, deadline_of(options));
    }

    /// No more submissions. wait: block until every task has finished and
    /// the workers have exited. cancel_futures: cancel every task no worker
    /// has taken. Calling it again is harmless. Throws mp::value_error when
    /// waiting from a done-callback of this executor (it would wait for
    /// itself).
    void shutdown(bool wait = true, bool cancel_futures = false) {
        if (cancel_futures) engine_.cancel_pending();
        engine_.close();
        if (wait) engine_.join();
    }

    /// How many workers the executor runs.
    [[nodiscard]] int max_workers() const noexcept { return engine_.workers(); }

protected:
    template <class... A>
    explicit executor_front(A&&... engine_args) : engine_(std::forward<A>(engine_args)...) {}
    /// shutdown(true). Never throws.
    ~executor_front() {
        try {
            shutdown(true);
        } catch (...) {
        }
    }

    Engine engine_;

private:
    static steady_deadline deadline_of(const map_options& options) {
        return options.timeout ? deadline_after(*options.timeout) : std::nullopt;
    }
};

}  // namespace mp::detail
