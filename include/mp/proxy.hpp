// mp/proxy.hpp — handles to objects that live in a manager's server process.
//
//     mp::proxy<Foo> f = m.make<Foo>("Foo1");
//     f.call<&Foo::f>();              // typed: arguments converted to f's parameters
//     int n = f.call<int>("count");   // by name: the server checks the types
//     f.exposed();                    // {"f", "g"}
//
//     auto d = sm.dict<std::string, int>();   d.set("a", 1);   d.get("a");
//
// Promises, for every proxy type here:
// - Each call is one round trip to the server. What the method throws in the
//   server is rethrown here (its type kept for the standard and mp:: errors,
//   else mp::remote_error). The server refuses, and the proxy throws: a
//   method that is not exposed (mp::not_exposed_error), arguments of other
//   types or number than the method takes, or a result read as another type
//   (mp::serialization_error). A server that is gone is mp::eof_error; a
//   proxy used after its manager was shut down throws mp::closed_error.
// - Thread-safe: any number of threads may call one proxy (or copies of it)
//   at once; each call borrows its own connection from a per-process pool, so
//   a call that blocks in the server (lock_proxy::acquire, queue_proxy::get)
//   never holds up another thread's calls. (Exception: a generator_proxy is
//   an iterator with a read position; iterate it from one thread.)
// - Copies share one reference to the server object. A proxy can be passed to
//   another process (as an mp::process or pool argument, through a queue or a
//   pipe) under every start method: it travels as the server's address and
//   the object's id, never with a key. The receiver connects with the key it
//   holds for that server: the one its manager started or connected with
//   (a fork child inherits those), else the program's authkey, which
//   children inherit. So a proxy of a manager with a custom authkey works in
//   a process that has connected a manager to that server with the key
//   before receiving it (as in Python, where the receiver must hold the key).
// - A proxy read from a manager (a value stored in a shared dict, a
//   method's result) may only name a server this process already knows (it
//   started, served or connected to it, or received a proxy of it through
//   the program's own channels); any other address is refused with
//   mp::authentication_error instead of being sent an answer made with the
//   key.
// - Lifetime (Python's rule): the server keeps an object while any process
//   holds a reference. The process that made it holds one; a process that
//   receives a proxy takes its own on arrival and gives it back when its last
//   copy is destroyed. A fork child that inherits a proxy by copy takes no
//   reference and gives none back. So the sender must keep its proxy alive
//   until the receiver has loaded it (mp::process keeps its arguments until
//   it is joined). Shutting the manager down destroys every object.
// - Calls on one server object of a registered type are serialized by the
//   server, so a registered type need not be thread-safe; the shared types
//   below are safe by construction.
#pragma once

#include <chrono>
#include <cstdint>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <ranges>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "mp/detail/manager_core.hpp"
#include "mp/error.hpp"
#include "mp/timeout.hpp"

namespace mp {

namespace detail::mgr {

inline constexpr std::int64_t forever = -1;

template <class Rep, class Period>
std::int64_t to_ns(std::chrono::duration<Rep, Period> d) {
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
    return ns < 0 ? 0 : static_cast<std::int64_t>(ns);
}

/// What every proxy has: a shared reference to one server object.
class proxy_base {
public:
    /// The names the server lets this proxy call.
    [[nodiscard]] const std::vector<std::string>& exposed() const { return ref().exposed(); }
    /// The object's id on its server.
    [[nodiscard]] std::uint64_t id() const { return ref().id(); }
    /// The name it was made from ("Foo1", "mp.dict", ...).
    [[nodiscard]] const std::string& type_name() const { return ref().type(); }
    /// False for a default-constructed proxy, which refers to nothing.
    [[nodiscard]] explicit operator bool() const noexcept { return ref_ != nullptr; }

protected:
    proxy_base() = default;
    explicit proxy_base(std::shared_ptr<object_ref> ref) : ref_(std::move(ref)) {}

    [[nodiscard]] const object_ref& ref() const {
        if (!ref_) throw closed_error("mp: this proxy was default-constructed and refers to no object");
        return *ref_;
    }

