// mp/log.hpp — where mp's own diagnostics go.
//
// mp reports a few things that are not errors of the call at hand: a fork
// started while other threads run, a pool worker that could not be replaced
// yet, an exception thrown by a future's done-callback. By default each is one
// line on standard error; set_log_handler routes them to your logging instead:
//
//     mp::set_log_handler([](mp::log_level level, std::string_view message) {
//         spdlog::log(level == mp::log_level::error ? spdlog::level::err : spdlog::level::warn, message);
//     });
#pragma once

#include <functional>
#include <string_view>

namespace mp {

/// How serious a diagnostic is.
enum class log_level {
    debug,    ///< details for whoever debugs mp itself
    info,     ///< something worth knowing, nothing wrong
    warning,  ///< something that may go wrong (Python's warnings and logger.warning)
    error,    ///< something went wrong and mp carried on (a dropped result, a failed restart)
};

/// "debug", "info", "warning" or "error".
[[nodiscard]] std::string_view to_string(log_level level) noexcept;

/// Receives each diagnostic: its level and one line of text, without a
/// trailing newline, starting with "mp: ".
using log_handler = std::function<void(log_level level, std::string_view message)>;

/// Routes mp's diagnostics to `handler` from now on, in this process, and
/// returns the previous handler. An empty handler restores the default, which
/// writes each message and a newline to standard error.
///
/// The handler may be called from any thread, including mp's own background
/// threads, possibly from several at once; it must not call back into mp.
/// Exceptions it throws are swallowed (the message then goes to standard
/// error). A fork child inherits the handler; a spawn or forkserver child
/// starts with the default, like any other global state.
/// Thread-safe.
log_handler set_log_handler(log_handler handler);

}  // namespace mp
