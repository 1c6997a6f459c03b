// mp/context.hpp — start-up, start methods, and who this process is.
//
//     int main(int argc, char** argv) {
//         mp::init(argc, argv);  // first line of main
//         ...
//     }
//
// mp::init is the C++ form of Python's `if __name__ == '__main__':
// freeze_support()`. A spawn or forkserver child is a fresh run of this same
// executable: in such a run mp::init does the child's work and exits, never
// returning. In the user's own run it returns at once.
//
// Start methods, as in Python: fork (the child is a copy of the parent),
// spawn (a fresh run of the executable), forkserver (a clean server process,
// itself a fresh run, forks each child). The default is forkserver.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mp {

class process;
class pool;
struct pool_options;
class process_pool_executor;
struct process_pool_executor_options;
template <class T>
class queue;
template <class T>
class simple_queue;
template <class T>
class joinable_queue;

enum class start_method { fork, spawn, forkserver };

[[nodiscard]] std::string_view to_string(start_method m) noexcept;

/// Must be the first statement of main(). In a process that mp started with
/// spawn or forkserver it runs that child's work and exits; otherwise it
/// records argv (a spawn child is started with the same arguments) and
/// returns. Thread-safe; calling it twice is harmless.
void init(int argc, char** argv);

/// Sets the start method used when none is given. Call it before starting
/// any process; afterwards it throws mp::process_error unless `force`.
void set_start_method(start_method m, bool force = false);
[[nodiscard]] start_method get_start_method() noexcept;
[[nodiscard]] std::vector<start_method> get_all_start_methods();

/// A start method to create processes, pools and executors with, as Python's
/// multiprocessing.get_context(): `ctx.process(f, args...)` is
/// `mp::process({.context = ctx}, f, args...)`, and passing a context in any
/// options (`{.context = ctx}`) uses its start method. The factories are
/// defined with the types they make (include that type's header to use one).
class context {
public:
    explicit context(start_method m) noexcept : method_(m) {}
    [[nodiscard]] start_method get_start_method() const noexcept { return method_; }
    friend bool operator==(const context&, const context&) = default;

    /// An unstarted process with this start method (mp/process.hpp).
    template <class F, class... Args>
    [[nodiscard]] mp::process process(F&& target, Args&&... args) const;
    /// Queues work the same under every start method; these exist so code
    /// written against a context reads as in Python (mp/queue.hpp).
    template <class T>
    [[nodiscard]] mp::queue<T> queue(std::size_t maxsize = 0) const;
    template <class T>
    [[nodiscard]] mp::simple_queue<T> simple_queue() const;
    template <class T>
    [[nodiscard]] mp::joinable_queue<T> joinable_queue(std::size_t maxsize = 0) const;
    /// A pool of worker processes started with this method (mp/pool.hpp):
    /// `options.context` is this context.
    [[nodiscard]] mp::pool pool(int processes) const;
    [[nodiscard]] mp::pool pool(mp::pool_options options) const;
    /// A process executor whose workers start with this method
    /// (mp/process_pool_executor.hpp).
    [[nodiscard]] mp::process_pool_executor process_pool_executor(int max_workers) const;
    [[nodiscard]] mp::process_pool_executor process_pool_executor(mp::process_pool_executor_options options) const;

private:
    start_method method_;
};

/// A context for `m`, or for the current default.
[[nodiscard]] context get_context(std::optional<start_method> m = std::nullopt);

/// Number of CPUs this process may run on.
[[nodiscard]] int cpu_count();

/// Describes a process: the current one, the parent, or a running child.
struct process_info {
    std::string name_;
    int pid_ = 0;
    bool daemon_ = false;

    [[nodiscard]] const std::string& name() const noexcept { return name_; }
    [[nodiscard]] int pid() const noexcept { return pid_; }
    [[nodiscard]] bool daemon() const noexcept { return daemon_; }
};

/// This process: "MainProcess" in the program's own process, "Process-1",
/// "ForkPoolWorker-3", ... in children.
[[nodiscard]] process_info current_process();
/// The process that started this one; empty in the main process.
[[nodiscard]] std::optional<process_info> parent_process();
/// Children of this process that are still running (finished ones are reaped
/// as a side effect, as in Python).
[[nodiscard]] std::vector<process_info> active_children();

}  // namespace mp
