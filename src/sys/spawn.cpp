#include "sys/spawn.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <unistd.h>

#include "sys/sys.hpp"

namespace mp::sys {

int spawn_program(const char* path, char* const argv[], char* const envp[], int fd, int child_fd_number) {
    // dup2 onto the fixed number needs a source above it (dup2 of a fd onto
    // itself would keep close-on-exec set).
    unique_fd high(::fcntl(fd, F_DUPFD_CLOEXEC, child_fd_number + 1));
    if (!high) throw_errno("fcntl(F_DUPFD_CLOEXEC)");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, high.get(), child_fd_number);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addclosefrom_np(&actions, child_fd_number + 1);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t all, none;
    sigfillset(&all);
    sigemptyset(&none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    pid_t pid = 0;
    int err = ::posix_spawn(&pid, path, &actions, &attr, argv, envp);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    if (err != 0) throw_errno(err, "posix_spawn", path);
    return static_cast<int>(pid);
}

}  // namespace mp::sys
