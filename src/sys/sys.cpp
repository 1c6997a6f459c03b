#include "sys/sys.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <iostream>

namespace mp::detail {
void unique_fd::reset(int fd) noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
}
}  // namespace mp::detail

namespace mp::sys {

int poll_timeout(std::optional<clock::time_point> deadline) {
    if (!deadline) return -1;
    auto left = *deadline - clock::now();
    if (left <= clock::duration::zero()) return 0;
    auto ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
    return static_cast<int>(std::min<long long>(ms, INT_MAX));
}

unique_fd dup_cloexec(int fd) {
    int d = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (d < 0) throw_errno("fcntl(F_DUPFD_CLOEXEC)");
    return unique_fd(d);
}

void set_cloexec(int fd, bool on) {
    int flags = ::fcntl(fd, F_GETFD);
    if (flags < 0) throw_errno("fcntl(F_GETFD)");
    flags = on ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC);
    if (::fcntl(fd, F_SETFD, flags) < 0) throw_errno("fcntl(F_SETFD)");
}

void set_nonblocking(int fd, bool on) {
    int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0) throw_errno("fcntl(F_GETFL)");
    flags = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
    if (::fcntl(fd, F_SETFL, flags) < 0) throw_errno("fcntl(F_SETFL)");
}

bool wait_readable(int fd, std::optional<clock::time_point> deadline) {
    for (;;) {
        pollfd p{fd, POLLIN, 0};
        int r = ::poll(&p, 1, poll_timeout(deadline));
        if (r > 0) return true;
        if (r == 0) {
            if (deadline && clock::now() < *deadline) continue;
            return false;
        }
        if (errno != EINTR) throw_errno("poll");
    }
}

std::vector<std::size_t> wait_any_readable(std::span<const int> fds,
                                           std::optional<clock::time_point> deadline) {
    std::vector<pollfd> p(fds.size());
    for (std::size_t i = 0; i < fds.size(); ++i) p[i] = pollfd{fds[i], POLLIN, 0};
    for (;;) {
        int r = ::poll(p.data(), p.size(), poll_timeout(deadline));
        if (r < 0) {
            if (errno == EINTR) continue;
            throw_errno("poll");
        }
        if (r == 0 && deadline && clock::now() < *deadline) continue;
        std::vector<std::size_t> ready;
        for (std::size_t i = 0; i < p.size(); ++i)
            if (p[i].revents != 0) ready.push_back(i);
        return ready;
    }
}

int open_devnull(int flags) {
    int fd = ::open("/dev/null", flags | O_CLOEXEC);
    if (fd < 0) throw_errno("open", "/dev/null");
    return fd;
}

int current_cpu() noexcept { return ::sched_getcpu(); }

bool spin_history::should_spin() noexcept {
    int skip = skip_.load(std::memory_order_relaxed);
    while (skip > 0)
        if (skip_.compare_exchange_weak(skip, skip - 1, std::memory_order_relaxed)) return false;
    return true;
}

void spin_history::spun_in_vain() noexcept {
    int penalty = penalty_.load(std::memory_order_relaxed);
    skip_.store(penalty, std::memory_order_relaxed);
    penalty_.store(std::min(penalty * 2, 256), std::memory_order_relaxed);
}

void spin_history::spun_with_success() noexcept {
    skip_.store(0, std::memory_order_relaxed);
    penalty_.store(1, std::memory_order_relaxed);
}

spinner::spinner(std::chrono::microseconds budget, spin_history* history) noexcept
    : budget_(budget), history_(history), enabled_(!history || history->should_spin()) {}

spinner::~spinner() {
    if (history_ && enabled_ && steps_ > 0 && !exhausted_) history_->spun_with_success();
}

bool spinner::step() noexcept {
    if (!enabled_ || exhausted_) return false;
    ++steps_;
    cpu_relax();
    if (steps_ % 16 != 0) return true;  // read the clock only now and then
    auto now = clock::now();
    if (!until_) until_ = now + budget_;
    if (now < *until_) return true;
    exhausted_ = true;
    if (history_) history_->spun_in_vain();
    return false;
}

