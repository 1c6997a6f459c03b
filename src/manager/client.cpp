// The client side of the manager protocol: a pool of authenticated
// connections per server and process, and proxies crossing processes.
#include <atomic>
#include <map>
#include <mutex>

#include "manager/client.hpp"

#include "manager/auth.hpp"
#include "manager/channel.hpp"
#include "manager/protocol.hpp"
#include "mp/detail/manager_core.hpp"
#include "runtime.hpp"
#include "sys/net.hpp"
#include "sys/sys.hpp"

namespace mp {

std::string to_string(const address& a) {
    if (auto* u = std::get_if<unix_address>(&a)) return "unix:" + u->path;
    const auto& t = std::get<tcp_address>(a);
    return "tcp:" + t.host + ":" + std::to_string(t.port);
}

}  // namespace mp

namespace mp::detail::mgr {

std::string default_authkey() {
    auto& rt = runtime::get();
    std::lock_guard guard(rt.mutex);
    return std::string(reinterpret_cast<const char*>(rt.self.authkey.data()), rt.self.authkey.size());
}

namespace {

// This process's pid, read once rather than with two getpid() system calls
// per call (borrow and give_back check that a connection is this process's).
// Every fork child resets it in the registry's after-fork hook (the_registry,
// made before a pid is cached; sys/after_fork.hpp: mp's forks, the
// forkserver's and the program's own fork()).
std::atomic<int> cached_pid{0};

struct registry;
registry& the_registry();

}  // namespace

int current_pid() noexcept {
    int pid = cached_pid.load(std::memory_order_relaxed);
    if (pid != 0) return pid;
    (void)the_registry();
    pid = sys::current_pid();
    cached_pid.store(pid, std::memory_order_relaxed);
    return pid;
}

namespace {

// Idle connections kept per server and process; more are closed when given
// back. Trade-off: each idle connection costs the server a socket and a
// small buffer (no thread), and saves a handshake when threads call at once.
constexpr std::size_t max_idle = 64;

/// How long a call waits for its reply without sleeping (when its
/// connection's history says that pays off, see channel.hpp). Trade-off:
/// longer catches slower replies without a wake-up, and burns more CPU when
/// the reply is slow (a method that works, a busy machine). A short call's
/// reply comes 3-4 µs after the request on an idle machine, but a hiccup of
/// the server's core (an interrupt, a preempted virtual CPU) often delays
/// it past 10 µs: a spin that short fails, the history turns spinning off
/// for the next calls, and each then costs a sleep and a wake-up (measured
/// on 2 virtual cores: one client's calls per second fell below 170k in 13%
/// of the runs with 10 µs, 3% with 50 µs, at about the same median). With
/// 16 clients on 2 cores the history keeps failed spins rare either way.
constexpr auto reply_spin = std::chrono::microseconds(50);

struct pooled {
    channel ch;
    std::vector<std::byte> out;  // reused for requests
    clock::time_point last_used = clock::now();
    sys::spin_history spin;  // do replies on this connection come while spinning?
    explicit pooled(unique_fd fd) : ch(std::move(fd)) {}
};

thread_local int manager_data_depth = 0;

}  // namespace

struct client::impl {
    address addr;
    std::string key;
    client_limits limits;
    std::mutex mutex;
    std::vector<std::unique_ptr<pooled>> idle;  // guarded by mutex
    bool closed = false;                        // guarded by mutex
    int pid = current_pid();                    // guarded by mutex: whose connections `idle` holds

    std::unique_ptr<pooled> open() {
        auto deadline = clock::now() + std::chrono::milliseconds(limits.handshake_ms);
        unique_fd fd;
        try {
            if (auto* u = std::get_if<unix_address>(&addr))
                fd = sys::connect_unix(u->path);
            else
                fd = sys::connect_tcp(std::get<tcp_address>(addr).host, std::get<tcp_address>(addr).port, deadline);
        } catch (const system_error& e) {
            throw system_error(e.code().value(), "mp: cannot connect to the manager at " + to_string(addr) + ": " + e.what() +
                                             " (is its server running?)");
        }
        auto p = std::make_unique<pooled>(std::move(fd));
        try {
            authenticate_to_server(p->ch, key, deadline);
        } catch (const timeout_error&) {
            throw timeout_error("mp: the manager at " + to_string(addr) +
                                " did not complete the authentication handshake in time");
        } catch (const eof_error&) {
            throw authentication_error("mp: the manager at " + to_string(addr) +
                                       " closed the connection during authentication (wrong authkey?)");
        }
        return p;
    }

