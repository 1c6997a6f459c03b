// worker/protocol.hpp — the messages between a pool and its workers, and the
// two small channel interfaces they travel through.
//
// task message   [u8 task_kind][u64 task id][u32 claim][code_ref entry][payload]   (stop: [u8 stop])
// result message [u8 result_kind][u64 task id][u8 status][u32 claim][value | exception_record]
// large result   [u8 done_large][u32 slot][u32 generation][u64 size]: the result
//                message itself lies in the slot's area (transport/shm/large_results.hpp)
//
// The worker loop and the engine only see these interfaces; the
// shared-memory transport (shm_channel.hpp) is one implementation, and a
// transport over MPI or sockets is another.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "mp/detail/archive.hpp"
#include "mp/detail/task.hpp"

namespace mp::detail::worker {

enum class task_kind : std::uint8_t { run = 1, stop = 2 };
enum class result_kind : std::uint8_t {
    done = 1,  // a task's result
    lost = 2,  // parent-internal: the worker running a task died or was stopped
    stop = 3,  // parent-internal: the result thread ends
    done_large = 4,   // a task's result, in the worker's large-result area
    worker_gone = 5,  // parent-internal: [u32 slot][u32 generation] ended; its area may be freed
};
enum class result_status : std::uint8_t { ok = 0, failed = 1 };
enum class lost_reason : std::uint8_t { crashed = 0, timed_out = 1, stopped = 2 };

inline void write_task_header(output_archive& ar, std::uint64_t id, std::uint32_t claim) {
    ar(static_cast<std::uint8_t>(task_kind::run), id, claim);
}
inline void write_result_header(output_archive& ar, std::uint64_t id, std::uint32_t claim, result_status status) {
    ar(static_cast<std::uint8_t>(result_kind::done), id, static_cast<std::uint8_t>(status), claim);
}

/// A task as a worker receives it.
struct received_task {
    std::uint64_t id = 0;
    std::uint32_t claim = 0;  // its entry in the claim table
    std::vector<std::byte> body;  // code_ref of the entry, then the payload
};

/// The worker's end of a transport.
class worker_channel {
public:
    virtual ~worker_channel() = default;
    /// Waits for the next task this worker takes; false when told to stop.
    /// A task is taken by claiming it (task_claim), which is the one step
    /// that makes it this worker's: a task withdrawn by the parent (cancelled)
    /// is skipped, and a death at any point is blamed on at most one worker.
    virtual bool receive(received_task& task) = 0;
    virtual void send(const output_archive& result) = 0;
    /// The current task's result was sent.
    virtual void finished() noexcept = 0;
};

/// Runs tasks from `channel` until told to stop or, if max_tasks > 0, after
/// max_tasks tasks. Never throws for a task's own failure (that is sent as
/// its result); throws if the transport fails. `init_failure`: the worker's
/// initializer threw, so every task it takes fails with this record, unrun
/// (Python's executor is broken then; the worker stays, so that a pool does
/// not restart workers in a loop while each task gets the reason).
void run_worker_loop(worker_channel& channel, int max_tasks, const exception_record* init_failure = nullptr);

/// What a task taken by a worker whose initializer threw `e` fails with: the
/// initializer's exception type, and a message saying so. Logs it once.
exception_record initializer_failure(std::exception_ptr e);

/// One per worker, in shared memory: the task it is taking or running.
/// Written by the worker only (set while it still reads the task's message,
/// so that a death after the message left the queue names the task), read
/// by the parent's supervisor.
struct alignas(64) worker_slot {
    std::atomic<std::uint64_t> task;        // 0: none
    std::atomic<std::int64_t> started_ns;   // steady clock, when it claimed the task
    std::atomic<std::uint32_t> claim;       // the task's claim entry (valid while task != 0)
};

/// One per pool, in shared memory: where idle workers wait for tasks.
/// Workers do not sleep inside the task queue, which wakes every sleeper for
/// each item (two idle workers would both wake for one task, and one would
/// go back to sleep). Here one task wakes one worker, and at most one worker
/// spins for the next task: on a small machine a second spinner takes the
/// core that the pool's own threads need to hand that task over.
struct alignas(64) task_doorbell {
    std::atomic<std::uint32_t> seq;       // bumped by each ring (the futex word)
    std::atomic<std::uint32_t> sleepers;  // workers between announcing a sleep and leaving it
    // Slot + 1 of the worker spinning for a task (0: none). It keeps the
    // role while it takes quick tasks back to back (it is back at the queue
    // within microseconds), and leaves it to sleep or to run a task that may
    // be long.
    std::atomic<std::uint32_t> spinner;
    // 1 from a ring that woke one worker until a worker enters or leaves the
    // sleeping path (and then looks at the queue): further rings meanwhile
    // make no system call, and the woken worker, finding more tasks behind
    // the one it takes, rings for them.
    std::atomic<std::uint32_t> wake_pending;
    // Slot + 1 of the sleeper on call (0: none): while tasks are in flight
    // one sleeper sleeps for at most on_call_period and looks at the queue
    // by itself, so a ring need not wake anyone for a short queue that a
    // worker is about to drain (slot_table::ring). One only: an idle worker
    // beside a long task wakes a thousand times a second.
    std::atomic<std::uint32_t> on_call;
    // 1 while the spinner's tasks are tiny: it takes them faster than the
    // parent sends them, so a burst of them needs no second worker
    // (slot_table::ring). Written by the spinner when it changes.
    std::atomic<std::uint32_t> spinner_outpaces;
    // The CPU of the parent's thread that last sent a task (-1: none yet),
    // written only when it changes. No worker spins for tasks on that CPU:
    // a map of tiny tasks keeps that thread busy (it receives each result
    // and sends the next task), and a worker spinning beside it on its core
    // took a third of that core (pool.map chunksize 1 on 2 cores, both
    // pinned there: 0.6-0.8x the rate with them on separate cores). Such a worker
    // sleeps instead; the kernel wakes it on an idle CPU if there is one.
    std::atomic<std::int32_t> sender_cpu;
};

/// One per task in flight, in shared memory: who has taken it. The word holds
/// the task id (so a stale message of an earlier task in the same entry can
/// never claim it) and a state. The parent sets it to `queued` before the
/// task's message leaves; a worker takes the task with one compare-and-swap
/// queued -> taken_by(worker); the parent withdraws it (cancel, or a worker
/// that died before claiming it) with one compare-and-swap queued ->
/// withdrawn. Whoever swaps first owns the task: it runs at most once, and
/// after a crash the parent reads who had it.
struct alignas(64) task_claim {
    std::atomic<std::uint64_t> word;
    // How long the worker ran the task, written before its result is sent:
    // the parent fails a result of a run past its deadline.
    std::atomic<std::int64_t> ran_ns;
};
constexpr std::uint64_t claim_queued = 0;
constexpr std::uint64_t claim_withdrawn = 0xFFFF;
/// Task ids fit in 48 bits (2.8e14 tasks); worker indexes below 65534.
constexpr std::uint32_t max_workers_per_pool = 0xFFFE;
constexpr std::uint64_t claim_word(std::uint64_t id, std::uint64_t state) noexcept { return id << 16 | state; }
constexpr std::uint64_t claim_taken_by(std::uint32_t worker) noexcept { return std::uint64_t{worker} + 1; }

}  // namespace mp::detail::worker
