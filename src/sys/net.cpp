#include "sys/net.hpp"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "sys/sys.hpp"

namespace mp::sys {
namespace {

sockaddr_un unix_address(const std::string& path) {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (path.size() >= sizeof a.sun_path)
        throw mp::value_error("mp: the socket path '" + path + "' is longer than the " +
                              std::to_string(sizeof a.sun_path - 1) +
                              " bytes a Unix socket address allows; choose a shorter path");
    std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
    return a;
}

struct addrinfo_list {
    addrinfo* head = nullptr;
    ~addrinfo_list() {
        if (head) ::freeaddrinfo(head);
    }
};

addrinfo_list resolve(const std::string& host, std::uint16_t port, bool passive) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
    addrinfo_list list;
    std::string service = std::to_string(port);
    int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &list.head);
    if (rc != 0)
        throw mp::system_error(EINVAL, "getaddrinfo(" + host + ") failed: " + ::gai_strerror(rc));
    return list;
}

void set_nodelay(int fd) noexcept {
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

std::string tcp_name(const std::string& host, std::uint16_t port) { return host + ":" + std::to_string(port); }

}  // namespace

unique_fd listen_unix(const std::string& path, int backlog) {
    sockaddr_un a = unix_address(path);
    unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) throw_errno("socket(AF_UNIX)");
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) throw_errno("bind", path);
    if (::listen(fd.get(), backlog) < 0) throw_errno("listen", path);
    return fd;
}

unique_fd listen_tcp(const std::string& host, std::uint16_t port, int backlog) {
    auto list = resolve(host, port, true);
    int last_errno = EADDRNOTAVAIL;
    for (addrinfo* ai = list.head; ai; ai = ai->ai_next) {
        unique_fd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol));
        if (!fd) {
            last_errno = errno;
            continue;
        }
        int one = 1;
        ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (::bind(fd.get(), ai->ai_addr, ai->ai_addrlen) < 0 || ::listen(fd.get(), backlog) < 0) {
            last_errno = errno;
            continue;
        }
        return fd;
    }
    throw_errno(last_errno, "bind", tcp_name(host, port));
}

std::uint16_t local_port(int fd) {
    sockaddr_storage s{};
    socklen_t len = sizeof s;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&s), &len) < 0) throw_errno("getsockname");
    if (s.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&s)->sin_port);
    if (s.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&s)->sin6_port);
    return 0;
}

accepted accept_nonblocking(int listen_fd) {
    for (;;) {
        int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd >= 0) {
            set_nodelay(fd);
            return {unique_fd(fd), false};
        }
        switch (errno) {
            case EINTR: continue;
            case EAGAIN:
            case ECONNABORTED:
            case EPROTO:
            case EPERM: return {};
            case EMFILE:
            case ENFILE:
            case ENOBUFS:
            case ENOMEM: return {unique_fd(), true};
            default: throw_errno("accept4");
        }
    }
}

std::size_t send_nowait(int fd, const void* data, std::size_t size) {
    for (;;) {
        ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n >= 0) return static_cast<std::size_t>(n);
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        if (errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN)
            throw eof_error("mp: the other end of the connection is closed");
        throw_errno("send");
    }
}

void send_all_until(int fd, std::span<const ::iovec> iov, std::chrono::steady_clock::time_point deadline) {
    send_all(fd, iov, {}, deadline);
}

long recv_nowait(int fd, void* buf, std::size_t len) {
    for (;;) {
        ssize_t n = ::recv(fd, buf, len, MSG_DONTWAIT);
        if (n >= 0) return static_cast<long>(n);
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return -1;
        if (errno == ECONNRESET || errno == ENOTCONN || errno == EPIPE) return 0;
        throw_errno("recv");
    }
}

void set_receive_timeout(int fd, std::chrono::milliseconds timeout) {
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
    if (::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0) throw_errno("setsockopt(SO_RCVTIMEO)");
}

namespace {

std::uint32_t to_epoll(std::uint32_t events) {
    std::uint32_t e = EPOLLRDHUP;
    if (events & ready_in) e |= EPOLLIN;
    if (events & ready_oneshot) e |= EPOLLONESHOT;
    return e;
}

void epoll_control(int epoll_fd, int op, int fd, std::uint32_t events, void* data, const char* what) {
    epoll_event ev{};
    ev.events = to_epoll(events);
    ev.data.ptr = data;
    if (::epoll_ctl(epoll_fd, op, fd, &ev) < 0) throw_errno(what);
}

}  // namespace

unique_fd epoll_open() {
    unique_fd fd(::epoll_create1(EPOLL_CLOEXEC));
    if (!fd) throw_errno("epoll_create1");
    return fd;
}