    /// One call: `args` (a tuple) is sent as is; the result is read as R
    /// (result_tag 0 with R = void: any result, discarded).
    template <class R, class Tuple>
    R invoke(std::string_view method, std::uint64_t args_tag, std::uint64_t result_tag, const Tuple& args) const {
        writer w = [](const void* c, output_archive& ar) { save_value(ar, *static_cast<const Tuple*>(c)); };
        if constexpr (std::is_void_v<R>) {
            call_method(ref().owner(), ref().id(), method, args_tag, result_tag, w, &args, nullptr, nullptr);
        } else {
            std::optional<R> out;
            reader r = [](void* c, input_archive& ar) { static_cast<std::optional<R>*>(c)->emplace(load_value<R>(ar)); };
            call_method(ref().owner(), ref().id(), method, args_tag, result_tag, w, &args, r, &out);
            return std::move(*out);
        }
    }

    void save_base(output_archive& ar) const { save_ref(ar, ref_); }
    void load_base(input_archive& ar, std::uint64_t kind_tag, std::string_view kind_name) {
        ref_ = load_ref(ar, kind_tag, kind_name);
    }

    std::shared_ptr<object_ref> ref_;
};

/// Calls on the built-in shared types: typed calls like any registered
/// type's (the server checks the argument tuple's and the result's tags).
/// Elements travel as their serialized bytes, so the server needs no code
/// for them; the server checks the proxy type (and so the element types)
/// when an object is made and whenever a proxy of it is received.
class shared_base : public proxy_base {
protected:
    using proxy_base::proxy_base;
    shared_base() = default;

    template <class R, class... A>
    R op(std::string_view method, const A&... args) const {
        // Hashed at compile time, not on every call.
        static constexpr std::uint64_t args_tag = type_tag<std::tuple<A...>>();
        static constexpr std::uint64_t result_tag = type_tag<R>();
        return this->template invoke<R>(method, args_tag, result_tag, std::tuple<A...>(args...));
    }
};

}  // namespace detail::mgr

/// A proxy for an object of a registered type T (base_manager::make<T>).
template <class T>
class proxy : public detail::mgr::proxy_base {
public:
    /// An empty proxy that refers to nothing (needed to receive one).
    proxy() = default;
    explicit proxy(std::shared_ptr<detail::mgr::object_ref> ref) : proxy_base(std::move(ref)) {}

    /// Calls method M (e.g. &Foo::f) with `args` converted to its parameter
    /// types; returns its result. Throws mp::not_exposed_error if the server
    /// does not expose it, or whatever the method threw.
    template <auto M, class... Args>
    decltype(auto) call(Args&&... args) const {
        using tr = detail::mgr::member_traits<decltype(M)>;
        static_assert(std::is_base_of_v<typename tr::cls, T>,
                      "mp::proxy<T>::call<&C::m>: m must be a method of T (or of a base of T)");
        static_assert(std::is_constructible_v<typename tr::args, Args&&...>,
                      "mp::proxy<T>::call<&C::m>(args...): the arguments do not convert to m's parameters");
        using result = typename tr::result;
        static constexpr std::uint64_t args_tag = detail::type_tag<typename tr::args>();
        static constexpr std::uint64_t result_tag = detail::type_tag<result>();
        typename tr::args a(std::forward<Args>(args)...);
        return this->template invoke<result>(detail::nontype_name<M>(), args_tag, result_tag, a);
    }

    /// Calls the method named `method`, discarding any result. The
    /// arguments' types (decayed; C strings as std::string) must be exactly
    /// the method's parameter types, else mp::serialization_error.
    template <class R = void, class... Args>
    R call(std::string_view method, Args&&... args) const {
        using tuple = std::tuple<detail::mgr::wire_t<Args>...>;
        static constexpr std::uint64_t args_tag = detail::type_tag<tuple>();
        static constexpr std::uint64_t result_tag = std::is_void_v<R> ? 0 : detail::type_tag<R>();
        tuple a(std::forward<Args>(args)...);
        return this->template invoke<R>(method, args_tag, result_tag, a);
    }

    template <class Archive>
    void save(Archive& ar) const {
        save_base(ar);
    }
    template <class Archive>
    void load(Archive& ar) {
        load_base(ar, detail::type_tag<proxy<T>>(), detail::type_name<proxy<T>>());
    }
};

/// A proxy for a registered set of functions (base_manager::make_module):
/// Python's proxy of the operator module.
class module_proxy : public detail::mgr::proxy_base {
public:
    module_proxy() = default;
    explicit module_proxy(std::shared_ptr<detail::mgr::object_ref> ref) : proxy_base(std::move(ref)) {}

    /// Calls the function named `function`; see proxy<T>::call for the
    /// rules on argument and result types.
    template <class R = void, class... Args>
    R call(std::string_view function, Args&&... args) const {
        using tuple = std::tuple<detail::mgr::wire_t<Args>...>;
        static constexpr std::uint64_t args_tag = detail::type_tag<tuple>();
        static constexpr std::uint64_t result_tag = std::is_void_v<R> ? 0 : detail::type_tag<R>();
        tuple a(std::forward<Args>(args)...);
        return this->template invoke<R>(function, args_tag, result_tag, a);
    }

