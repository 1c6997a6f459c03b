// mp/bind.hpp — a function with some of its arguments given now, that can
// cross a process boundary: Python's functools.partial, and what makes a
// pool's initializer take arguments (Python's `initargs`).
//
//     mp::pool pool({.processes = 2, .initializer = mp::bind(init, q, lock)});
//     auto add10 = mp::bind(add, 10);     add10(5) == 15
//     pool.map(mp::bind(scale, 2.5), xs); // scale(2.5, x) for each x
//
// Promises:
// - mp::bind(f, args...) copies (or moves) f and args into a bound_call;
//   calling it with more arguments calls f(args..., more...), the bound
//   arguments passed as lvalues.
// - A bound_call is serializable: it crosses a process boundary wherever a
//   function object may (a process target, a pool task, an initializer). f
//   must be a function that can travel (a plain function, a captureless
//   lambda, mp::fn<&f>, an mp::function, or a serializable function object);
//   each argument must be transferable (checked at compile time).
// - It converts to mp::function<R(A...)> when callable as R(A...), so it is
//   usable wherever an mp::function is taken. Its arguments may then be
//   mp::queue, mp::lock and the other synchronisation objects, mp::value,
//   mp::array and mp::shared_memory: they travel as file descriptors beside
//   the bytes, as mp::process arguments do, so a pool's workers (including
//   the replacements it starts later, under every start method) share them.
//   Pool and executor *task* arguments travel as bytes only: a bound call
//   holding such an object is refused as a task (mp::serialization_error).
// Thread-safety: as the bound function and arguments are (calls may run at
// once; a function that changes its bound arguments must synchronise).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "mp/detail/callable.hpp"
#include "mp/function.hpp"
#include "mp/serialize.hpp"

namespace mp {

template <class F, class... Bound>
class bound_call;

namespace detail {

template <class F>
std::string callable_name(const F& f) {
    if constexpr (is_function_pointer_v<F>) {
        return f ? function_name(reinterpret_cast<const void*>(f)) : std::string();
    } else if constexpr (requires { std::string(f.name()); }) {
        return std::string(f.name());
    } else {
        return "<lambda>";
    }
}

/// A bound call of type B behind an mp::function<R(Args...)>.
template <class B, class R, class... Args>
class bound_holder final : public bound_base<R, Args...> {
public:
    bound_holder() = default;
    explicit bound_holder(B b) : bound_(std::move(b)) {}

    R call(Args... args) const override {
        if constexpr (std::is_void_v<R>)
            std::invoke(bound_, std::forward<Args>(args)...);
        else
            return static_cast<R>(std::invoke(bound_, std::forward<Args>(args)...));
    }
    void save(output_archive& ar) const override {
        ar(code_ref_of(sendable<&bound_holder::load>()));
        ar(bound_);
    }
    static std::shared_ptr<const bound_base<R, Args...>> load(input_archive& ar) {
        auto h = std::make_shared<bound_holder>();
        ar(h->bound_);
        return h;
    }

private:
    mutable B bound_;  // called as an lvalue: the bound arguments reach f as lvalues
};

}  // namespace detail

/// f with `Bound` arguments given: what mp::bind returns.
template <class F, class... Bound>
class bound_call {
public:
    /// Empty (for loading from a message).
    bound_call() = default;
    template <class G, class... A>
    explicit bound_call(std::in_place_t, G&& f, A&&... args)
        : f_(std::forward<G>(f)), args_(std::forward<A>(args)...) {}

    template <class... More>
        requires std::is_invocable_v<F&, Bound&..., More...>
    decltype(auto) operator()(More&&... more) {
        return std::apply([&](Bound&... b) -> decltype(auto) { return std::invoke(f_, b..., std::forward<More>(more)...); },
                          args_);
    }
    template <class... More>
        requires std::is_invocable_v<const F&, const Bound&..., More...>
    decltype(auto) operator()(More&&... more) const {
        return std::apply(
            [&](const Bound&... b) -> decltype(auto) { return std::invoke(f_, b..., std::forward<More>(more)...); },
            args_);
    }

    /// The bound function's name ("init"), as mp::function::name().
    [[nodiscard]] std::string name() const { return detail::callable_name(f_); }

    /// An mp::function that calls this bound call (with its own copy of the
    /// function and arguments).
    template <class R, class... A>
        requires std::is_invocable_r_v<R, F&, Bound&..., A...>
    operator function<R(A...)>() const {  // NOLINT: converts as a plain function does
        return function<R(A...)>(std::make_shared<detail::bound_holder<bound_call, R, A...>>(*this), name());
    }

    template <class Archive>
    void save(Archive& ar) const {
        detail::save_callable(ar, f_);
        std::apply([&](const Bound&... b) { (ar(b), ...); }, args_);
    }
    template <class Archive>
    void load(Archive& ar) {
        f_ = detail::load_callable<F>(ar);
        std::apply([&](Bound&... b) { (ar(b), ...); }, args_);
    }

private:
    F f_{};
    std::tuple<Bound...> args_{};
};

/// f with `args` bound first (Python's functools.partial(f, *args)): a
/// serializable function object; see the top of this file.
template <class F, class... Args>
[[nodiscard]] bound_call<std::decay_t<F>, std::decay_t<Args>...> bind(F&& f, Args&&... args) {
    using fn = std::decay_t<F>;
    static_assert(detail::sendable_callable_v<fn>,
                  "mp::bind: the bound call crosses process boundaries, so its function must be able to travel: "
                  "pass a plain function, a captureless lambda, mp::fn<&f>, an mp::function, or a "
                  "default-constructible or serializable function object (bind the captured data instead)");
    static_assert((detail::require_transferable<std::decay_t<Args>>() && ...));
    static_assert((std::is_default_constructible_v<std::decay_t<Args>> && ...),
                  "mp::bind: a bound argument is rebuilt in the receiving process, so its type must be "
                  "default-constructible");
    return bound_call<fn, std::decay_t<Args>...>(std::in_place, std::forward<F>(f), std::forward<Args>(args)...);
}

}  // namespace mp
