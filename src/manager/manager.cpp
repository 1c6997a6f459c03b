// base_manager: registration, starting the server process (or serving in
// this one), connecting, shutting down.
#include "mp/manager.hpp"

#include <algorithm>

#include "manager/client.hpp"
#include "manager/server.hpp"
#include "mp/connection.hpp"
#include "mp/process.hpp"
#include "shm_tracker.hpp"
#include "sys/net.hpp"
#include "sys/sys.hpp"

namespace mp::detail::mgr {

/// What the server process tells its manager once it listens (or why not).
struct start_reply {
    bool ok = false;
    address addr;
    exception_record failure;

    template <class Archive>
    void serialize(Archive& ar) {
        ar(ok, addr, failure);
    }
};

/// The server process's target: bind, report, serve until told to stop.
void run_server_process(server_config config, mp::connection reply) {
    // Ctrl-C reaches the whole process group; the server stops when its
    // manager asks, after the manager's own clean-up (Python does the same).
    sys::ignore_sigint();
    std::unique_ptr<manager_server::impl> server;
    try {
        server = std::make_unique<manager_server::impl>(std::move(config));
    } catch (...) {
        reply.send(start_reply{false, {}, capture_exception(std::current_exception())});
        return;
    }
    reply.send(start_reply{true, server->bound(), {}});
    reply.close();
    server->serve_forever();
}

}  // namespace mp::detail::mgr

namespace mp {

using namespace detail::mgr;

void manager_server::serve_forever() { p_->serve_forever(); }
void manager_server::shutdown() noexcept { p_->stop(); }
const mp::address& manager_server::address() const { return p_->bound(); }

enum class mode { idle, started, connected, serving, finished };

struct base_manager::state {
    manager_options options;
    std::vector<type_entry> registry;
    mode m = mode::idle;
    std::shared_ptr<client> client_;
    std::optional<mp::process> server_process;
    std::shared_ptr<manager_server::impl> local_server;
    std::optional<mp::address> bound;
    std::string private_dir, socket_path;  // the default address's, removed at shutdown

    // Whole milliseconds, rounded up, as the server counts them.
    static std::int64_t ms(std::chrono::steady_clock::duration d) {
        return std::chrono::ceil<std::chrono::milliseconds>(d).count();
    }

    std::string key() const { return options.authkey ? *options.authkey : default_authkey(); }
    client_limits limits() const {
        return {ms(options.handshake_timeout), static_cast<std::uint64_t>(options.max_message_size), ms(options.idle_timeout)};
    }

    /// The configured address, or a fresh private Unix socket.
    mp::address choose_address() {
        if (options.address) return *options.address;
        private_dir = sys::make_private_dir("mp-manager-");
        socket_path = private_dir + "/socket";
        try {
            // Removed by the tracker if the program is killed before shutdown.
            detail::shm_tracker::register_socket_directory(socket_path);
        } catch (...) {
            remove_private_dir();
            throw;
        }
        return unix_address{socket_path};
    }

    server_config config(mp::address addr) const {
        server_config c;
        c.addr = std::move(addr);
        c.authkey = key();
        c.registry = registry;
        c.handshake_ms = ms(options.handshake_timeout);
        c.idle_ms = ms(options.idle_timeout);
        c.max_message = static_cast<std::uint64_t>(options.max_message_size);
        c.max_pending = static_cast<std::uint64_t>(options.max_pending_connections);
        c.max_workers = static_cast<std::uint64_t>(options.max_workers);
        return c;
    }

    void remove_private_dir() noexcept {
        sys::remove_private_dir(private_dir, socket_path);
        if (!socket_path.empty()) detail::shm_tracker::unregister_socket_directory(socket_path);
        private_dir.clear();
        socket_path.clear();
    }