void epoll_add(int epoll_fd, int fd, std::uint32_t events, void* data) {
    epoll_control(epoll_fd, EPOLL_CTL_ADD, fd, events, data, "epoll_ctl(ADD)");
}

void epoll_modify(int epoll_fd, int fd, std::uint32_t events, void* data) {
    epoll_control(epoll_fd, EPOLL_CTL_MOD, fd, events, data, "epoll_ctl(MOD)");
}

void epoll_remove(int epoll_fd, int fd) noexcept { ::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, fd, nullptr); }

std::size_t epoll_ready(int epoll_fd, std::span<ready_event> out, int timeout_ms) {
    epoll_event evs[64];
    int max = static_cast<int>(std::min<std::size_t>(out.size(), 64));
    int n = ::epoll_wait(epoll_fd, evs, max, timeout_ms);
    if (n < 0) {
        if (errno == EINTR) return 0;
        throw_errno("epoll_wait");
    }
    for (int i = 0; i < n; ++i) {
        std::uint32_t e = 0;
        if (evs[i].events & EPOLLIN) e |= ready_in;
        if (evs[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) e |= ready_hangup;
        out[static_cast<std::size_t>(i)] = {evs[i].data.ptr, e};
    }
    return static_cast<std::size_t>(n);
}

unique_fd flag_open() {
    unique_fd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!fd) throw_errno("eventfd");
    return fd;
}

void raise_flag(int flag_fd) noexcept {
    std::uint64_t one = 1;
    [[maybe_unused]] auto r = ::write(flag_fd, &one, sizeof one);
}

void clear_flag(int flag_fd) noexcept {
    std::uint64_t value;
    [[maybe_unused]] auto r = ::read(flag_fd, &value, sizeof value);
}

unique_fd connect_unix(const std::string& path) {
    sockaddr_un a = unix_address(path);
    unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) throw_errno("socket(AF_UNIX)");
    for (;;) {
        if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) return fd;
        if (errno != EINTR) throw_errno("connect", path);
    }
}

unique_fd connect_tcp(const std::string& host, std::uint16_t port,
                      std::optional<std::chrono::steady_clock::time_point> deadline) {
    auto list = resolve(host, port, false);
    int last_errno = ECONNREFUSED;
    for (addrinfo* ai = list.head; ai; ai = ai->ai_next) {
        unique_fd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol));
        if (!fd) {
            last_errno = errno;
            continue;
        }
        int rc = ::connect(fd.get(), ai->ai_addr, ai->ai_addrlen);
        if (rc < 0 && errno == EINPROGRESS) {
            pollfd p{fd.get(), POLLOUT, 0};
            int r;
            do r = ::poll(&p, 1, poll_timeout(deadline));
            while (r < 0 && errno == EINTR);
            if (r == 0) {
                last_errno = ETIMEDOUT;
                continue;
            }
            int err = 0;
            socklen_t len = sizeof err;
            ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
            if (err != 0) {
                last_errno = err;
                continue;
            }
            rc = 0;
        }
        if (rc < 0) {
            last_errno = errno;
            continue;
        }
        set_nonblocking(fd.get(), false);
        set_nodelay(fd.get());
        return fd;
    }
    throw_errno(last_errno, "connect", tcp_name(host, port));
}

void shutdown_socket(int fd) noexcept {
    if (fd >= 0) ::shutdown(fd, SHUT_RDWR);
}

bool peer_closed(int fd) noexcept {
    pollfd p{fd, POLLRDHUP, 0};
    if (::poll(&p, 1, 0) <= 0) return false;
    return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

std::string make_private_dir(const std::string& prefix) {
    const char* base = std::getenv("TMPDIR");
    std::string dir = (base && *base) ? base : "/tmp";
    // A Unix socket path must fit in 108 bytes: fall back to /tmp if TMPDIR is deep.
    if (dir.size() > 60) dir = "/tmp";
    std::string templ = dir + "/" + prefix + "XXXXXX";
    if (!::mkdtemp(templ.data())) throw_errno("mkdtemp", templ);
    // mkdtemp creates it 0700 already; say it again in case of an odd umask policy.
    ::chmod(templ.c_str(), S_IRWXU);
    return templ;
}

void remove_private_dir(const std::string& dir, const std::string& file) noexcept {
    if (!file.empty()) ::unlink(file.c_str());
    if (!dir.empty()) ::rmdir(dir.c_str());
}

void random_bytes(void* out, std::size_t size) {
    auto* p = static_cast<unsigned char*>(out);
    while (size > 0) {
        ssize_t n = ::getrandom(p, size, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno("getrandom");
        }
        p += n;
        size -= static_cast<std::size_t>(n);
    }
}

}  // namespace mp::sys
