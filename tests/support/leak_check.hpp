// leak_check.hpp — fails a test that leaves a process, a file descriptor or a
// /dev/shm name behind.
//
// Installed by tests/support/main.cpp for every test binary. Before each test
// it records this process's descendants, its open file descriptors and the
// /dev/shm names that look like mp's; after the test it polls (up to about
// two seconds, for children that are still exiting and fds closed by
// background threads) until nothing new remains, and otherwise adds a failure
// to the test naming what leaked.
//
// Not counted: mp's own helper processes (mp::detail::helper_pids(): the
// forkserver, the shared-memory tracker) and the fds this process holds to
// them (a pipe or socket whose other end, or the same end, is open in a
// helper). A helper's own live children are counted: they are the test's
// processes, started through the forkserver.
//
// Set MP_TEST_LEAK_CHECK=0 in the environment to turn the check off.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace mp_test {

/// One process seen in /proc.
struct proc_entry {
    int pid = 0;
    int ppid = 0;
    char state = '?';                // 'Z' for a zombie
    unsigned long long start = 0;    // start time in clock ticks: tells a reused pid apart
    std::string comm;
    friend bool operator<(const proc_entry& a, const proc_entry& b) {
        return a.pid != b.pid ? a.pid < b.pid : a.start < b.start;
    }
};

/// Parses /proc/<pid>/stat; nothing when the process is gone.
std::optional<proc_entry> read_stat(int pid);

/// Every process on the machine, as /proc shows it now.
std::vector<proc_entry> all_processes();

/// What a test could leak, at one moment.
struct snapshot {
    int self_pid = 0;
    std::vector<int> helpers;             // mp::detail::helper_pids() at that moment
    std::vector<proc_entry> descendants;  // of this process, helpers excluded
    std::map<int, std::string> fds;       // fd -> readlink target
    std::set<std::string> shm_names;      // /dev/shm entries that may be ours

    /// Reads the current state. Thread-safe; async-signal-unsafe.
    static snapshot take();
};

/// What is in `after` but not in `before`, as human-readable lines (empty when
/// nothing leaked). fds held by (or connected to) mp's helpers are left out.
std::vector<std::string> leaks_between(const snapshot& before, const snapshot& after);

/// Polls for up to `grace_ms` until nothing leaked relative to `before`;
/// returns the remaining leaks.
std::vector<std::string> wait_for_no_leaks(const snapshot& before, int grace_ms = 2000);

/// Registers the GoogleTest listener that runs the check around every test.
/// Call after testing::InitGoogleTest.
void install_leak_check();

/// Tells the check that `fd`, opened by the current test, stays open on
/// purpose (a process-wide resource created on first use).
void allow_fd(int fd);

}  // namespace mp_test
