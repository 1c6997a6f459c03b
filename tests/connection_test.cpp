// mp::pipe / mp::connection: typed messages across processes, bad input,
// dead peers, large data, descriptor passing, threads.
#include "mp/connection.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "mp/process.hpp"

using namespace std::chrono_literals;

namespace {

class connection_test : public testing::TestWithParam<mp::start_method> {
protected:
    mp::process_options opts() { return {.context = mp::get_context(GetParam())}; }
};

struct point {
    int x = 0, y = 0;
    std::string label;
    template <class Archive>
    void serialize(Archive& ar) {
        ar(x, y, label);
    }
    bool operator==(const point&) const = default;
};

void echo(mp::connection c) {
    for (;;) {
        auto v = c.recv<std::vector<point>>();
        if (v.empty()) return;
        c.send(v);
    }
}

void send_then_exit(mp::connection c) { c.send(std::string("last words")); }

void send_big(mp::connection c, std::size_t n) {
    std::vector<double> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<double>(i);
    c.send(v);
}

void use_passed_connection(mp::connection carrier) {
    auto inner = carrier.recv<mp::connection>();
    inner.send(std::string("through a passed pipe"));
}

void ping_pong(mp::connection c, int rounds) {
    for (int i = 0; i < rounds; ++i) c.send(c.recv<int>() + 1);
}

}  // namespace

