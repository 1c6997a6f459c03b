// mp/detail/manager_core.hpp — what mp/manager.hpp and mp/proxy.hpp need from
// the manager machinery: registered types as data, the per-type dispatcher
// trampolines the server runs, and the calls proxies make (the client's
// connection pool itself is private to src/manager).
//
// The protocol between a client and a server carries names and data only:
// "call method 'f' of object 7 with these bytes, tagged as (int, std::string)".
// Code pointers (as code_refs) travel only from a manager to the server
// process it starts itself, which runs the same executable, inside the
// server's start-up arguments.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <ranges>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "mp/address.hpp"
#include "mp/detail/archive.hpp"
#include "mp/detail/code_ref.hpp"
#include "mp/detail/type_name.hpp"
#include "mp/function.hpp"
#include "mp/serialize.hpp"

namespace mp {

namespace detail::mgr {

// ---- describing methods and functions at compile time ----------------------

/// Argument types as they travel: decayed, with C strings and string views
/// sent as std::string.
template <class A>
using wire_t = std::conditional_t<
    std::is_same_v<std::decay_t<A>, const char*> || std::is_same_v<std::decay_t<A>, char*> ||
        std::is_same_v<std::decay_t<A>, std::string_view>,
    std::string, std::decay_t<A>>;

template <class M>
struct member_traits;

#define MP_DETAIL_MEMBER_TRAITS(QUALIFIERS)                                           \
    template <class R, class C, class... A>                                           \
    struct member_traits<R (C::*)(A...) QUALIFIERS> {                                 \
        using cls = C;                                                                \
        using result = std::decay_t<R>;                                               \
        using args = std::tuple<std::decay_t<A>...>;                                  \
        template <class M, class Obj, std::size_t... I>                               \
        static decltype(auto) invoke(M m, Obj& obj, args& a, std::index_sequence<I...>) { \
            return (obj.*m)(static_cast<A&&>(std::get<I>(a))...);                     \
        }                                                                             \
    };
MP_DETAIL_MEMBER_TRAITS()
MP_DETAIL_MEMBER_TRAITS(const)
MP_DETAIL_MEMBER_TRAITS(noexcept)
MP_DETAIL_MEMBER_TRAITS(const noexcept)
#undef MP_DETAIL_MEMBER_TRAITS

template <class F>
struct function_traits;
template <class R, class... A>
struct function_traits<R (*)(A...)> {
    using result = std::decay_t<R>;
    using args = std::tuple<std::decay_t<A>...>;
    template <class F, std::size_t... I>
    static decltype(auto) invoke(F f, args& a, std::index_sequence<I...>) {
        return f(static_cast<A&&>(std::get<I>(a))...);
    }
};
template <class R, class... A>
struct function_traits<R (*)(A...) noexcept> : function_traits<R (*)(A...)> {};

/// A method's (or function's) signature as data, checked by the server
/// against every call.
struct method_info {
    std::string name;
    std::uint64_t args_tag = 0;
    std::string args_type;  // e.g. "std::tuple<int, int>", for error messages
    std::uint64_t result_tag = 0;
    std::string result_type;

