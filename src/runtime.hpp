// runtime.hpp — process-wide state of mp in this process: who we are, how we
// were started, what children we have, and what a child must inherit.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "mp/context.hpp"
#include "mp/detail/unique_fd.hpp"
#include "sys/after_fork.hpp"

namespace mp::detail {

struct process_state;

/// Everything a spawn/forkserver child learns from its parent at start-up,
/// beyond its target. A fork child simply keeps the parent's copy.
struct identity {
    std::string name = "MainProcess";
    std::vector<int> ids;           // Python's _identity: (1,) for Process-1, (1, 2) for Process-1:2
    bool daemon = false;
    int parent_pid = 0;             // 0 in the main process
    std::string parent_name;
    start_method default_method = start_method::forkserver;
    std::array<std::uint8_t, 32> authkey{};

    template <class Archive>
    void serialize(Archive& ar) {
        ar(name, ids, daemon, parent_pid, parent_name, default_method, authkey);
    }
};

class runtime {
public:
    static runtime& get();

    // ---- set once by mp::init ----
    bool initialized = false;
    std::vector<std::string> argv;  // the program's own arguments, for spawn

    sys::fork_guarded_mutex mutex;
    identity self;            // guarded by mutex after start-up
    int child_counter = 0;    // guarded by mutex
    bool start_method_fixed = false;  // guarded by mutex
    std::vector<std::weak_ptr<process_state>> children;  // guarded by mutex
    bool warned_threads_at_fork = false;  // guarded by mutex

    /// The identity of the next child started from this process. `number`:
    /// the one reserve_child_number() gave its process object (0: the next).
    identity next_child(const std::string& requested_name, bool daemon, start_method method,
                        const char* name_prefix = "Process", int number = 0);
    /// Python numbers a process when its object is made, not when it starts:
    /// takes that number, and gives the default name it implies ("Process-3").
    int reserve_child_number(std::string& default_name);

    /// Called in a child of the fork start method: it is `child` now. (What
    /// every fork child forgets, its parent's children, is forgotten by an
    /// after-fork hook.)
    void become_fork_child(identity child);

    /// Called in a spawn/forkserver child with what the parent sent.
    void adopt(identity child);
};

/// Logs (once per process) that fork() is being called while other threads
/// run, naming them: they do not exist in the child, and any lock they held
/// stays locked there.
void warn_if_threads_at_fork();

/// Runs a spawn or forkserver child's work from the bootstrap socket `fd`;
/// never returns.
[[noreturn]] void run_bootstrapped_child(int fd);

/// The forkserver's main loop; never returns.
[[noreturn]] void run_forkserver(int control_fd, int parent_pid);

/// For tests: each takes one of mp's process-wide locks, as a thread of the
/// program inside mp would hold it, to show that a fork child never inherits
/// it locked.
std::unique_lock<sys::fork_guarded_mutex> lock_exception_registry_for_test();
std::unique_lock<sys::fork_guarded_mutex> lock_launcher_for_test();
std::unique_lock<sys::fork_guarded_mutex> lock_forkserver_handle_for_test();

/// Pids of mp's own helper processes (forkserver, resource tracker), which the
/// test suite does not count as stray children.
std::vector<int> helper_pids();

}  // namespace mp::detail
