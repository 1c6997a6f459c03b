// manager/client.hpp — this process's connections to one manager server, and
// the servers this process knows (the only ones a proxy read from a manager
// may make it connect to). Private to the library: proxies reach a client
// through the functions of mp/detail/manager_core.hpp.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "mp/detail/manager_core.hpp"

namespace mp::detail::mgr {

/// A pool of authenticated sockets to one server, each used by one call at a
/// time, so calls from many threads run concurrently and a call that blocks
/// in the server (a lock's acquire) never holds up another thread's call.
/// Thread-safe. After fork() the child opens its own connections; the
/// parent's are never used there.
class client {
public:
    /// The client of this process for `addr` with `authkey` (shared by every
    /// proxy of that server in this process; made on first use).
    static std::shared_ptr<client> for_address(const address& addr, const std::string& authkey,
                                               client_limits limits = {});

    client(address addr, std::string authkey, client_limits limits);
    ~client();
    client(const client&) = delete;
    client& operator=(const client&) = delete;

    /// Opens (and authenticates) one connection now, so that a wrong key or
    /// a missing server is reported at once.
    void ping();
    created create(std::string_view type, std::uint64_t expect_tag, std::uint64_t args_tag, writer write,
                   const void* write_context);
    void call(std::uint64_t id, std::string_view method, std::uint64_t args_tag, std::uint64_t result_tag,
              writer write, const void* write_context, reader read, void* read_context);
    /// Takes a reference to object `id`, which a proxy of type `kind_tag`
    /// will hold (the server refuses another type than the object's).
    void incref(std::uint64_t id, std::uint64_t kind_tag);
    void decref(std::uint64_t id) noexcept;
    /// Asks the server to stop serving; returns once it has agreed.
    void shutdown_server();
    /// Closes every connection; later calls throw mp::closed_error.
    void close() noexcept;

    [[nodiscard]] const address& addr() const noexcept;
    [[nodiscard]] const std::string& authkey() const noexcept;
    /// Called in a fork child before anything else runs there.
    void after_fork_in_child() noexcept;

    struct impl;

private:
    std::unique_ptr<impl> p_;
};

/// Records that this process started, serves or connected to a server at
/// `addr` with `authkey`: proxies naming it may be loaded from a manager's
/// data, with that key.
void remember_server(const address& addr, const std::string& authkey);
/// The key this process holds for `addr`, if it knows that server.
[[nodiscard]] std::optional<std::string> known_server_key(const address& addr);

}  // namespace mp::detail::mgr
