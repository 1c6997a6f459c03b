// The spawn start method: the child is a fresh run of this executable, which
// mp::init turns into the child's work.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "launch/child_popen.hpp"
#include "launch/exec.hpp"

extern char** environ;

namespace mp::detail::launch {

int spawn_self(const std::string& mode, int child_fd) {
    auto& rt = runtime::get();
    // Build everything before posix_spawn: nothing may allocate in between.
    std::vector<std::string> env_strings;
    const std::string prefix = std::string(bootstrap_env) + "=";
    for (char** e = environ; *e; ++e)
        if (std::strncmp(*e, prefix.c_str(), prefix.size()) != 0) env_strings.emplace_back(*e);
    env_strings.push_back(std::string(bootstrap_env) + "=" + mode + ":" + std::to_string(sys::current_pid()));
    std::vector<char*> envp;
    for (auto& s : env_strings) envp.push_back(s.data());
    envp.push_back(nullptr);
    std::vector<std::string> args = rt.argv;
    if (args.empty()) args.emplace_back("mp-child");
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);

    // The child finds its bootstrap socket at a fixed number; everything else
    // is closed, and its stdin is /dev/null.
    unique_fd high(::fcntl(child_fd, F_DUPFD_CLOEXEC, 10));
    if (!high) sys::throw_errno("fcntl(F_DUPFD_CLOEXEC)");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, high.get(), bootstrap_fd);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addclosefrom_np(&actions, bootstrap_fd + 1);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    // Start with default signal dispositions and nothing blocked, whatever
    // this process (or the thread calling us) has set.
    sigset_t all, none;
    sigfillset(&all);
    sigemptyset(&none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    pid_t pid = 0;
    int err = ::posix_spawn(&pid, "/proc/self/exe", &actions, &attr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    if (err != 0) sys::throw_errno(err, "posix_spawn", "/proc/self/exe");
    return pid;
}

std::unique_ptr<popen> start_spawn(const identity& child, const process_target& target) {
    check_startable_fresh(child, target, start_method::spawn);
    auto [mine, theirs] = sys::socket_pair();
    int pid = spawn_self("spawn", theirs.get());
    auto p = std::make_unique<child_popen>(pid);
    theirs.reset();
    send_bootstrap(std::move(mine), child, target);
    return p;
}

}  // namespace mp::detail::launch