    template <class Archive>
    void save(Archive& ar) const {
        save_base(ar);
    }
    template <class Archive>
    void load(Archive& ar) {
        load_base(ar, detail::type_tag<module_proxy>(), "mp::module_proxy");
    }
};

/// A proxy for a range made in the server by a registered generator
/// function (base_manager::make_generator<T>). An input range: iterate it
/// once, from one thread; items are fetched lazily, `batch` per round trip
/// (the server runs the generator at most that far ahead of the reader).
template <class T>
class generator_proxy : public detail::mgr::proxy_base {
public:
    generator_proxy() = default;
    generator_proxy(std::shared_ptr<detail::mgr::object_ref> ref, std::uint32_t batch)
        : proxy_base(std::move(ref)), batch_(batch == 0 ? 1 : batch) {}

    /// The next item, or nullopt at the end.
    [[nodiscard]] std::optional<T> next() {
        if (at_ == items_.size()) {
            if (ended_) return std::nullopt;
            items_ = this->template invoke<std::vector<T>>("next", detail::type_tag<std::tuple<std::uint32_t>>(),
                                                           detail::mgr::generator_tag<T>(), std::tuple(batch_));
            at_ = 0;
            if (items_.size() < batch_) ended_ = true;
            if (items_.empty()) return std::nullopt;
        }
        return std::move(items_[at_++]);
    }

    class iterator {
    public:
        using value_type = T;
        using difference_type = std::ptrdiff_t;
        iterator() = default;
        explicit iterator(generator_proxy* g) : g_(g) { advance(); }
        const T& operator*() const { return *current_; }
        iterator& operator++() {
            advance();
            return *this;
        }
        void operator++(int) { advance(); }
        friend bool operator==(const iterator& i, std::default_sentinel_t) { return !i.current_; }

    private:
        void advance() { current_ = g_->next(); }
        generator_proxy* g_ = nullptr;
        std::optional<T> current_;
    };

    [[nodiscard]] iterator begin() { return iterator(this); }
    [[nodiscard]] std::default_sentinel_t end() const noexcept { return {}; }

    template <class Archive>
    void save(Archive& ar) const {
        save_base(ar);
        ar(batch_);
    }
    template <class Archive>
    void load(Archive& ar) {
        load_base(ar, detail::type_tag<generator_proxy<T>>(), detail::type_name<generator_proxy<T>>());
        ar(batch_);
    }

private:
    std::uint32_t batch_ = 64;
    std::vector<T> items_;
    std::size_t at_ = 0;
    bool ended_ = false;
};

// ---- the shared types of mp::manager (Python's SyncManager) -----------------
// Their values are stored in the server as serialized bytes, so the server
// needs no code for K, V or T: a dict's keys compare equal when they
// serialize to the same bytes (true for numbers, strings and the standard
// containers of them; not for unordered containers or -0.0 vs 0.0).

/// A dict in the server, insertion-ordered like Python's.
template <class K, class V>
class dict_proxy : public detail::mgr::shared_base {
public:
    dict_proxy() = default;
    explicit dict_proxy(std::shared_ptr<detail::mgr::object_ref> ref) : shared_base(std::move(ref)) {}

