// mp/manager.hpp — objects hosted in a server process, used through proxies:
// Python's multiprocessing.managers (BaseManager, SyncManager).
//
//     struct Foo { void f(); void g(); void _h(); };
//     mp::base_manager m;                     // or m({.address, .authkey, .context})
//     m.register_type<Foo>("Foo1", mp::methods<&Foo::f, &Foo::g, &Foo::_h>);       // exposes f, g
//     m.register_type<Foo>("Foo2", mp::methods<&Foo::f, &Foo::g, &Foo::_h>, mp::exposed{"g", "_h"});
//     m.register_generator("baz", &baz);     // baz() returns a range
//     m.register_functions("operator", mp::functions<&add, &pow>);
//     m.start();                              // the server process
//     mp::proxy<Foo> f1 = m.make<Foo>("Foo1");
//     f1.call<&Foo::f>();
//     for (int x : m.make_generator<int>("baz")) ...;
//     m.make_module("operator").call<long>("add", 23L, 45L);
//     m.shutdown();                           // or let the destructor do it
//
//     mp::manager sm; sm.start();             // SyncManager: shared dict, list, queue, lock, event, value
//     auto d = sm.dict<std::string, int>();
//
// Remote managers (TCP): one program serves, others connect.
//     mp::base_manager m({.address = mp::tcp_address{"127.0.0.1", 50000}, .authkey = "secret"});
//     m.get_server().serve_forever();         // server side: blocks until shut down
//     m.connect();                            // client side
//
// Promises:
// - Method names come from the member pointers (&Foo::f → "f"); by default a
//   type exposes the methods whose names do not start with '_' (Python's
//   rule). The server enforces exposure, the argument types and number, and
//   the result type of every call, and refuses unknown names; no request can
//   make it run code that was not registered (requests carry names and data,
//   never code).
// - Every connection, Unix or TCP, is authenticated both ways with an
//   HMAC-SHA256 challenge on the authkey before any request is read; a wrong
//   key is mp::authentication_error on the client and a closed connection on
//   the server. A client that sends garbage, a truncated or oversized frame,
//   says nothing within the handshake timeout, or dies mid-call costs the
//   server that one connection.
// - The server is bounded: one event loop accepts and authenticates every
//   connection (no thread per connection); at most max_pending_connections
//   wait for authentication, each holding about half a kilobyte, and a flood of
//   silent connections does not keep a correct client from being served at
//   once; idle connections are closed after idle_timeout; calls run on at
//   most max_workers threads, concurrently. Running out of fds or threads
//   slows it down and never ends it.
// - Default address: a Unix socket in a fresh directory only the owner can
//   enter, removed at shutdown. Default authkey: the program's random one,
//   which its children inherit, so proxies passed to children just work.
// - start() runs the server in a process started with the manager's start
//   method (its context, else the default); it works with fork, spawn and
//   forkserver: the server rebuilds the registry from data sent to it.
// - Registration must happen before start()/get_server(); a base_manager is
//   used by one thread at a time (its proxies by any number of threads).
// - The destructor shuts a started server down and never throws.
#pragma once

#include <chrono>
#include <cstddef>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "mp/address.hpp"
#include "mp/context.hpp"
#include "mp/detail/manager_core.hpp"
#include "mp/error.hpp"
#include "mp/function.hpp"
#include "mp/proxy.hpp"
#include "mp/timeout.hpp"

