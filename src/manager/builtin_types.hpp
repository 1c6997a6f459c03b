// manager/builtin_types.hpp — the types every manager server hosts without
// registration (mp::manager's dict, list, value, queue, lock and event), as
// ordinary C++ classes described with the same machinery as registered
// types, so the server serves them on its one typed path: exposure, argument
// tuple and result tags checked on every call.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <vector>

#include "manager/serve_loop.hpp"
#include "mp/detail/manager_core.hpp"

namespace mp::detail::mgr {

/// The built-in registry: entries named "mp.dict", "mp.list", "mp.value",
/// "mp.queue", "mp.lock", "mp.event". Their class_tag is 0: the server
/// records the proxy type an object is made for and checks later proxies of
/// it against that.
[[nodiscard]] const std::vector<type_entry>& builtin_entries();

/// Makes the call running on this thread wait-aware: a built-in method that
/// waits (wait_until_ready) watches this client's socket and the server's
/// stopping flag.
class call_scope {
public:
    explicit call_scope(const wait_context& ctx) noexcept;
    ~call_scope();
    call_scope(const call_scope&) = delete;
    call_scope& operator=(const call_scope&) = delete;

private:
    const wait_context* previous_;
};

/// A call that waits (a lock's acquire, a queue's get) wakes this often to
/// notice that its client hung up or the server is stopping. Trade-off:
/// shorter slices notice sooner and cost more wake-ups while waiting.
inline constexpr auto wait_slice = std::chrono::milliseconds(50);

/// Waits on `cv` until ready() (true) or `timeout_ns` passes (false; -1:
/// never). Throws client_gone if the calling client hangs up, and
/// mp::closed_error if the server stops, meanwhile.
bool wait_until_ready(std::unique_lock<std::mutex>& lock, std::condition_variable& cv, std::int64_t timeout_ns,
                      const std::function<bool()>& ready);

}  // namespace mp::detail::mgr