    /// The value for `key`; throws std::out_of_range if there is none.
    [[nodiscard]] V get(const K& key) const { return from(op<std::string>("get", to(key))); }
    /// The value for `key`, or `otherwise`.
    [[nodiscard]] V get(const K& key, const V& otherwise) const {
        auto v = op<std::optional<std::string>>("find", to(key));
        return v ? from(*v) : otherwise;
    }
    /// The value for `key`, or nullopt.
    [[nodiscard]] std::optional<V> try_get(const K& key) const {
        auto v = op<std::optional<std::string>>("find", to(key));
        return v ? std::optional<V>(from(*v)) : std::nullopt;
    }
    void set(const K& key, const V& value) const { op<void>("set", to(key), to(value)); }
    /// Removes `key`; true if it was there.
    bool erase(const K& key) const { return op<bool>("erase", to(key)); }
    [[nodiscard]] bool contains(const K& key) const { return op<bool>("contains", to(key)); }
    [[nodiscard]] std::size_t size() const { return static_cast<std::size_t>(op<std::uint64_t>("size")); }
    [[nodiscard]] bool empty() const { return size() == 0; }
    void clear() const { op<void>("clear"); }
    /// The keys, in insertion order.
    [[nodiscard]] std::vector<K> keys() const {
        std::vector<K> out;
        for (auto& k : op<std::vector<std::string>>("keys")) out.push_back(detail::mgr::from_bytes<K>(k));
        return out;
    }
    /// The (key, value) pairs, in insertion order.
    [[nodiscard]] std::vector<std::pair<K, V>> items() const {
        std::vector<std::pair<K, V>> out;
        for (auto& [k, v] : op<std::vector<std::pair<std::string, std::string>>>("items"))
            out.emplace_back(detail::mgr::from_bytes<K>(k), from(v));
        return out;
    }
    /// Sets every (key, value) pair of `pairs` (a map, or any range of pairs), in one round trip.
    template <class Pairs>
    void update(const Pairs& pairs) const {
        std::vector<std::pair<std::string, std::string>> bytes;
        for (const auto& [k, v] : pairs) bytes.emplace_back(to(static_cast<const K&>(k)), to(static_cast<const V&>(v)));
        op<void>("update", bytes);
    }
    /// A copy of the whole dict.
    [[nodiscard]] std::map<K, V> to_map() const {
        std::map<K, V> out;
        for (auto& [k, v] : items()) out.emplace(std::move(k), std::move(v));
        return out;
    }

    template <class Archive>
    void save(Archive& ar) const {
        save_base(ar);
    }
    template <class Archive>
    void load(Archive& ar) {
        load_base(ar, detail::type_tag<dict_proxy>(), detail::type_name<dict_proxy>());
    }

private:
    template <class X>
    static std::string to(const X& x) {
        return detail::mgr::to_bytes(x);
    }
    static V from(const std::string& s) { return detail::mgr::from_bytes<V>(s); }
};

/// A list in the server. Indexes may be negative, counting from the end, as in Python.
template <class T>
class list_proxy : public detail::mgr::shared_base {
public:
    list_proxy() = default;
    explicit list_proxy(std::shared_ptr<detail::mgr::object_ref> ref) : shared_base(std::move(ref)) {}

    void append(const T& value) const { op<void>("append", to(value)); }
    /// Appends every item of `values`, in one round trip.
    template <class Range>
    void extend(const Range& values) const {
        std::vector<std::string> bytes;
        for (const auto& v : values) bytes.push_back(to(static_cast<const T&>(v)));
        op<void>("extend", bytes);
    }
    /// Throws std::out_of_range for an index outside the list.
    [[nodiscard]] T get(std::int64_t index) const { return from(op<std::string>("get", index)); }
    void set(std::int64_t index, const T& value) const { op<void>("set", index, to(value)); }
    /// Removes and returns the item at `index` (default: the last).
    T pop(std::int64_t index = -1) const { return from(op<std::string>("pop", index)); }
    [[nodiscard]] std::size_t size() const { return static_cast<std::size_t>(op<std::uint64_t>("size")); }
    [[nodiscard]] bool empty() const { return size() == 0; }
    void clear() const { op<void>("clear"); }
    [[nodiscard]] std::vector<T> to_vector() const {
        std::vector<T> out;
        for (auto& b : op<std::vector<std::string>>("items")) out.push_back(from(b));
        return out;
    }

    template <class Archive>
    void save(Archive& ar) const {
        save_base(ar);
    }
    template <class Archive>
    void load(Archive& ar) {
        load_base(ar, detail::type_tag<list_proxy>(), detail::type_name<list_proxy>());
    }

private:
    static std::string to(const T& x) { return detail::mgr::to_bytes(x); }
    static T from(const std::string& s) { return detail::mgr::from_bytes<T>(s); }
};

/// One value in the server (Python's manager.Value).
template <class T>
class value_proxy : public detail::mgr::shared_base {
public:
    value_proxy() = default;
    explicit value_proxy(std::shared_ptr<detail::mgr::object_ref> ref) : shared_base(std::move(ref)) {}

    [[nodiscard]] T get() const { return detail::mgr::from_bytes<T>(op<std::string>("get")); }
    void set(const T& value) const { op<void>("set", detail::mgr::to_bytes(value)); }

    template <class Archive>
    void save(Archive& ar) const {
        save_base(ar);
    }
    template <class Archive>
    void load(Archive& ar) {
        load_base(ar, detail::type_tag<value_proxy>(), detail::type_name<value_proxy>());
    }
};

/// A FIFO queue in the server, with mp::queue's interface.
template <class T>
class queue_proxy : public detail::mgr::shared_base {
public:
    using duration = timeout_duration;

