// mp/function.hpp — functions as data that can cross process boundaries.
//
// mp::fn<&f> is a serializable handle to the plain function f, known at
// compile time; mp::function<R(Args...)> is a type-erased, serializable,
// callable handle that mp::fn<&f>, a plain function pointer, or a captureless
// lambda of a matching signature converts to. Both have name() ("mul"), so
// tasks can be sent as (function, arguments) pairs, as in Python's
// `(mul, (i, 7))`. Both are thread-safe to call; copying is cheap.
#pragma once

#include <concepts>
#include <functional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "mp/detail/code_ref.hpp"
#include "mp/error.hpp"

namespace mp {

namespace detail {
template <auto F>
constexpr std::string_view nontype_name() noexcept {
    std::string_view p = __PRETTY_FUNCTION__;
    auto start = p.find("F = ") + 4;
    auto end = p.find_first_of(";]", start);
    std::string_view name = p.substr(start, end - start);
    if (!name.empty() && name.front() == '&') name.remove_prefix(1);
    // Python's __name__ is unqualified: keep what follows the last "::" that
    // is outside template arguments.
    int depth = 0;
    std::size_t cut = 0;
    for (std::size_t i = 0; i + 1 < name.size(); ++i) {
        if (name[i] == '<') ++depth;
        if (name[i] == '>') --depth;
        if (depth == 0 && name[i] == ':' && name[i + 1] == ':') cut = i + 2;
    }
    return name.substr(cut);
}
}  // namespace detail

/// The type of mp::fn<F>: an empty, serializable function object calling F.
template <auto F>
struct fn_t {
    static_assert(std::is_pointer_v<decltype(F)> && std::is_function_v<std::remove_pointer_t<decltype(F)>>,
                  "mp::fn<F>: F must be the address of a plain function, e.g. mp::fn<&mul>");

    /// The function's unqualified name, e.g. "mul".
    [[nodiscard]] static constexpr std::string_view name() noexcept { return detail::nontype_name<F>(); }

    template <class... A>
        requires std::invocable<decltype(F), A...>
    decltype(auto) operator()(A&&... args) const {
        return std::invoke(F, std::forward<A>(args)...);
    }

    template <class Archive>
    void serialize(Archive&) {}  // nothing to send: every process has F
};

/// A serializable handle to the plain function F: `pool.map(mp::fn<&square>, xs)`.
template <auto F>
inline constexpr fn_t<F> fn{};

template <class Signature>
class function;

/// A type-erased, serializable handle to a plain function of this signature.
/// Empty when default-constructed; calling an empty one throws mp::error.
template <class R, class... Args>
class function<R(Args...)> {
public:
    using pointer = R (*)(Args...);

    function() = default;

    template <auto F>
        requires std::is_invocable_r_v<R, decltype(F), Args...>
    function(fn_t<F>)  // NOLINT: converts like a function pointer does
        : call_(detail::sendable<&call_fn<F>>()), name_(fn_t<F>::name()) {}

    /// The name is looked up in the program's exported symbols (mp::mp links
    /// with -rdynamic); a function with internal linkage gets an empty name.
    /// mp::fn<&f> always knows its name.
    function(pointer f)  // NOLINT
        : call_(f), name_(f ? detail::function_name(reinterpret_cast<const void*>(f)) : std::string()) {}

    /// A captureless lambda of the exact signature. It travels as an entry
    /// point made for its type, which every process of the program knows.
    template <class L>
        requires(std::is_empty_v<L> && std::is_default_constructible_v<L> && std::is_convertible_v<L, pointer> &&
                 !std::is_same_v<L, function>)
    function(L)  // NOLINT
        : call_(detail::sendable<&call_lambda<L>>()), name_("<lambda>") {}

    R operator()(Args... args) const {
        if (!call_) throw error("mp::function: called an empty function");
        return call_(std::forward<Args>(args)...);
    }

    [[nodiscard]] const std::string& name() const noexcept { return name_; }
    [[nodiscard]] explicit operator bool() const noexcept { return call_ != nullptr; }

    template <class Archive>
    void save(Archive& ar) const {
        bool present = call_ != nullptr;
        ar(present);
        if (present) ar(detail::code_ref_of(call_), name_);
    }
    template <class Archive>
    void load(Archive& ar) {
        bool present = false;
        ar(present);
        if (!present) {
            call_ = nullptr;
            name_.clear();
            return;
        }
        detail::code_ref ref;
        ar(ref, name_);
        // A plain function or one of the entry points made above.
        call_ = detail::resolve_function_as<pointer>(ref);
    }

private:
    template <auto F>
    static R call_fn(Args... args) {
        return static_cast<R>(std::invoke(F, std::forward<Args>(args)...));
    }
    template <class L>
    static R call_lambda(Args... args) {
        return static_cast<R>(L{}(std::forward<Args>(args)...));
    }

    pointer call_ = nullptr;
    std::string name_;
};

}  // namespace mp
