// sys/sys.hpp — the platform layer: the only headers in mp that talk to the
// kernel directly. Everything above it sees RAII handles and exceptions.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mp/detail/unique_fd.hpp"
#include "mp/error.hpp"
#include "sys/memory.hpp"
#include "sys/after_fork.hpp"
#include "sys/process.hpp"
#include "sys/signals.hpp"

struct iovec;

namespace mp::sys {

using detail::unique_fd;
using clock = std::chrono::steady_clock;

/// Throws mp::system_error keeping errno, the call and the object it acted on.
[[noreturn]] void throw_errno(const char* call, std::string_view object = {});
[[noreturn]] void throw_errno(int err, const char* call, std::string_view object = {});

/// Milliseconds for poll() until `deadline` (-1: no deadline), rounded up.
int poll_timeout(std::optional<clock::time_point> deadline);

// ---- file descriptors -------------------------------------------------------
unique_fd dup_cloexec(int fd);
void set_cloexec(int fd, bool on);
void set_nonblocking(int fd, bool on);
/// Waits until fd is readable (or hung up). false on timeout. EINTR-safe.
bool wait_readable(int fd, std::optional<clock::time_point> deadline);
/// Waits on many fds; returns the indexes that are readable or hung up.
std::vector<std::size_t> wait_any_readable(std::span<const int> fds,
                                           std::optional<clock::time_point> deadline);
int open_devnull(int flags);

// ---- busy waiting -------------------------------------------------------------
/// The CPU the calling thread runs on now (it may move at any moment: a
/// hint for where to spin, read without a system call where the kernel
/// supports it); -1 if unknown.
int current_cpu() noexcept;

/// Tells the CPU that the caller is busy-waiting (x86 `pause`, Arm `yield`):
/// a sibling hyperthread gets the core's resources meanwhile.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
    asm volatile("yield" ::: "memory");
#endif
}

/// Remembers, for one place that waits, whether busy-waiting there pays off.
/// Where the awaited message keeps arriving after the spin budget (an idle
/// peer, or more runnable processes than cores, where a spinner only delays
/// the peer it waits for), spinning is skipped for a growing number of waits;
/// one wait that succeeds while spinning turns it back on. Thread-safe.
class spin_history {
public:
    /// Whether the next wait should spin (consumes one skipped wait if not).
    bool should_spin() noexcept;
    void spun_in_vain() noexcept;
    void spun_with_success() noexcept;

private:
    std::atomic<int> skip_{0};     // waits left to skip spinning
    std::atomic<int> penalty_{1};  // how many to skip after the next failure
};

/// Busy-waits for at most `budget` before the caller goes to sleep: waking a
/// sleeping process costs tens of microseconds, far more than a message takes
/// to arrive from a busy peer.
class spinner {
public:
    spinner(std::chrono::microseconds budget, spin_history* history = nullptr) noexcept;
    spinner(const spinner&) = delete;
    spinner& operator=(const spinner&) = delete;
    /// Reports success to the history if the wait ended while spinning.
    ~spinner();
    /// One step of waiting; false once the budget is spent (then sleep).
    bool step() noexcept;

private:
    std::chrono::microseconds budget_;
    spin_history* history_;
    std::optional<clock::time_point> until_;
    unsigned steps_ = 0;
    bool enabled_;
    bool exhausted_ = false;
};

// ---- futex (process-shared) ------------------------------------------------
/// Sleeps while *word == expected, until woken or `deadline`. Returns false on
/// timeout. Spurious returns are possible: callers re-check their condition.
bool futex_wait(const std::uint32_t* word, std::uint32_t expected,
                std::optional<clock::time_point> deadline);
void futex_wake(const std::uint32_t* word, int count) noexcept;

// ---- sockets with descriptor passing --------------------------------------
/// A connected pair of AF_UNIX sockets (SOCK_STREAM or SOCK_SEQPACKET), CLOEXEC.
std::pair<unique_fd, unique_fd> socket_pair(bool seqpacket = false);
/// Sends all of `iov` plus `fds` (attached to the first byte). Handles partial
/// writes; throws eof_error if the peer is gone, and timeout_error if a
/// deadline is given and the peer has not taken everything by then.
void send_all(int fd, std::span<const ::iovec> iov, std::span<const int> fds = {},
              std::optional<clock::time_point> deadline = std::nullopt);
/// One recvmsg(): returns bytes read (0 at EOF) and appends received fds.
/// -1 with EAGAIN semantics when `dontwait` and nothing is there.
long recv_some(int fd, void* buf, std::size_t len, std::vector<unique_fd>* fds, bool dontwait);

// ---- processes, signals, spawning, fork children: see their own headers ---
/// Closes every fd >= lowest except those listed (used by helper processes).
void close_fds_except(int lowest, std::span<const int> keep) noexcept;

}  // namespace mp::sys
