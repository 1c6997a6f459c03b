// The fork start method: the child is a copy of this process.
#include <cstdio>
#include <iostream>

#include "launch/child_popen.hpp"
#include "shm_tracker.hpp"

namespace mp::detail::launch {

std::unique_ptr<popen> start_fork(const identity& child, const process_target& target) {
    warn_if_threads_at_fork();
    // Make sure the shared-memory tracker runs before the child exists, so
    // that segments the child creates are cleaned up when the program ends,
    // not when the child does (a child would otherwise start its own).
    static_cast<void>(shm_tracker::fd_for_child());
    // Everything that can fail is had before the child exists: a start that
    // throws leaves no child behind.
    auto p = std::make_unique<child_popen>();
    sys::pidfd_reservation slot;
    // Unflushed output would otherwise be written twice: once by each process.
    std::fflush(nullptr);
    std::cout.flush();
    std::cerr.flush();
    int parent = sys::current_pid();
    int pid = sys::fork_process();
    if (pid == 0) {
        slot.release_in_child();
        sys::die_with_parent(parent);
        sys::stdin_to_devnull();
        runtime::get().become_fork_child(child);
        sys::flush_and_exit(run_guarded(child.name, target.run_here));
    }
    p->attach(pid, slot.open_for(pid));
    return p;
}

}  // namespace mp::detail::launch
