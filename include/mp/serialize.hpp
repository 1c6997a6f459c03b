// mp/serialize.hpp — what can cross a process boundary, and how.
//
// A value crosses a process boundary (as a process argument, a queue item, a
// pipe message, a task argument or result) when it is serializable with
// cereal: arithmetic types, enums, the standard containers and vocabulary
// types listed below, mp::function, mp's own handles (queues, locks, pipes,
// shared memory: they travel by reference, the receiver shares the object),
// and any user type with cereal's `template <class Archive> void
// serialize(Archive&)` (or save/load) members or free functions.
//
// Using a type that cannot cross is a compile-time error whose message names
// the type and says what to do instead: this is Python's "can't pickle
// _thread.RLock objects", caught before the program runs.
//
// Decoding trusts nothing in the bytes: a container's declared size is
// checked against what the rest of the message can hold before anything is
// allocated, a bool must be 0 or 1, a variant's index must name an
// alternative, and a function must be one this program can send (see
// mp/detail/code_ref.hpp); anything else is mp::serialization_error.
//
// Exceptions cross too: the standard exception types, mp's errors and types
// registered with mp::register_exception<E>() are rethrown with their type;
// any other exception arrives as mp::remote_error.
#pragma once

#include <cereal/types/array.hpp>
#include <cereal/types/chrono.hpp>
#include <cereal/types/complex.hpp>
#include <cereal/types/deque.hpp>
#include <cereal/types/list.hpp>
#include <cereal/types/map.hpp>
#include <cereal/types/optional.hpp>
#include <cereal/types/set.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/tuple.hpp>
#include <cereal/types/unordered_map.hpp>
#include <cereal/types/unordered_set.hpp>
#include <cereal/types/utility.hpp>
#include <cereal/types/variant.hpp>
#include <cereal/types/vector.hpp>

#include <condition_variable>
#include <exception>
#include <functional>
#include <future>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <thread>
#include <type_traits>

#include "mp/detail/archive.hpp"
#include "mp/detail/bounded_load.hpp"
#include "mp/detail/type_name.hpp"

