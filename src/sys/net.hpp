// sys/net.hpp — listening and connected stream sockets for managers: Unix
// sockets at a path and TCP sockets, plus the private directory a default
// manager socket lives in. Part of the platform layer: nothing above it
// includes socket headers.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "mp/detail/unique_fd.hpp"

struct iovec;

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

/// What accept_nonblocking() got.
struct accepted {
    unique_fd fd;             // empty: nothing to accept now (see out_of_fds)
    bool out_of_fds = false;  // EMFILE/ENFILE/ENOBUFS/ENOMEM: free some or back off
};
/// Accepts one connection from a non-blocking listener without waiting; the
/// new socket is CLOEXEC (TCP_NODELAY on TCP) and blocking: use the
/// *_nowait calls below where a call must not wait. Throws mp::system_error
/// only for errors that are not about this one peer or a temporary shortage.
accepted accept_nonblocking(int listen_fd);

/// Sends what fits now of [data, data+size) on a non-blocking socket: the
/// bytes sent (0 if none fit). Throws eof_error if the peer is gone.
std::size_t send_nowait(int fd, const void* data, std::size_t size);
/// Sends all of `iov` on a (blocking or not) socket, waiting at most until
/// `deadline` for room. Throws eof_error if the peer is gone, timeout_error
/// past the deadline (the stream is then unusable).
void send_all_until(int fd, std::span<const ::iovec> iov, std::chrono::steady_clock::time_point deadline);
/// One non-blocking read: bytes read, 0 at end of stream (or a reset), -1 if
/// nothing is there now.
long recv_nowait(int fd, void* buf, std::size_t len);
/// Makes a blocking read of `fd` give up after `timeout` (SO_RCVTIMEO;
/// recv_some then returns -1).
void set_receive_timeout(int fd, std::chrono::milliseconds timeout);

// ---- an event loop's readiness (epoll) -------------------------------------
/// Interest and readiness bits (mapped to epoll's in net.cpp, so that no
/// caller needs the epoll header).
inline constexpr std::uint32_t ready_in = 1u << 0;       // readable
inline constexpr std::uint32_t ready_hangup = 1u << 1;   // peer closed / error
inline constexpr std::uint32_t ready_oneshot = 1u << 2;  // interest only: disarm after one report

struct ready_event {
    void* data;
    std::uint32_t events;
};

/// A new epoll instance (CLOEXEC).
unique_fd epoll_open();
/// Registers / re-arms / changes `fd` with `events` (ready_in, ready_oneshot),
/// reported with `data`. Thread-safe with a concurrent epoll_ready().
void epoll_add(int epoll_fd, int fd, std::uint32_t events, void* data);
void epoll_modify(int epoll_fd, int fd, std::uint32_t events, void* data);
/// Unregisters `fd`; harmless if it was not registered. Never throws.
void epoll_remove(int epoll_fd, int fd) noexcept;
/// Waits up to `timeout_ms` (-1: forever) for readiness; fills `out` and
/// returns how many entries it filled (0 on timeout or EINTR).
std::size_t epoll_ready(int epoll_fd, std::span<ready_event> out, int timeout_ms);

/// An eventfd used as a level-triggered flag between threads (CLOEXEC,
/// non-blocking): raise_flag makes it readable until clear_flag.
unique_fd flag_open();
void raise_flag(int flag_fd) noexcept;
void clear_flag(int flag_fd) noexcept;

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
