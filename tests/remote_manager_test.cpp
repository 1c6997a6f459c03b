// Remote managers over TCP on 127.0.0.1: a server process runs
// get_server().serve_forever() on a free port; clients connect with the key.
// Bad clients (wrong key, garbage, silence, an oversized or truncated frame,
// death mid-call) each cost the server one connection, and a correct client
// is served after all of them.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "manager/auth.hpp"
#include "manager/channel.hpp"
#include "manager/protocol.hpp"
#include "manager/serve_loop.hpp"
#include "manager/server.hpp"
#include "sys/net.hpp"
#include "mp/manager.hpp"
#include "mp/process.hpp"
#include "mp/queue.hpp"

using namespace std::chrono_literals;

namespace {

const std::string key = "secret";

struct Greeter {
    std::string hello(std::string who) { return "hello " + who; }
};

/// How the server process is set up: its handshake limit, how many fds it
/// may open beyond those it holds at start (0: no limit set), and how many
/// of its worker-thread creations fail.
struct server_setup {
    int handshake_ms = 300;
    int spare_fds = 0;
    int thread_failures = 0;
    int idle_ms = 10 * 60 * 1000;

    template <class Archive>
    void serialize(Archive& ar) {
        ar(handshake_ms, spare_fds, thread_failures, idle_ms);
    }
};

int open_fd_count() {
    int n = 0;
    for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
    return n;
}

void serve_remote(mp::queue<int> port_out, server_setup setup) {
    mp::manager m({.address = mp::tcp_address{"127.0.0.1", 0},
                   .authkey = key,
                   .handshake_timeout = std::chrono::milliseconds(setup.handshake_ms),
                   .idle_timeout = std::chrono::milliseconds(setup.idle_ms)});
    m.register_type<Greeter>("Greeter", mp::methods<&Greeter::hello>);
    auto server = m.get_server();
    if (setup.spare_fds > 0) {
        rlim_t limit = static_cast<rlim_t>(open_fd_count() + setup.spare_fds);
        rlimit r{limit, limit};
        if (::setrlimit(RLIMIT_NOFILE, &r) != 0) std::abort();
    }
    mp::detail::mgr::inject_thread_creation_failures(setup.thread_failures);
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

/// A server process on a free port of 127.0.0.1; stopped (and checked to
/// exit cleanly) at the end of the test.
class remote_server_fixture {
protected:
    void start_server(mp::start_method method, server_setup setup = {}) {
        mp::queue<int> port;
        server_.emplace(mp::process_options{.context = mp::get_context(method)}, serve_remote, port, setup);
        server_->start();
        port_ = port.get(60s);
        ASSERT_GT(port_, 0);
    }
    void stop_server() {
        if (!server_) return;
        {
            mp::base_manager stopper(options());
            stopper.connect();
            stopper.shutdown_server();
        }
        server_->join();
        EXPECT_EQ(server_->exitcode(), 0);
        server_.reset();
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

class remote_manager_test : public testing::TestWithParam<mp::start_method>, protected remote_server_fixture {
protected:
    void SetUp() override { start_server(GetParam()); }
    void TearDown() override { stop_server(); }
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

TEST_P(remote_manager_test, requests_sent_back_to_back_in_one_write_are_all_answered) {
    auto ch = authenticated(port_);
    // 100 ping requests (op 6) in one send: the server reads them at once,
    // more than a worker serves from one connection per turn; those left in
    // its buffer must be served too (epoll does not report them again).
    constexpr int count = 100;
    std::uint8_t pings[9 * count];
    for (int i = 0; i < count; ++i) {
        std::uint32_t h[2] = {mp::detail::mgr::frame_magic, 1};
        std::memcpy(pings + 9 * i, h, 8);
        pings[9 * i + 8] = 6;
    }
    ASSERT_EQ(::send(ch.fd(), pings, sizeof pings, MSG_NOSIGNAL), static_cast<ssize_t>(sizeof pings));
    for (int i = 0; i < count; ++i) {
        auto body = ch.receive(1 << 20, std::chrono::steady_clock::now() + 60s, {});
        ASSERT_EQ(body.size(), 1u);
        EXPECT_EQ(static_cast<int>(body[0]), 0);  // ok
    }
}

void block_on_get(int port, mp::queue<mp::queue_proxy<std::string>> carrier, mp::queue<int> started) {
    // A proxy carries no key: this process connects with the key first (a
    // fork child has it already), as Python's receivers must hold it.
    mp::manager m({.address = mp::tcp_address{"127.0.0.1", static_cast<std::uint16_t>(port)}, .authkey = key});
    m.connect();
    auto q = carrier.get(60s);
    started.put(1);
    (void)q.get();  // killed while the server waits for an item
}

TEST_P(remote_manager_test, a_client_that_dies_mid_call_takes_nothing_with_it) {
    mp::manager m(options());
    m.connect();
    auto q = m.queue<std::string>();
    mp::queue<mp::queue_proxy<std::string>> carrier;
    mp::queue<int> started;
    mp::process child({.context = mp::get_context(GetParam())}, block_on_get, port_, carrier, started);
    child.start();
    carrier.put(q);
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

void receive_with_the_program_key(mp::queue<mp::queue_proxy<std::string>> carrier, mp::queue<std::string> out) {
    try {
        (void)carrier.get(60s);
        out.put("loaded");
    } catch (const mp::authentication_error&) {
        out.put("refused");
    }
}

TEST(remote_manager, a_proxy_carries_no_key_so_a_child_without_it_is_refused) {
    // Under spawn the child holds only the program's key, not "secret": the
    // proxy alone must not let it in.
    struct fixture : remote_server_fixture {
        void run() {
            start_server(mp::start_method::spawn);
            {
                mp::manager m(options());
                m.connect();
                auto q = m.queue<std::string>();
                mp::detail::output_archive ar;
                ar(q);
                std::string bytes(ar.size(), '\0');
                ar.copy_to(reinterpret_cast<std::byte*>(bytes.data()));
                EXPECT_EQ(bytes.find(key), std::string::npos) << "the key travels inside the proxy";
                mp::queue<mp::queue_proxy<std::string>> carrier;
                mp::queue<std::string> out;
                mp::process child({.context = mp::get_context(mp::start_method::spawn)}, receive_with_the_program_key,
                                  carrier, out);
                child.start();
                carrier.put(q);
                EXPECT_EQ(out.get(60s), "refused");
                child.join();
            }
            stop_server();
        }
    } f;
    f.run();
}

// ---- floods and shortages ----------------------------------------------------------

/// Raises this process's fd limit for a test, and restores it.
struct fd_limit_at_least {
    rlimit saved{};
    explicit fd_limit_at_least(rlim_t n) {
        ::getrlimit(RLIMIT_NOFILE, &saved);
        rlimit r = saved;
        if (r.rlim_cur < n) r.rlim_cur = n;
        if (r.rlim_max < n) r.rlim_max = n;  // root here; elsewhere the test fails at connect
        ::setrlimit(RLIMIT_NOFILE, &r);
    }
    ~fd_limit_at_least() { ::setrlimit(RLIMIT_NOFILE, &saved); }
};

/// `n` connections that never say a word, held open until destroyed.
std::vector<std::unique_ptr<raw_client>> silent_flood(int port, int n) {
    std::vector<std::unique_ptr<raw_client>> flood;
    for (int i = 0; i < n; ++i) flood.push_back(std::make_unique<raw_client>(port));
    return flood;
}

class flood_test : public testing::Test, protected remote_server_fixture {
protected:
    void TearDown() override { stop_server(); }

    /// A correct client, timed: the assertion is that it is served; the
    /// bound only catches a stall behind the flood (the old server made it
    /// wait for the silent connections' handshake timeout).
    void expect_served_promptly() {
        auto t0 = std::chrono::steady_clock::now();
        expect_served();
        auto took = std::chrono::steady_clock::now() - t0;
        EXPECT_LT(took, 1s) << "a correct client waited behind the silent connections";
    }
};

TEST_F(flood_test, a_thousand_silent_connections_leave_a_correct_client_served) {
    fd_limit_at_least limit(4096);
    // Silent connections are not dropped by their deadline during the test.
    start_server(mp::start_method::fork, {.handshake_ms = 120'000});
    auto flood = silent_flood(port_, 1000);
    expect_served_promptly();
    expect_served_promptly();
    flood.clear();
    expect_served();
}

TEST_F(flood_test, a_server_out_of_fds_keeps_serving_during_and_after_a_flood) {
    // 24 fds beyond what the server holds at start: 300 silent connections
    // run it out of fds.
    start_server(mp::start_method::fork, {.handshake_ms = 120'000, .spare_fds = 24});
    auto flood = silent_flood(port_, 300);
    expect_served_promptly();
    flood.clear();
    expect_served();
    // And again: the fds of the flood came back.
    auto second = silent_flood(port_, 300);
    expect_served_promptly();
}

TEST_F(flood_test, worker_threads_that_cannot_be_created_do_not_stop_the_server) {
    start_server(mp::start_method::fork, {.thread_failures = 5});
    expect_served();  // the first requests wait for a worker made after the failures
    mp::manager m(options());
    m.connect();
    auto lk = m.lock();
    lk.lock();
    std::thread waiter([&] { lk.lock(); });  // holds one worker in the server
    auto d = m.dict<int, int>();
    d.set(1, 2);  // served by another
    EXPECT_EQ(d.get(1), 2);
    lk.unlock();
    waiter.join();
    lk.unlock();
    expect_served();
}

TEST_F(flood_test, an_authenticated_connection_that_stays_silent_is_closed_and_clients_go_on) {
    start_server(mp::start_method::fork, {.idle_ms = 2000});
    mp::manager m(options());
    m.connect();
    auto d = m.dict<int, int>();
    d.set(1, 1);
    auto idle = authenticated(port_);
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_THROW((void)idle.receive(1 << 20, t0 + 60s, {}), mp::eof_error);  // the server hung up
    EXPECT_GE(std::chrono::steady_clock::now() - t0, 1900ms) << "closed before its idle timeout";
    // The client's own pooled connection was closed too, as idle: its next
    // calls open another.
    EXPECT_EQ(d.get(1), 1);
    d.set(2, 2);
    EXPECT_EQ(d.size(), 2u);
}

/// Answers pings only: enough to drive a serve_loop in this process.
struct ping_handler : mp::detail::mgr::request_handler {
    void handle(mp::detail::input_archive&, mp::detail::output_archive&, const mp::detail::mgr::wait_context&,
                bool&) override {}
};

TEST(serve_loop, connections_waiting_for_authentication_are_capped) {
    using namespace mp::detail::mgr;
    fd_limit_at_least limit(4096);
    auto listener = mp::sys::listen_tcp("127.0.0.1", 0, 1024);
    int port = mp::sys::local_port(listener.get());
    ping_handler handler;
    serve_limits limits;
    limits.handshake_timeout = std::chrono::minutes(2);
    limits.max_pending = 16;
    serve_loop loop(std::move(listener), key, limits, handler);
    std::thread serving([&] { loop.run(); });
    auto flood = silent_flood(port, 500);
    std::size_t most_pending = 0;
    for (int i = 0; i < 100; ++i) {  // while the loop works through the flood
        auto counts = loop.current_counts();
        most_pending = std::max(most_pending, counts.pending);
        EXPECT_EQ(counts.workers, 0u) << "a thread was made for a connection that is not authenticated";
        std::this_thread::sleep_for(1ms);
    }
    EXPECT_LE(most_pending, 16u);
    // The pushed-out connections were closed by the server.
    std::size_t closed = 0;
    for (auto& c : flood) {
        pollfd p{c->fd, POLLIN, 0};
        if (::poll(&p, 1, 0) == 1) {
            char buf[256];
            while (::recv(c->fd, buf, sizeof buf, MSG_DONTWAIT) > 0) {
            }
            if (::recv(c->fd, buf, sizeof buf, MSG_DONTWAIT) == 0) ++closed;
        }
    }
    EXPECT_GE(closed, 400u);
    loop.stop();
    serving.join();
}

/// One request body, as a client writes it.
template <class... T>
std::vector<std::byte> request_body(const T&... fields) {
    mp::detail::output_archive ar;
    (mp::detail::save_value(ar, fields), ...);
    std::vector<std::byte> body(ar.size());
    ar.copy_to(body.data());
    return body;
}

TEST(serve_request_for_test, a_call_that_would_wait_is_answered_at_once_under_never_wait) {
    // The dispatcher's fuzz target serves requests one after another on one
    // thread, for a client that is still there: a call that waited would
    // wait for a request that never comes.
    using namespace mp::detail::mgr;
    mp::base_manager m;
    auto server = m.get_server();
    auto client = mp::sys::socket_pair();  // both ends open: the client is there
    std::atomic<bool> stopping{false};
    const wait_context ctx{.fd = client.first.get(), .stopping = &stopping, .never_wait = true};
    auto serve = [&](const std::vector<std::byte>& body) {
        auto reply = serve_request_for_test(server, body, ctx);
        EXPECT_TRUE(reply.body.has_value()) << "no reply for a client that is still there";
        mp::detail::input_archive in(*reply.body);
        if (mp::detail::load_value<std::uint8_t>(in) != static_cast<std::uint8_t>(status::ok))
            ADD_FAILURE() << mp::detail::load_value<mp::detail::exception_record>(in).what;
        return *reply.body;
    };
    auto created = serve(request_body(static_cast<std::uint8_t>(op::create), std::string("mp.lock"),
                                      mp::detail::type_tag<mp::lock_proxy>(), mp::detail::type_tag<std::tuple<>>(),
                                      std::tuple<>()));
    mp::detail::input_archive in(created);
    (void)mp::detail::load_value<std::uint8_t>(in);
    auto id = mp::detail::load_value<std::uint64_t>(in);
    auto acquire = [&] {
        auto reply = serve(request_body(static_cast<std::uint8_t>(op::call), id, std::string("acquire"),
                                        mp::detail::type_tag<std::tuple<std::int64_t>>(), std::uint64_t{0},
                                        std::make_tuple(std::int64_t{-1})));  // no timeout
        mp::detail::input_archive r(reply);
        (void)mp::detail::load_value<std::uint8_t>(r);
        return mp::detail::load_value<bool>(r);
    };
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_TRUE(acquire());
    EXPECT_FALSE(acquire()) << "the lock is held: the second acquire fails at once";
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 30s) << "a call waited";
}

INSTANTIATE_TEST_SUITE_P(each_start_method, remote_manager_test,
                         testing::Values(mp::start_method::fork, mp::start_method::spawn, mp::start_method::forkserver),
                         [](const auto& info) { return std::string(mp::to_string(info.param)); });

}  // namespace
