// The spawn start method: the child is a fresh run of this executable, which
// mp::init turns into the child's work.
#include <cstring>
#include <string>

#include "launch/child_popen.hpp"
#include "launch/exec.hpp"
#include "sys/spawn.hpp"

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
    return sys::spawn_program("/proc/self/exe", argv.data(), envp.data(), child_fd, bootstrap_fd);
}

std::unique_ptr<popen> start_spawn(const identity& child, const process_target& target) {
    check_startable_fresh(child, target, start_method::spawn);
    // Everything that can fail is had before the child exists: a start that
    // throws leaves no child behind.
    output_archive bootstrap;
    write_bootstrap(bootstrap, child, target);
    auto [mine, theirs] = sys::socket_pair();
    auto p = std::make_unique<child_popen>();
    sys::pidfd_reservation slot;
    int pid = spawn_self("spawn", theirs.get());
    p->attach(pid, slot.open_for(pid));
    theirs.reset();
    try {
        send_bootstrap(std::move(mine), bootstrap);
    } catch (...) {
        sys::kill_and_reap(pid);  // a child that cannot get its work must not run on
        throw;
    }
    return p;
}

}  // namespace mp::detail::launch
