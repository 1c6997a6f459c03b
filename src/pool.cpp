// The public face of mp::pool over the engine (src/engine/engine.cpp).
#include "mp/pool.hpp"

namespace mp {

namespace {
detail::engine_config pool_config(const pool_options& o) {
    if (o.maxtasksperchild < 0)
        throw value_error("mp: pool: maxtasksperchild must be positive (or 0 for no limit)");
    return {.workers = o.processes == 0 ? cpu_count() : o.processes,
            .context = o.context,
            .initializer = o.initializer,
            .max_tasks_per_child = o.maxtasksperchild,
            .pool_names = true};
}

int require_workers(int n) {
    if (n < 1) throw value_error("mp: a pool needs at least one worker process (asked for " + std::to_string(n) + ")");
    return n;
}
}  // namespace

pool::pool(int processes) : pool(pool_options{.processes = require_workers(processes)}) {}
pool::pool(pool_options options) : engine_(pool_config(options)) {}

pool::~pool() {
    try {
        engine_.close();
        engine_.join();
    } catch (...) {
    }
}

}  // namespace mp
