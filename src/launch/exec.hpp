// launch/exec.hpp — starting a fresh run of this executable in a given role.
#pragma once

#include <string>

namespace mp::detail::launch {

/// The environment variable that tells mp::init it runs as a child:
/// "<role>:<parent pid>", role being "spawn" or "forkserver".
inline constexpr char bootstrap_env[] = "MP_BOOTSTRAP";
/// Where a fresh child finds its bootstrap (or forkserver control) socket.
inline constexpr int bootstrap_fd = 3;

/// posix_spawn()s /proc/self/exe with this program's argv, `child_fd` as fd 3,
/// stdin on /dev/null, no other fds, default signals. Returns the pid.
int spawn_self(const std::string& role, int child_fd);

}  // namespace mp::detail::launch
