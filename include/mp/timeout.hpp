// mp/timeout.hpp — the type of every timeout mp takes.
//
//     q.get(0.5s);   p.join(1500ms);   conn.poll(100us);   pool.map(f, xs, {.timeout = 2min});
//
// Timed calls and timeout options take an mp::timeout_duration, which any
// std::chrono::duration converts to implicitly, integral or floating-point.
// It is a std::chrono::steady_clock::duration (it derives from it), so inside
// mp it adds to steady_clock time points and compares like one.
#pragma once

#include <chrono>

namespace mp {

/// A timeout: any std::chrono::duration, converted once to the steady clock's
/// tick (nanoseconds). The conversion rounds up, so a timeout never ends
/// early, and saturates: a duration too long for the tick (hours::max())
/// becomes the longest wait the clock can express, a negative one stays
/// negative (an expired timeout). Thread-safe and fork-safe: a plain value.
class timeout_duration : public std::chrono::steady_clock::duration {
public:
    /// The steady clock's duration that this type is.
    using base = std::chrono::steady_clock::duration;

    /// A zero timeout: "do not wait".
    constexpr timeout_duration() noexcept : base(base::zero()) {}

    /// Converts any duration: `timeout_duration t = 0.5s;`.
    template <class Rep, class Period>
    constexpr timeout_duration(const std::chrono::duration<Rep, Period>& d) noexcept : base(convert(d)) {}

private:
    template <class Rep, class Period>
    static constexpr base convert(const std::chrono::duration<Rep, Period>& d) noexcept {
        // Compared in long double seconds, which hold every duration's range,
        // so that the rounding below cannot overflow the tick's integer.
        using seconds = std::chrono::duration<long double>;
        if (seconds(d) >= seconds(base::max())) return base::max();
        if (seconds(d) <= seconds(base::min())) return base::min();
        return std::chrono::ceil<base>(d);
    }
};

}  // namespace mp
