// Remote managers over TCP on 127.0.0.1: a server process runs
// get_server().serve_forever() on a free port; clients connect with the key.
// Bad clients (wrong key, garbage, silence, an oversized or truncated frame,
// death mid-call) each cost the server one connection, and a correct client
// is served after all of them.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "manager/auth.hpp"
#include "manager/channel.hpp"
#include "mp/manager.hpp"
#include "mp/process.hpp"
#include "mp/queue.hpp"

using namespace std::chrono_literals;

namespace {

const std::string key = "secret";

struct Greeter {
    std::string hello(std::string who) { return "hello " + who; }
};

void serve_remote(mp::queue<int> port_out, int handshake_ms) {
    mp::manager m({.address = mp::tcp_address{"127.0.0.1", 0},
                   .authkey = key,
                   .handshake_timeout = std::chrono::milliseconds(handshake_ms)});
    m.register_type<Greeter>("Greeter", mp::methods<&Greeter::hello>);
    auto server = m.get_server();
    port_out.put(std::get<mp::tcp_address>(server.address()).port);
    server.serve_forever();
}

/// A plain TCP connection to the server, for clients that misbehave.
struct raw_client {
    int fd = -1;
    explicit raw_client(int port) {
        fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(static_cast<std::uint16_t>(port));
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) ADD_FAILURE() << "connect failed";
    }
    ~raw_client() {
        if (fd >= 0) ::close(fd);
    }
    void send(const void* p, std::size_t n) const { ASSERT_EQ(::send(fd, p, n, MSG_NOSIGNAL), static_cast<ssize_t>(n)); }
    void send_header(std::uint32_t length) const {
        std::uint32_t h[2] = {mp::detail::mgr::frame_magic, length};
        send(h, sizeof h);
    }
    /// Reads until the server closes the connection; false if it has not
    /// within a minute (a hang, not a slow machine).
    bool server_hangs_up(std::string* got = nullptr) const {
        char buf[4096];
        for (;;) {
            pollfd p{fd, POLLIN, 0};
            if (::poll(&p, 1, 60000) <= 0) return false;
            ssize_t n = ::recv(fd, buf, sizeof buf, 0);
            if (n == 0 || (n < 0 && errno == ECONNRESET)) return true;
            if (n < 0) return false;
            if (got) got->append(buf, static_cast<std::size_t>(n));
        }
    }
};

class remote_manager_test : public testing::TestWithParam<mp::start_method> {
protected:
    void SetUp() override {
        mp::queue<int> port;
        server_.emplace(mp::process_options{.context = mp::get_context(GetParam())}, serve_remote, port, 300);
        server_->start();
        port_ = port.get(60s);
        ASSERT_GT(port_, 0);
    }
    void TearDown() override {
        if (!server_) return;
        {
            mp::base_manager stopper(options());
            stopper.connect();
            stopper.shutdown_server();
        }
        server_->join();
        EXPECT_EQ(server_->exitcode(), 0);
    }

    mp::manager_options options(std::string authkey = key) const {
        return {.address = mp::tcp_address{"127.0.0.1", static_cast<std::uint16_t>(port_)}, .authkey = authkey};
    }

    /// A correct client is served: the check every test ends with.
    void expect_served() {
        mp::manager m(options());
        m.connect();
        EXPECT_EQ(m.make<Greeter>("Greeter").call<&Greeter::hello>("you"), "hello you");
        auto d = m.dict<std::string, int>();
        d.set("k", 1);
        EXPECT_EQ(d.get("k"), 1);
    }

    std::optional<mp::process> server_;
    int port_ = 0;
};

TEST_P(remote_manager_test, a_client_connects_and_calls) {
    mp::manager m(options());
    m.connect();
    ASSERT_TRUE(std::holds_alternative<mp::tcp_address>(m.address()));
    auto g = m.make<Greeter>("Greeter");
    EXPECT_EQ(g.call<&Greeter::hello>("world"), "hello world");
    EXPECT_EQ(g.call<std::string>("hello", "by name"), "hello by name");
    auto l = m.list<int>();
    l.append(3);
    EXPECT_EQ(l.to_vector(), std::vector<int>{3});
}

TEST_P(remote_manager_test, a_wrong_key_is_refused_on_both_sides) {
    mp::manager bad(options("not the secret"));
    EXPECT_THROW(bad.connect(), mp::authentication_error);
    EXPECT_FALSE(bad.running());
    expect_served();
}

TEST_P(remote_manager_test, garbage_costs_only_its_connection) {
    raw_client c(port_);
    std::string junk(200, '\x5a');
    c.send(junk.data(), junk.size());
    EXPECT_TRUE(c.server_hangs_up());
    expect_served();
}