TEST_P(connection_test, values_round_trip_through_a_child) {
    auto [mine, theirs] = mp::pipe();
    mp::process p(opts(), echo, theirs);
    p.start();
    std::vector<point> v{{1, 2, "a"}, {3, 4, std::string(1000, 'z')}};
    mine.send(v);
    EXPECT_EQ(mine.recv<std::vector<point>>(), v);
    mine.send(std::vector<point>{});
    p.join();
    EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(connection_test, many_round_trips_keep_their_order) {
    auto [mine, theirs] = mp::pipe();
    mp::process p(opts(), ping_pong, theirs, 2000);
    p.start();
    int x = 0;
    for (int i = 0; i < 2000; ++i) {
        mine.send(x);
        x = mine.recv<int>();
    }
    EXPECT_EQ(x, 2000);
    p.join();
}

TEST_P(connection_test, a_peer_that_exits_gives_eof_after_its_last_message) {
    auto [mine, theirs] = mp::pipe();
    mp::process p(opts(), send_then_exit, theirs);
    p.start();
    theirs.close();  // our copy: only the child holds that end now
    p.join();
    EXPECT_EQ(mine.recv<std::string>(), "last words");
    EXPECT_THROW((void)mine.recv<std::string>(), mp::eof_error);
}

TEST_P(connection_test, large_data_arrives_whole) {
    auto [mine, theirs] = mp::pipe();
    const std::size_t n = 8 << 20;  // 64 MiB of doubles: goes through shared memory
    mp::process p(opts(), send_big, theirs, n);
    p.start();
    auto v = mine.recv<std::vector<double>>();
    p.join();
    ASSERT_EQ(v.size(), n);
    for (std::size_t i = 0; i < n; i += 4097) ASSERT_EQ(v[i], static_cast<double>(i));
    EXPECT_EQ(v.back(), static_cast<double>(n - 1));
}

TEST_P(connection_test, a_connection_can_be_sent_through_a_connection) {
    auto [carrier_mine, carrier_theirs] = mp::pipe();
    mp::process p(opts(), use_passed_connection, carrier_theirs);
    p.start();
    auto [reader, writer] = mp::pipe(false);
    carrier_mine.send(writer);
    writer.close();
    EXPECT_EQ(reader.recv<std::string>(10s), "through a passed pipe");
    p.join();
}

INSTANTIATE_TEST_SUITE_P(each_start_method, connection_test,
                         testing::Values(mp::start_method::fork, mp::start_method::spawn,
                                         mp::start_method::forkserver),
                         [](const auto& info) { return std::string(mp::to_string(info.param)); });

TEST(connection, a_message_read_as_the_wrong_type_is_kept) {
    auto [a, b] = mp::pipe();
    a.send(42);
    try {
        (void)b.recv<std::string>();
        FAIL() << "expected mp::serialization_error";
    } catch (const mp::serialization_error& e) {
        std::string what = e.what();
        EXPECT_NE(what.find("'int'"), std::string::npos) << what;
        EXPECT_NE(what.find("string"), std::string::npos) << what;
    }
    EXPECT_EQ(b.recv<int>(), 42);
}

TEST(connection, garbage_on_the_socket_is_an_error_not_a_crash) {
    auto [a, b] = mp::pipe();
    const char junk[] = "this is not an mp frame, just forty bytes of junk!!";
    ASSERT_EQ(::write(a.fileno(), junk, sizeof junk), static_cast<ssize_t>(sizeof junk));
    EXPECT_THROW((void)b.recv<int>(), mp::serialization_error);
    EXPECT_THROW((void)b.recv<int>(), mp::serialization_error);  // stays unusable, says so
}

TEST(connection, a_truncated_message_is_an_eof_error) {
    auto [a, b] = mp::pipe();
    {
        auto [c, d] = mp::pipe();
        c.send(std::string(5000, 'x'));
        // Copy only part of the frame to `a`'s peer, then close.
        char buf[100];
        ssize_t n = ::read(d.fileno(), buf, sizeof buf);
        ASSERT_GT(n, 40);
        ASSERT_EQ(::write(a.fileno(), buf, static_cast<std::size_t>(n)), n);
    }
    a.close();
    EXPECT_THROW((void)b.recv<std::string>(), mp::eof_error);
}

TEST(connection, a_corrupt_length_is_rejected_without_allocating) {
    auto [a, b] = mp::pipe();
    a.send(std::string("hello"));
    // Rewrite the 8-byte string length inside the body to something absurd.
    std::vector<char> frame(256);
    ssize_t n = ::read(b.fileno(), frame.data(), frame.size());
    ASSERT_GT(n, 8);
    std::uint64_t huge = std::uint64_t{1} << 60;
    std::memcpy(frame.data() + n - 5 - 8, &huge, 8);
    auto [c, d] = mp::pipe();
    ASSERT_EQ(::write(c.fileno(), frame.data(), static_cast<std::size_t>(n)), n);
    EXPECT_THROW((void)d.recv<std::string>(), mp::serialization_error);
}

TEST(connection, recv_with_a_timeout_and_poll) {
    auto [a, b] = mp::pipe();
    EXPECT_FALSE(b.poll());
    EXPECT_FALSE(b.poll(10ms));
    EXPECT_THROW((void)b.recv<int>(10ms), mp::timeout_error);
    a.send(1);
    EXPECT_TRUE(b.poll(1s));
    EXPECT_EQ(b.recv<int>(1s), 1);
}

TEST(connection, bytes_and_one_way_pipes) {
    auto [r, w] = mp::pipe(false);
    w.send_bytes(std::string_view("raw"));
    auto bytes = r.recv_bytes();
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()), "raw");
    EXPECT_THROW(r.send(1), mp::closed_error);
    EXPECT_THROW((void)w.recv<int>(), mp::closed_error);
    r.close();
    EXPECT_TRUE(r.closed());
    EXPECT_THROW((void)r.recv<int>(), mp::closed_error);
}

TEST(connection, wait_returns_the_ready_connections) {
    auto [a1, b1] = mp::pipe();
    auto [a2, b2] = mp::pipe();
    EXPECT_TRUE(mp::wait(std::vector<mp::connection>{b1, b2}, 10ms).empty());
    a2.send(7);
    auto ready = mp::wait(std::vector<mp::connection>{b1, b2}, 1s);
    ASSERT_EQ(ready.size(), 1u);
    EXPECT_EQ(ready[0].fileno(), b2.fileno());
}

TEST(connection, several_threads_may_send_at_once) {
    auto [a, b] = mp::pipe();
    constexpr int threads = 4, each = 500;
    std::vector<std::thread> senders;
    for (int t = 0; t < threads; ++t)
        senders.emplace_back([&, t] {
            for (int i = 0; i < each; ++i) a.send(std::make_pair(t, std::string(100 + i, 'x')));
        });
    std::vector<int> count(threads);
    for (int i = 0; i < threads * each; ++i) {
        auto [t, s] = b.recv<std::pair<int, std::string>>();
        ASSERT_EQ(s.size(), static_cast<std::size_t>(100 + count[t]));
        ++count[t];
    }
    for (auto& s : senders) s.join();
}
