// mp/executor.hpp — what mp's executors and mp::pool share: the options of
// one task and of a map.
//
//     auto f = ex.submit_with({.timeout = 2s}, fn, args...);      // also pool.submit_with
//     for (int x : ex.map(fn, xs, {.timeout = 10s, .chunksize = 64})) ...;
//
// Promises (SPEC §7, §7a): a task is running only once a worker has taken
// it; until then future.cancel() succeeds and the task never runs. A map's
// iterator that passes its timeout, or is destroyed early, cancels the items
// no worker has taken (as Python's Executor.map).
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>

#include "mp/timeout.hpp"

namespace mp {

/// Options of one task (pool.submit_with, process_pool_executor.submit_with).
struct submit_options {
    /// Deadline counted from when a worker starts the task; past it the
    /// worker is stopped and replaced and the future fails with mp::timeout_error.
    std::optional<timeout_duration> timeout{};
};

/// Options of executor.map (process and thread executors).
struct map_options {
    /// Overall limit, counted from the map call: iteration throws
    /// mp::timeout_error past it, and the items no worker has taken are cancelled.
    std::optional<timeout_duration> timeout{};
    /// Items per task handed to a worker.
    std::size_t chunksize = 1;
};

}  // namespace mp
