// manager/server.hpp — the manager's server: the object table and the
// requests on it; connections are the serve loop's (manager/serve_loop.hpp).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "manager/channel.hpp"
#include "manager/serve_loop.hpp"
#include "mp/manager.hpp"

namespace mp::detail::mgr {

/// Everything a server needs; sent whole to a server process that a manager
/// starts (its type entries carry their code as code_refs, valid because the
/// server runs the same executable).
struct server_config {
    address addr;
    std::string authkey;
    std::vector<type_entry> registry;
    std::int64_t handshake_ms = 5000;
    std::int64_t idle_ms = 10 * 60 * 1000;
    std::uint64_t max_message = std::uint64_t{64} << 20;
    std::uint64_t max_pending = 128;
    std::uint64_t max_workers = 128;

    template <class Archive>
    void serialize(Archive& ar) {
        ar(addr, authkey, registry, handshake_ms, idle_ms, max_message, max_pending, max_workers);
    }
};

class hosted_object;

}  // namespace mp::detail::mgr

namespace mp {

struct manager_server::impl final : detail::mgr::request_handler {
    /// Binds the listening socket. Throws mp::system_error.
    explicit impl(detail::mgr::server_config config);
    /// Stops serving (if serving) and closes everything. Never throws.
    ~impl() override;

    [[nodiscard]] const mp::address& bound() const noexcept { return bound_; }
    [[nodiscard]] std::uint64_t max_message() const noexcept { return config_.max_message; }
    void serve_forever();
    void stop() noexcept;

    void handle(detail::input_archive& in, detail::output_archive& out, const detail::mgr::wait_context& ctx,
                bool& stop_after) override;

private:
    std::shared_ptr<detail::mgr::hosted_object> find(std::uint64_t id);

    detail::mgr::server_config config_;
    std::unordered_map<std::string, const detail::mgr::type_entry*> entries_;  // config_.registry and the built-ins
    mp::address bound_;
    std::string socket_path_;  // a Unix socket this server created, unlinked at the end
    std::unique_ptr<detail::mgr::serve_loop> loop_;
    std::atomic<bool> serving_{false};

    struct slot {
        std::shared_ptr<detail::mgr::hosted_object> object;
        std::int64_t refs = 0;
    };
    std::mutex objects_mutex_;
    std::unordered_map<std::uint64_t, slot> objects_;  // guarded by objects_mutex_
    std::uint64_t next_id_ = 1;                        // guarded by objects_mutex_
};

}  // namespace mp

namespace mp::detail::mgr {

/// What a server replies to one request, for a test.
struct test_reply {
    /// The reply's body (the status byte onward); nullopt if a call that
    /// waited found its client gone (no reply is due).
    std::optional<std::vector<std::byte>> body;
    /// The request asked the server to stop (nothing was stopped).
    bool stop_requested = false;
};

/// Test hook (tests/fuzz/manager_request_fuzz.cpp): serves one request body
/// against `server`'s object table, through the path a request read from a
/// connection takes (reply_to, manager_server::impl::handle), without a
/// socket or a thread of the serve loop. A taking call checks `ctx.fd` for
/// its client hanging up, as it checks the client's socket; with
/// `ctx.never_wait` no call waits.
test_reply serve_request_for_test(manager_server& server, std::span<const std::byte> request,
                                  const wait_context& ctx);

struct server_access {
    static manager_server::impl& of(manager_server& s) noexcept { return *s.p_; }
};

}  // namespace mp::detail::mgr
