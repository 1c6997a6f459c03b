// shm_tracker.hpp — makes sure named shared memory segments that this program
// created are unlinked when it ends, however it ends (even SIGKILL), and so
// are its managers' socket directories.
//
// A small helper process, started by fork on first use, reads "register" and
// "unregister" records from a pipe. Every process of the program (the main
// one and all its children, whatever their start method) holds the write end;
// when the last one is gone the helper sees end-of-file, unlinks every name
// still registered, and exits. At normal exit of the main process the pipe is
// closed and the helper waited for, so cleanup is finished when main returns.
#pragma once

#include <string_view>

#include "mp/detail/unique_fd.hpp"

namespace mp::detail::shm_tracker {

/// Records that this program created the POSIX shm segment `name` (with its
/// leading '/'); it will be unlinked at the end unless unregistered.
void register_name(std::string_view name);
/// The segment was unlinked (or ownership was given up on purpose).
void unregister_name(std::string_view name);

/// Records that this program made a private directory holding one socket at
/// `socket_path` (a manager's default address): at the end, unless
/// unregistered, the socket is removed and then its directory.
void register_socket_directory(std::string_view socket_path);
void unregister_socket_directory(std::string_view socket_path);

/// The tracker pipe's write end, for a spawn/forkserver child to inherit;
/// -1 when no tracker is running.
int fd_for_child() noexcept;
/// In a spawn/forkserver child: use the parent's tracker.
void adopt(unique_fd fd) noexcept;
/// In a fork child: the inherited pipe stays shared; nothing else to reset.
/// The helper's pid (0 if none), for the test suite's stray-process check.
int helper_pid() noexcept;

}  // namespace mp::detail::shm_tracker
