// engine/transport.hpp — how the executor engine reaches its workers.
//
// The engine (engine.cpp) knows jobs, tasks, futures and callbacks; a
// transport knows workers and how bytes reach them. The engine talks to its
// workers only through this interface. The shared-memory transport
// (src/transport/shm) is one implementation: its workers are local processes
// fed from shared queues. Another transport (MPI: a worker is a remote rank's
// local process) implements the same interface; nothing here names a file
// descriptor, a mapping or a process id.
//
// Tasks are numbered by the engine (ids never reused). A task is handed out
// in two steps, open_task() then send_task(), so that the transport's header
// and the engine's body go out as one message without a copy. A task is
// *taken* when one worker has claimed it, which happens exactly once; until
// then withdraw() succeeds and the task never runs.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <optional>
#include <vector>

#include "mp/detail/archive.hpp"

namespace mp::detail {

/// What a transport reports to its engine. Called from the transport's own
/// threads with none of the transport's locks held; the engine may call the
/// transport back from inside (withdraw, send, stop).
class transport_events {
public:
    virtual ~transport_events() = default;
    /// The task's result arrived: `ok` and the value, or a failure with an
    /// exception record, in `body`.
    virtual void on_result(std::uint64_t task, bool ok, input_archive& body) noexcept = 0;
    /// The worker that had taken the task was lost (it died, or was stopped
    /// for the task's deadline or by stop_task()); `why` says which. Reported
    /// once, after every result that worker sent.
    virtual void on_task_lost(std::uint64_t task, std::exception_ptr why) noexcept = 0;
    /// The last call from the event thread: nothing is reported after it. If
    /// a stop was asked from the event thread itself (a done-callback), the
    /// thread was detached, not joined; the engine may then release itself
    /// here (the transport touches nothing of its own after this call).
    virtual void on_events_end() noexcept = 0;
};

/// The engine's side of the workers.
class transport {
public:
    /// The transport's handle of a task in flight, from open_task().
    using ticket = std::uint32_t;

    virtual ~transport() = default;

    /// Starts the workers, then the transport's threads; events go to
    /// `events` from then on. Throws (and leaves nothing running) on failure.
    virtual void start(transport_events& events) = 0;
    /// How many tasks may be in flight (sent, no result yet) at a time.
    [[nodiscard]] virtual std::size_t capacity() const noexcept = 0;
    /// Whether to hand out another task now, with `in_flight` tasks open or
    /// in flight (fewer than capacity()): a transport may want fewer large
    /// tasks waiting for a worker than its capacity allows.
    [[nodiscard]] virtual bool room_for_more(std::size_t in_flight) const noexcept {
        (void)in_flight;
        return true;
    }
    /// Begins task `id`: writes the transport's header into `out` (the
    /// engine appends the body). At most capacity() tasks may be open or in
    /// flight.
    virtual ticket open_task(output_archive& out, std::uint64_t id) = 0;
    /// Hands the task out. `timeout`: how long it may run once taken.
    virtual void send_task(ticket t, std::uint64_t id, const output_archive& out,
                           std::optional<std::chrono::nanoseconds> timeout) = 0;
    /// Gives back a ticket whose task was not sent.
    virtual void close_task(ticket t) noexcept = 0;
    /// Withdraws a task no worker has taken yet: true when it will never run
    /// (no event is reported for it). False when a worker has it, or it is over.
    virtual bool withdraw(ticket t, std::uint64_t id) noexcept = 0;
    /// Whether a worker has taken the task (and it has not been reported).
    [[nodiscard]] virtual bool taken(ticket t, std::uint64_t id) const noexcept = 0;
    /// Stops the worker running the task, if a worker has taken it; its loss
    /// is then reported with `why`. False when no worker has it.
    virtual bool stop_task(ticket t, std::uint64_t id, std::exception_ptr why) noexcept = 0;
    /// Stops every worker once it has finished the tasks sent before, then
    /// the transport's threads.
    virtual void stop_after_tasks() noexcept = 0;
    /// Stops every worker now, then the transport's threads.
    virtual void stop_now() noexcept = 0;
    /// Whether the caller is the thread that reports events (where waiting
    /// for the transport to stop would wait for itself).
    [[nodiscard]] virtual bool on_event_thread() const noexcept = 0;
    /// Identifiers of the current workers, for diagnostics and tests (for
    /// local processes: their pids).
    [[nodiscard]] virtual std::vector<int> worker_ids() const = 0;
    /// A thread of the engine's user waits for a task's result: the
    /// transport may let it receive and report results itself (events are
    /// then reported from that thread too) until `done` is set, `deadline`
    /// passes or it prefers to stop; it then returns and the thread waits to
    /// be woken. Saves a wake-up per result on a round trip. Optional.
    virtual void receive_while_waiting(const std::atomic<bool>& done,
                                       std::optional<std::chrono::steady_clock::time_point> deadline) noexcept {
        (void)done;
        (void)deadline;
    }
};

}  // namespace mp::detail
