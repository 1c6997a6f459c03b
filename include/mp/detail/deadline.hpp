// mp/detail/deadline.hpp — turning a timeout into a deadline, once for all of mp.
#pragma once

#include <chrono>
#include <optional>

namespace mp::detail {

using steady_deadline = std::optional<std::chrono::steady_clock::time_point>;

/// The time point `d` from now; nullopt (no limit) when that is too far away
/// to represent. A negative or zero `d` means "now".
template <class Rep, class Period>
[[nodiscard]] steady_deadline deadline_after(const std::chrono::duration<Rep, Period>& d) {
    using clock = std::chrono::steady_clock;
    auto now = clock::now();
    if (d <= d.zero()) return now;
    // Compared in double so that hours::max() and the like do not overflow.
    if (std::chrono::duration<double>(d) >= std::chrono::duration<double>(clock::time_point::max() - now) / 2)
        return std::nullopt;
    return now + std::chrono::ceil<clock::duration>(d);
}

}  // namespace mp::detail