TEST_P(remote_manager_test, a_client_that_never_speaks_is_dropped_and_others_are_served_meanwhile) {
    raw_client silent(port_);
    expect_served();  // while the silent client holds its connection
    std::string got;
    EXPECT_TRUE(silent.server_hangs_up(&got));  // after the 300 ms handshake limit
    EXPECT_EQ(got.substr(8, 11), "#CHALLENGE#");  // the server spoke first, then gave up
    expect_served();
}

TEST_P(remote_manager_test, an_oversized_length_before_authentication_closes_the_connection) {
    raw_client c(port_);
    c.send_header(1u << 30);
    EXPECT_TRUE(c.server_hangs_up());
    expect_served();
}

/// Authenticates a raw connection with the internal handshake, then misbehaves.
mp::detail::mgr::channel authenticated(int port) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    mp::detail::mgr::channel ch{mp::detail::unique_fd(fd)};
    mp::detail::mgr::authenticate_to_server(ch, key, std::chrono::steady_clock::now() + 60s);
    return ch;
}

TEST_P(remote_manager_test, an_oversized_request_gets_an_error_reply_and_a_closed_connection) {
    auto ch = authenticated(port_);
    std::uint32_t h[2] = {mp::detail::mgr::frame_magic, 1u << 30};  // 1 GiB > the 64 MiB default
    ASSERT_EQ(::send(ch.fd(), h, sizeof h, MSG_NOSIGNAL), static_cast<ssize_t>(sizeof h));
    auto body = ch.receive(1 << 20, std::chrono::steady_clock::now() + 60s, {});
    mp::detail::input_archive in(body);
    EXPECT_EQ(mp::detail::load_value<std::uint8_t>(in), 1);  // an error reply
    auto record = mp::detail::load_value<mp::detail::exception_record>(in);
    EXPECT_NE(record.what.find("exceeds the limit"), std::string::npos) << record.what;
    EXPECT_THROW((void)ch.receive(1 << 20, std::chrono::steady_clock::now() + 60s, {}), mp::eof_error);
    expect_served();
}

TEST_P(remote_manager_test, a_truncated_request_and_a_garbage_body_cost_nothing_else) {
    {
        auto ch = authenticated(port_);
        // A well-framed body that is not a request: an error reply, and the
        // connection stays usable.
        std::uint32_t h[2] = {mp::detail::mgr::frame_magic, 3};
        ASSERT_EQ(::send(ch.fd(), h, sizeof h, MSG_NOSIGNAL), static_cast<ssize_t>(sizeof h));
        ASSERT_EQ(::send(ch.fd(), "\x01zz", 3, MSG_NOSIGNAL), 3);
        auto body = ch.receive(1 << 20, std::chrono::steady_clock::now() + 60s, {});
        ASSERT_FALSE(body.empty());
        EXPECT_EQ(static_cast<int>(body[0]), 1);
        // Then half a frame, and hang up.
        std::uint32_t h2[2] = {mp::detail::mgr::frame_magic, 100};
        ASSERT_EQ(::send(ch.fd(), h2, sizeof h2, MSG_NOSIGNAL), static_cast<ssize_t>(sizeof h2));
        ASSERT_EQ(::send(ch.fd(), "0123456789", 10, MSG_NOSIGNAL), 10);
    }
    expect_served();
}

void block_on_get(mp::queue_proxy<std::string> q, mp::queue<int> started) {
    started.put(1);
    (void)q.get();  // killed while the server waits for an item
}

TEST_P(remote_manager_test, a_client_that_dies_mid_call_takes_nothing_with_it) {
    mp::manager m(options());
    m.connect();
    auto q = m.queue<std::string>();
    mp::queue<int> started;
    // The proxy carries the custom key to the child.
    mp::process child({.context = mp::get_context(GetParam())}, block_on_get, q, started);
    child.start();
    EXPECT_EQ(started.get(60s), 1);
    child.kill();
    child.join();
    q.put("kept");
    EXPECT_EQ(q.get(60s), "kept");  // not swallowed by the dead client's call
    expect_served();
}

TEST_P(remote_manager_test, a_correct_client_is_served_after_every_bad_one) {
    {
        mp::manager bad(options("wrong"));
        EXPECT_THROW(bad.connect(), mp::authentication_error);
    }
    raw_client silent(port_);
    raw_client garbage(port_);
    garbage.send("GET / HTTP/1.0\r\n\r\n", 18);
    raw_client huge(port_);
    huge.send_header(0xffffffffu);
    expect_served();
    EXPECT_TRUE(garbage.server_hangs_up());
    EXPECT_TRUE(huge.server_hangs_up());
    EXPECT_TRUE(silent.server_hangs_up());
    expect_served();
}

INSTANTIATE_TEST_SUITE_P(each_start_method, remote_manager_test,
                         testing::Values(mp::start_method::fork, mp::start_method::spawn, mp::start_method::forkserver),
                         [](const auto& info) { return std::string(mp::to_string(info.param)); });

}  // namespace