    template <class Archive>
    void serialize(Archive& ar) {
        ar(name, args_tag, args_type, result_tag, result_type);
    }
};

template <class Traits>
constexpr void check_signature() {
    static_assert(require_transferable<typename Traits::args>());
    if constexpr (!std::is_void_v<typename Traits::result>)
        static_assert(require_transferable<typename Traits::result>());
}

template <auto M, class Traits>
method_info describe(std::string_view name) {
    check_signature<Traits>();
    using args = typename Traits::args;
    using result = typename Traits::result;
    return {std::string(name), type_tag<args>(), std::string(type_name<args>()), type_tag<result>(),
            std::string(type_name<result>())};
}

// ---- the trampolines the server runs ----------------------------------------

enum class tramp_op : std::uint8_t { create, destroy, call };

/// One per registered entry. create: *object = a new instance (the args, if
/// any, are read from *in); destroy: deletes *object; call: runs method
/// number `method` on *object with arguments read from *in, writing the
/// result (nothing for void) to *out. `context` is entry-specific (the
/// generator function).
using trampoline_fn = void (*)(tramp_op op, const void* context, void** object, std::uint32_t method,
                               input_archive* in, output_archive* out);

template <class Traits, class Call>
void run_and_save(input_archive& in, output_archive& out, Call&& call) {
    auto args = load_value<typename Traits::args>(in);
    if constexpr (std::is_void_v<typename Traits::result>) {
        call(args);
    } else {
        save_value(out, static_cast<typename Traits::result>(call(args)));
    }
}

template <class T, auto M>
void call_member(T& obj, input_archive& in, output_archive& out) {
    using tr = member_traits<decltype(M)>;
    run_and_save<tr>(in, out, [&](typename tr::args& a) -> decltype(auto) {
        return tr::invoke(M, obj, a, std::make_index_sequence<std::tuple_size_v<typename tr::args>>{});
    });
}

/// The trampoline of a type T made from `CreateArgs` (a std::tuple; empty
/// for registered types, which are made with T{}).
template <class T, class CreateArgs, auto... Ms>
void object_trampoline(tramp_op op, const void*, void** object, std::uint32_t method, input_archive* in,
                       output_archive* out) {
    switch (op) {
        case tramp_op::create: {
            auto args = load_value<CreateArgs>(*in);
            *object = std::apply([](auto&&... a) { return new T(std::move(a)...); }, std::move(args));
            return;
        }
        case tramp_op::destroy: delete static_cast<T*>(*object); return;
        case tramp_op::call: {
            T& obj = *static_cast<T*>(*object);
            std::uint32_t i = 0;
            bool done = ((method == i++ ? (call_member<T, Ms>(obj, *in, *out), true) : false) || ...);
            if (!done) throw serialization_error("mp: manager: no method number " + std::to_string(method));
            return;
        }
    }
}

template <auto F>
void call_function(input_archive& in, output_archive& out) {
    using tr = function_traits<decltype(F)>;
    run_and_save<tr>(in, out, [&](typename tr::args& a) -> decltype(auto) {
        return tr::invoke(F, a, std::make_index_sequence<std::tuple_size_v<typename tr::args>>{});
    });
}

template <auto... Fs>
void module_trampoline(tramp_op op, const void*, void** object, std::uint32_t method, input_archive* in,
                       output_archive* out) {
    static char instance;  // a module has no state; every proxy shares this
    switch (op) {
        case tramp_op::create: *object = &instance; return;
        case tramp_op::destroy: return;
        case tramp_op::call: {
            std::uint32_t i = 0;
            bool done = ((method == i++ ? (call_function<Fs>(*in, *out), true) : false) || ...);
            if (!done) throw serialization_error("mp: manager: no function number " + std::to_string(method));
            return;
        }
    }
}

/// What a generator proxy's "next" call returns: up to `max` items; fewer
/// (possibly none) means the range has ended.
template <class Range>
struct generator_state {
    Range range;
    std::ranges::iterator_t<Range> it{};
    bool begun = false;

