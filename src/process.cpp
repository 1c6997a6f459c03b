#include "mp/process.hpp"

#include <signal.h>

#include <mutex>

#include "launch/launch.hpp"
#include "runtime.hpp"

namespace mp::detail {

struct process_state {
    identity id;
    start_method method;
    process_target target;
    std::unique_ptr<launch::popen> child;  // set by start()
    std::mutex mutex;                      // guards child's poll/wait against active_children()

    std::optional<int> poll() {
        std::lock_guard guard(mutex);
        return child ? child->poll() : std::nullopt;
    }
};

}  // namespace mp::detail

namespace mp {

using detail::process_state;

process::process(process_options options, detail::process_target target)
    : state_(std::make_shared<process_state>()) {
    state_->method = options.context ? options.context->get_start_method() : get_start_method();
    std::string default_name;
    state_->id.ids = {detail::runtime::get().reserve_child_number(default_name)};
    state_->id.name = options.name.empty() ? std::move(default_name) : std::move(options.name);
    state_->id.daemon = options.daemon;
    state_->target = std::move(target);
}

process::process(process&&) noexcept = default;

process& process::operator=(process&& other) noexcept {
    if (this != &other) {
        this->~process();
        new (this) process(std::move(other));
    }
    return *this;
}

process::~process() {
    if (!state_ || !state_->child) return;
    try {
        if (state_->id.daemon) state_->child->send_signal(SIGTERM);
        state_->child->wait(std::nullopt);
    } catch (...) {
        // A destructor never throws; the child is reaped by waitpid above or,
        // if that failed, it was not our child to reap.
    }
}

void process::start() {
    auto& s = *state_;
    if (s.child) throw process_error("mp: process '" + s.id.name + "' was already started; a process can be started only once");
    auto& rt = detail::runtime::get();
    {
        std::lock_guard guard(rt.mutex);
        if (rt.self.daemon)
            throw process_error("mp: a daemon process is not allowed to have children (as in Python)");
    }
    detail::identity child = rt.next_child(s.id.name, s.id.daemon, s.method, "Process", s.id.ids.back());
    s.id = child;
    detail::launch::run_where_children_may_start([&] {
        switch (s.method) {
            case start_method::fork: s.child = detail::launch::start_fork(child, s.target); break;
            case start_method::spawn: s.child = detail::launch::start_spawn(child, s.target); break;
            case start_method::forkserver: s.child = detail::launch::start_forkserver(child, s.target); break;
        }
    });
    std::lock_guard guard(rt.mutex);
    rt.children.push_back(state_);
}

void process::join() {
    if (!state_->child) throw process_error("mp: cannot join process '" + state_->id.name + "': it was never started");
    state_->child->wait(std::nullopt);
}

bool process::join(timeout_duration timeout) {
    if (!state_->child) throw process_error("mp: cannot join process '" + state_->id.name + "': it was never started");
    return state_->child->wait(std::chrono::steady_clock::now() + timeout).has_value();
}

bool process::is_alive() { return state_->child && !state_->poll(); }

std::optional<int> process::exitcode() { return state_->poll(); }

int process::pid() const noexcept { return state_->child ? state_->child->pid() : 0; }

const std::string& process::name() const noexcept { return state_->id.name; }

bool process::daemon() const noexcept { return state_->id.daemon; }

start_method process::method() const noexcept { return state_->method; }

void process::terminate() {
    if (state_->child) state_->child->send_signal(SIGTERM);
}

void process::kill() {
    if (state_->child) state_->child->send_signal(SIGKILL);
}

int process::sentinel() const {
    if (!state_->child) throw process_error("mp: process '" + state_->id.name + "' has no sentinel before start()");
    return state_->child->sentinel();
}

std::vector<process_info> active_children() {
    auto& rt = detail::runtime::get();
    std::vector<std::shared_ptr<process_state>> live;
    {
        std::lock_guard guard(rt.mutex);
        std::erase_if(rt.children, [](const auto& weak) { return weak.expired(); });
        for (auto& weak : rt.children)
            if (auto s = weak.lock()) live.push_back(std::move(s));
    }
    std::vector<process_info> out;
    for (auto& s : live)
        if (!s->poll()) out.push_back({s->id.name, s->child->pid(), s->id.daemon});
    return out;
}

}  // namespace mp
