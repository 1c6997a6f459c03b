// Process-wide state, mp::init, start methods, and who this process is.
#include "runtime.hpp"

#include <stdlib.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>

#include "launch/exec.hpp"
#include "launch/launch.hpp"
#include "log.hpp"
#include "shm_tracker.hpp"
#include "sys/sys.hpp"

namespace mp::detail {

runtime& runtime::get() {
    // Never destroyed: children and atexit handlers may still use it.
    static runtime* rt = [] {
        auto* r = new runtime;
        std::random_device rd;
        for (auto& b : r->self.authkey) b = static_cast<std::uint8_t>(rd());
        // A fork child is nobody's parent yet: the children it inherited are
        // its siblings, which it can neither wait for nor signal as its own.
        sys::register_after_fork([] {
            auto& self = get();
            self.children.clear();
            self.warned_threads_at_fork = false;
        });
        return r;
    }();
    return *rt;
}

int runtime::reserve_child_number(std::string& default_name) {
    std::lock_guard guard(mutex);
    int number = ++child_counter;
    default_name = "Process-";
    for (int id : self.ids) default_name += std::to_string(id) + ":";
    default_name += std::to_string(number);
    return number;
}

identity runtime::next_child(const std::string& requested_name, bool daemon, start_method method,
                             const char* name_prefix, int number) {
    (void)method;
    std::lock_guard guard(mutex);
    start_method_fixed = true;
    identity child = self;
    child.ids.push_back(number ? number : ++child_counter);
    if (requested_name.empty()) {
        child.name = name_prefix;
        child.name += '-';
        for (std::size_t i = 0; i < child.ids.size(); ++i) {
            if (i) child.name += ':';
            child.name += std::to_string(child.ids[i]);
        }
    } else {
        child.name = requested_name;
    }
    child.daemon = daemon;
    child.parent_pid = sys::current_pid();
    child.parent_name = self.name;
    return child;
}

void runtime::become_fork_child(identity child) {
    std::lock_guard guard(mutex);
    self = std::move(child);
    child_counter = 0;
}

void runtime::adopt(identity child) {
    std::lock_guard guard(mutex);
    self = std::move(child);
    child_counter = 0;
}

void warn_if_threads_at_fork() {
    auto& rt = runtime::get();
    {
        std::lock_guard guard(rt.mutex);
        if (rt.warned_threads_at_fork) return;
    }
    if (sys::thread_count() <= 1) return;
    auto others = sys::other_thread_names();
    if (others.empty()) return;
    {
        std::lock_guard guard(rt.mutex);
        if (rt.warned_threads_at_fork) return;
        rt.warned_threads_at_fork = true;
    }
    std::string list;
    for (const auto& t : others) list += (list.empty() ? "" : ", ") + t;
    // Logged with no lock held: the handler is user code.
    detail::log(log_level::warning,
                "mp: warning: starting a process with the fork method while this process runs other threads (" +
                    list +
                    "). Those threads do not exist in the child, and any lock they hold stays locked there, "
                    "which may deadlock it. Prefer the forkserver or spawn start method.");
}

std::vector<int> helper_pids() {
    std::vector<int> pids;
    if (int p = launch::forkserver_pid()) pids.push_back(p);
    if (int p = shm_tracker::helper_pid()) pids.push_back(p);
    return pids;
}

}  // namespace mp::detail

namespace mp {

std::string_view to_string(start_method m) noexcept {
    switch (m) {
        case start_method::fork: return "fork";
        case start_method::spawn: return "spawn";
        case start_method::forkserver: return "forkserver";
    }
    return "?";
}

void init(int argc, char** argv) {
    auto& rt = detail::runtime::get();
    if (const char* boot = std::getenv(detail::launch::bootstrap_env)) {
        std::string value = boot;
        ::unsetenv(detail::launch::bootstrap_env);
        auto colon = value.find(':');
        std::string role = value.substr(0, colon);
        int parent = colon == std::string::npos ? 0 : std::atoi(value.c_str() + colon + 1);
        rt.initialized = true;
        for (int i = 0; i < argc; ++i) rt.argv.emplace_back(argv[i]);
        if (role == "spawn") {
            sys::die_with_parent(parent);
            detail::run_bootstrapped_child(detail::launch::bootstrap_fd);
        }
        if (role == "forkserver") detail::run_forkserver(detail::launch::bootstrap_fd, parent);
        detail::log(log_level::error, "mp: unknown bootstrap role '" + role + "'");
        sys::flush_and_exit(1);
    }
    std::lock_guard guard(rt.mutex);
    if (rt.initialized) return;
    rt.initialized = true;
    for (int i = 0; i < argc; ++i) rt.argv.emplace_back(argv[i]);
}

void set_start_method(start_method m, bool force) {
    auto& rt = detail::runtime::get();
    std::lock_guard guard(rt.mutex);
    if (rt.start_method_fixed && !force && rt.self.default_method != m)
        throw process_error("mp: the start method was already used to start a process; call "
                            "set_start_method before starting any, or pass force = true");
    rt.self.default_method = m;
}

start_method get_start_method() noexcept {
    auto& rt = detail::runtime::get();
    std::lock_guard guard(rt.mutex);
    return rt.self.default_method;
}

std::vector<start_method> get_all_start_methods() {
    return {start_method::forkserver, start_method::fork, start_method::spawn};
}

context get_context(std::optional<start_method> m) { return context(m ? *m : get_start_method()); }

int cpu_count() { return sys::usable_cpu_count(); }

process_info current_process() {
    auto& rt = detail::runtime::get();
    std::lock_guard guard(rt.mutex);
    return {rt.self.name, sys::current_pid(), rt.self.daemon};
}

std::optional<process_info> parent_process() {
    auto& rt = detail::runtime::get();
    std::lock_guard guard(rt.mutex);
    if (rt.self.parent_pid == 0) return std::nullopt;
    return process_info{rt.self.parent_name, rt.self.parent_pid, false};
}

}  // namespace mp
