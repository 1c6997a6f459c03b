// mpi/boss.hpp — rank 0's side of the MPI transport: the worker ranks, the
// tasks in flight on each, and the service thread that receives results.
//
//   submit → job → engine (mpi_engine_core: pending, cancellable)
//          → boss_transport.dispatch: pulls tasks from the engines in turn,
//            sends each to the least-loaded worker rank it may use
//          → worker rank → local worker process → worker rank
//          → service thread (MPI_Improbe/MPI_Mrecv) → engine → future
//
// The transport knows nothing of jobs or futures: it pulls task messages
// from a task_source (one per executor) and hands results back to it. The
// engine side is the one small class, mpi_engine_core, that implements
// task_source.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include "mpi/idle_backoff.hpp"
#include "mpi/mpi_runtime.hpp"

namespace mp::detail {

/// What the transport pulls tasks from and hands results to: one executor.
class task_source {
public:
    enum class pull { task, nothing, waiting };
    virtual ~task_source() = default;
    /// Writes the next task's body (entry code_ref, then payload) into `out`
    /// and sets its deadline; `waiting` when a job has more but its window
    /// is full (the transport asks again soon); `nothing` when no job has more.
    virtual pull next_task(output_archive& out, std::uint64_t id, std::optional<std::chrono::nanoseconds>& timeout) = 0;
    /// The result message of task `id`, positioned after its header.
    virtual void on_result(std::uint64_t id, bool ok, input_archive& in) = 0;
};

/// Rank 0's worker ranks, shared fairly by every executor. Thread-safe.
class boss_transport {
public:
    /// The process-wide transport, started on first use (spawning ranks in
    /// dynamic mode). Throws mp::mpi_error.
    static boss_transport& get(int wanted_workers);

    [[nodiscard]] const mpi_runtime::boss_view& view() const noexcept { return view_; }

    /// Registers an executor that uses the first `workers` worker ranks;
    /// tells those ranks to start its local pools. Returns its id.
    std::uint32_t open(std::shared_ptr<task_source> source, int workers, std::int32_t max_tasks_per_child,
                       const mp::function<void()>& initializer);
    /// Unregisters it; its ranks finish (or, with terminate, kill) its local
    /// work. Returns the ids of its tasks still in flight (they will get no result).
    std::vector<std::uint64_t> close(std::uint32_t exec, bool terminate) noexcept;
    /// Sends tasks while ranks have room and sources have tasks.
    void dispatch();

private:
    explicit boss_transport(const mpi_runtime::boss_view& view);
    void service_loop();
    void handle(mpi_wire::message& m);
    static void stop_at_exit();

    struct rank_load {
        int rank = 0;
        std::size_t in_flight = 0;
    };
    struct source_entry {
        std::uint32_t exec = 0;
        std::shared_ptr<task_source> source;
        std::size_t ranks = 0;  // uses rank_load[0, ranks)
    };
    struct owner {
        std::uint32_t exec = 0;
        std::shared_ptr<task_source> source;
        std::size_t rank_index = 0;
    };

    const mpi_runtime::boss_view& view_;
    std::mutex mutex_;  // held while dispatching, so tasks leave in the order they are numbered
    std::vector<rank_load> ranks_;                  // guarded by mutex_
    std::vector<source_entry> sources_;             // guarded by mutex_
    std::unordered_map<std::uint64_t, owner> owners_;  // guarded by mutex_: tasks in flight
    std::size_t next_source_ = 0;                   // guarded by mutex_: round robin
    std::uint64_t next_id_ = 1;                     // guarded by mutex_
    std::uint32_t next_exec_ = 1;                   // guarded by mutex_
    std::atomic<std::size_t> in_flight_{0};
    std::atomic<bool> waiting_{false};              // a source had a full window: retry dispatch when idle
    std::atomic<bool> stop_{false};
    idle_backoff backoff_;
    std::thread service_;
};

}  // namespace mp::detail
