// mpi/boss.hpp — rank 0's side of the MPI transport: the worker ranks, the
// tasks in flight on each, and the service thread that receives results.
//
//   submit → job → engine (src/engine) → mpi_transport (one per executor)
//          → boss_transport: sends each task to the least-loaded worker rank
//            the executor may use, or queues it (withdrawable) until one has
//            room; queued tasks of several executors leave in turn
//          → worker rank → local worker process → worker rank
//          → service thread (MPI_Improbe/MPI_Mrecv) → engine → future
//            (or the thread waiting in future::get, for a moment:
//            receive_while_waiting)
//
// It knows nothing of jobs or futures: each executor is mp's engine
// (src/engine) over an mpi_transport (mpi_transport.cpp), which hands its
// task messages to this shared part and receives its results from it.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
#include <unordered_map>
#include <vector>

#include "mpi/idle_backoff.hpp"
#include "mpi/mpi_runtime.hpp"
#include "sys/sys.hpp"

namespace mp::detail {

/// Where the results of one executor's tasks go: its mpi_transport.
class task_source {
public:
    virtual ~task_source() = default;
    /// The result message of task `id`, positioned after its header.
    virtual void on_result(std::uint64_t id, bool ok, input_archive& in) noexcept = 0;
    /// Task `id`, stopped by stop(), did not finish: `why` is what stop() was given.
    virtual void on_lost(std::uint64_t id, std::exception_ptr why) noexcept = 0;
};

/// Rank 0's worker ranks, shared fairly by every executor. Thread-safe.
class boss_transport {
public:
    /// The process-wide transport, started on first use (spawning ranks in
    /// dynamic mode). Throws mp::mpi_error.
    static boss_transport& get(int wanted_workers);

    [[nodiscard]] const mpi_runtime::boss_view& view() const noexcept { return view_; }

    /// Registers an executor that uses the first `workers` worker ranks;
    /// tells those ranks to start its local pools. Returns its id. `source`
    /// stays valid until close() returns.
    std::uint32_t open(task_source* source, int workers, std::int32_t max_tasks_per_child,
                       const mp::function<void()>& initializer);
    /// Unregisters it: its queued tasks are dropped, its ranks finish (or,
    /// with terminate, kill) its local work, and no result reaches `source`
    /// after this returns (unless called from the service thread, which may
    /// be delivering one). Idempotent.
    void close(std::uint32_t exec, bool terminate) noexcept;
    /// Hands out a whole task message ([u32 exec][i64 timeout][task
    /// message]): sent now if one of the executor's ranks has room (from the
    /// archive's own memory), else queued as a copy until one has.
    void submit(std::uint32_t exec, std::uint64_t id, const output_archive& message);
    /// Removes a task that is still queued here (never sent): true when it
    /// will never run.
    bool withdraw(std::uint32_t exec, std::uint64_t id) noexcept;
    /// Stops a task that was sent to a worker rank: the rank stops the local
    /// process running it (SIGTERM, then SIGKILL) and replaces it, or drops
    /// the task if it has not started. Unless the task finished first, its
    /// end is reported as on_lost(id, why). False when the task is not on a
    /// rank (queued here, or over).
    bool stop(std::uint32_t exec, std::uint64_t id, std::exception_ptr why) noexcept;
    /// Whether the task was sent to a worker rank and has no result yet.
    [[nodiscard]] bool sent(std::uint32_t exec, std::uint64_t id) noexcept;
    [[nodiscard]] bool on_service_thread() const noexcept { return std::this_thread::get_id() == service_id_.load(); }
    /// Tasks queued here (sent to no rank yet), over every executor. For tests.
    [[nodiscard]] std::size_t queued_tasks() noexcept;
    /// `tasks` messages sent so far (several tasks in one). For tests.
    [[nodiscard]] std::uint64_t task_batches_sent() const noexcept {
        return task_batches_sent_.load(std::memory_order_relaxed);
    }
    /// A thread waiting for a task's result receives results itself (any
    /// executor's) until `done` is set, `deadline` passes or a short spin
    /// ends; the service thread steps aside meanwhile. A round trip then
    /// needs no wake-up on rank 0: the service thread would otherwise be
    /// woken by the submit and would wake the waiting thread with the result
    /// (two cross-core wake-ups of many microseconds each on a virtual
    /// machine). Gives the results back to the service thread when it stops.
    void receive_while_waiting(const std::atomic<bool>& done,
                               std::optional<std::chrono::steady_clock::time_point> deadline) noexcept;

private:
    explicit boss_transport(const mpi_runtime::boss_view& view);
    void service_loop();
    // Receives one message if one is waiting (one receiving thread at a
    // time: a split message's segments must not be taken by another's probe).
    bool receive_one(mpi_wire::message& m, bool wait_for_turn);
    // Delivers a received message; counted as this thread's delivery.
    void handle_counted(mpi_wire::message& m) noexcept;
    // The service thread: waits while waiting threads receive (false: stop).
    bool park_while_helped();
    void call_service() noexcept;
    void handle(mpi_wire::message& m);
    // Takes every result of one message off its rank's count, sends the
    // tasks that now have room, then delivers the results one by one.
    void handle_results(std::span<const std::span<const std::byte>> results);
    void drain_locked();
    struct source_entry;
    struct queued_task;
    // Counts task `id` as sent to a rank, after the rank's batch, and sends
    // it with send(rank); undone if that throws.
    template <class Send>
    void count_sent_locked(source_entry& entry, std::size_t rank_index, std::uint64_t id, Send&& send);
    // Counts a queued task as sent to a rank and adds it to that rank's
    // batch (a large task leaves at once, alone, after the batch).
    void batch_locked(source_entry& entry, std::size_t rank_index, queued_task&& task);
    // Sends a rank's batch: one `task`, or several as one `tasks` message.
    void flush_batch_locked(std::size_t rank_index) noexcept;
    // Sends every batch (cheap when none holds a task). Every receiving
    // thread calls it at each poll.
    void flush_batches() noexcept;
    static void stop_at_exit();

