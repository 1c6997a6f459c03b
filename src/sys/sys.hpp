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

// ---- memory -----------------------------------------------------------------
unique_fd memfd(const char* name, std::size_t size);
/// Maps `size` bytes of `fd` shared read/write; throws on failure.
void* map_shared(int fd, std::size_t size, std::size_t offset = 0, bool noreserve = false);
void unmap(void* addr, std::size_t size) noexcept;
/// Maps a whole file, faulting its pages in at once (one call instead of one
/// page fault per 4 KiB).
void* map_populated(int fd, std::size_t size, bool writable);
std::size_t file_size(int fd);
/// A whole file mapped read-only, unmapped on destruction (src/sys/file_map.cpp).
class mapped_file {
public:
    mapped_file() = default;
    mapped_file(const void* data, std::size_t size) noexcept : data_(data), size_(size) {}
    mapped_file(mapped_file&& o) noexcept : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
    mapped_file& operator=(mapped_file&&) = delete;
    ~mapped_file() { unmap(const_cast<void*>(data_), size_); }
    [[nodiscard]] const std::byte* data() const noexcept { return static_cast<const std::byte*>(data_); }
    [[nodiscard]] std::size_t size() const noexcept { return size_; }

private:
    const void* data_ = nullptr;
    std::size_t size_ = 0;
};
/// Maps the file at `path` for reading; throws mp::system_error.
[[nodiscard]] mapped_file map_file_readonly(const char* path);
/// A memfd of `size` bytes that can be frozen once written (src/sys/seal.cpp).
unique_fd sealable_memfd(const char* name, std::size_t size);
/// Seals a memfd against shrinking, growing and writing, for good. Throws if
/// a writable mapping of it still exists.
void freeze(int fd);
/// Whether `fd` is a memfd whose size and contents can no longer change.
[[nodiscard]] bool is_frozen(int fd);
/// Gives the pages of [offset, offset+len) of a memfd back to the system.
void punch_hole(int fd, std::size_t offset, std::size_t len) noexcept;
std::size_t page_size() noexcept;
/// Allocates the pages of [addr, addr+len) of a shared mapping in one call,
/// instead of one page fault per 4 KiB during the copy that follows. Best
/// effort: kernels without MADV_POPULATE_WRITE (before 5.14) fault as usual.
void prefault_for_write(void* addr, std::size_t len) noexcept;

// ---- busy waiting -------------------------------------------------------------
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
/// writes; throws eof_error if the peer is gone.
void send_all(int fd, std::span<const ::iovec> iov, std::span<const int> fds = {});
/// One recvmsg(): returns bytes read (0 at EOF) and appends received fds.
/// -1 with EAGAIN semantics when `dontwait` and nothing is there.
long recv_some(int fd, void* buf, std::size_t len, std::vector<unique_fd>* fds, bool dontwait);

// ---- processes ---------------------------------------------------------------
unique_fd pidfd_open(int pid);
/// Non-blocking reap of a child; returns the Python-style exit code if it ended.
std::optional<int> try_reap(int pid);
/// Blocking reap of a child; returns the Python-style exit code.
int reap(int pid);
/// Python's convention: exit status n, or -N when killed by signal N.
int exit_code_from_status(int status) noexcept;
int current_pid() noexcept;
int current_tid() noexcept;
/// Number of threads of this process (one read of /proc/self/stat).
int thread_count();
/// Names ("comm") of every other thread of this process.
std::vector<std::string> other_thread_names();
/// Kill this process with SIGKILL when the thread that forked it exits; exit
/// at once if that parent is already gone (the fork/prctl race).
void die_with_parent(int expected_parent_pid) noexcept;
/// Makes the child's stdin /dev/null (async-signal-safe).
void stdin_to_devnull() noexcept;
void send_signal(int pid, int sig);
/// Ignore SIGINT in this process (pool workers; Ctrl-C goes to the parent).
void ignore_sigint() noexcept;
/// Restore every signal disposition to default and unblock all signals.
void reset_signals() noexcept;
/// Closes every fd >= lowest except those listed (used by helper processes).
void close_fds_except(int lowest, std::span<const int> keep) noexcept;
/// Flushes C and C++ stdio, then _exit(code): a forked child never unwinds
/// into its parent's frames nor runs the parent's atexit handlers.
[[noreturn]] void flush_and_exit(int code) noexcept;

}  // namespace mp::sys
