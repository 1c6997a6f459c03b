// launch/launch.hpp — one launcher per start method behind one small
// interface, as CPython's popen_fork / popen_spawn_posix / popen_forkserver.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string_view>

#include "mp/process.hpp"
#include "runtime.hpp"
#include "sys/sys.hpp"

namespace mp::detail::launch {

using deadline = std::optional<sys::clock::time_point>;

/// A started child, however it was started.
class popen {
public:
    virtual ~popen() = default;
    [[nodiscard]] int pid() const noexcept { return pid_; }
    /// Readable once the child has ended.
    [[nodiscard]] virtual int sentinel() const noexcept = 0;
    /// The exit code if the child has ended (reaping it), else nullopt.
    virtual std::optional<int> poll() = 0;
    /// Waits until the child ends or `deadline`; the exit code, or nullopt on timeout.
    virtual std::optional<int> wait(deadline until) = 0;
    /// Sends `sig` unless the child is known to have ended.
    void send_signal(int sig);

protected:
    int pid_ = 0;
    std::optional<int> exit_code_;
};

std::unique_ptr<popen> start_fork(const identity& child, const process_target& target);
std::unique_ptr<popen> start_spawn(const identity& child, const process_target& target);
std::unique_ptr<popen> start_forkserver(const identity& child, const process_target& target);

/// Writes everything a fresh child needs: who it is, what to inherit, what to
/// run. Done before the child exists, so that a target that cannot be
/// serialized fails with no child left behind.
void write_bootstrap(output_archive& ar, const identity& child, const process_target& target);
/// Sends what write_bootstrap wrote to the child's bootstrap socket.
void send_bootstrap(unique_fd fd, output_archive& ar);
/// Throws the errors that make a target impossible to start in a fresh process.
void check_startable_fresh(const identity& child, const process_target& target, start_method method);

/// Runs `body` as a child's work; returns the exit code (1 after printing an
/// uncaught exception, as Python does).
int run_guarded(std::string_view process_name, const std::function<void()>& body) noexcept;

/// Runs `job` (which starts a child) on the main thread if called there, else
/// on a long-lived launcher thread, so that the child is not killed when the
/// calling thread exits. Rethrows what `job` throws.
void run_where_children_may_start(const std::function<void()>& job);

/// The pid of this process's forkserver, 0 if it has none.
int forkserver_pid() noexcept;

}  // namespace mp::detail::launch