    explicit generator_state(Range&& r) : range(std::move(r)) {}
};

template <class F>
void generator_trampoline(tramp_op op, const void* context, void** object, std::uint32_t, input_archive* in,
                          output_archive* out) {
    using tr = function_traits<F>;
    using range = typename tr::result;
    using state = generator_state<range>;
    using value = std::ranges::range_value_t<range>;
    switch (op) {
        case tramp_op::create: {
            auto args = load_value<typename tr::args>(*in);
            F f = reinterpret_cast<F>(const_cast<void*>(context));
            *object = new state(tr::invoke(f, args, std::make_index_sequence<std::tuple_size_v<typename tr::args>>{}));
            return;
        }
        case tramp_op::destroy: delete static_cast<state*>(*object); return;
        case tramp_op::call: {
            auto& s = *static_cast<state*>(*object);
            auto max = load_value<std::uint32_t>(*in);
            if (!s.begun) {
                s.it = std::ranges::begin(s.range);
                s.begun = true;
            }
            std::vector<value> batch;
            for (; batch.size() < max && s.it != std::ranges::end(s.range); ++s.it) batch.push_back(*s.it);
            save_value(*out, batch);
            return;
        }
    }
}

// ---- registered entries ----------------------------------------------------

enum class entry_kind : std::uint8_t { object, generator, module };

/// One registered name: what the server creates for it and which methods it
/// may call. Serialized (with its code as code_refs) only into the start-up
/// arguments of a server process running this same executable.
struct type_entry {
    std::string name;
    entry_kind kind = entry_kind::object;
    std::uint64_t class_tag = 0;  // what a proxy of it must be made for
    std::string class_name;
    std::uint64_t create_args_tag = 0;
    std::string create_args_type;
    std::vector<method_info> methods;
    std::vector<std::string> exposed;
    trampoline_fn trampoline = nullptr;
    const void* context = nullptr;
    /// The server runs calls on one object concurrently (the built-in shared
    /// types, which lock for themselves and may wait); otherwise one at a
    /// time. Never sent: registered types are always serialized.
    bool concurrent = false;

    template <class Archive>
    void save(Archive& ar) const {
        ar(name, kind, class_tag, class_name, create_args_tag, create_args_type, methods, exposed);
        ar(make_code_ref(reinterpret_cast<const void*>(trampoline)));
        bool has_context = context != nullptr;
        ar(has_context);
        if (has_context) ar(make_code_ref(context));
    }
    template <class Archive>
    void load(Archive& ar) {
        ar(name, kind, class_tag, class_name, create_args_tag, create_args_type, methods, exposed);
        code_ref t;
        ar(t);
        trampoline = resolve_as<trampoline_fn>(t);
        bool has_context = false;
        ar(has_context);
        if (has_context) {
            code_ref c;
            ar(c);
            context = resolve_code_ref(c);
        }
    }
};

/// Describes type T made from `CreateArgs` with methods Ms: one declaration
/// gives the server the names, argument and result tags and the code.
template <class T, class CreateArgs, auto... Ms>
type_entry object_entry(std::string name) {
    type_entry e;
    e.name = std::move(name);
    e.kind = entry_kind::object;
    e.class_name = std::string(type_name<T>());
    e.create_args_tag = type_tag<CreateArgs>();
    e.create_args_type = std::string(type_name<CreateArgs>());
    e.methods = {describe<Ms, member_traits<decltype(Ms)>>(nontype_name<Ms>())...};
    e.trampoline = sendable<&object_trampoline<T, CreateArgs, Ms...>>();
    return e;
}

/// The tag a generator proxy of T expects: its "next" returns std::vector<T>.
template <class T>
constexpr std::uint64_t generator_tag() noexcept {
    return type_tag<std::vector<T>>();
}

// ---- the client side ---------------------------------------------------------

using writer = void (*)(const void* context, output_archive& ar);
using reader = void (*)(void* context, input_archive& ar);

struct created {
    std::uint64_t id = 0;
    std::vector<std::string> exposed;
};

/// Limits a client applies to its connections.
struct client_limits {
    std::int64_t handshake_ms = 5000;
    std::uint64_t max_message = std::uint64_t{64} << 20;
    /// Pooled connections unused for longer are closed rather than reused,
    /// so that a server's idle timeout (longer, by default) never closes one
    /// under a call.
    std::int64_t idle_ms = 5 * 60 * 1000;
};

/// This process's connections to one server (src/manager/client.hpp): a
/// pool of authenticated sockets, one call at a time on each. Not public:
/// proxies reach it through the functions below.
class client;

/// Makes an object of the type registered as `type`; throws what the server threw.
created create_object(client& c, std::string_view type, std::uint64_t expect_tag, std::uint64_t args_tag,
                      writer write, const void* write_context);
/// One round trip: method `method` of object `id`. result_tag 0 accepts
/// any result (and `read` is not called). Throws what the server or the
/// method threw.
void call_method(client& c, std::uint64_t id, std::string_view method, std::uint64_t args_tag,
                 std::uint64_t result_tag, writer write, const void* write_context, reader read, void* read_context);
/// Gives a reference back. Never throws (a destructor's call): errors are dropped.
void release_object(client& c, std::uint64_t id) noexcept;

/// While one exists on a thread, what is decoded there came from a manager
/// connection (a reply, a stored value, a request in the server): a proxy
/// decoded in it may name only a server this process already knows.
class manager_data_scope {
public:
    manager_data_scope() noexcept;
    ~manager_data_scope();
    manager_data_scope(const manager_data_scope&) = delete;
    manager_data_scope& operator=(const manager_data_scope&) = delete;
};

/// This program's own random authkey (inherited by its children), as bytes.
[[nodiscard]] std::string default_authkey();
[[nodiscard]] int current_pid() noexcept;

/// A server object held by this process: proxies share one, and the last
/// copy gives the reference back (Python's decref), unless it was inherited
/// through fork() (then the parent still owns it).
class object_ref {
public:
    object_ref(std::shared_ptr<client> c, std::uint64_t id, std::string type, std::vector<std::string> exposed,
               std::uint64_t kind_tag)
        : client_(std::move(c)),
          id_(id),
          type_(std::move(type)),
          exposed_(std::move(exposed)),
          kind_tag_(kind_tag),
          owner_pid_(current_pid()) {}
    ~object_ref() {
        if (owner_pid_ == current_pid()) release_object(*client_, id_);
    }
    object_ref(const object_ref&) = delete;
    object_ref& operator=(const object_ref&) = delete;

