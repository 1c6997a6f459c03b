// The fork start method: the child is a copy of this process.
#include <unistd.h>

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
    // Unflushed output would otherwise be written twice: once by each process.
    std::fflush(nullptr);
    std::cout.flush();
    std::cerr.flush();
    int parent = sys::current_pid();
    pid_t pid = ::fork();
    if (pid < 0) sys::throw_errno("fork");
    if (pid == 0) {
        sys::die_with_parent(parent);
        sys::stdin_to_devnull();
        runtime::get().after_fork_in_child(child);
        sys::flush_and_exit(run_guarded(child.name, target.run_here));
    }
    return std::make_unique<child_popen>(pid);
}

}  // namespace mp::detail::launch
