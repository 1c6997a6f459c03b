// mp::progress: yields what it wraps, draws on a terminal (a pseudo-terminal
// here) and writes nothing at all to a pipe or a redirected stderr.
#include "mp/progress.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <pty.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <string>
#include <vector>

#include "mp/future.hpp"
#include "mp/thread_pool_executor.hpp"

using namespace std::chrono_literals;

namespace {

/// A pseudo-terminal: the bar draws on `slave`; the test reads `master`.
struct pty {
    int master = -1, slave = -1;
    pty() {
        if (::openpty(&master, &slave, nullptr, nullptr, nullptr) != 0) throw std::runtime_error("openpty failed");
        ::fcntl(master, F_SETFD, FD_CLOEXEC);
        ::fcntl(slave, F_SETFD, FD_CLOEXEC);
    }
    ~pty() {
        ::close(master);
        ::close(slave);
    }
    /// Everything drawn so far: reads until the bar's final newline arrives
    /// (the tty layer hands data over asynchronously) or 10 s pass.
    std::string drawn() const {
        std::string out;
        auto deadline = std::chrono::steady_clock::now() + 10s;
        while (out.find('\n') == std::string::npos && std::chrono::steady_clock::now() < deadline) {
            pollfd p{master, POLLIN, 0};
            if (::poll(&p, 1, 100) <= 0) continue;
            char buf[4096];
            ssize_t n = ::read(master, buf, sizeof buf);
            if (n > 0) out.append(buf, static_cast<std::size_t>(n));
        }
        return out;
    }
};

/// A pipe: not a terminal.
struct pipe_fds {
    int r = -1, w = -1;
    pipe_fds() {
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) throw std::runtime_error("pipe failed");
        r = fds[0];
        w = fds[1];
    }
    ~pipe_fds() {
        ::close(r);
        ::close(w);
    }
    std::string contents() const {
        std::string out;
        char buf[4096];
        ssize_t n;
        while ((n = ::read(r, buf, sizeof buf)) > 0) out.append(buf, static_cast<std::size_t>(n));
        return out;
    }
};

std::size_t count(const std::string& s, char c) { return static_cast<std::size_t>(std::count(s.begin(), s.end(), c)); }

TEST(progress, yields_the_same_elements_in_order) {
    pipe_fds p;
    std::vector<int> xs{3, 1, 4, 1, 5};
    std::vector<int> got;
    for (int x : mp::progress(xs, {.fd = p.w})) got.push_back(x);
    EXPECT_EQ(got, xs);
    std::vector<std::string> moved;
    for (auto& s : mp::progress(std::vector<std::string>{"a", "b"}, {.fd = p.w})) moved.push_back(s);
    EXPECT_EQ(moved, (std::vector<std::string>{"a", "b"}));
}

TEST(progress, draws_on_a_terminal) {
    pty t;
    std::vector<int> xs{1, 2, 3, 4, 5};
    int sum = 0;
    for (int x : mp::progress(xs, {.total = 5, .desc = "squares", .fd = t.slave})) sum += x;
    EXPECT_EQ(sum, 15);
    std::string out = t.drawn();
    EXPECT_NE(out.find("squares: 0/5"), std::string::npos) << out;
    EXPECT_NE(out.find("squares: 5/5"), std::string::npos) << out;
    EXPECT_NE(out.find("100%"), std::string::npos) << out;
    EXPECT_NE(out.find("/s"), std::string::npos) << out;
    EXPECT_NE(out.find("ETA"), std::string::npos) << out;
    EXPECT_EQ(out.front(), '\r');
    EXPECT_EQ(count(out, '\n'), 1u) << out;  // one line, ended once
}

TEST(progress, draws_nothing_to_a_pipe) {
    pipe_fds p;
    int n = 0;
    for (int x : mp::progress(std::vector<int>{1, 2, 3}, {.total = 3, .fd = p.w})) n += x;
    EXPECT_EQ(n, 6);
    EXPECT_EQ(p.contents(), "");
}

TEST(progress, draws_nothing_to_a_redirected_stderr) {
    testing::internal::CaptureStderr();  // fd 2 becomes a file
    int n = 0;
    for (int x : mp::progress(std::vector<int>{1, 2, 3}, 3)) n += x;
    std::string err = testing::internal::GetCapturedStderr();
    EXPECT_EQ(n, 6);
    EXPECT_EQ(err, "");
}

