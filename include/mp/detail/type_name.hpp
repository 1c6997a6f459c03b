// mp/detail/type_name.hpp — compile-time type names and tags for messages.
#pragma once

#include <cstdint>
#include <string_view>

namespace mp::detail {

template <class T>
constexpr std::string_view type_name() noexcept {
    std::string_view p = __PRETTY_FUNCTION__;
    auto start = p.find("T = ") + 4;
    auto end = p.find_first_of(";]", start);
    return p.substr(start, end - start);
}

constexpr std::uint64_t fnv1a(std::string_view s) noexcept {
    std::uint64_t h = 1469598103934665603ULL;
    for (char c : s) {
        h ^= static_cast<unsigned char>(c);
        h *= 1099511628211ULL;
    }
    return h;
}

/// A tag that identifies T on the wire; equal in every process of one build.
template <class T>
constexpr std::uint64_t type_tag() noexcept {
    return fnv1a(type_name<T>());
}

}  // namespace mp::detail