bool futex_wait(const std::uint32_t* word, std::uint32_t expected,
                std::optional<clock::time_point> deadline) {
    timespec ts{};
    timespec* tsp = nullptr;
    if (deadline) {
        auto left = *deadline - clock::now();
        if (left <= clock::duration::zero()) return false;
        auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
        ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
        ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
        tsp = &ts;
    }
    // Shared (not FUTEX_PRIVATE): the word lives in memory mapped by several processes.
    long r = ::syscall(SYS_futex, word, FUTEX_WAIT, expected, tsp, nullptr, 0);
    if (r == 0) return true;
    if (errno == ETIMEDOUT) return false;
    return true;  // EAGAIN (value changed) or EINTR: let the caller re-check
}

void futex_wake(const std::uint32_t* word, int count) noexcept {
    ::syscall(SYS_futex, word, FUTEX_WAKE, count, nullptr, nullptr, 0);
}

std::pair<unique_fd, unique_fd> socket_pair(bool seqpacket) {
    int sv[2];
    int type = (seqpacket ? SOCK_SEQPACKET : SOCK_STREAM) | SOCK_CLOEXEC;
    if (::socketpair(AF_UNIX, type, 0, sv) < 0) throw_errno("socketpair");
    return {unique_fd(sv[0]), unique_fd(sv[1])};
}

void send_all(int fd, std::span<const ::iovec> iov_in, std::span<const int> fds,
              std::optional<clock::time_point> deadline) {
    std::vector<::iovec> iov(iov_in.begin(), iov_in.end());
    std::size_t first = 0;
    bool fds_pending = !fds.empty();
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 253)];
    if (fds.size() > 253) throw mp::error("mp: cannot pass more than 253 file descriptors in one message");
    // With a deadline the socket is written without blocking and waited for
    // with poll, so that a peer that stops reading cannot hold us past it.
    const int flags = MSG_NOSIGNAL | (deadline ? MSG_DONTWAIT : 0);
    while (first < iov.size()) {
        if (iov[first].iov_len == 0) {
            ++first;
            continue;
        }
        msghdr msg{};
        msg.msg_iov = iov.data() + first;
        msg.msg_iovlen = std::min<std::size_t>(iov.size() - first, IOV_MAX);
        if (fds_pending) {
            msg.msg_control = control;
            msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
            cmsghdr* c = CMSG_FIRSTHDR(&msg);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
            std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
        }
        ssize_t n = ::sendmsg(fd, &msg, flags);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {  // the peer's buffer is full
                pollfd p{fd, POLLOUT, 0};
                int r = ::poll(&p, 1, poll_timeout(deadline));
                if (r == 0 && deadline && clock::now() >= *deadline)
                    throw timeout_error("mp: the peer did not read what was sent to it in time");
                continue;
            }
            if (errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN)
                throw eof_error("mp: the other end of the connection is closed (its process may have died)");
            throw_errno("sendmsg");
        }
        fds_pending = false;
        auto left = static_cast<std::size_t>(n);
        while (first < iov.size() && left >= iov[first].iov_len) left -= iov[first++].iov_len;
        if (first < iov.size()) {
            iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + left;
            iov[first].iov_len -= left;
        }
    }
    if (fds_pending) {  // a message of zero bytes still carries its fds
        char zero = 0;
        ::iovec one{&zero, 1};
        send_all(fd, std::span<const ::iovec>(&one, 1), fds, deadline);
    }
}

long recv_some(int fd, void* buf, std::size_t len, std::vector<unique_fd>* fds, bool dontwait) {
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 253)];
    for (;;) {
        ::iovec iov{buf, len};
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        if (fds) {
            msg.msg_control = control;
            msg.msg_controllen = sizeof(control);
        }
        ssize_t n = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | (dontwait ? MSG_DONTWAIT : 0));
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return -1;
            if (errno == ECONNRESET) return 0;
            throw_errno("recvmsg");
        }
        if (fds && msg.msg_controllen > 0) {
            for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
                std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                for (std::size_t i = 0; i < count; ++i) {
                    int got;
                    std::memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                    fds->emplace_back(got);
                }
            }
        }
        return static_cast<long>(n);
    }
}

void close_fds_except(int lowest, std::span<const int> keep) noexcept {
    std::vector<int> sorted(keep.begin(), keep.end());
    std::sort(sorted.begin(), sorted.end());
    int from = lowest;
    for (int k : sorted) {
        if (k < from) continue;
        if (k > from) ::syscall(SYS_close_range, from, k - 1, 0);
        from = k + 1;
    }
    ::syscall(SYS_close_range, from, ~0U, 0);
}

}  // namespace mp::sys