TEST(progress, takes_the_total_from_a_sized_range) {
    pty t;
    std::vector<int> xs(7, 1);
    for (int x : mp::progress(xs, {.fd = t.slave})) (void)x;
    std::string out = t.drawn();
    EXPECT_NE(out.find("7/7"), std::string::npos) << out;
}

TEST(progress, without_a_total_counts_and_has_no_eta) {
    pty t;
    std::vector<mp::future<int>> fs;
    std::vector<mp::detail::promise<int>> ps(3);
    for (auto& p : ps) {
        fs.push_back(p.get_future());
        p.set_result(1);
    }
    int n = 0;
    for (auto& f : mp::progress(mp::as_completed(fs), {.fd = t.slave})) n += f.get();
    EXPECT_EQ(n, 3);
    std::string out = t.drawn();
    EXPECT_NE(out.find("3 done"), std::string::npos) << out;
    EXPECT_EQ(out.find("ETA"), std::string::npos) << out;
}

TEST(progress, wraps_an_executor_map_and_as_completed) {
    pty t;
    mp::thread_pool_executor tx(4);
    std::vector<int> got;
    for (int x : mp::progress(tx.map([](int i) { return i * i; }, std::vector<int>{1, 2, 3, 4}), {.total = 4, .fd = t.slave}))
        got.push_back(x);
    EXPECT_EQ(got, (std::vector<int>{1, 4, 9, 16}));
    EXPECT_NE(t.drawn().find("4/4"), std::string::npos);

    std::vector<mp::future<int>> fs;
    for (int i = 0; i < 10; ++i) fs.push_back(tx.submit([i] { return i; }));
    int sum = 0;
    pipe_fds p;
    for (auto& f : mp::progress(mp::as_completed(fs, 60s), {.total = fs.size(), .fd = p.w})) sum += f.get();
    EXPECT_EQ(sum, 45);
}

TEST(progress, an_exception_passes_through_and_the_line_is_ended) {
    pty t;
    mp::thread_pool_executor tx(2);
    auto fail_at_2 = [](int i) {
        if (i == 2) throw std::invalid_argument("two");
        return i;
    };
    std::vector<int> got;
    EXPECT_THROW(
        {
            for (int x : mp::progress(tx.map(fail_at_2, std::vector<int>{0, 1, 2, 3}), {.total = 4, .fd = t.slave}))
                got.push_back(x);
        },
        std::invalid_argument);
    EXPECT_EQ(got, (std::vector<int>{0, 1}));
    std::string out = t.drawn();
    EXPECT_NE(out.find("2/4"), std::string::npos) << out;
    EXPECT_EQ(count(out, '\n'), 1u) << out;
}

TEST(progress, stopping_early_ends_the_line) {
    pty t;
    {
        for (int x : mp::progress(std::vector<int>{1, 2, 3, 4}, {.fd = t.slave}))
            if (x == 2) break;
    }
    std::string out = t.drawn();
    EXPECT_NE(out.find("1/4"), std::string::npos) << out;
    EXPECT_EQ(count(out, '\n'), 1u) << out;
}

TEST(progress, redraws_at_most_ten_times_a_second) {
    pty t;
    auto start = std::chrono::steady_clock::now();
    long sum = 0;
    for (int x : mp::progress(std::vector<int>(200000, 1), {.fd = t.slave})) sum += x;
    auto elapsed_ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
    EXPECT_EQ(sum, 200000);
    std::string out = t.drawn();
    // One frame at the start, one at the end, and one per 100 ms between.
    EXPECT_LE(count(out, '\r'), static_cast<std::size_t>(2 + elapsed_ms / 100 + 1)) << out;
    EXPECT_NE(out.find("200000/200000"), std::string::npos);
}

TEST(progress, an_empty_range) {
    pty t;
    int n = 0;
    for (int x : mp::progress(std::vector<int>{}, {.fd = t.slave})) n += x;
    EXPECT_EQ(n, 0);
    EXPECT_NE(t.drawn().find("0/0"), std::string::npos);
}

}  // namespace