    queue_proxy() = default;
    explicit queue_proxy(std::shared_ptr<detail::mgr::object_ref> ref) : shared_base(std::move(ref)) {}

    /// Blocks while a bounded queue is full.
    void put(const T& item) const { (void)put_for(item, detail::mgr::forever); }
    /// Throws mp::queue_full if there is no room within `timeout`.
    void put(const T& item, duration timeout) const {
        if (!put_for(item, detail::mgr::to_ns(timeout)))
            throw queue_full("mp: manager queue put timed out: the queue stayed full");
    }
    [[nodiscard]] bool try_put(const T& item) const { return put_for(item, 0); }
    [[nodiscard]] T get() const { return *get_for(detail::mgr::forever); }
    /// Throws mp::queue_empty if no item arrives within `timeout`.
    [[nodiscard]] T get(duration timeout) const {
        auto v = get_for(detail::mgr::to_ns(timeout));
        if (!v) throw queue_empty("mp: manager queue get timed out: no item arrived");
        return std::move(*v);
    }
    [[nodiscard]] std::optional<T> try_get() const { return get_for(0); }
    [[nodiscard]] std::size_t size() const { return static_cast<std::size_t>(op<std::uint64_t>("size")); }
    [[nodiscard]] bool empty() const { return size() == 0; }
    [[nodiscard]] bool full() const { return op<bool>("full"); }

    template <class Archive>
    void save(Archive& ar) const {
        save_base(ar);
    }
    template <class Archive>
    void load(Archive& ar) {
        load_base(ar, detail::type_tag<queue_proxy>(), detail::type_name<queue_proxy>());
    }

private:
    bool put_for(const T& item, std::int64_t ns) const { return op<bool>("put", detail::mgr::to_bytes(item), ns); }
    std::optional<T> get_for(std::int64_t ns) const {
        auto v = op<std::optional<std::string>>("get", ns);
        if (!v) return std::nullopt;
        return detail::mgr::from_bytes<T>(*v);
    }
};

/// A lock in the server (Python's manager.Lock: any process may release it).
/// Meets Lockable: std::lock_guard<mp::lock_proxy> works.
class lock_proxy : public detail::mgr::shared_base {
public:
    lock_proxy() = default;
    explicit lock_proxy(std::shared_ptr<detail::mgr::object_ref> ref) : shared_base(std::move(ref)) {}

    /// Blocks until acquired (block = true), or tries once.
    bool acquire(bool block = true) const { return op<bool>("acquire", block ? detail::mgr::forever : 0); }
    /// false if not acquired within `timeout`.
    template <class Rep, class Period>
    [[nodiscard]] bool acquire(std::chrono::duration<Rep, Period> timeout) const {
        return op<bool>("acquire", detail::mgr::to_ns(timeout));
    }
    /// Throws mp::value_error if the lock is not held.
    void release() const { op<void>("release"); }
    void lock() const { (void)acquire(true); }
    void unlock() const { release(); }
    [[nodiscard]] bool try_lock() const { return acquire(false); }
    [[nodiscard]] bool locked() const { return op<bool>("locked"); }

    template <class Archive>
    void save(Archive& ar) const {
        save_base(ar);
    }
    template <class Archive>
    void load(Archive& ar) {
        load_base(ar, detail::type_tag<lock_proxy>(), "mp::lock_proxy");
    }
};

/// An event in the server (Python's manager.Event).
class event_proxy : public detail::mgr::shared_base {
public:
    event_proxy() = default;
    explicit event_proxy(std::shared_ptr<detail::mgr::object_ref> ref) : shared_base(std::move(ref)) {}

    void set() const { op<void>("set"); }
    void clear() const { op<void>("clear"); }
    [[nodiscard]] bool is_set() const { return op<bool>("is_set"); }
    /// Waits until set; returns true.
    bool wait() const { return op<bool>("wait", detail::mgr::forever); }
    /// Waits at most `timeout`; returns whether the event is set.
    template <class Rep, class Period>
    bool wait(std::chrono::duration<Rep, Period> timeout) const {
        return op<bool>("wait", detail::mgr::to_ns(timeout));
    }

    template <class Archive>
    void save(Archive& ar) const {
        save_base(ar);
    }
    template <class Archive>
    void load(Archive& ar) {
        load_base(ar, detail::type_tag<event_proxy>(), "mp::event_proxy");
    }
};

}  // namespace mp
