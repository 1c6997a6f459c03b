// The forkserver start method: a clean server process, itself a fresh run of
// this executable, forks each child. The server holds no user state, so its
// children start clean and start fast.
//
// Protocol: the user process keeps a SOCK_SEQPACKET control socket to its
// server. Each request is one message carrying two fds: the child's bootstrap
// socket and a status socket. The server forks; the child, which keeps none of
// the server's descriptors, reads its work from the bootstrap socket; the
// server writes the child's pid (int32; -errno if the fork failed) and, once
// it has reaped the child, its exit code (int32) to the status socket. The server
// exits when the control socket reaches EOF, that is when every process that
// could send it a request is gone; its children die with it.
#include <signal.h>
#include <sys/uio.h>  // struct iovec only

#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>

#include "launch/exec.hpp"
#include "launch/launch.hpp"
#include "log.hpp"
#include "sys/sync_sys.hpp"

namespace mp::detail::launch {
namespace {

struct server_handle {
    sys::fork_guarded_mutex mutex;
    int pid = 0;          // guarded by mutex; 0: no server (yet, or in a fork child)
    unique_fd control;    // guarded by mutex
};

server_handle& handle() {
    // Never destroyed: used from atexit.
    static server_handle* h = [] {
        auto* made = new server_handle;
        // The server belongs to the parent; a fork child starts its own if
        // it needs one, and must not hold the parent's control socket open.
        sys::register_after_fork([] {
            auto& self = handle();
            self.control.reset();
            self.pid = 0;
        });
        return made;
    }();
    return *h;
}

void stop_server_at_exit() {
    auto& h = handle();
    std::lock_guard guard(h.mutex);
    if (h.pid == 0) return;
    h.control.reset();  // EOF: the server exits
    try {
        sys::reap(h.pid);
    } catch (const std::exception&) {
        // Already reaped by someone else's waitpid(-1): nothing left to do.
    }
    h.pid = 0;
}

int ensure_server(server_handle& h) {
    if (h.pid != 0) return h.control.get();
    auto [mine, theirs] = sys::socket_pair(true);
    int pid = spawn_self("forkserver", theirs.get());
    h.pid = pid;
    h.control = std::move(mine);
    static std::once_flag registered;
    std::call_once(registered, [] { std::atexit(stop_server_at_exit); });
    return h.control.get();
}

bool read_int(int fd, std::int32_t& value) {
    std::size_t got = 0;
    auto* p = reinterpret_cast<char*>(&value);
    while (got < sizeof value) {
        long n = sys::recv_raw(fd, p + got, sizeof value - got);
        if (n <= 0) return false;
        got += static_cast<std::size_t>(n);
    }
    return true;
}

}  // namespace

// Also used by the server loop below, outside this namespace.
void write_int(int fd, std::int32_t value) {
    // A status socket whose reader is gone is simply dropped.
    static_cast<void>(sys::send_raw(fd, &value, sizeof value));
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
    std::lock_guard guard(h.mutex);
    return h.pid;
}

std::unique_ptr<popen> start_forkserver(const identity& child, const process_target& target) {
    check_startable_fresh(child, target, start_method::forkserver);
    output_archive bootstrap;
    write_bootstrap(bootstrap, child, target);
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
                try {
                    sys::reap(h.pid);
                } catch (const std::exception&) {
                    // Reaped already by someone else's waitpid(-1).
                }
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
                            "': it dropped the request (out of file descriptors) or died. Check the "
                            "descriptor limit (ulimit -n) and whether something killed the server");
    // A failed fork in the server comes back as -errno.
    if (pid <= 0) sys::throw_errno(-pid, "fork (in the forkserver)");
    // If the bootstrap cannot be sent, the child reads end of file, exits,
    // and the server reaps it: nothing runs on.
    auto p = std::make_unique<forkserver_popen>(pid, std::move(status_mine));
    send_bootstrap(std::move(boot_mine), bootstrap);
    return p;
}

}  // namespace mp::detail::launch

namespace mp::detail {

std::unique_lock<sys::fork_guarded_mutex> lock_forkserver_handle_for_test() {
    return std::unique_lock(launch::handle().mutex);
}

void run_forkserver(int control_fd, int /*parent_pid*/) {
    // Ctrl-C goes to the whole foreground process group; the server must not
    // die before its parent, which decides what happens to the children.
    sys::ignore_sigint();
    unique_fd control(control_fd);
    unique_fd sigchld;
    try {
        sigchld = sys::block_into_signalfd(SIGCHLD);
    } catch (const std::exception& e) {
        detail::log(log_level::warning, std::string("mp: the forkserver cannot start: ") + e.what());
        sys::flush_and_exit(1);
    }
    std::map<int, unique_fd> status_fds;  // child pid -> its status socket
    const int self = sys::current_pid();

    try {
        for (;;) {
            const int watched[2] = {control.get(), sigchld.get()};
            auto ready = sys::wait_any_readable(watched, std::nullopt);
            bool request = false;
            for (std::size_t i : ready) {
                if (i == 0) request = true;
                if (i != 1) continue;
                sys::drain_signalfd(sigchld.get());
                while (auto ended = sys::reap_any_nowait()) {
                    auto it = status_fds.find(ended->pid);
                    if (it == status_fds.end()) continue;
                    launch::write_int(it->second.get(), ended->exit_code);
                    status_fds.erase(it);
                }
            }
            if (!request) continue;
            char byte;
            std::vector<unique_fd> fds;
            if (sys::recv_some(control.get(), &byte, 1, &fds, false) <= 0)
                break;  // every process that could ask is gone
            if (fds.size() != 2) continue;  // truncated (no fds left here): the requester sees EOF
            int pid = 0;
            try {
                pid = sys::fork_process();
            } catch (const system_error& e) {
                launch::write_int(fds[1].get(), -e.code().value());
                continue;
            }
            if (pid == 0) {
                // The child holds its own bootstrap socket and nothing else
                // of the server's: not the control socket, not the signalfd,
                // not its siblings' status sockets (a pool of n workers would
                // otherwise give each of them n descriptors).
                control.reset();
                sigchld.reset();
                for (auto& [sibling, fd] : status_fds) fd.reset();
                fds[1].reset();
                sys::reset_signals();
                sys::die_with_parent(self);
                run_bootstrapped_child(fds[0].release());
            }
            launch::write_int(fds[1].get(), pid);
            status_fds[pid] = std::move(fds[1]);
        }
    } catch (const std::exception& e) {
        detail::log(log_level::warning, std::string("mp: the forkserver stops: ") + e.what());
        sys::flush_and_exit(1);
    }
    sys::flush_and_exit(0);
}

}  // namespace mp::detail
