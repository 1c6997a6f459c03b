// manager/server.hpp — the manager's server: listens, authenticates each
// connection, and serves its requests on a thread of its own.
#pragma once

#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "manager/channel.hpp"
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
    std::uint64_t max_message = std::uint64_t{64} << 20;

    template <class Archive>
    void serialize(Archive& ar) {
        ar(addr, authkey, registry, handshake_ms, max_message);
    }
};

class server_object;

}  // namespace mp::detail::mgr

namespace mp {

struct manager_server::impl {
    /// Binds the listening socket. Throws mp::system_error.
    explicit impl(detail::mgr::server_config config);
    /// Stops serving (if serving) and closes everything. Never throws.
    ~impl();

    [[nodiscard]] const mp::address& bound() const noexcept { return bound_; }
    void serve_forever();
    void stop() noexcept;

private:
    struct connection_slot {
        std::mutex mutex;
        std::unique_ptr<detail::mgr::channel> ch;  // guarded by mutex; reset when the connection ends
        std::thread thread;
        std::atomic<bool> done{false};
    };

    void serve_connection(connection_slot& slot);
    void handle(detail::input_archive& in, detail::output_archive& out, int fd, bool& stop_after);
    std::shared_ptr<detail::mgr::server_object> find(std::uint64_t id);
    void reap_finished_connections();

    detail::mgr::server_config config_;
    std::unordered_map<std::string, const detail::mgr::type_entry*> entries_;  // into config_.registry
    mp::address bound_;
    std::string socket_path_;  // a Unix socket this server created, unlinked at the end
    detail::unique_fd listener_;
    detail::unique_fd wake_read_, wake_write_;
    std::atomic<bool> serving_{false};
    std::atomic<bool> stopping_{false};

    std::mutex connections_mutex_;
    std::list<connection_slot> connections_;  // guarded by connections_mutex_

    struct slot {
        std::shared_ptr<detail::mgr::server_object> object;
        std::int64_t refs = 0;
    };
    std::mutex objects_mutex_;
    std::unordered_map<std::uint64_t, slot> objects_;  // guarded by objects_mutex_
    std::uint64_t next_id_ = 1;                        // guarded by objects_mutex_

};

}  // namespace mp