namespace mp {

template <class R>
class future;

namespace detail {

template <class T, template <class...> class Template>
inline constexpr bool is_specialization_v = false;
template <template <class...> class Template, class... A>
inline constexpr bool is_specialization_v<Template<A...>, Template> = true;

template <class T>
inline constexpr bool cereal_serializable_v =
    cereal::traits::is_output_serializable<T, output_archive>::value &&
    cereal::traits::is_input_serializable<T, input_archive>::value;

/// The first type inside T (T itself, an element, a member of a tuple...)
/// that cannot cross a process boundary, or void if all of T can.
template <class T>
struct first_untransferable {
    using type = std::conditional_t<cereal_serializable_v<T> && !std::is_pointer_v<T>, void, T>;
};

template <class... Ts>
struct first_of;
template <>
struct first_of<> {
    using type = void;
};
template <class T, class... Ts>
struct first_of<T, Ts...> {
    using head = typename first_untransferable<std::remove_cv_t<T>>::type;
    using type = std::conditional_t<std::is_void_v<head>, typename first_of<Ts...>::type, head>;
};

template <class T, class A>
struct first_untransferable<std::vector<T, A>> : first_of<T> {};
template <class T, class A>
struct first_untransferable<std::deque<T, A>> : first_of<T> {};
template <class T, class A>
struct first_untransferable<std::list<T, A>> : first_of<T> {};
template <class T, std::size_t N>
struct first_untransferable<std::array<T, N>> : first_of<T> {};
template <class T, class C, class A>
struct first_untransferable<std::set<T, C, A>> : first_of<T> {};
template <class T, class H, class E, class A>
struct first_untransferable<std::unordered_set<T, H, E, A>> : first_of<T> {};
template <class K, class V, class C, class A>
struct first_untransferable<std::map<K, V, C, A>> : first_of<K, V> {};
template <class K, class V, class H, class E, class A>
struct first_untransferable<std::unordered_map<K, V, H, E, A>> : first_of<K, V> {};
template <class A, class B>
struct first_untransferable<std::pair<A, B>> : first_of<A, B> {};
template <class... Ts>
struct first_untransferable<std::tuple<Ts...>> : first_of<Ts...> {};
template <class... Ts>
struct first_untransferable<std::variant<Ts...>> : first_of<Ts...> {};
template <class T>
struct first_untransferable<std::optional<T>> : first_of<T> {};

template <class T>
inline constexpr bool dependent_false_v = false;

template <class T>
inline constexpr bool is_std_sync_v =
    std::is_same_v<T, std::mutex> || std::is_same_v<T, std::recursive_mutex> ||
    std::is_same_v<T, std::timed_mutex> || std::is_same_v<T, std::recursive_timed_mutex> ||
    std::is_same_v<T, std::shared_mutex> || std::is_same_v<T, std::condition_variable> ||
    std::is_same_v<T, std::condition_variable_any> || std::is_same_v<T, std::thread> ||
    std::is_same_v<T, std::jthread>;

/// Stops compilation with a message that names `Culprit` (in the
/// "required from" line) and says what to pass instead. `Whole` is the type
/// the user passed, which contains Culprit.
template <class Culprit, class Whole>
constexpr void type_cannot_cross_a_process_boundary() {
    if constexpr (is_specialization_v<Culprit, mp::future> || is_specialization_v<Culprit, std::future> ||
                  is_specialization_v<Culprit, std::shared_future>) {
        static_assert(dependent_false_v<Culprit>,
                      "mp: a future cannot cross a process boundary (it holds a lock and a condition "
                      "variable, Python's \"can't pickle _thread.RLock\"): return the future's value "
                      "instead, e.g. collect f.get() for each inner future and return those values");
    } else if constexpr (std::is_pointer_v<Culprit>) {
        static_assert(dependent_false_v<Culprit>,
                      "mp: a raw pointer cannot cross a process boundary (the address means nothing in "
                      "another process): pass the value it points to, a std::vector, or mp::shared_memory");
    } else if constexpr (is_std_sync_v<Culprit>) {
        static_assert(dependent_false_v<Culprit>,
                      "mp: std::mutex, std::condition_variable and std::thread cannot cross a process "
                      "boundary: use the process-shared mp::lock, mp::rlock, mp::condition or mp::event "
                      "and pass that instead");
    } else if constexpr (is_specialization_v<Culprit, std::function>) {
        static_assert(dependent_false_v<Culprit>,
                      "mp: std::function cannot cross a process boundary: use mp::function<R(Args...)> "
                      "or mp::fn<&f> (they name a plain function, which every process has)");
    } else if constexpr (std::is_reference_v<Culprit>) {
        static_assert(dependent_false_v<Culprit>,
                      "mp: a reference cannot cross a process boundary: pass the value");
    } else {
        static_assert(dependent_false_v<Culprit>,
                      "mp: this type cannot cross a process boundary: give it a cereal serialize "
                      "member (template <class Archive> void serialize(Archive& ar) { ar(members...); }) "
                      "or pass plain data (numbers, strings, standard containers) instead");
    }
}

}  // namespace detail

/// True when values of T can be sent to another process.
template <class T>
concept transferable = std::is_void_v<typename detail::first_untransferable<std::remove_cvref_t<T>>::type>;

namespace detail {

/// Fails to compile, with a message naming the culprit, unless T can cross.
template <class T>
constexpr bool require_transferable() {
    using whole = std::remove_cvref_t<T>;
    using culprit = typename first_untransferable<whole>::type;
    if constexpr (!std::is_void_v<culprit>) type_cannot_cross_a_process_boundary<culprit, whole>();
    return true;
}

template <class T>
void save_value(output_archive& ar, const T& value) {
    static_assert(require_transferable<T>());
    ar(value);
}

template <class T>
T load_value(input_archive& ar) {
    static_assert(require_transferable<T>());
    static_assert(std::is_default_constructible_v<T>,
                  "mp: a type received from another process must be default-constructible "
                  "(cereal constructs it, then loads its members)");
    T value;
    ar(value);
    return value;
}

/// An exception in a form that crosses a process boundary.
struct exception_record {
    std::string type_name;  // demangled dynamic type, e.g. "std::invalid_argument"
    std::string what;
    std::string trace;
    int code = 0;  // errno, for mp::system_error

    template <class Archive>
    void serialize(Archive& ar) {
        ar(type_name, what, trace, code);
    }
};

/// Describes the exception currently held by `e`.
exception_record capture_exception(std::exception_ptr e);
/// Rebuilds the exception: its own type when known here, else mp::remote_error.
std::exception_ptr rebuild_exception(const exception_record& record);
void register_exception_factory(std::string type_name, std::exception_ptr (*make)(const std::string& what));
std::string demangle(const char* mangled);

}  // namespace detail

/// Makes exceptions of type E thrown in another process arrive here as E
/// (instead of mp::remote_error). E must be constructible from a std::string
/// (its what()). Call it in the receiving process, e.g. at the start of main
/// or from a namespace-scope initializer; calling it again is harmless.
/// Returns true, so `static const bool registered = mp::register_exception<E>();` works.
template <class E>
bool register_exception() {
    static_assert(std::is_constructible_v<E, std::string>,
                  "mp::register_exception<E>: E must be constructible from its what() string");
    detail::register_exception_factory(detail::demangle(typeid(E).name()),
                                       [](const std::string& what) { return std::make_exception_ptr(E(what)); });
    return true;
}

}  // namespace mp
