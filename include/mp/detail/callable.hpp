// mp/detail/callable.hpp — sending a callable to a freshly started process.
//
// A plain function pointer travels as a code_ref; an mp::function or a
// cereal-serializable function object is serialized; an empty,
// default-constructible function object (a captureless lambda, mp::fn<&f>) is
// rebuilt from its type alone. Anything else (a lambda with captures, say) can
// only run in a fork child, which inherits it.
#pragma once

#include <type_traits>

#include "mp/detail/code_ref.hpp"
#include "mp/serialize.hpp"

namespace mp::detail {

template <class F>
inline constexpr bool is_function_pointer_v =
    std::is_pointer_v<F> && std::is_function_v<std::remove_pointer_t<F>>;

template <class F>
inline constexpr bool sendable_callable_v =
    is_function_pointer_v<F> || cereal_serializable_v<F> ||
    (std::is_empty_v<F> && std::is_default_constructible_v<F>);

template <class F>
void save_callable(output_archive& ar, const F& f) {
    if constexpr (is_function_pointer_v<F>)
        ar(code_ref_of(f));
    else if constexpr (cereal_serializable_v<F>)
        ar(f);
    // empty and default-constructible: its type says everything
}

template <class F>
F load_callable(input_archive& ar) {
    if constexpr (is_function_pointer_v<F>) {
        code_ref ref;
        ar(ref);
        return resolve_function_as<F>(ref);
    } else if constexpr (cereal_serializable_v<F>) {
        F f{};
        ar(f);
        return f;
    } else {
        return F{};
    }
}

}  // namespace mp::detail