    [[nodiscard]] client& owner() const noexcept { return *client_; }
    [[nodiscard]] std::uint64_t id() const noexcept { return id_; }
    [[nodiscard]] const std::string& type() const noexcept { return type_; }
    [[nodiscard]] const std::vector<std::string>& exposed() const noexcept { return exposed_; }
    [[nodiscard]] std::uint64_t kind_tag() const noexcept { return kind_tag_; }

private:
    std::shared_ptr<client> client_;
    std::uint64_t id_;
    std::string type_;
    std::vector<std::string> exposed_;
    std::uint64_t kind_tag_;
    int owner_pid_;
};

/// Serializes a proxy: the server's address and the object's id, never a
/// key (the receiver must already hold it, as in Python).
void save_ref(output_archive& ar, const std::shared_ptr<object_ref>& ref);
/// Rebuilds it in this process, taking a new reference on the server
/// (incref, one round trip) with the key this process holds for that
/// server: the one it started or connected it with, else the program's own.
/// Inside a manager_data_scope the server must be one this process started,
/// served or connected to (or received a proxy of through the program's own
/// channels), else mp::authentication_error: data from a manager must not
/// make this process authenticate to an address of someone else's choosing.
/// Throws mp::serialization_error if the proxy was sent as another proxy type
/// (the server checks it again).
std::shared_ptr<object_ref> load_ref(input_archive& ar, std::uint64_t kind_tag, std::string_view kind_name);

/// Serialized bytes of a value (what the shared types store on the server).
template <class T>
std::string to_bytes(const T& value) {
    output_archive ar;
    save_value(ar, value);
    std::string s(ar.size(), '\0');
    ar.copy_to(reinterpret_cast<std::byte*>(s.data()));
    return s;
}

template <class T>
T from_bytes(const std::string& bytes) {
    manager_data_scope from_a_manager;
    input_archive ar(std::as_bytes(std::span<const char>(bytes.data(), bytes.size())));
    ar.set_data_only();  // a shared object's value came through the server: data only
    T value = load_value<T>(ar);
    if (ar.remaining() != 0)
        throw serialization_error("mp: a shared object's stored value has " + std::to_string(ar.remaining()) +
                                  " bytes more than a " + std::string(type_name<T>()) + " takes");
    return value;
}

}  // namespace detail::mgr
}  // namespace mp
