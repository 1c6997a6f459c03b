// worker/protocol.hpp — the messages between a pool and its workers, and the
// two small channel interfaces they travel through.
//
// task message   [u8 task_kind][u64 task id][code_ref entry][payload]   (stop: [u8 stop])
// result message [u8 result_kind][u64 task id][u8 status][value | exception_record]
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
};
enum class result_status : std::uint8_t { ok = 0, failed = 1 };
enum class lost_reason : std::uint8_t { crashed = 0, timed_out = 1 };

inline void write_task_header(output_archive& ar, std::uint64_t id) {
    ar(static_cast<std::uint8_t>(task_kind::run), id);
}
inline void write_result_header(output_archive& ar, std::uint64_t id, result_status status) {
    ar(static_cast<std::uint8_t>(result_kind::done), id, static_cast<std::uint8_t>(status));
}

/// A task as a worker receives it.
struct received_task {
    std::uint64_t id = 0;
    std::vector<std::byte> body;  // code_ref of the entry, then the payload
};

/// The worker's end of a transport.
class worker_channel {
public:
    virtual ~worker_channel() = default;
    /// Waits for the next task; false when told to stop. Records, before
    /// returning, that this worker now runs task.id (so that its death can be
    /// blamed on that task alone).
    virtual bool receive(received_task& task) = 0;
    virtual void send(const output_archive& result) = 0;
    /// The current task's result was sent.
    virtual void finished() noexcept = 0;
};

/// Runs tasks from `channel` until told to stop or, if max_tasks > 0, after
/// max_tasks tasks. Never throws for a task's own failure (that is sent as
/// its result); throws if the transport fails.
void run_worker_loop(worker_channel& channel, int max_tasks);

/// One per worker, in shared memory: the task it is running. Written by the
/// worker only, read by the parent's supervisor.
struct alignas(64) worker_slot {
    std::atomic<std::uint64_t> task;        // 0: none
    std::atomic<std::int64_t> started_ns;   // steady clock, when it started the task
};

}  // namespace mp::detail::worker
