// mp::set_log_handler routes mp's diagnostics; the default is standard error.
#include "mp/log.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "mp/mp.hpp"

using namespace std::chrono_literals;
using testing::HasSubstr;

namespace {

struct captured {
    mp::log_level level;
    std::string message;
};

/// Installs a handler that records every message; restores the previous one.
class capture_log {
public:
    capture_log()
        : previous_(mp::set_log_handler([this](mp::log_level level, std::string_view message) {
              std::lock_guard guard(mutex_);
              messages_.push_back({level, std::string(message)});
          })) {}
    ~capture_log() { mp::set_log_handler(previous_); }
    std::vector<captured> messages() {
        std::lock_guard guard(mutex_);
        return messages_;
    }

private:
    std::mutex mutex_;
    std::vector<captured> messages_;
    mp::log_handler previous_;
};

/// A future whose done callback throws: mp logs it and carries on.
void complete_a_future_whose_callback_throws() {
    mp::thread_pool_executor tx(1);
    auto f = tx.submit([] { return 1; });
    f.add_done_callback([](mp::future<int>&) { throw std::runtime_error("callback failed"); });
    EXPECT_EQ(f.get(), 1);
    tx.shutdown();
}

TEST(LogHandler, ReceivesTheLibrarysDiagnostics) {
    std::vector<captured> got;
    {
        capture_log log;
        testing::internal::CaptureStderr();
        complete_a_future_whose_callback_throws();
        EXPECT_EQ(testing::internal::GetCapturedStderr(), "");  // routed, not printed
        got = log.messages();
    }
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].level, mp::log_level::error);
    EXPECT_THAT(got[0].message, HasSubstr("mp: exception in a future's done callback (ignored)"));
    EXPECT_THAT(got[0].message, HasSubstr("callback failed"));
    EXPECT_EQ(got[0].message.find('\n'), std::string::npos);
}

TEST(LogHandler, DefaultWritesOneLineToStandardError) {
    testing::internal::CaptureStderr();
    complete_a_future_whose_callback_throws();
    std::string err = testing::internal::GetCapturedStderr();
    EXPECT_THAT(err, HasSubstr("mp: exception in a future's done callback (ignored)"));
    EXPECT_EQ(err.back(), '\n');
}

TEST(LogHandler, ReturnsThePreviousHandlerAndEmptyRestoresTheDefault) {
    int calls = 0;
    auto before = mp::set_log_handler([&](mp::log_level, std::string_view) { ++calls; });
    EXPECT_FALSE(before);  // the default is no handler
    auto mine = mp::set_log_handler({});
    ASSERT_TRUE(mine);
    mine(mp::log_level::info, "direct call");
    EXPECT_EQ(calls, 1);
    testing::internal::CaptureStderr();
    complete_a_future_whose_callback_throws();
    EXPECT_THAT(testing::internal::GetCapturedStderr(), HasSubstr("done callback"));
    EXPECT_EQ(calls, 1);
}

TEST(LogHandler, AThrowingHandlerFallsBackToStandardError) {
    mp::set_log_handler([](mp::log_level, std::string_view) { throw std::runtime_error("handler broke"); });
    testing::internal::CaptureStderr();
    complete_a_future_whose_callback_throws();
    std::string err = testing::internal::GetCapturedStderr();
    mp::set_log_handler({});
    EXPECT_THAT(err, HasSubstr("done callback"));
}

void fork_while_a_thread_runs(mp::queue<std::string> out) {
    // Inside a fresh fork child: nothing was warned about in this process yet.
    std::string seen;
    mp::set_log_handler([&](mp::log_level level, std::string_view message) {
        if (level == mp::log_level::warning) seen = std::string(message);
    });
    std::mutex m;
    std::unique_lock hold(m);
    std::thread other([&] { std::lock_guard wait_for_parent(m); });
    mp::process p({.context = mp::get_context(mp::start_method::fork)}, [] {});
    p.start();
    p.join();
    hold.unlock();
    other.join();
    out.put(seen);
}

TEST(LogHandler, ReceivesTheForkWithThreadsWarning) {
    mp::queue<std::string> out;
    mp::process p({.context = mp::get_context(mp::start_method::fork)}, fork_while_a_thread_runs, out);
    p.start();
    std::string warning = out.get(60s);
    ASSERT_TRUE(p.join(60s));
    EXPECT_THAT(warning, HasSubstr("mp: warning: starting a process with the fork method while this process runs"));
}

TEST(LogLevel, HasNames) {
    EXPECT_EQ(mp::to_string(mp::log_level::debug), "debug");
    EXPECT_EQ(mp::to_string(mp::log_level::info), "info");
    EXPECT_EQ(mp::to_string(mp::log_level::warning), "warning");
    EXPECT_EQ(mp::to_string(mp::log_level::error), "error");
}

}  // namespace
