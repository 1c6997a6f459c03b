// sys/terminal.hpp — what mp::progress needs of a terminal: whether an fd is
// one, its width, and writes that never fail the program. Part of the
// platform layer.
#pragma once

#include <string_view>

namespace mp::sys {

/// Whether `fd` is a terminal.
[[nodiscard]] bool is_terminal(int fd) noexcept;
/// The terminal's width in columns; 80 when it cannot be told.
[[nodiscard]] int terminal_width(int fd) noexcept;
/// Writes all of `text` to `fd`, retrying after signals; gives up silently on
/// an error (a progress bar never fails the program).
void write_best_effort(int fd, std::string_view text) noexcept;

}  // namespace mp::sys
