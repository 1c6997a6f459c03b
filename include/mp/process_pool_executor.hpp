// mp/process_pool_executor.hpp — Python's concurrent.futures.ProcessPoolExecutor.
//
//     mp::process_pool_executor ex(2);   // or ({.max_workers = 2, .context = ctx,
//                                        //      .initializer = init, .max_tasks_per_child = 100})
//     mp::future<int> f = ex.submit(square, 7);
//     mp::future<int> g = ex.submit_with({.timeout = 2s}, slow, 7);
//     for (int x : ex.map(square, xs, {.timeout = 10s, .chunksize = 64})) ...;
//     for (int x : ex.map_unordered(square, xs)) ...;       // in the order they finish
//     for (int x : ex.starmap(mul, pairs)) ...;             // mul(a, b) for each (a, b)
//     ex.shutdown(/*wait=*/true, /*cancel_futures=*/false);   // ~process_pool_executor: shutdown(true)
//
// Promises (beyond mp::pool's, whose machinery it shares):
// - A future is "running" once a worker has taken its task, however far
//   ahead the engine dispatched it; until then cancel() succeeds and the
//   task never runs.
// - A worker that dies fails only its own task with mp::worker_crashed; the
//   executor replaces it and goes on (Python's breaks whole with
//   BrokenProcessPool).
// - map, map_unordered and starmap read their input lazily, as pool.imap
//   does, and return an mp::imap_iterator (mp/executor.hpp); a timeout
//   counts from the call, and past it the iterator throws
//   mp::timeout_error and cancels the items no worker has taken.
// - Workers are named "ForkProcess-N", "SpawnProcess-N" or
//   "ForkServerProcess-N", as in Python.
// Thread-safety: every member may be called from several threads at once.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <utility>
#include <vector>

#include "mp/bind.hpp"
#include "mp/context.hpp"
#include "mp/detail/executor_front.hpp"
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

/// concurrent.futures' ProcessPoolExecutor. submit, submit_with, map,
/// map_unordered, starmap, shutdown and max_workers are those of every mp
/// process executor (detail/executor_front.hpp), documented there.
class process_pool_executor : public detail::executor_front<detail::pool_engine> {
public:
    /// Starts `max_workers` worker processes. Throws mp::value_error if
    /// max_workers < 1, and what starting a process throws.
    explicit process_pool_executor(int max_workers = cpu_count());
    explicit process_pool_executor(process_pool_executor_options options);
    process_pool_executor(const process_pool_executor&) = delete;
    process_pool_executor& operator=(const process_pool_executor&) = delete;
    /// shutdown(true). Never throws.
    ~process_pool_executor();

    /// Pids of the current workers.
    [[nodiscard]] std::vector<int> worker_pids() const { return engine_.worker_pids(); }
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
