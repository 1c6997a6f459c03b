// sys/spawn.hpp — starting a fresh program (posix_spawn). Part of the
// platform layer.
#pragma once

namespace mp::sys {

/// posix_spawn()s `path` with `argv` and `envp` (null-terminated arrays built
/// by the caller: nothing may allocate between the two halves of a spawn),
/// `fd` as the child's descriptor `child_fd_number`, stdin on /dev/null,
/// every other descriptor above `child_fd_number` closed, default signal
/// dispositions and nothing blocked, whatever this process or the calling
/// thread has set. Returns the pid. Throws mp::system_error.
int spawn_program(const char* path, char* const argv[], char* const envp[], int fd, int child_fd_number);

}  // namespace mp::sys
