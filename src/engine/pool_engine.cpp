// The engine's facade (pool_engine, detail/task.hpp), which mp::pool and the
// executors hold, and the calls of jobs back into their engine
// (engine_core.hpp; the engine itself is in engine.cpp).
#include <string>

#include "engine/engine_core.hpp"
#include "transport/shm/shm_transport.hpp"

namespace mp::detail {

void throw_fd_argument(const char* where) {
    throw serialization_error(
        std::string("mp: ") + where +
        " hold an mp::queue, pipe, lock, event or shared memory, which travel as file descriptors; pool and "
        "executor tasks travel as plain bytes and cannot carry them (Python: \"Queue objects should only be "
        "shared between processes through inheritance\"). Use an mp::manager's queue or lock (its proxies "
        "travel as addresses), or start the pool with the fork method and let workers inherit the object as a "
        "global");
}

void pool_job::room_available() noexcept {
    if (auto e = engine_.lock()) {
        try {
            e->room_available(this);
        } catch (...) {
        }
    }
}

void pool_job::drop() noexcept {
    if (auto e = engine_.lock()) e->drop(this);
}

void pool_job::help_receive(const std::atomic<bool>& done, steady_deadline deadline) noexcept {
    if (auto e = engine_.lock()) e->receive_while_waiting(done, deadline);
}

namespace {
std::unique_ptr<transport> local_transport(const engine_config& cfg) {
    if (cfg.workers < 1)
        throw value_error("mp: a pool needs at least one worker process (asked for " + std::to_string(cfg.workers) +
                          ")");
    return std::make_unique<shm_transport>(
        shm_transport_config{.workers = cfg.workers,
                             .method = cfg.context ? cfg.context->get_start_method() : get_start_method(),
                             .initializer = cfg.initializer,
                             .max_tasks_per_child = cfg.max_tasks_per_child,
                             .pool_names = cfg.pool_names,
                             .sender_yields = cfg.sender_yields});
}
}  // namespace

pool_engine::pool_engine(engine_config config)
    : core_(std::make_shared<engine_core>(config.workers, local_transport(config))) {
    core_->start();
}

pool_engine::pool_engine(int workers, std::unique_ptr<transport> transport)
    : core_(std::make_shared<engine_core>(workers, std::move(transport))) {
    core_->start();
}

pool_engine::~pool_engine() {
    if (core_) core_->terminate();
}

void pool_engine::add(const std::shared_ptr<pool_job>& job, const char* what) { core_->add(job, what); }
void pool_engine::close() noexcept { core_->close(); }
void pool_engine::join() { core_->join(); }
void pool_engine::terminate() noexcept { core_->terminate(); }
void pool_engine::cancel_pending() noexcept { core_->cancel_pending(); }
bool pool_engine::closed() const noexcept { return core_->closed(); }
int pool_engine::workers() const noexcept { return core_->workers(); }
std::vector<int> pool_engine::worker_pids() const { return core_->worker_pids(); }

}  // namespace mp::detail
