// sys/net.hpp — listening and connected stream sockets for managers: Unix
// sockets at a path and TCP sockets, plus the private directory a default
// manager socket lives in. Part of the platform layer: nothing above it
// includes socket headers.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "mp/detail/unique_fd.hpp"

namespace mp::sys {

using detail::unique_fd;

/// A listening AF_UNIX stream socket bound at `path` (CLOEXEC). Throws
/// mp::system_error (EADDRINUSE if the path exists).
unique_fd listen_unix(const std::string& path, int backlog);
/// A listening TCP socket on `host`:`port` (numeric or resolvable host; port 0
/// picks a free port, see local_port). SO_REUSEADDR, CLOEXEC.
unique_fd listen_tcp(const std::string& host, std::uint16_t port, int backlog);
/// The port a TCP socket is bound to.
std::uint16_t local_port(int fd);

/// Accepts one connection (CLOEXEC; TCP_NODELAY on TCP). Returns an empty fd
/// when the peer gave up before it was accepted (ECONNABORTED, EAGAIN) or the
/// process is out of fds (EMFILE/ENFILE: the caller should back off);
/// throws mp::system_error for anything else.
unique_fd accept_connection(int listen_fd);

/// Connects to a Unix socket / a TCP address (TCP_NODELAY), waiting at most
/// until `deadline` for a TCP connect. Throws mp::system_error (ECONNREFUSED,
/// ENOENT, ...) naming the address.
unique_fd connect_unix(const std::string& path);
unique_fd connect_tcp(const std::string& host, std::uint16_t port,
                      std::optional<std::chrono::steady_clock::time_point> deadline);

/// shutdown(SHUT_RDWR): wakes every thread blocked on the socket. Never throws.
void shutdown_socket(int fd) noexcept;
/// True when the peer of a connected socket has closed it or reset it
/// (POLLRDHUP/POLLHUP/POLLERR), without consuming any data.
bool peer_closed(int fd) noexcept;

/// Creates a fresh directory only the owner can enter (mkdtemp, mode 0700)
/// under $TMPDIR or /tmp, named "<prefix>XXXXXX"; returns its path.
std::string make_private_dir(const std::string& prefix);
/// Removes `file` (if not empty) and then `dir`. Never throws.
void remove_private_dir(const std::string& dir, const std::string& file) noexcept;

/// Fills `out` with cryptographically strong random bytes.
void random_bytes(void* out, std::size_t size);


}  // namespace mp::sys
