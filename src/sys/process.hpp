// sys/process.hpp — processes: creating them, watching them, reaping them,
// and what a process knows about itself. Part of the platform layer.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "mp/detail/unique_fd.hpp"

namespace mp::sys {

using detail::unique_fd;

/// fork(): the child's pid in the parent, 0 in the child (after the hooks of
/// sys/after_fork.hpp ran). Throws mp::system_error (EAGAIN: the process or
/// thread limit; ENOMEM) with what to do about it.
int fork_process();

/// A slot in the descriptor table kept for the pidfd of a child about to be
/// started. Opening the pidfd once the child exists could fail (EMFILE) with
/// the child already running; a reservation fails before it exists.
class pidfd_reservation {
public:
    /// Throws mp::system_error (EMFILE, ENFILE) while no child exists yet.
    pidfd_reservation();
    /// The pidfd of `pid`, a child of this process not yet reaped, using the
    /// reserved slot. If that still fails (another thread took the slot), the
    /// child is killed and reaped, then the error is thrown: no child runs on.
    unique_fd open_for(int pid);
    /// In the fork child: the slot was the parent's business.
    void release_in_child() noexcept { reserved_.reset(); }

private:
    unique_fd reserved_;
};

/// SIGKILLs child `pid` and reaps it. For a child that must not run on
/// because its start failed half-way. Never throws.
void kill_and_reap(int pid) noexcept;

/// Non-blocking reap of a child; returns the Python-style exit code if it ended.
std::optional<int> try_reap(int pid);
/// Blocking reap of a child; returns the Python-style exit code.
int reap(int pid);
/// Reaps one ended child, any of them, without blocking: {pid, exit code}.
struct reaped_child {
    int pid;
    int exit_code;
};
std::optional<reaped_child> reap_any_nowait() noexcept;
/// Python's convention: exit status n, or -N when killed by signal N.
int exit_code_from_status(int status) noexcept;
void send_signal(int pid, int sig);

int current_pid() noexcept;
int current_tid() noexcept;
/// CPUs this process may run on (its affinity mask), at least 1.
int usable_cpu_count() noexcept;
/// Names the calling thread (what ps and a debugger show); cut to the
/// kernel's 15 characters. Best effort.
void set_thread_name(const std::string& name) noexcept;
/// Number of threads of this process (one read of /proc/self/stat).
int thread_count();
/// Names ("comm") of every other thread of this process.
std::vector<std::string> other_thread_names();
/// Number of open file descriptors of this process and its RLIMIT_NOFILE
/// soft limit, for messages that say why a descriptor could not be had.
struct fd_usage {
    int open = 0;
    long limit = 0;
};
fd_usage current_fd_usage() noexcept;

/// Kill this process with SIGKILL when the thread that forked it exits; exit
/// at once if that parent is already gone (the fork/prctl race).
void die_with_parent(int expected_parent_pid) noexcept;
/// Makes the child's stdin /dev/null (async-signal-safe).
void stdin_to_devnull() noexcept;
/// Flushes C and C++ stdio, then _exit(code): a forked child never unwinds
/// into its parent's frames nor runs the parent's atexit handlers.
[[noreturn]] void flush_and_exit(int code) noexcept;

}  // namespace mp::sys
