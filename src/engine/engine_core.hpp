// engine/engine_core.hpp — the executor engine's state (engine.cpp): its
// jobs, the tasks in flight and its transport. The engine's code is in
// engine.cpp (dispatch, cancellation, stopping, events from the transport);
// the facade the pools and executors hold (pool_engine) and the jobs' calls
// back into the engine are in pool_engine.cpp.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "engine/transport.hpp"
#include "mp/detail/task.hpp"

namespace mp::detail {

/// This process's pid, read once per process instead of once per task (a
/// system call on every submit): fork children refresh it.
int cached_current_pid() noexcept;

/// Jobs in, tasks out through a transport, results back to the jobs.
/// Thread-safe; its mutex guards its tables only (no user code runs under it).
class engine_core final : public transport_events, public std::enable_shared_from_this<engine_core> {
public:
    engine_core(int workers, std::unique_ptr<transport> t) : workers_(workers), transport_(std::move(t)) {
        depth_ = transport_->capacity();
    }
    ~engine_core() override;

    void start() { transport_->start(*this); }
    void add(const std::shared_ptr<pool_job>& job, const char* what);
    void room_available(pool_job* job);
    void drop(pool_job* job);
    void close() noexcept;
    void join();
    void terminate() noexcept;
    void cancel_pending() noexcept;
    bool closed() const noexcept {
        std::lock_guard lock(mutex_);
        return state_ != run_state::open;
    }
    int workers() const noexcept { return workers_; }
    std::vector<int> worker_pids() const { return transport_->worker_ids(); }

    // Task controls (futures): withdraw before a worker takes it; stop after.
    bool withdraw(std::uint64_t id) noexcept;
    bool taken(std::uint64_t id, transport::ticket ticket) const noexcept { return transport_->taken(ticket, id); }
    bool stop_task(std::uint64_t id) noexcept;
    void receive_while_waiting(const std::atomic<bool>& done, steady_deadline deadline) noexcept {
        if (!inherited()) transport_->receive_while_waiting(done, deadline);
    }

    // transport_events
    void on_result(std::uint64_t task, bool ok, input_archive& body) noexcept override;
    void on_task_lost(std::uint64_t task, std::exception_ptr why) noexcept override;
    void on_events_end() noexcept override;

private:
    enum class run_state { open, closed, terminated };

    struct running_task {
        std::shared_ptr<pool_job> job;
        std::uint64_t seq = 0;
        transport::ticket ticket = 0;
    };

    // A process that inherited this engine by fork (a fork child, a fork
    // worker) shares its queues and memory but owns none of it: there every
    // operation does nothing, and destruction releases only local memory.
    bool inherited() const noexcept { return cached_current_pid() != owner_pid_; }
    // Produces and sends tasks while the transport has room. `may_block`:
    // this thread may read jobs whose input may block (the feeder only).
    void dispatch(bool may_block) noexcept;
    std::shared_ptr<pool_job> next_source_locked(bool may_block);
    void start_feeder_locked();
    void feed_loop();
    void stop_feeder() noexcept;
    bool idle_locked() const {
        return sources_.empty() && parked_.empty() && running_.empty() && producing_ == 0;
    }
    // Removes a task that has its outcome; refills. Null job when unknown.
    running_task finish_locked(std::uint64_t id);
    // Whether a result's arrival refills the transport now (see refill_batch).
    bool refill_due_locked() const noexcept;

    const int workers_;
    const int owner_pid_ = cached_current_pid();
    std::unique_ptr<transport> transport_;
    std::size_t depth_ = 0;

    mutable std::mutex mutex_;
    std::condition_variable idle_cv_;                          // notified when idle_locked() may have become true
    run_state state_ = run_state::open;                        // guarded by mutex_
    std::deque<std::shared_ptr<pool_job>> sources_;            // guarded by mutex_: jobs that may produce
    std::vector<std::shared_ptr<pool_job>> parked_;            // guarded by mutex_: jobs waiting for room
    std::unordered_map<std::uint64_t, running_task> running_;  // guarded by mutex_: sent, no outcome yet
    std::uint64_t next_id_ = 1;                                // guarded by mutex_
    std::size_t producing_ = 0;                                // guarded by mutex_: tasks being produced

    // The feeder: reads the input of jobs that may block (range_job over a
    // generator), so that neither the event thread nor a caller waits for it.
    std::thread feeder_;
    std::condition_variable feed_cv_;
    bool feed_wanted_ = false;  // guarded by mutex_
    bool feeder_stop_ = false;  // guarded by mutex_

    // Set when a done-callback stopped the engine from the transport's event
    // thread: that thread was detached and holds the engine until it ends.
    std::shared_ptr<engine_core> keep_alive_;
};

}  // namespace mp::detail
