// The forkserver start method: a clean server process, itself a fresh run of
// this executable, forks each child. The server holds no user state, so its
// children start clean and start fast.
//
// Protocol: the user process keeps a SOCK_SEQPACKET control socket to its
// server. Each request is one message carrying two fds: the child's bootstrap
// socket and a status socket. The server forks; the child reads its work from
// the bootstrap socket; the server writes the child's pid (int32) and, once it
// has reaped the child, its exit code (int32) to the status socket. The server
// exits when the control socket reaches EOF, that is when every process that
// could send it a request is gone; its children die with it.
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#include "launch/exec.hpp"
#include "launch/launch.hpp"

namespace mp::detail::launch {
namespace {

struct server_handle {
    std::mutex mutex;
    int pid = 0;          // guarded by mutex
    int owner_pid = 0;    // the process that started it (a fork child must not use it)
    unique_fd control;    // guarded by mutex
};

server_handle& handle() {
    static server_handle* h = new server_handle;  // never destroyed: used from atexit
    return *h;
}

void stop_server_at_exit() {
    auto& h = handle();
    if (h.owner_pid != sys::current_pid() || h.pid == 0) return;
    h.control.reset();  // EOF: the server exits
    int status = 0;
    ::waitpid(h.pid, &status, 0);
    h.pid = 0;
}

int ensure_server(server_handle& h) {
    if (h.pid != 0 && h.owner_pid == sys::current_pid()) return h.control.get();
    auto [mine, theirs] = sys::socket_pair(true);
    int pid = spawn_self("forkserver", theirs.get());
    h.pid = pid;
    h.owner_pid = sys::current_pid();
    h.control = std::move(mine);
    static std::once_flag registered;
    std::call_once(registered, [] { std::atexit(stop_server_at_exit); });
    return h.control.get();
}

bool read_int(int fd, std::int32_t& value) {
    std::size_t got = 0;
    auto* p = reinterpret_cast<char*>(&value);
    while (got < sizeof value) {
        ssize_t n = ::read(fd, p + got, sizeof value - got);
        if (n > 0) {
            got += static_cast<std::size_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        return false;
    }
    return true;
}

}  // namespace

// Also used by the server loop below, outside this namespace.
void write_int(int fd, std::int32_t value) {
    // A status socket whose reader is gone is simply dropped.
    [[maybe_unused]] ssize_t n = ::send(fd, &value, sizeof value, MSG_NOSIGNAL);
}

namespace {

class forkserver_popen final : public popen {
public:
    forkserver_popen(int pid, unique_fd status) : status_(std::move(status)) { pid_ = pid; }

    [[nodiscard]] int sentinel() const noexcept override { return status_.get(); }

    std::optional<int> poll() override { return wait(sys::clock::now()); }

    std::optional<int> wait(deadline until) override {
        if (exit_code_) return exit_code_;
        if (!sys::wait_readable(status_.get(), until)) return std::nullopt;
        std::int32_t code = 0;
        // EOF without a code: the server died, and its children with it.
        exit_code_ = read_int(status_.get(), code) ? code : -SIGKILL;
        return exit_code_;
    }

private:
    unique_fd status_;
};

}  // namespace

int forkserver_pid() noexcept {
    auto& h = handle();
    return h.owner_pid == sys::current_pid() ? h.pid : 0;
}

void forkserver_after_fork_in_child() noexcept {
    // The server belongs to the parent; this child starts its own if it needs one.
    auto& h = handle();
    new (&h.mutex) std::mutex;
    h.control.reset();
    h.pid = 0;
    h.owner_pid = 0;
}

std::unique_ptr<popen> start_forkserver(const identity& child, const process_target& target) {
    check_startable_fresh(child, target, start_method::forkserver);
    auto [boot_mine, boot_theirs] = sys::socket_pair();
    auto [status_mine, status_theirs] = sys::socket_pair();
    {
        auto& h = handle();
        std::lock_guard guard(h.mutex);
        for (int attempt = 0;; ++attempt) {
            int control = ensure_server(h);
            char request = 'F';
            ::iovec iov{&request, 1};
            int fds[2] = {boot_theirs.get(), status_theirs.get()};
            try {
                sys::send_all(control, std::span<const ::iovec>(&iov, 1), fds);
                break;
            } catch (const eof_error&) {
                // The server died (killed by someone): reap it, start a new one, once.
                ::waitpid(h.pid, nullptr, 0);
                h.pid = 0;
                h.control.reset();
                if (attempt > 0) throw;
            }
        }
    }
    boot_theirs.reset();
    status_theirs.reset();
    std::int32_t pid = 0;
    if (!read_int(status_mine.get(), pid))
        throw process_error("mp: the forkserver could not start process '" + child.name +
                            "' (the server process died)");
    auto p = std::make_unique<forkserver_popen>(pid, std::move(status_mine));
    send_bootstrap(std::move(boot_mine), child, target);
    return p;
}

}  // namespace mp::detail::launch

namespace mp::detail {

void run_forkserver(int control_fd, int /*parent_pid*/) {
    // Ctrl-C goes to the whole foreground process group; the server must not
    // die before its parent, which decides what happens to the children.
    ::signal(SIGINT, SIG_IGN);
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    ::sigprocmask(SIG_BLOCK, &chld, nullptr);
    int sigfd = ::signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sigfd < 0) sys::flush_and_exit(1);
    std::map<int, int> status_fds;  // child pid -> status socket
    int self = sys::current_pid();

    for (;;) {
        pollfd p[2] = {{control_fd, POLLIN, 0}, {sigfd, POLLIN, 0}};
        if (::poll(p, 2, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (p[1].revents) {
            signalfd_siginfo info;
            while (::read(sigfd, &info, sizeof info) == sizeof info) {
            }
            int status = 0;
            pid_t pid;
            while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
                auto it = status_fds.find(pid);
                if (it == status_fds.end()) continue;
                launch::write_int(it->second, sys::exit_code_from_status(status));
                ::close(it->second);
                status_fds.erase(it);
            }
        }
        if (p[0].revents) {
            char request;
            std::vector<unique_fd> fds;
            long n = sys::recv_some(control_fd, &request, 1, &fds, false);
            if (n <= 0) break;  // every process that could ask is gone
            if (fds.size() != 2) continue;
            pid_t pid = ::fork();
            if (pid == 0) {
                ::close(control_fd);
                ::close(sigfd);
                sys::reset_signals();
                sys::die_with_parent(self);
                int boot = fds[0].release();
                fds[1].reset();
                run_bootstrapped_child(boot);
            }
            if (pid < 0) continue;  // the status socket closes: the requester sees the failure
            int status_fd = fds[1].release();
            launch::write_int(status_fd, pid);
            status_fds[pid] = status_fd;
        }
    }
    sys::flush_and_exit(0);
}

}  // namespace mp::detail
