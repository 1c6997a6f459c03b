// manager_support.hpp — a manager server in this process and a raw client
// connection to it, for the manager fuzz targets.
//
// The server is the public one (base_manager::get_server, serve_forever on
// a thread of its own); the client side speaks the protocol directly with
// the internal mgr::channel (frames) and mgr::authenticate_to_server (the
// handshake), so a target can send any bytes as a request.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "manager/auth.hpp"
#include "manager/channel.hpp"
#include "manager/protocol.hpp"
#include "mp/manager.hpp"
#include "sys/net.hpp"

namespace mp_fuzz {

/// A registered type with a method of each shape the typed path checks.
struct counter {
    std::int64_t total = 0;
    std::vector<std::string> log;

    void add(std::int64_t n) { total = static_cast<std::int64_t>(static_cast<std::uint64_t>(total) + static_cast<std::uint64_t>(n)); }
    [[nodiscard]] std::int64_t value() const { return total; }
    std::string note(std::string s, int times) {
        if (times < 0 || times > 4) throw std::invalid_argument("times must be 0..4");
        std::string out;
        for (int i = 0; i < times; ++i) out += s;
        log.push_back(out);
        return out;
    }
    std::map<std::string, std::vector<double>> table(std::vector<std::pair<std::string, double>> rows) {
        std::map<std::string, std::vector<double>> out;
        for (auto& [k, v] : rows) out[k].push_back(v);
        return out;
    }
    void _hidden() {}
};

inline int twice(int x) { return static_cast<int>(2u * static_cast<unsigned>(x)); }
inline std::string greet(std::string who) { return "hello " + who; }
inline std::vector<int> count_to(int n) {
    std::vector<int> out;
    for (int i = 0; i < n && i < 64; ++i) out.push_back(i);
    return out;
}

inline const std::string authkey = "mp-fuzz-authkey";

/// Registers the fuzzed types with `manager`.
inline void register_fuzz_types(mp::base_manager& manager) {
    manager.register_type<counter>("counter", mp::methods<&counter::add, &counter::value, &counter::note,
                                                          &counter::table, &counter::_hidden>);
    manager.register_functions("functions", mp::functions<&twice, &greet>);
    manager.register_generator("count_to", &count_to);
}

/// The server, serving from a thread for the life of the process.
struct served_manager {
    mp::base_manager manager{mp::manager_options{.authkey = authkey, .handshake_timeout = std::chrono::milliseconds(500)}};
    std::string path;
    std::thread thread;

    // Stops the server and waits for it and every connection thread: run at
    // exit, so that LeakSanitizer's check finds no thread still running
    // (OpenSSL keeps per-thread state that only a thread's exit frees).
    void stop() {
        manager.get_server().shutdown();
        if (thread.joinable()) thread.join();
    }

    served_manager() {
        register_fuzz_types(manager);
        auto server = manager.get_server();
        path = std::get<mp::unix_address>(server.address()).path;
        thread = std::thread([server]() mutable { server.serve_forever(); });
    }
};

inline served_manager& the_server() {
    static auto* s = new served_manager;  // never destroyed: the fuzzer ends with exit()
    return *s;
}

/// A new connection to the server, not yet authenticated.
inline std::unique_ptr<mp::detail::mgr::channel> connect_raw() {
    return std::make_unique<mp::detail::mgr::channel>(mp::sys::connect_unix(the_server().path));
}

/// A new connection that passed the handshake.
inline std::unique_ptr<mp::detail::mgr::channel> connect_authenticated() {
    auto ch = connect_raw();
    mp::detail::mgr::authenticate_to_server(*ch, authkey,
                                            mp::detail::mgr::clock::now() + std::chrono::seconds(5));
    return ch;
}

/// Sends one request frame whose body is `body`.
inline void send_request(mp::detail::mgr::channel& ch, std::span<const std::byte> body) {
    mp::detail::output_archive out;
    mp::detail::mgr::channel::begin(out);
    out.saveBinary(body.data(), body.size());
    ch.send(out);
}

}  // namespace mp_fuzz