namespace mp {

namespace detail::mgr {
struct server_access;
}

/// A list of methods to register: mp::methods<&Foo::f, &Foo::g>.
template <auto... Ms>
struct method_list {
    static_assert(sizeof...(Ms) > 0, "mp::methods<...>: list at least one method");
};
template <auto... Ms>
inline constexpr method_list<Ms...> methods{};

/// A list of plain functions to register as a module: mp::functions<&add, &pow>.
template <auto... Fs>
struct function_list {
    static_assert(sizeof...(Fs) > 0, "mp::functions<...>: list at least one function");
};
template <auto... Fs>
inline constexpr function_list<Fs...> functions{};

/// The method names a registered type exposes, replacing the default (names
/// not starting with '_'): mp::exposed{"g", "_h"}.
struct exposed {
    std::vector<std::string> names;
    exposed(std::initializer_list<std::string> n) : names(n) {}
    explicit exposed(std::vector<std::string> n) : names(std::move(n)) {}
};

struct manager_options {
    std::optional<mp::address> address{};     // default: a private Unix socket
    std::optional<std::string> authkey{};     // default: the program's random key
    std::optional<mp::context> context{};     // start method of the server; default: the default
    /// How long a new connection may take to authenticate (both ways) before
    /// the server drops it; also the client's limit for the server's side.
    timeout_duration handshake_timeout{std::chrono::seconds(5)};
    /// The largest request (and reply) accepted, in bytes; a larger length
    /// prefix closes the connection before anything is allocated. Trade-off:
    /// bigger values allow bigger arguments and let one client make the
    /// server allocate that much.
    std::size_t max_message_size = std::size_t{64} << 20;
    /// An authenticated connection that sends nothing for this long (at
    /// least 2 s) is closed by the server. Clients retire pooled connections
    /// idle for half of theirs, and check one idle for over a second before
    /// reusing it, so a call does not meet a connection closed under it.
    timeout_duration idle_timeout{std::chrono::minutes(10)};
    /// Connections the server lets wait for authentication at once; a new
    /// one beyond it pushes out the oldest waiting. Trade-off: more lets more
    /// honest clients on slow links handshake at once, and lets a flood hold
    /// more sockets.
    std::size_t max_pending_connections = 128;
    /// Threads the server runs calls on at most. A call that waits in the
    /// server (a lock's acquire, a queue's get) holds one while it waits;
    /// more calls than this at once wait for a thread. Trade-off: more
    /// serves more blocking calls at once, at a thread (and its stack) each.
    std::size_t max_workers = 128;
};

/// The server of a manager, running in this process (base_manager::get_server).
class manager_server {
public:
    /// Serves clients until one asks the server to stop
    /// (base_manager::shutdown_server) or shutdown() is called from another
    /// thread; then closes every connection, destroys every object and
    /// returns. Throws mp::process_error if called twice.
    void serve_forever();
    /// Makes serve_forever() return soon. Thread-safe; never throws.
    void shutdown() noexcept;
    /// The address it listens on (a TCP port 0 replaced by the real port).
    [[nodiscard]] const mp::address& address() const;

    struct impl;
    explicit manager_server(std::shared_ptr<impl> p) : p_(std::move(p)) {}

private:
    friend struct detail::mgr::server_access;  // the dispatcher's test hook (src/manager/server.hpp)
    std::shared_ptr<impl> p_;
};

/// Python's BaseManager: register types, start a server (or connect to one),
/// make proxies. See the header comment for the promises.
class base_manager {
public:
    base_manager();
    explicit base_manager(manager_options options);
    base_manager(const base_manager&) = delete;
    base_manager& operator=(const base_manager&) = delete;
    base_manager(base_manager&&) noexcept;
    base_manager& operator=(base_manager&&) noexcept;
    /// shutdown(); never throws.
    virtual ~base_manager();

    /// Registers T under `name` with the methods a proxy may call (all of
    /// `ms` whose names do not start with '_', or those `exposure` lists; a
    /// listed name that is not among `ms` throws mp::value_error). T must be
    /// default-constructible; its methods' parameters and results must be
    /// able to cross a process boundary (checked at compile time).
    template <class T, auto... Ms>
    void register_type(std::string name, method_list<Ms...>, std::optional<mp::exposed> exposure = std::nullopt) {
        static_assert(std::is_default_constructible_v<T>,
                      "mp::base_manager::register_type<T>: the server creates T with T{}; give T a default constructor");
        (check_member<T, Ms>(), ...);
        auto e = detail::mgr::object_entry<T, std::tuple<>, Ms...>(std::move(name));
        e.class_tag = detail::type_tag<proxy<T>>();
        e.create_args_type.clear();  // "()" in messages
        add_entry(std::move(e), std::move(exposure));
    }

