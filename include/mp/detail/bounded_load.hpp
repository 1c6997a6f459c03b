// mp/detail/bounded_load.hpp — loads of the standard containers that cannot
// be made to allocate more than the message could hold.
//
// cereal's own loads believe a declared element count and resize first: a
// 4 MiB message declaring 4 million pair<string, string> elements grows the
// process by 256 MiB before failing. Here every count is checked against
// what the bytes left can encode (count × the smallest encoding of one
// element), so the memory a decode takes is bounded by a small multiple of
// the message's size, and a corrupt count is an mp::serialization_error.
// The overloads below are more specialized than cereal's (they take mp's
// input archive), so they win for every container SPEC §2 lists.
#pragma once

#include <cereal/types/variant.hpp>

#include <array>
#include <chrono>
#include <complex>
#include <cstdint>
#include <deque>
#include <list>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include "mp/detail/archive.hpp"

namespace mp::detail {

/// The fewest bytes a T can take in a message. Unknown (user) types take at
/// least one byte unless they are empty, which cereal elides entirely.
template <class T>
struct min_encoded_size : std::integral_constant<std::size_t, std::is_empty_v<T> ? 0 : 1> {};

template <class T>
inline constexpr std::size_t min_encoded_size_v = min_encoded_size<std::remove_cv_t<T>>::value;

template <class T>
    requires(std::is_arithmetic_v<T> || std::is_enum_v<T>)
struct min_encoded_size<T> : std::integral_constant<std::size_t, sizeof(T)> {};

// Every sized container starts with its 64-bit element count.
template <class T>
struct count_prefixed : std::integral_constant<std::size_t, sizeof(cereal::size_type)> {};
template <class C, class T, class A>
struct min_encoded_size<std::basic_string<C, T, A>> : count_prefixed<C> {};
template <class T, class A>
struct min_encoded_size<std::vector<T, A>> : count_prefixed<T> {};
template <class T, class A>
struct min_encoded_size<std::deque<T, A>> : count_prefixed<T> {};
template <class T, class A>
struct min_encoded_size<std::list<T, A>> : count_prefixed<T> {};
template <class K, class C, class A>
struct min_encoded_size<std::set<K, C, A>> : count_prefixed<K> {};
template <class K, class C, class A>
struct min_encoded_size<std::multiset<K, C, A>> : count_prefixed<K> {};
template <class K, class H, class E, class A>
struct min_encoded_size<std::unordered_set<K, H, E, A>> : count_prefixed<K> {};
template <class K, class H, class E, class A>
struct min_encoded_size<std::unordered_multiset<K, H, E, A>> : count_prefixed<K> {};
template <class K, class V, class C, class A>
struct min_encoded_size<std::map<K, V, C, A>> : count_prefixed<K> {};
template <class K, class V, class C, class A>
struct min_encoded_size<std::multimap<K, V, C, A>> : count_prefixed<K> {};
template <class K, class V, class H, class E, class A>
struct min_encoded_size<std::unordered_map<K, V, H, E, A>> : count_prefixed<K> {};
template <class K, class V, class H, class E, class A>
struct min_encoded_size<std::unordered_multimap<K, V, H, E, A>> : count_prefixed<K> {};

template <class A, class B>
struct min_encoded_size<std::pair<A, B>>
    : std::integral_constant<std::size_t, min_encoded_size_v<A> + min_encoded_size_v<B>> {};
template <class... Ts>
struct min_encoded_size<std::tuple<Ts...>> : std::integral_constant<std::size_t, (min_encoded_size_v<Ts> + ... + 0)> {};
template <class T, std::size_t N>
struct min_encoded_size<std::array<T, N>> : std::integral_constant<std::size_t, N * min_encoded_size_v<T>> {};
template <class T>
struct min_encoded_size<std::optional<T>> : std::integral_constant<std::size_t, 1> {};
template <class T>
struct min_encoded_size<std::complex<T>> : std::integral_constant<std::size_t, 2 * sizeof(T)> {};
template <class R, class P>
struct min_encoded_size<std::chrono::duration<R, P>> : std::integral_constant<std::size_t, sizeof(R)> {};
template <class T, class... Ts>
struct min_encoded_size<std::variant<T, Ts...>>
    : std::integral_constant<std::size_t, sizeof(std::int32_t) + std::min({min_encoded_size_v<T>,
                                                                           min_encoded_size_v<Ts>...})> {};

/// Reads a container's element count and checks that the bytes left can hold
/// that many elements of type T.
template <class T>
std::size_t load_count(input_archive& ar) {
    cereal::size_type count = 0;
    ar.loadBinary(&count, sizeof count);
    ar.check_count(count, min_encoded_size_v<T>);
    return static_cast<std::size_t>(count);
}

template <class Container>
void load_sequence(input_archive& ar, Container& c) {
    std::size_t n = load_count<typename Container::value_type>(ar);
    c.clear();
    for (std::size_t i = 0; i < n; ++i) ar(c.emplace_back());
}

template <class Set>
void load_set(input_archive& ar, Set& s) {
    std::size_t n = load_count<typename Set::value_type>(ar);
    s.clear();
    if constexpr (requires { s.reserve(n); }) s.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
        typename Set::key_type key;
        ar(key);
        s.emplace_hint(s.end(), std::move(key));
    }
}

