#include "sys/sync_sys.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>

#include "sys/sys.hpp"

namespace mp::sys {

unique_fd shm_create(const std::string& name, std::size_t size) {
    int fd = ::shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) throw_errno("shm_open", name);
    unique_fd owned(fd);
    if (::ftruncate(fd, static_cast<off_t>(size)) < 0) {
        int err = errno;
        ::shm_unlink(name.c_str());
        throw_errno(err, "ftruncate", name);
    }
    try {
        // Pages now, or an exception: unreserved, the first write into a full /dev/shm dies of SIGBUS.
        reserve(fd, 0, size, "shared_memory " + name);
    } catch (...) {
        ::shm_unlink(name.c_str());
        throw;
    }
    return owned;
}

unique_fd shm_attach(const std::string& name) {
    int fd = ::shm_open(name.c_str(), O_RDWR | O_CLOEXEC, 0);
    if (fd < 0) throw_errno("shm_open", name);
    return unique_fd(fd);
}

void shm_remove(const std::string& name) {
    if (::shm_unlink(name.c_str()) < 0) throw_errno("shm_unlink", name);
}

std::size_t fd_size(int fd) {
    struct stat st {};
    if (::fstat(fd, &st) < 0) throw_errno("fstat");
    return static_cast<std::size_t>(st.st_size);
}

std::uint64_t random_u64() {
    std::uint64_t v = 0;
    auto* p = reinterpret_cast<unsigned char*>(&v);
    std::size_t got = 0;
    while (got < sizeof v) {
        ssize_t n = ::getrandom(p + got, sizeof v - got, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            // No getrandom (old kernel, seccomp): fall back to the library's source.
            std::random_device rd;
            return (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
        }
        got += static_cast<std::size_t>(n);
    }
    return v;
}

// _Fork, not fork: no pthread_atfork handlers run, so the helper starts as a
// bare copy that only makes system calls (async-signal-safe, as the helper needs).
int fork_raw() noexcept { return static_cast<int>(::_Fork()); }

void become_helper(int keep, const char* comm) noexcept {
    struct sigaction ign {};
    ign.sa_handler = SIG_IGN;
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE}) ::sigaction(s, &ign, nullptr);
    // Every other signal goes back to its default action: the parent's
    // handlers are C++ code that must not run here.
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int s = 1; s < NSIG; ++s) {
        if (s == SIGKILL || s == SIGSTOP || s == SIGINT || s == SIGTERM || s == SIGHUP || s == SIGQUIT ||
            s == SIGPIPE)
            continue;
        ::sigaction(s, &dfl, nullptr);
    }
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);

    // stdio to /dev/null: the helper has nothing to say, and holding the
    // parent's stdout would keep a reader of that pipe waiting for it.
    int null = ::open("/dev/null", O_RDWR);
    if (null >= 0) {
        for (int i = 0; i < 3; ++i)
            if (i != keep) ::dup2(null, i);
        if (null > 2 && null != keep) ::close(null);
    }
    if (keep > 3) ::syscall(SYS_close_range, 3U, static_cast<unsigned>(keep - 1), 0U);
    ::syscall(SYS_close_range, static_cast<unsigned>(keep < 3 ? 3 : keep + 1), ~0U, 0U);
    ::prctl(PR_SET_NAME, comm, 0, 0, 0);
}

long recv_raw(int fd, void* buf, std::size_t len) noexcept {
    for (;;) {
        ssize_t n = ::recv(fd, buf, len, 0);
        if (n >= 0) return static_cast<long>(n);
        if (errno == EINTR) continue;
        if (errno == ECONNRESET) return 0;
        return -1;
    }
}

bool send_raw(int fd, const void* buf, std::size_t len) noexcept {
    for (;;) {
        ssize_t n = ::send(fd, buf, len, MSG_NOSIGNAL);
        if (n >= 0) return static_cast<std::size_t>(n) == len;
        if (errno == EINTR) continue;
        return false;
    }
}

void* map_anonymous(std::size_t size) noexcept {
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? nullptr : p;
}

void unmap_anonymous(void* addr, std::size_t size) noexcept {
    if (addr) ::munmap(addr, size);
}

void shm_remove_raw(const char* name) noexcept { ::shm_unlink(name); }

void remove_socket_and_directory_raw(const char* socket_path) noexcept {
    ::unlink(socket_path);
    char dir[PATH_MAX];
    std::size_t len = 0, last_slash = 0;
    for (; socket_path[len] && len + 1 < sizeof dir; ++len) {
        dir[len] = socket_path[len];
        if (socket_path[len] == '/') last_slash = len;
    }
    if (last_slash == 0) return;  // no directory of its own (or the root)
    dir[last_slash] = '\0';
    ::rmdir(dir);
}

void exit_raw(int code) noexcept { ::_exit(code); }

std::uint64_t process_start_time(int pid) noexcept {
    char path[40];
    std::snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char buf[1024];
    ssize_t n;
    do {
        n = ::read(fd, buf, sizeof buf - 1);
    } while (n < 0 && errno == EINTR);
    ::close(fd);
    if (n <= 0) return 0;
    buf[n] = '\0';
    // The command name (field 2) may hold spaces and parentheses: fields are
    // counted from the last ')'. Field 3 is the state, field 22 the start time.
    const char* p = std::strrchr(buf, ')');
    if (!p || p[1] != ' ') return 0;
    const char state = p[2];
    if (state == 'Z' || state == 'X' || state == 'x') return 0;
    int field = 2;
    for (; *p && field < 22; ++p)
        if (*p == ' ') ++field;
    if (field != 22) return 0;
    return std::strtoull(p, nullptr, 10);
}

bool reap_within(int pid, std::chrono::milliseconds limit) noexcept {
    auto deadline = std::chrono::steady_clock::now() + limit;
    int status = 0;
    long pidfd = ::syscall(SYS_pidfd_open, pid, 0);
    for (;;) {
        pid_t r = ::waitpid(pid, &status, WNOHANG);
        if (r == pid || (r < 0 && errno != EINTR)) break;
        auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            if (pidfd >= 0) ::close(static_cast<int>(pidfd));
            return false;
        }
        if (pidfd >= 0) {
            pollfd p{static_cast<int>(pidfd), POLLIN, 0};
            ::poll(&p, 1, static_cast<int>(left.count()));
        } else {
            ::usleep(1000);
        }
    }
    if (pidfd >= 0) ::close(static_cast<int>(pidfd));
    return true;
}

}  // namespace mp::sys
