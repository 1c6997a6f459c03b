// sys/sync_sys.hpp — the platform calls behind synchronisation objects, named
// shared memory and the shared-memory tracker. Part of the platform layer:
// like sys.hpp, it is the only place these kernel interfaces are touched.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "mp/detail/unique_fd.hpp"

namespace mp::sys {

using detail::unique_fd;

// ---- POSIX named shared memory ---------------------------------------------
/// Creates the segment `name` (with its leading '/') of `size` bytes, mode
/// 0600, failing with EEXIST if it exists, with all its pages reserved
/// (mp::system_error ENOSPC with a hint when /dev/shm is full). The fd is
/// close-on-exec. On a failure after creation the segment is unlinked again.
unique_fd shm_create(const std::string& name, std::size_t size);
/// Opens the existing segment `name` read/write. Throws mp::system_error.
unique_fd shm_attach(const std::string& name);
/// shm_unlink(name). Throws mp::system_error (ENOENT when it is already gone).
void shm_remove(const std::string& name);
/// Size in bytes of the object behind fd (fstat). Throws mp::system_error.
std::size_t fd_size(int fd);
/// 64 random bits from the kernel (getrandom); never blocks after boot.
std::uint64_t random_u64();

// ---- the shared-memory tracker helper (async-signal-safe, noexcept) ---------
// Everything below may be called in a child forked from a multithreaded
// process: no allocation, no locks, no exceptions.

/// fork(); -1 on failure.
int fork_raw() noexcept;
/// Prepares a freshly forked helper: ignores SIGINT, SIGTERM, SIGHUP, SIGQUIT
/// and SIGPIPE, points stdin/stdout/stderr at /dev/null, closes every other fd
/// except `keep`, and names the process `comm` (at most 15 characters).
void become_helper(int keep, const char* comm) noexcept;
/// One recv() of at most `len` bytes; 0 at end of file, -1 on a hard error.
/// EINTR is retried.
long recv_raw(int fd, void* buf, std::size_t len) noexcept;
/// One send() with MSG_NOSIGNAL; false if the peer is gone or on error.
bool send_raw(int fd, const void* buf, std::size_t len) noexcept;
/// Anonymous private read/write memory; nullptr on failure.
void* map_anonymous(std::size_t size) noexcept;
void unmap_anonymous(void* addr, std::size_t size) noexcept;
/// shm_unlink(name) ignoring errors.
void shm_remove_raw(const char* name) noexcept;
/// unlink(socket_path), then rmdir() of the directory that held it, ignoring
/// errors.
void remove_socket_and_directory_raw(const char* socket_path) noexcept;
[[noreturn]] void exit_raw(int code) noexcept;

/// When process `pid` started (clock ticks since boot, from /proc/<pid>/stat),
/// or 0 if there is no such process or it has ended (a zombie counts as
/// ended). A pid and its start time name one process for ever, however pids
/// are reused: how a queue tells whether the owner of an unfinished put lives.
std::uint64_t process_start_time(int pid) noexcept;

/// Waits up to `limit` for child `pid` to exit and reaps it; false if it is
/// still running at the end (it is then left alone). Never throws.
bool reap_within(int pid, std::chrono::milliseconds limit) noexcept;

}  // namespace mp::sys