template <class T>
struct is_std_string : std::false_type {};
template <class C, class T, class A>
struct is_std_string<std::basic_string<C, T, A>> : std::true_type {};

template <class Map>
void load_map(input_archive& ar, Map& m) {
    using key = typename Map::key_type;
    using mapped = typename Map::mapped_type;
    std::size_t n = load_count<std::pair<key, mapped>>(ar);
    m.clear();
    if constexpr (requires { m.reserve(n); }) m.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
        // cereal writes a map item as its key, then its value.
        if constexpr (is_std_string<key>::value) {
            // A string key is built once, in the map's node, from the
            // message bytes (no temporary string to move from).
            using char_type = typename key::value_type;
            auto bytes = ar.take_counted(sizeof(char_type));
            mapped v;
            ar(v);
            m.emplace_hint(m.end(), std::piecewise_construct,
                           std::forward_as_tuple(reinterpret_cast<const char_type*>(bytes.data()),
                                                 bytes.size() / sizeof(char_type)),
                           std::forward_as_tuple(std::move(v)));
        } else {
            key k;
            mapped v;
            ar(k, v);
            m.emplace_hint(m.end(), std::move(k), std::move(v));
        }
    }
}

}  // namespace mp::detail

namespace cereal {

// Vectors of numbers are loaded in archive.hpp (one copy from the message).
template <class T, class A>
    requires(!std::is_arithmetic_v<T>)
inline void CEREAL_LOAD_FUNCTION_NAME(mp::detail::input_archive& ar, std::vector<T, A>& v) {
    std::size_t n = mp::detail::load_count<T>(ar);
    v.clear();
    v.resize(n);
    for (auto& x : v) ar(x);
}
template <class A>
inline void CEREAL_LOAD_FUNCTION_NAME(mp::detail::input_archive& ar, std::vector<bool, A>& v) {
    std::size_t n = mp::detail::load_count<bool>(ar);
    v.assign(n, false);
    for (std::size_t i = 0; i < n; ++i) {
        bool b = false;
        ar(b);
        v[i] = b;
    }
}
template <class T, class A>
inline void CEREAL_LOAD_FUNCTION_NAME(mp::detail::input_archive& ar, std::deque<T, A>& d) {
    mp::detail::load_sequence(ar, d);
}
template <class T, class A>
inline void CEREAL_LOAD_FUNCTION_NAME(mp::detail::input_archive& ar, std::list<T, A>& l) {
    mp::detail::load_sequence(ar, l);
}
template <class K, class C, class A>
inline void CEREAL_LOAD_FUNCTION_NAME(mp::detail::input_archive& ar, std::set<K, C, A>& s) {
    mp::detail::load_set(ar, s);
}
template <class K, class C, class A>
inline void CEREAL_LOAD_FUNCTION_NAME(mp::detail::input_archive& ar, std::multiset<K, C, A>& s) {
    mp::detail::load_set(ar, s);
}
template <class K, class H, class E, class A>
inline void CEREAL_LOAD_FUNCTION_NAME(mp::detail::input_archive& ar, std::unordered_set<K, H, E, A>& s) {
    mp::detail::load_set(ar, s);
}
template <class K, class H, class E, class A>
inline void CEREAL_LOAD_FUNCTION_NAME(mp::detail::input_archive& ar, std::unordered_multiset<K, H, E, A>& s) {
    mp::detail::load_set(ar, s);
}
template <class K, class V, class C, class A>
inline void CEREAL_LOAD_FUNCTION_NAME(mp::detail::input_archive& ar, std::map<K, V, C, A>& m) {
    mp::detail::load_map(ar, m);
}
template <class K, class V, class C, class A>
inline void CEREAL_LOAD_FUNCTION_NAME(mp::detail::input_archive& ar, std::multimap<K, V, C, A>& m) {
    mp::detail::load_map(ar, m);
}
template <class K, class V, class H, class E, class A>
inline void CEREAL_LOAD_FUNCTION_NAME(mp::detail::input_archive& ar, std::unordered_map<K, V, H, E, A>& m) {
    mp::detail::load_map(ar, m);
}
template <class K, class V, class H, class E, class A>
inline void CEREAL_LOAD_FUNCTION_NAME(mp::detail::input_archive& ar, std::unordered_multimap<K, V, H, E, A>& m) {
    mp::detail::load_map(ar, m);
}

// cereal checks only the upper bound of a variant's index (a negative one
// ends in cereal::Exception); both bounds make a serialization_error here.
template <class T, class... Ts>
inline void CEREAL_LOAD_FUNCTION_NAME(mp::detail::input_archive& ar, std::variant<T, Ts...>& v) {
    std::int32_t index = -1;
    ar(index);
    if (index < 0 || index >= static_cast<std::int32_t>(1 + sizeof...(Ts)))
        throw mp::serialization_error("mp: corrupt message: a variant's index is " + std::to_string(index) +
                                      " but it has " + std::to_string(1 + sizeof...(Ts)) + " alternatives");
    variant_detail::load_variant<0>(ar, index, v);
}

}  // namespace cereal
