#include "sys/process.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>

#include "sys/sys.hpp"

namespace mp::sys {

namespace {
int raw_pidfd_open(int pid) noexcept {
    long fd = ::syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0) return -1;
    // pidfd_open sets close-on-exec itself (kernel 5.3+: O_CLOEXEC is implied).
    return static_cast<int>(fd);
}
}  // namespace

int fork_process() {
    pid_t pid = ::fork();
    if (pid < 0) throw_errno("fork");
    return static_cast<int>(pid);
}

pidfd_reservation::pidfd_reservation() {
    // Any descriptor holds the slot; our own pidfd also proves that the
    // kernel has pidfds before any child exists.
    int fd = raw_pidfd_open(::getpid());
    if (fd < 0) throw_errno("pidfd_open");
    reserved_.reset(fd);
}

unique_fd pidfd_reservation::open_for(int pid) {
    reserved_.reset();
    int fd = raw_pidfd_open(pid);
    if (fd < 0) {
        int err = errno;
        kill_and_reap(pid);
        throw_errno(err, "pidfd_open");
    }
    return unique_fd(fd);
}

void kill_and_reap(int pid) noexcept {
    // Still our unreaped child: the pid cannot belong to anyone else yet.
    ::kill(pid, SIGKILL);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
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

std::optional<reaped_child> reap_any_nowait() noexcept {
    int status = 0;
    for (;;) {
        pid_t r = ::waitpid(-1, &status, WNOHANG);
        if (r > 0) return reaped_child{static_cast<int>(r), exit_code_from_status(status)};
        if (r < 0 && errno == EINTR) continue;
        return std::nullopt;
    }
}

void send_signal(int pid, int sig) {
    if (::kill(pid, sig) < 0 && errno != ESRCH) throw_errno("kill");
}

int current_pid() noexcept { return static_cast<int>(::getpid()); }

void set_thread_name(const std::string& name) noexcept {
    char comm[16];  // the kernel's limit, with the terminating zero
    std::size_t n = std::min(name.size(), sizeof comm - 1);
    std::memcpy(comm, name.data(), n);
    comm[n] = '\0';
    (void)::pthread_setname_np(::pthread_self(), comm);
}
int current_tid() noexcept { return static_cast<int>(::gettid()); }

int usable_cpu_count() noexcept {
    cpu_set_t set;
    if (::sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
    return 1;
}

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

fd_usage current_fd_usage() noexcept {
    fd_usage usage;
    rlimit lim{};
    if (::getrlimit(RLIMIT_NOFILE, &lim) == 0)
        usage.limit = lim.rlim_cur == RLIM_INFINITY ? -1 : static_cast<long>(lim.rlim_cur);
    // Counting needs no descriptor of its own when none is left: the
    // directory stream itself would need one, so EMFILE gives 0 entries.
    if (DIR* dir = ::opendir("/proc/self/fd")) {
        while (dirent* e = ::readdir(dir))
            if (e->d_name[0] != '.') ++usage.open;
        --usage.open;  // the directory stream's own
        ::closedir(dir);
    } else {
        usage.open = usage.limit > 0 ? static_cast<int>(usage.limit) : 0;
    }
    return usage;
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