    struct rank_load {
        int rank = 0;
        std::size_t in_flight = 0;
    };
    struct queued_task {
        std::uint64_t id = 0;
        std::vector<std::byte> bytes;
    };
    // Tasks for one rank that leave as one message: the queued tasks that
    // drain_locked() gives it in one pass, and small tasks handed out for a
    // rank that has enough to run meanwhile (they leave at the next poll).
    // A rank whose results came back together gets its next tasks with one
    // MPI message instead of one each.
    struct task_batch {
        std::vector<std::pair<std::uint32_t, queued_task>> tasks;  // executor, task
        std::size_t bytes = 0;
    };
    struct source_entry {
        std::uint32_t exec = 0;
        task_source* source = nullptr;
        std::size_t ranks = 0;               // uses ranks_[0, ranks)
        std::deque<queued_task> queue;       // waiting for room on a rank
        std::unordered_map<std::uint64_t, std::size_t> sent;  // task id -> rank index: no result yet
        std::unordered_map<std::uint64_t, std::exception_ptr> stopping;  // sent tasks asked to stop: why
        std::size_t delivering = 0;          // results being handed to `source` outside mutex_
    };

    source_entry* find_locked(std::uint32_t exec) noexcept;
    // Task `id` no longer counts as sent (its result came, or it never
    // left): off its rank's count. False if it was not counted.
    bool uncount_sent_locked(source_entry& entry, std::uint64_t id) noexcept;
    // The least-loaded of the first `ranks` ranks with room, or -1.
    std::ptrdiff_t pick_rank_locked(std::size_t ranks) const noexcept;

    const mpi_runtime::boss_view& view_;
    std::mutex mutex_;  // held while sending, so a rank's tasks leave in order
    std::condition_variable delivered_;              // a delivery ended
    std::vector<rank_load> ranks_;                   // guarded by mutex_
    std::vector<task_batch> batches_;                // guarded by mutex_: one per rank
    std::deque<source_entry> sources_;               // guarded by mutex_
    std::size_t next_source_ = 0;                    // guarded by mutex_: round robin
    std::uint32_t next_exec_ = 1;                    // guarded by mutex_
    std::atomic<std::size_t> in_flight_{0};
    std::atomic<std::uint64_t> task_batches_sent_{0};
    std::atomic<std::size_t> batched_{0};  // tasks held in batches_
    std::atomic<bool> stop_{false};
    mpi_wire::send_queue sends_;  // tasks and stop_task messages; completed by the service thread
    // Large results are received into reused, already mapped memory.
    mpi_wire::block_pool blocks_{mpi_wire::block_pool::kind::private_memory};
    idle_backoff backoff_;
    std::mutex receive_mutex_;  // held by the one thread receiving a message
    // Leader/follower (receive_while_waiting): threads receiving while they
    // wait, when one last received its result (0: not lately), and where the
    // service thread parks meanwhile.
    std::atomic<int> helpers_{0};
    std::atomic<std::int64_t> helped_at_ns_{0};
    sys::spin_history help_spins_;
    std::mutex park_mutex_;
    std::condition_variable park_cv_;
    bool service_called_ = false;  // guarded by park_mutex_
    std::thread service_;
    std::atomic<std::thread::id> service_id_{};
};

}  // namespace mp::detail