    /// Registers a function returning a range (a std::vector, any input
    /// range, a generator object): make_generator<T>(name, args...) calls it
    /// in the server with `args` and iterates the range lazily.
    template <class R, class... A>
    void register_generator(std::string name, R (*function)(A...)) {
        using fp = R (*)(A...);
        using traits = detail::mgr::function_traits<fp>;
        static_assert(std::ranges::input_range<std::decay_t<R>>,
                      "mp::base_manager::register_generator: the function must return a range "
                      "(a std::vector, a generator object, ...)");
        static_assert(detail::require_transferable<typename traits::args>());
        using value = std::ranges::range_value_t<std::decay_t<R>>;
        static_assert(detail::require_transferable<value>());
        detail::mgr::type_entry e;
        e.name = std::move(name);
        e.kind = detail::mgr::entry_kind::generator;
        e.class_tag = detail::type_tag<generator_proxy<value>>();
        e.class_name = std::string(detail::type_name<value>());
        e.create_args_tag = detail::type_tag<typename traits::args>();
        e.create_args_type = std::string(detail::type_name<typename traits::args>());
        e.methods = {detail::mgr::method_info{"next", detail::type_tag<std::tuple<std::uint32_t>>(),
                                              "std::tuple<unsigned int>", detail::mgr::generator_tag<value>(),
                                              std::string(detail::type_name<std::vector<value>>())}};
        e.trampoline = detail::sendable<&detail::mgr::generator_trampoline<fp>>();
        e.context = reinterpret_cast<const void*>(function);
        add_entry(std::move(e), mp::exposed{"next"});
    }

    /// Registers plain functions under `name` (Python's registered module):
    /// make_module(name).call<R>("add", 23, 45). Their names come from the
    /// functions (&add → "add"); exposed as register_type says.
    template <auto... Fs>
    void register_functions(std::string name, function_list<Fs...>, std::optional<mp::exposed> exposure = std::nullopt) {
        detail::mgr::type_entry e;
        e.name = std::move(name);
        e.kind = detail::mgr::entry_kind::module;
        e.class_tag = detail::type_tag<module_proxy>();
        e.class_name = "module";
        e.create_args_tag = detail::type_tag<std::tuple<>>();
        e.methods = {describe_function<Fs>()...};
        e.trampoline = detail::sendable<&detail::mgr::module_trampoline<Fs...>>();
        add_entry(std::move(e), std::move(exposure));
    }

    /// Starts the server process and waits until it listens. Throws
    /// mp::process_error if already started or connected, mp::system_error if
    /// the address cannot be bound (the server's reason in the message).
    void start();
    /// Connects to a server that is already running at options.address,
    /// authenticating one connection at once. Throws
    /// mp::authentication_error for a wrong key, mp::system_error if nothing
    /// listens there.
    void connect();
    /// The server, in this process, bound to options.address (a TCP port 0
    /// replaced by a free port) but not serving until serve_forever(). The
    /// registry is this manager's. Calling it again returns the same server.
    [[nodiscard]] manager_server get_server();
    /// Stops a server this manager started (asks it, then waits for its
    /// process; terminates it if it does not end within a few seconds),
    /// closes this process's connections to it and removes the default
    /// socket directory; its proxies used afterwards throw
    /// mp::closed_error. A connected (not started) manager only lets go of
    /// the server: proxies made through it, and other managers connected to
    /// the same server, keep working. Harmless when not started; never throws.
    void shutdown() noexcept;
    /// Asks the server this manager is connected to (or started) to stop
    /// serving; any authenticated client may.
    void shutdown_server();

    /// The address of the server (after start, connect or get_server: the
    /// bound one).
    [[nodiscard]] mp::address address() const;
    /// Whether start() or connect() succeeded and shutdown() has not run.
    [[nodiscard]] bool running() const noexcept;

