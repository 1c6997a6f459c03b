// sys/signals.hpp — signal dispositions and signals read as data (signalfd).
// Part of the platform layer.
#pragma once

#include "mp/detail/unique_fd.hpp"

namespace mp::sys {

using detail::unique_fd;

/// Ignore SIGINT in this process (pool workers; Ctrl-C goes to the parent).
void ignore_sigint() noexcept;
/// Restore every signal disposition to default and unblock all signals.
void reset_signals() noexcept;
/// Blocks `sig` in the calling thread and returns a non-blocking signalfd
/// that becomes readable when it arrives. Throws mp::system_error.
unique_fd block_into_signalfd(int sig);
/// Reads every pending signal from a non-blocking signalfd. Never throws.
void drain_signalfd(int fd) noexcept;

}  // namespace mp::sys
