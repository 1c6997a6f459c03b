// mp's exceptions: one hierarchy under mp::error, every type declared in
// <mp/error.hpp>; mp::system_error is a std::system_error keeping the errno;
// a failed system call names the call, the object and the likely cause.
#include "mp/error.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <cerrno>
#include <stdexcept>
#include <string>
#include <system_error>
#include <type_traits>
#include <vector>

#include "mp/mp.hpp"
#include "sys/sys.hpp"

using namespace std::chrono_literals;
using testing::HasSubstr;

namespace {

template <class E>
constexpr bool is_ours = std::is_base_of_v<mp::error, E> && std::is_base_of_v<std::exception, E>;

TEST(Errors, EveryTypeIsDeclaredInErrorHeaderUnderMpError) {
    // This file includes <mp/error.hpp> first: each name below is declared there.
    static_assert(is_ours<mp::bootstrap_error> && is_ours<mp::serialization_error> && is_ours<mp::system_error> &&
                  is_ours<mp::timeout_error> && is_ours<mp::queue_empty> && is_ours<mp::queue_full> &&
                  is_ours<mp::eof_error> && is_ours<mp::closed_error> && is_ours<mp::process_error> &&
                  is_ours<mp::value_error> && is_ours<mp::lock_error> && is_ours<mp::broken_barrier_error> &&
                  is_ours<mp::worker_crashed> && is_ours<mp::cancelled_error> &&
                  is_ours<mp::authentication_error> && is_ours<mp::not_exposed_error> && is_ours<mp::remote_error>);
    static_assert(std::is_base_of_v<std::system_error, mp::system_error>);
    static_assert(std::is_base_of_v<std::runtime_error, mp::error>);
    static_assert(std::is_nothrow_copy_constructible_v<mp::timeout_error>);
}

TEST(Errors, SystemErrorIsAStdSystemErrorKeepingErrno) {
    const std::string name = "mp-error-test-no-such-block-" + std::to_string(::getpid());
    try {
        (void)mp::shared_memory::attach(name);
        FAIL() << "attached a block that does not exist";
    } catch (const std::system_error& e) {  // caught as the standard type
        EXPECT_EQ(e.code().value(), ENOENT);
        EXPECT_EQ(e.code(), std::errc::no_such_file_or_directory);
        EXPECT_EQ(&e.code().category(), &std::generic_category());
        EXPECT_NE(dynamic_cast<const mp::system_error*>(&e), nullptr);
        EXPECT_THAT(e.what(), HasSubstr("shm_open"));
        EXPECT_THAT(e.what(), HasSubstr(name));
    }
}

TEST(Errors, AnyMpErrorIsCaughtAsStdException) {
    mp::queue<int> q;
    try {
        (void)q.get(0.001s);
        FAIL() << "an empty queue gave an item";
    } catch (const std::exception& e) {
        EXPECT_NE(dynamic_cast<const mp::queue_empty*>(&e), nullptr);
        EXPECT_THAT(e.what(), HasSubstr("queue.get timed out"));
    }
}

TEST(Errors, CodesNameTheSituation) {
    mp::timeout_error t("mp: it took too long");
    EXPECT_STREQ(t.what(), "mp: it took too long");  // the message, unchanged
    EXPECT_EQ(t.code(), mp::errc::timeout);
    EXPECT_EQ(t.code(), std::errc::timed_out);
    EXPECT_EQ(&t.code().category(), &mp::error_category());
    EXPECT_STREQ(t.code().category().name(), "mp");
    EXPECT_EQ(mp::cancelled_error("x").code(), std::errc::operation_canceled);
    EXPECT_EQ(mp::lock_error("x").code(), mp::errc::lock);
    EXPECT_EQ(mp::error("x").code(), mp::errc::error);
    EXPECT_EQ(mp::remote_error("T", "m").code(), mp::errc::remote);
}

std::string message_of(int err, const char* call, std::string_view object = {}) {
    try {
        mp::sys::throw_errno(err, call, object);
    } catch (const mp::system_error& e) {
        EXPECT_EQ(e.code().value(), err);
        return e.what();
    }
    return {};
}

TEST(Errors, SystemCallFailuresSayTheLikelyCause) {
    auto full = message_of(ENOSPC, "shm_open", "/mp-1-2");
    EXPECT_THAT(full, HasSubstr("shm_open(/mp-1-2) failed: No space left on device"));
    EXPECT_THAT(full, HasSubstr("/dev/shm"));
    EXPECT_THAT(full, HasSubstr("MiB free of"));
    EXPECT_THAT(full, HasSubstr("--shm-size"));
    EXPECT_THAT(message_of(EMFILE, "socketpair"), HasSubstr("ulimit -n"));
    EXPECT_THAT(message_of(EAGAIN, "fork"), HasSubstr("ulimit -u"));
    EXPECT_THAT(message_of(ENOMEM, "mmap"), HasSubstr("vm.max_map_count"));
    // Nothing is invented where there is nothing useful to say.
    EXPECT_EQ(message_of(EBADF, "close"), "close failed: Bad file descriptor (errno 9)");
}

// In a child, so that lowering the limit cannot disturb the test process.
void open_pipes_until_the_limit() {
    // UBSan checks a dynamic type the first time it meets it, with a pipe of
    // its own; with no descriptor left that check would fail. Let it meet the
    // types (connections, a system_error) while descriptors remain.
    (void)mp::pipe();
    try {
        (void)mp::shared_memory::attach("mp-error-test-no-such-block");
    } catch (const mp::system_error& e) {
        (void)(e.code() == std::errc::too_many_files_open);  // the calls made below, checked once here
        (void)std::string(e.what());
    }
    rlimit lim{};
    ::getrlimit(RLIMIT_NOFILE, &lim);
    lim.rlim_cur = 64;
    ::setrlimit(RLIMIT_NOFILE, &lim);
    std::vector<std::pair<mp::connection, mp::connection>> pipes;
    try {
        for (int i = 0; i < 100; ++i) pipes.push_back(mp::pipe());
    } catch (const mp::system_error& e) {
        std::string what = e.what();
        if (e.code() == std::errc::too_many_files_open && what.find("ulimit -n: 64") != std::string::npos) return;
        throw std::runtime_error("unexpected message: " + what);
    }
    throw std::runtime_error("100 pipes opened under a limit of 64 descriptors");
}

TEST(Errors, RunningOutOfDescriptorsSaysToRaiseTheLimit) {
    mp::process p({.context = mp::get_context(mp::start_method::fork)}, open_pipes_until_the_limit);
    p.start();
    ASSERT_TRUE(p.join(60s));
    EXPECT_EQ(p.exitcode(), 0);
}

}  // namespace
