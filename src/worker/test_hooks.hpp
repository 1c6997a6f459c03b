// worker/test_hooks.hpp — fault injection for the engine's regression tests.
//
// Each hook is inert unless a test sets it; none is reachable from the public
// API. They exist because the windows they open (a worker killed at one exact
// instruction, a thread the system refuses to create) cannot be produced
// reliably from outside.
#pragma once

#include <atomic>
#include <string>

namespace mp::detail::test_hooks {

/// Where a worker kills itself with SIGKILL while taking a task.
enum class take_kill : int {
    none = 0,
    while_reading = 1,   // the task's message is read, the queue has not moved past it yet
    before_claim = 2,    // the queue moved past the message, the task is not claimed yet
    large_result_stored = 3,  // the task's large result is in the worker's area, its notice not sent
    result_sent = 4,          // the task's result is in the result queue, its slot still names the task
};

/// Set in a worker (by a pool initializer). The worker dies at that point of
/// the first take after which it could remove the gate file
/// kill_at_take_gate(pool's pid): one death per gate file, whichever worker
/// gets there first.
extern std::atomic<int> kill_at_take;
std::string kill_at_take_gate(int pool_pid);

/// Set in a worker (by a pool initializer): microseconds a worker leaving
/// its sleep at the doorbell waits while still counted as a sleeper, so
/// that rings meanwhile count it and wake nobody.
extern std::atomic<int> doorbell_leave_delay_us;

/// In the pool's process: when n > 0, the n-th helper thread an engine starts
/// from now fails as if the system refused to create it (EAGAIN).
extern std::atomic<int> refuse_thread_start;

/// In the pool's process: milliseconds the thread that took a task's result
/// from the result queue waits before it reports it (0: none), so that
/// another receiving thread takes the messages behind it meanwhile.
extern std::atomic<int> result_report_delay_ms;

/// In the pool's process: while true, the supervisor does not look for tasks
/// past their deadline, as when it does not get to run on a loaded machine.
extern std::atomic<bool> deadline_scan_paused;

}  // namespace mp::detail::test_hooks
