// mp/function.hpp — functions as data that can cross process boundaries.
//
// mp::fn<&f> is a serializable handle to the plain function f, known at
// compile time; mp::function<R(Args...)> is a type-erased, serializable,
// callable handle that mp::fn<&f>, a plain function pointer, or a captureless
// lambda of a matching signature converts to. Both have name() ("mul"), so
// tasks can be sent as (function, arguments) pairs, as in Python's
// `(mul, (i, 7))`. Both are thread-safe to call; copying is cheap.
//
// An mp::function may also hold a bound call, a function with arguments
// already given (mp::bind, mp/bind.hpp): it then travels with those arguments,
// which may be queues, locks, values and shared memory (they travel as file
// descriptors beside the bytes, as mp::process arguments do).
#pragma once

#include <concepts>
#include <cstdint>
#include <functional>
#include <memory>
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
/// A call with some arguments already bound (mp::bind), held by an
/// mp::function: called, saved, and rebuilt in another process by the loader
/// whose code_ref save() writes first.
template <class R, class... Args>
class bound_base {
public:
    virtual ~bound_base() = default;
    virtual R call(Args... args) const = 0;
    /// Writes the code_ref of its loader (a registered entry), then its data.
    virtual void save(output_archive& ar) const = 0;
};

template <class R, class... Args>
using bound_loader = std::shared_ptr<const bound_base<R, Args...>> (*)(input_archive& ar);

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

/// A type-erased, serializable handle to a plain function of this signature,
/// or to a bound call (mp::bind) callable with it. Empty when
/// default-constructed; calling an empty one throws mp::error.
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

    /// A bound call (what mp::bind returns converts to this); `name` is its
    /// function's.
    function(std::shared_ptr<const detail::bound_base<R, Args...>> bound, std::string name)
        : name_(std::move(name)), bound_(std::move(bound)) {}

    R operator()(Args... args) const {
        if (bound_) return bound_->call(std::forward<Args>(args)...);
        if (!call_) throw error("mp::function: called an empty function");
        return call_(std::forward<Args>(args)...);
    }

    [[nodiscard]] const std::string& name() const noexcept { return name_; }
    [[nodiscard]] explicit operator bool() const noexcept { return call_ != nullptr || bound_ != nullptr; }

    // Message form: [u8 kind] then, for a function, its code_ref and name;
    // for a bound call, its name, its loader's code_ref and its data. (Kind
    // 0 and 1 are the bytes of the bool this used to write.)
    template <class Archive>
    void save(Archive& ar) const {
        std::uint8_t kind = bound_ ? kind_bound : call_ ? kind_function : kind_empty;
        ar(kind);
        if (kind == kind_function) {
            ar(detail::code_ref_of(call_), name_);
        } else if (kind == kind_bound) {
            ar(name_);
            bound_->save(ar);
        }
    }
    template <class Archive>
    void load(Archive& ar) {
        std::uint8_t kind = kind_empty;
        ar(kind);
        call_ = nullptr;
        bound_.reset();
        name_.clear();
        detail::code_ref ref;
        switch (kind) {
            case kind_empty: return;
            case kind_function:
                ar(ref, name_);
                // A plain function or one of the entry points made above.
                call_ = detail::resolve_function_as<pointer>(ref);
                return;
            case kind_bound:
                ar(name_, ref);
                // Only registered entries resolve: the loader mp::bind made.
                bound_ = detail::resolve_as<detail::bound_loader<R, Args...>>(ref)(ar);
                return;
            default: throw serialization_error("mp: corrupt message: an mp::function of unknown kind");
        }
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

    static constexpr std::uint8_t kind_empty = 0, kind_function = 1, kind_bound = 2;

    pointer call_ = nullptr;
    std::string name_;
    std::shared_ptr<const detail::bound_base<R, Args...>> bound_;  // a bound call, instead of call_
};

}  // namespace mp
