#include "mp/process.hpp"

#include <csignal>

#include <cerrno>
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

namespace {

/// What to do about a resource that ran out while starting a child.
std::string start_failure_hint(int err) {
    switch (err) {
        case EMFILE: {
            auto usage = sys::current_fd_usage();
            std::string limit = usage.limit < 0 ? "no" : std::to_string(usage.limit);
            return "This process is out of file descriptors (" + std::to_string(usage.open) +
                   " open, limit " + limit +
                   "; a child needs a few while it starts): close processes, queues and pipes you "
                   "no longer need, or raise the limit (ulimit -n, setrlimit(RLIMIT_NOFILE))";
        }
        case ENFILE:
            return "The system's file table is full: close descriptors or raise fs.file-max";
        case EAGAIN:
            return "The limit on processes was reached (this user's, ulimit -u / RLIMIT_NPROC, or the "
                   "system's, kernel.pid_max / kernel.threads-max): wait for processes to end or raise "
                   "the limit";
        case ENOMEM:
            return "The system is out of memory for a new process";
        default:
            return {};
    }
}

}  // namespace

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
    try {
        detail::launch::run_where_children_may_start([&] {
            switch (s.method) {
                case start_method::fork: s.child = detail::launch::start_fork(child, s.target); break;
                case start_method::spawn: s.child = detail::launch::start_spawn(child, s.target); break;
                case start_method::forkserver: s.child = detail::launch::start_forkserver(child, s.target); break;
            }
        });
    } catch (const system_error& e) {
        // Nothing was started (every launcher acquires what it needs before
        // the child exists, or kills and reaps it): say so, and what to do.
        std::string hint = detail::start_failure_hint(e.code().value());
        throw system_error(e.code().value(), "mp: could not start process '" + s.id.name + "' (" +
                                         std::string(to_string(s.method)) + "): " + e.what() +
                                         (hint.empty() ? "" : ". " + hint));
    }
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
