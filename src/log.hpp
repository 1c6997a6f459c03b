// log.hpp — how mp's sources emit a diagnostic (see <mp/log.hpp>).
#pragma once

#include <string_view>

#include "mp/log.hpp"

namespace mp::detail {

/// Passes `message` (one line, no newline, starting with "mp: ") to the
/// handler set with mp::set_log_handler, or writes it to standard error.
/// Never throws; calls the handler with no lock of mp's held.
void log(log_level level, std::string_view message) noexcept;

}  // namespace mp::detail
