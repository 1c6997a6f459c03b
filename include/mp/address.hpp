// mp/address.hpp — where a manager's server listens: a Unix socket path or a
// TCP host and port (Python's manager addresses: a path string or a
// (host, port) tuple).
//
//     mp::base_manager m({.address = mp::tcp_address{"127.0.0.1", 50000}, .authkey = "secret"});
//     mp::base_manager local({.address = mp::unix_address{"/run/app/manager.sock"}});
//     std::string s = mp::to_string(m.address());   // "tcp:127.0.0.1:50000"
//
// Addresses are plain data: they compare by value and serialize with mp's
// archives (a proxy travels as its server's address and the object's id).
#pragma once

#include <cstdint>
#include <string>
#include <variant>

namespace mp {

/// A Unix socket path. Managers default to one in a fresh private directory.
struct unix_address {
    std::string path;

    template <class Archive>
    void serialize(Archive& ar) {
        ar(path);
    }
    friend bool operator==(const unix_address&, const unix_address&) = default;
};

/// A TCP host and port. Port 0 in a server's options picks a free port; read
/// it back from base_manager::address() or manager_server::address().
struct tcp_address {
    std::string host;
    std::uint16_t port = 0;

    template <class Archive>
    void serialize(Archive& ar) {
        ar(host, port);
    }
    friend bool operator==(const tcp_address&, const tcp_address&) = default;
};

/// Where a manager's server listens.
using address = std::variant<unix_address, tcp_address>;

/// "unix:/tmp/mp-manager-x/socket" or "tcp:127.0.0.1:50000".
[[nodiscard]] std::string to_string(const address& a);

}  // namespace mp
