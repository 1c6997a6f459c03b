// The public face of mp::process_pool_executor over the engine
// (src/engine/engine.cpp).
#include "mp/process_pool_executor.hpp"

namespace mp {

namespace {
detail::engine_config executor_config(const process_pool_executor_options& o) {
    if (o.max_tasks_per_child < 0)
        throw value_error("mp: process_pool_executor: max_tasks_per_child must be positive (or 0 for no limit)");
    return {.workers = o.max_workers == 0 ? cpu_count() : o.max_workers,
            .context = o.context,
            .initializer = o.initializer,
            .max_tasks_per_child = o.max_tasks_per_child,
            .pool_names = false};
}

int require_workers(int n) {
    if (n < 1)
        throw value_error("mp: an executor needs at least one worker process (asked for " + std::to_string(n) + ")");
    return n;
}
}  // namespace

process_pool_executor::process_pool_executor(int max_workers)
    : process_pool_executor(process_pool_executor_options{.max_workers = require_workers(max_workers)}) {}
process_pool_executor::process_pool_executor(process_pool_executor_options options)
    : executor_front(executor_config(options)) {}

// executor_front's destructor shuts down (waiting), before the engine goes.
process_pool_executor::~process_pool_executor() = default;

}  // namespace mp