    std::unique_ptr<pooled> borrow() {
        {
            std::lock_guard guard(mutex);
            if (closed)
                throw closed_error("mp: the manager at " + to_string(addr) +
                                   " was shut down by this process; its proxies cannot be used any more");
            if (pid != current_pid()) {
                // A fork child: the inherited sockets are the parent's
                // conversations. Close our copies; open our own.
                idle.clear();
                pid = current_pid();
            }
            // Reuse the most recently used connection that the server has
            // not closed (its idle timeout) and that is not about to be. A
            // connection used within the last second is not checked: no
            // server closes one that soon for idleness (saves a system call
            // per call).
            auto now = clock::now();
            auto retire_before = now - std::chrono::milliseconds(limits.idle_ms / 2);
            while (!idle.empty()) {
                auto p = std::move(idle.back());
                idle.pop_back();
                if (p->last_used < retire_before) continue;
                if (now - p->last_used < std::chrono::seconds(1) || !sys::peer_closed(p->ch.fd())) return p;
            }
        }
        return open();
    }

    void give_back(std::unique_ptr<pooled> p) noexcept {
        p->last_used = clock::now();
        std::lock_guard guard(mutex);
        if (!closed && pid == current_pid() && idle.size() < max_idle) idle.push_back(std::move(p));
    }