    void require_idle(const char* what) const {
        if (m == mode::idle) return;
        throw process_error(std::string("mp: base_manager::") + what +
                            ": this manager was already started, connected or served (or shut down); "
                            "a manager runs one server once — make a new manager");
    }
};

base_manager::base_manager() : base_manager(manager_options{}) {}

base_manager::base_manager(manager_options options) : s_(std::make_unique<state>()) {
    s_->options = std::move(options);
}

base_manager::base_manager(base_manager&&) noexcept = default;

base_manager& base_manager::operator=(base_manager&& other) noexcept {
    if (this != &other) {
        shutdown();
        s_ = std::move(other.s_);
    }
    return *this;
}

base_manager::~base_manager() { shutdown(); }

void base_manager::add_entry(type_entry e, std::optional<mp::exposed> exposure) {
    s_->require_idle("register");
    if (e.name.empty() || e.name.rfind("mp.", 0) == 0)
        throw value_error("mp: base_manager: cannot register '" + e.name +
                          "': names must be non-empty and must not start with \"mp.\" (reserved for the shared types)");
    std::vector<std::string> names;
    if (exposure) {
        for (auto& n : exposure->names) {
            bool known = std::any_of(e.methods.begin(), e.methods.end(), [&](const method_info& m) { return m.name == n; });
            if (!known)
                throw value_error("mp: base_manager: '" + e.name + "' exposes '" + n +
                                  "', which is not among its registered methods; add it to mp::methods<...>");
            names.push_back(n);
        }
    } else {
        for (auto& m : e.methods)
            if (!m.name.empty() && m.name[0] != '_') names.push_back(m.name);
    }
    e.exposed = std::move(names);
    auto& reg = s_->registry;
    std::erase_if(reg, [&](const type_entry& x) { return x.name == e.name; });  // re-registering replaces, as in Python
    reg.push_back(std::move(e));
}

void base_manager::start() {
    auto& s = *s_;
    s.require_idle("start");
    mp::address addr = s.choose_address();
    try {
        auto [receiver, sender] = mp::pipe(false);
        process_options popts{.name = {}, .daemon = false, .context = s.options.context};
        s.server_process.emplace(popts, &run_server_process, s.config(addr), sender);
        s.server_process->start();
        sender.close();
        start_reply reply;
        for (;;) {
            if (receiver.poll()) {
                reply = receiver.recv<start_reply>();
                break;
            }
            auto ready = mp::wait(std::vector<int>{receiver.fileno(), s.server_process->sentinel()});
            if (receiver.poll()) continue;
            if (!ready.empty() && !s.server_process->is_alive()) {
                auto code = s.server_process->exitcode();
                throw process_error("mp: the manager's server process ended (exit code " +
                                    std::to_string(code ? *code : -1) + ") before it was ready; see its stderr");
            }
        }
        if (!reply.ok) std::rethrow_exception(rebuild_exception(reply.failure));
        s.bound = reply.addr;
        remember_server(reply.addr, s.key());
        s.client_ = client::for_address(reply.addr, s.key(), s.limits());
        s.m = mode::started;
    } catch (...) {
        if (s.server_process) {
            if (!s.server_process->join(std::chrono::seconds(2))) {
                s.server_process->kill();
                s.server_process->join();
            }
            s.server_process.reset();
        }
        s.remove_private_dir();
        throw;
    }
}

void base_manager::connect() {
    auto& s = *s_;
    s.require_idle("connect");
    if (!s.options.address)
        throw value_error("mp: base_manager::connect() needs the server's address: "
                          "base_manager m({.address = mp::tcp_address{host, port}, .authkey = ...})");
    auto c = client::for_address(*s.options.address, s.key(), s.limits());
    c->ping();  // authenticates now: a wrong key is reported here
    remember_server(*s.options.address, s.key());
    s.client_ = std::move(c);
    s.bound = *s.options.address;
    s.m = mode::connected;
}

manager_server base_manager::get_server() {
    auto& s = *s_;
    if (s.local_server) return manager_server(s.local_server);
    s.require_idle("get_server");
    mp::address addr = s.choose_address();
    try {
        s.local_server = std::make_shared<manager_server::impl>(s.config(addr));
    } catch (...) {
        s.remove_private_dir();
        throw;
    }
    s.bound = s.local_server->bound();
    remember_server(*s.bound, s.key());
    s.m = mode::serving;
    return manager_server(s.local_server);
}

void base_manager::shutdown() noexcept {
    if (!s_) return;
    auto& s = *s_;
    try {
        if (s.m == mode::started) {
            try {
                s.client_->shutdown_server();
            } catch (...) {
                // Already gone: the join below still reaps it.
            }
            s.client_->close();
            if (!s.server_process->join(std::chrono::seconds(5))) {
                s.server_process->terminate();
                if (!s.server_process->join(std::chrono::seconds(2))) s.server_process->kill();
                s.server_process->join();
            }
            s.server_process.reset();
        } else if (s.m == mode::connected) {
            // Only this manager lets go: the process's connections to the
            // server stay for every other manager and proxy that uses them
            // (they close when the last of those is gone).
        } else if (s.m == mode::serving) {
            s.local_server->stop();
            s.local_server.reset();
        }
    } catch (...) {
    }
    if (s.m != mode::idle) s.m = mode::finished;
    s.client_.reset();
    s.remove_private_dir();
}

void base_manager::shutdown_server() {
    if (s_ && s_->m == mode::serving) {
        s_->local_server->stop();
        return;
    }
    client_ptr()->shutdown_server();
}

mp::address base_manager::address() const {
    if (!s_) throw process_error("mp: base_manager::address(): this manager was moved from");
    if (s_->bound) return *s_->bound;
    if (s_->options.address) return *s_->options.address;
    throw process_error("mp: base_manager::address(): the default address is chosen by start() or get_server()");
}

bool base_manager::running() const noexcept { return s_ && (s_->m == mode::started || s_->m == mode::connected); }

std::shared_ptr<client> base_manager::client_ptr() const {
    if (!s_ || !s_->client_)
        throw process_error("mp: the manager is not running: call start() or connect() before making proxies");
    return s_->client_;
}

}  // namespace mp