    /// A new object of the type registered as `name`, in the server. Throws
    /// mp::value_error for an unknown name, mp::serialization_error if `name`
    /// was registered for another type than T.
    template <class T>
    [[nodiscard]] proxy<T> make(std::string_view name) {
        return proxy<T>(create(name, detail::type_tag<proxy<T>>(), detail::type_tag<std::tuple<>>(), std::tuple<>{}));
    }
    /// Calls the generator function registered as `name` with `args` in the
    /// server; the proxy iterates its range, `batch` items per round trip.
    template <class T, class... A>
    [[nodiscard]] generator_proxy<T> make_generator(std::string_view name, A&&... args) {
        return make_generator_batched<T>(name, 64, std::forward<A>(args)...);
    }
    template <class T, class... A>
    [[nodiscard]] generator_proxy<T> make_generator_batched(std::string_view name, std::uint32_t batch, A&&... args) {
        using tuple = std::tuple<detail::mgr::wire_t<A>...>;
        return generator_proxy<T>(
            create(name, detail::type_tag<generator_proxy<T>>(), detail::type_tag<tuple>(), tuple(std::forward<A>(args)...)),
            batch);
    }
    /// The functions registered as `name`.
    [[nodiscard]] module_proxy make_module(std::string_view name) {
        return module_proxy(create(name, detail::type_tag<module_proxy>(), detail::type_tag<std::tuple<>>(), std::tuple<>{}));
    }

    struct state;

protected:
    /// Makes an object in the server; the server checks `expect_tag` (the
    /// proxy type) against what `name` was registered as.
    template <class Tuple>
    std::shared_ptr<detail::mgr::object_ref> create(std::string_view name, std::uint64_t expect_tag,
                                                    std::uint64_t args_tag, const Tuple& args) {
        auto c = client_ptr();
        detail::mgr::writer w = [](const void* ctx, detail::output_archive& ar) {
            detail::save_value(ar, *static_cast<const Tuple*>(ctx));
        };
        auto made = detail::mgr::create_object(*c, name, expect_tag, args_tag, w, &args);
        return std::make_shared<detail::mgr::object_ref>(c, made.id, std::string(name), std::move(made.exposed),
                                                         expect_tag);
    }
    /// Throws mp::process_error unless running().
    [[nodiscard]] std::shared_ptr<detail::mgr::client> client_ptr() const;

private:
    template <class T, auto M>
    static constexpr void check_member() {
        using tr = detail::mgr::member_traits<decltype(M)>;
        static_assert(std::is_base_of_v<typename tr::cls, T>,
                      "mp::methods<&C::m...>: every method must belong to the registered type (or a base)");
    }
    template <auto F>
    static detail::mgr::method_info describe_function() {
        using tr = detail::mgr::function_traits<decltype(F)>;
        return detail::mgr::describe<F, tr>(detail::nontype_name<F>());
    }
    void add_entry(detail::mgr::type_entry e, std::optional<mp::exposed> exposure);

    std::unique_ptr<state> s_;
};

/// Python's SyncManager: a base_manager whose server also hosts shared
/// dicts, lists, queues, locks, events and values. Every server serves these
/// types (they need no registration), so a connected manager can make them
/// from a remote server too.
class manager : public base_manager {
public:
    using base_manager::base_manager;

    template <class K, class V>
    [[nodiscard]] dict_proxy<K, V> dict() {
        return dict_proxy<K, V>(shared<dict_proxy<K, V>>("mp.dict", std::tuple<>{}));
    }
    template <class T>
    [[nodiscard]] list_proxy<T> list() {
        return list_proxy<T>(shared<list_proxy<T>>("mp.list", std::tuple<>{}));
    }
    /// maxsize 0: unbounded.
    template <class T>
    [[nodiscard]] queue_proxy<T> queue(std::size_t maxsize = 0) {
        return queue_proxy<T>(shared<queue_proxy<T>>("mp.queue", std::tuple<std::uint64_t>(maxsize)));
    }
    [[nodiscard]] lock_proxy lock() { return lock_proxy(shared<lock_proxy>("mp.lock", std::tuple<>{})); }
    [[nodiscard]] event_proxy event() { return event_proxy(shared<event_proxy>("mp.event", std::tuple<>{})); }
    template <class T>
    [[nodiscard]] value_proxy<T> value(const T& initial = T{}) {
        return value_proxy<T>(
            shared<value_proxy<T>>("mp.value", std::tuple<std::string>(detail::mgr::to_bytes(initial))));
    }

private:
    /// The built-in types are served under names starting with "mp."; the
    /// server remembers the proxy type each object was made for and checks
    /// it whenever a proxy of it is received.
    template <class Proxy, class Args>
    std::shared_ptr<detail::mgr::object_ref> shared(std::string_view type, const Args& args) {
        return create(type, detail::type_tag<Proxy>(), detail::type_tag<Args>(), args);
    }
};

}  // namespace mp
