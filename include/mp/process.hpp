// mp/process.hpp — run a function in another process.
//
//     mp::process p(worker, queue, 42);           // or
//     mp::process p({.name = "worker-1", .daemon = false, .context = ctx}, worker, queue, 42);
//     p.start();
//     p.join();                                   // or p.join(500ms) -> false on timeout
//     std::optional<int> code = p.exitcode();     // 0, 1 (uncaught exception), n (std::exit(n)), -N (signal N)
//
// Promises:
// - Arguments must be able to cross a process boundary under every start
//   method (checked at compile time, see mp/serialize.hpp). The target may be a
//   plain function, a captureless lambda, mp::fn<&f>, an mp::function, or a
//   default-constructible or serializable function object; with the fork
//   method any other callable works too (the child inherits it), and start()
//   under spawn/forkserver throws mp::serialization_error for it.
// - No zombies: a started process is always reaped. The destructor of a
//   started process joins it (a daemon is terminated first). No orphans: a
//   child is killed when the process that started it dies, however it dies.
// - The child's standard input is /dev/null. An uncaught exception in the
//   target prints "Process <name>:" and the exception to stderr, exit code 1.
// - The process object keeps its arguments alive until it is joined, so a
//   queue or lock passed to a child outlives the child's use of it.
// Thread-safety: one process object is used by one thread at a time; distinct
// objects may be used from distinct threads.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "mp/context.hpp"
#include "mp/detail/callable.hpp"
#include "mp/error.hpp"
#include "mp/serialize.hpp"
#include "mp/timeout.hpp"

namespace mp {

struct process_options {
    std::string name{};                    // "" → "Process-N"
    bool daemon = false;                   // daemons are terminated, not awaited, by the destructor
    std::optional<mp::context> context{};  // start method; default: mp::get_start_method()
};

namespace detail {

/// What a child runs, in the forms each start method needs.
struct process_target {
    std::function<void()> run_here;  // fork: call the inherited target
    void (*entry)(input_archive&) = nullptr;          // spawn/forkserver: rebuilds and runs the target
    std::function<void(output_archive&)> save;        // writes what `entry` reads
    std::string unsendable;  // non-empty: the callable's type, which cannot be sent
};

template <class F, class... Args>
void process_entry(input_archive& ar) {
    F f = load_callable<F>(ar);
    std::tuple<Args...> args{load_value<Args>(ar)...};
    std::apply([&](auto&... a) { std::invoke(f, a...); }, args);
}

template <class F, class... Args>
process_target make_process_target(F&& f, Args&&... args) {
    (require_transferable<Args>(), ...);
    using fn_type = std::decay_t<F>;
    static_assert(std::is_invocable_v<fn_type&, std::decay_t<Args>&...>,
                  "mp::process: the target cannot be called with these arguments");
    auto bound = std::make_shared<std::tuple<fn_type, std::decay_t<Args>...>>(std::forward<F>(f),
                                                                              std::forward<Args>(args)...);
    process_target t;
    t.run_here = [bound] { std::apply([](auto& fn, auto&... a) { std::invoke(fn, a...); }, *bound); };
    if constexpr (sendable_callable_v<fn_type>) {
        t.entry = detail::sendable<&process_entry<fn_type, std::decay_t<Args>...>>();
        t.save = [bound](output_archive& ar) {
            std::apply(
                [&](const auto& fn, const auto&... a) {
                    save_callable(ar, fn);
                    (save_value(ar, a), ...);
                },
                *bound);
        };
    } else {
        t.unsendable = std::string(type_name<fn_type>());
    }
    return t;
}

struct process_state;

}  // namespace detail

class process {
public:
    template <class F, class... Args>
        requires std::is_invocable_v<std::decay_t<F>&, std::decay_t<Args>&...>
    explicit process(F&& target, Args&&... args)
        : process(process_options{}, std::forward<F>(target), std::forward<Args>(args)...) {}

    template <class F, class... Args>
    process(process_options options, F&& target, Args&&... args)
        : process(std::move(options), detail::make_process_target(std::forward<F>(target),
                                                                  std::forward<Args>(args)...)) {}

    process(process_options options, detail::process_target target);

    process(process&&) noexcept;
    process& operator=(process&&) noexcept;
    process(const process&) = delete;
    process& operator=(const process&) = delete;
    /// Joins a started process; a daemon is terminated first. Never throws.
    ~process();

    /// Starts the child. Throws mp::process_error if already started,
    /// mp::bootstrap_error if spawn/forkserver is used without mp::init,
    /// mp::serialization_error if the target cannot be sent to a fresh process.
    void start();
    /// Waits for the child to end. Throws mp::process_error if not started.
    void join();
    /// Waits at most `timeout`; true if the child has ended.
    [[nodiscard]] bool join(timeout_duration timeout);
    [[nodiscard]] bool is_alive();
    /// nullopt while running or before start; else 0, 1, n, or -N (signal N).
    [[nodiscard]] std::optional<int> exitcode();
    /// 0 before start.
    [[nodiscard]] int pid() const noexcept;
    [[nodiscard]] const std::string& name() const noexcept;
    [[nodiscard]] bool daemon() const noexcept;
    [[nodiscard]] start_method method() const noexcept;
    /// SIGTERM / SIGKILL the child (no effect once it has ended).
    void terminate();
    void kill();
    /// An fd that becomes readable when the child ends (for mp::wait / poll).
    [[nodiscard]] int sentinel() const;

private:
    std::shared_ptr<detail::process_state> state_;
};

template <class F, class... Args>
mp::process context::process(F&& target, Args&&... args) const {
    return mp::process(process_options{.context = *this}, std::forward<F>(target), std::forward<Args>(args)...);
}

}  // namespace mp
