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

unique_fd memfd(const char* name, std::size_t size) {
    int fd = ::memfd_create(name, MFD_CLOEXEC);
    if (fd < 0) throw_errno("memfd_create", name);
    unique_fd owned(fd);
    if (::ftruncate(fd, static_cast<off_t>(size)) < 0) throw_errno("ftruncate", name);
    return owned;
}

void* map_shared(int fd, std::size_t size, std::size_t offset, bool noreserve) {
    int flags = MAP_SHARED | (noreserve ? MAP_NORESERVE : 0);
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, flags, fd, static_cast<off_t>(offset));
    if (p == MAP_FAILED) throw_errno("mmap");
    return p;
}

void unmap(void* addr, std::size_t size) noexcept {
    if (addr) ::munmap(addr, size);
}

void* map_populated(int fd, std::size_t size, bool writable) {
    int prot = PROT_READ | (writable ? PROT_WRITE : 0);
    void* p = ::mmap(nullptr, size, prot, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (p == MAP_FAILED) throw_errno("mmap");
    return p;
}

std::size_t file_size(int fd) {
    struct stat st {};
    if (::fstat(fd, &st) < 0) throw_errno("fstat");
    return static_cast<std::size_t>(st.st_size);
}

void punch_hole(int fd, std::size_t offset, std::size_t len) noexcept {
    if (len == 0) return;
    ::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                static_cast<off_t>(len));
}

void prefault_for_write(void* addr, std::size_t len) noexcept {
#ifndef MADV_POPULATE_WRITE
    constexpr int MADV_POPULATE_WRITE = 23;
#endif
    auto start = reinterpret_cast<std::uintptr_t>(addr) & ~(page_size() - 1);
    auto end = reinterpret_cast<std::uintptr_t>(addr) + len;
    ::madvise(reinterpret_cast<void*>(start), end - start, MADV_POPULATE_WRITE);
}

std::size_t page_size() noexcept {
    static const std::size_t size = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    return size;
}

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
    __builtin_ia32_pause();
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

void send_all(int fd, std::span<const ::iovec> iov_in, std::span<const int> fds) {
    std::vector<::iovec> iov(iov_in.begin(), iov_in.end());
    std::size_t first = 0;
    bool fds_pending = !fds.empty();
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 253)];
    if (fds.size() > 253) throw mp::error("mp: cannot pass more than 253 file descriptors in one message");
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
        ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {  // a non-blocking socket whose buffer is full
                pollfd p{fd, POLLOUT, 0};
                ::poll(&p, 1, -1);
                continue;
            }
            if (errno == EPIPE || errno == ECONNRESET)
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
        send_all(fd, std::span<const ::iovec>(&one, 1), fds);
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

unique_fd pidfd_open(int pid) {
    long fd = ::syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0) throw_errno("pidfd_open");
    set_cloexec(static_cast<int>(fd), true);
    return unique_fd(static_cast<int>(fd));
}

int exit_code_from_status(int status) noexcept {
    if (WIFSIGNALED(status)) return -WTERMSIG(status);
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return 255;
}

std::optional<int> try_reap(int pid) {
    int status = 0;
    for (;;) {
        pid_t r = ::waitpid(pid, &status, WNOHANG);
        if (r == pid) return exit_code_from_status(status);
        if (r == 0) return std::nullopt;
        if (errno == EINTR) continue;
        throw_errno("waitpid");
    }
}

int reap(int pid) {
    int status = 0;
    for (;;) {
        pid_t r = ::waitpid(pid, &status, 0);
        if (r == pid) return exit_code_from_status(status);
        if (errno == EINTR) continue;
        throw_errno("waitpid");
    }
}

int current_pid() noexcept { return static_cast<int>(::getpid()); }
int current_tid() noexcept { return static_cast<int>(::gettid()); }

int thread_count() {
    int fd = ::open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 1;
    char buf[1024];
    ssize_t n = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    if (n <= 0) return 1;
    buf[n] = 0;
    // Fields after the command name, which may contain spaces: the 20th
    // field of the line is num_threads, the 18th after the closing ')'.
    const char* p = std::strrchr(buf, ')');
    if (!p) return 1;
    int field = 2;
    for (; *p && field < 20; ++p)
        if (*p == ' ') ++field;
    return std::max(1, std::atoi(p));
}

std::vector<std::string> other_thread_names() {
    std::vector<std::string> names;
    DIR* dir = ::opendir("/proc/self/task");
    if (!dir) return names;
    int self = current_tid();
    while (dirent* e = ::readdir(dir)) {
        if (e->d_name[0] == '.') continue;
        int tid = std::atoi(e->d_name);
        if (tid == self) continue;
        std::string path = std::string("/proc/self/task/") + e->d_name + "/comm";
        std::string name = "?";
        if (FILE* f = std::fopen(path.c_str(), "re")) {
            char buf[64] = {};
            if (std::fgets(buf, sizeof buf, f)) {
                name = buf;
                if (!name.empty() && name.back() == '\n') name.pop_back();
            }
            std::fclose(f);
        }
        names.push_back(name + " (tid " + e->d_name + ")");
    }
    ::closedir(dir);
    return names;
}

void die_with_parent(int expected_parent_pid) noexcept {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != expected_parent_pid) ::_exit(1);
}

void stdin_to_devnull() noexcept {
    int fd = ::open("/dev/null", O_RDONLY);
    if (fd >= 0 && fd != 0) {
        ::dup2(fd, 0);
        ::close(fd);
    }
}

void send_signal(int pid, int sig) {
    if (::kill(pid, sig) < 0 && errno != ESRCH) throw_errno("kill");
}

void ignore_sigint() noexcept { ::signal(SIGINT, SIG_IGN); }

void reset_signals() noexcept {
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int s = 1; s < NSIG; ++s)
        if (s != SIGKILL && s != SIGSTOP) ::sigaction(s, &dfl, nullptr);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
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

void flush_and_exit(int code) noexcept {
    try {
        std::cout.flush();
        std::cerr.flush();
    } catch (...) {
    }
    std::fflush(nullptr);
    ::_exit(code);
}

}  // namespace mp::sys