    /// One request and its reply. `write` writes the request body; `read`
    /// reads an ok reply's result.
    template <class Write, class Read>
    void exchange(Write&& write, Read&& read) {
        auto p = borrow();
        std::span<const std::byte> body;
        try {
            output_archive ar(std::move(p->out));
            channel::begin(ar);
            write(ar);
            p->ch.send(ar);
            p->out = ar.take_buffer();
            body = p->ch.receive(limits.max_message, std::nullopt, reply_spin, &p->spin);
        } catch (const eof_error&) {
            throw eof_error("mp: lost the connection to the manager at " + to_string(addr) +
                            " (its server has shut down or died)");
        }
        // The whole reply frame has arrived: the connection can be reused
        // whatever the reply says.
        struct give_back_on_exit {
            impl* self;
            std::unique_ptr<pooled>& p;
            ~give_back_on_exit() { self->give_back(std::move(p)); }
        } done{this, p};
        input_archive in(body);
        in.set_data_only();  // SPEC §8: a reply never carries code
        auto st = load_value<std::uint8_t>(in);
        manager_data_scope from_the_server;
        if (st == static_cast<std::uint8_t>(status::ok)) {
            read(in);
            return;
        }
        auto record = load_value<exception_record>(in);
        std::rethrow_exception(rebuild_exception(record));
    }
};

client::client(address addr, std::string authkey, client_limits limits) : p_(std::make_unique<impl>()) {
    p_->addr = std::move(addr);
    p_->key = std::move(authkey);
    p_->limits = limits;
}

client::~client() = default;

const address& client::addr() const noexcept { return p_->addr; }
const std::string& client::authkey() const noexcept { return p_->key; }

void client::ping() {
    p_->exchange([](output_archive& ar) { save_value(ar, static_cast<std::uint8_t>(op::ping)); },
                 [](input_archive&) {});
}

created client::create(std::string_view type, std::uint64_t expect_tag, std::uint64_t args_tag, writer write,
                       const void* write_context) {
    created out;
    p_->exchange(
        [&](output_archive& ar) {
            save_value(ar, static_cast<std::uint8_t>(op::create));
            save_value(ar, std::string(type));
            save_value(ar, expect_tag);
            save_value(ar, args_tag);
            write(write_context, ar);
        },
        [&](input_archive& in) {
            out.id = load_value<std::uint64_t>(in);
            out.exposed = load_value<std::vector<std::string>>(in);
        });
    return out;
}

void client::call(std::uint64_t id, std::string_view method, std::uint64_t args_tag, std::uint64_t result_tag,
                  writer write, const void* write_context, reader read, void* read_context) {
    p_->exchange(
        [&](output_archive& ar) {
            save_value(ar, static_cast<std::uint8_t>(op::call));
            save_value(ar, id);
            // The method name as a cereal string: size, then bytes.
            ar(cereal::make_size_tag(static_cast<cereal::size_type>(method.size())));
            ar.saveBinary(method.data(), method.size());
            save_value(ar, args_tag);
            save_value(ar, result_tag);
            write(write_context, ar);
        },
        [&](input_archive& in) {
            if (read && result_tag != 0) read(read_context, in);
        });
}

void client::incref(std::uint64_t id, std::uint64_t kind_tag) {
    p_->exchange(
        [&](output_archive& ar) {
            save_value(ar, static_cast<std::uint8_t>(op::incref));
            save_value(ar, id);
            save_value(ar, kind_tag);
        },
        [](input_archive&) {});
}

void client::decref(std::uint64_t id) noexcept {
    try {
        {
            std::lock_guard guard(p_->mutex);
            if (p_->closed) return;
        }
        p_->exchange(
            [&](output_archive& ar) {
                save_value(ar, static_cast<std::uint8_t>(op::decref));
                save_value(ar, id);
            },
            [](input_archive&) {});
    } catch (...) {
        // The server is gone or the object with it: nothing left to release.
    }
}

void client::shutdown_server() {
    p_->exchange([](output_archive& ar) { save_value(ar, static_cast<std::uint8_t>(op::shutdown)); },
                 [](input_archive&) {});
}

void client::close() noexcept {
    std::vector<std::unique_ptr<pooled>> drop;
    std::lock_guard guard(p_->mutex);
    p_->closed = true;
    drop.swap(p_->idle);
}

manager_data_scope::manager_data_scope() noexcept { ++manager_data_depth; }
manager_data_scope::~manager_data_scope() { --manager_data_depth; }

created create_object(client& c, std::string_view type, std::uint64_t expect_tag, std::uint64_t args_tag,
                      writer write, const void* write_context) {
    return c.create(type, expect_tag, args_tag, write, write_context);
}

void call_method(client& c, std::uint64_t id, std::string_view method, std::uint64_t args_tag,
                 std::uint64_t result_tag, writer write, const void* write_context, reader read, void* read_context) {
    c.call(id, method, args_tag, result_tag, write, write_context, read, read_context);
}

void release_object(client& c, std::uint64_t id) noexcept { c.decref(id); }

namespace {

struct registry {
    std::mutex mutex;
    std::map<std::string, std::weak_ptr<client>> clients;  // guarded by mutex
    std::vector<std::weak_ptr<client>> all;                 // guarded by mutex, for the fork handler
    std::map<std::string, std::string> known_keys;          // guarded by mutex: to_string(address) → key
};

registry& the_registry() {
    // Never destroyed: proxies in static storage may outlive main().
    static registry* r = [] {
        auto* reg = new registry;
        sys::register_after_fork([] {
            // Another thread may have held these mutexes when fork() copied
            // them; in the child that thread does not exist.
            cached_pid.store(0, std::memory_order_relaxed);
            auto& self = the_registry();
            new (&self.mutex) std::mutex;
            for (auto& w : self.all)
                if (auto c = w.lock()) c->after_fork_in_child();
        });
        return reg;
    }();
    return *r;
}

}  // namespace

void client::after_fork_in_child() noexcept { new (&p_->mutex) std::mutex; }

std::shared_ptr<client> client::for_address(const address& addr, const std::string& authkey, client_limits limits) {
    auto& reg = the_registry();
    std::string key = to_string(addr);
    key += '\0';
    key += authkey;
    std::lock_guard guard(reg.mutex);
    auto& slot = reg.clients[key];
    if (auto c = slot.lock()) {
        std::lock_guard inner(c->p_->mutex);
        if (!c->p_->closed) return c;
    }
    auto c = std::make_shared<client>(addr, authkey, limits);
    slot = c;
    std::erase_if(reg.all, [](const auto& w) { return w.expired(); });
    reg.all.push_back(c);
    return c;
}

void remember_server(const address& addr, const std::string& authkey) {
    auto& reg = the_registry();
    std::lock_guard guard(reg.mutex);
    reg.known_keys[to_string(addr)] = authkey;
}

std::optional<std::string> known_server_key(const address& addr) {
    auto& reg = the_registry();
    std::lock_guard guard(reg.mutex);
    auto it = reg.known_keys.find(to_string(addr));
    if (it == reg.known_keys.end()) return std::nullopt;
    return it->second;
}

void save_ref(output_archive& ar, const std::shared_ptr<object_ref>& ref) {
    if (!ref) throw serialization_error("mp: cannot send an empty proxy (it refers to no object)");
    const client& c = ref->owner();
    ar(c.addr(), ref->id(), ref->type(), ref->exposed(), ref->kind_tag());
}

std::shared_ptr<object_ref> load_ref(input_archive& ar, std::uint64_t kind_tag, std::string_view kind_name) {
    address addr;
    std::uint64_t id = 0, sent_kind = 0;
    std::string type;
    std::vector<std::string> exposed;
    ar(addr, id, type, exposed, sent_kind);
    if (sent_kind != kind_tag)
        throw serialization_error("mp: received a proxy of '" + type + "' as " + std::string(kind_name) +
                                  ", which is not the proxy type it was sent as; receive it as the type it was sent as");
    auto key = known_server_key(addr);
    if (!key) {
        if (manager_data_depth > 0)
            throw authentication_error("mp: data read from a manager holds a proxy naming the server at " +
                                       to_string(addr) +
                                       ", which this process has not started, served or connected to; connect a "
                                       "manager to it first if it is to be trusted");
        // From the program's own channels (a process argument, a queue, a
        // pipe): its sender knew this server; the program's key applies.
        key = default_authkey();
        remember_server(addr, *key);
    }
    auto c = client::for_address(addr, *key);
    c->incref(id, kind_tag);
    return std::make_shared<object_ref>(std::move(c), id, std::move(type), std::move(exposed), kind_tag);
}

}  // namespace mp::detail::mgr
