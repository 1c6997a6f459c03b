// mp::shared_memory: created in one process, used in another under every
// start method; and no /dev/shm name outlives the program that made it, even
// when that program is killed with SIGKILL.
//
// The "program" tests run this test binary again as a separate program (one
// of the MP_TEST_PROGRAMs below), because the tracker cleans up when a whole
// program is gone, not when one of its processes is.
#include "mp/shared_memory.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "mp/process.hpp"
#include "mp/queue.hpp"
#include "support/test_program.hpp"

using namespace std::chrono_literals;

namespace {

constexpr auto patience = 20s;

bool shm_exists(const std::string& name) { return ::access(("/dev/shm/" + name).c_str(), F_OK) == 0; }

/// Waits (up to `patience`) for /dev/shm/<name> to disappear.
bool eventually_gone(const std::string& name) {
    auto deadline = std::chrono::steady_clock::now() + patience;
    while (shm_exists(name)) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::sleep_for(5ms);
    }
    return true;
}

std::string test_name(const char* what) { return "mp-test-" + std::to_string(::getpid()) + "-" + what; }

class shm_test : public testing::TestWithParam<mp::start_method> {
protected:
    mp::process_options opts() { return {.context = mp::get_context(GetParam())}; }
};

void write_by_name(std::string name, std::string text) {
    auto shm = mp::shared_memory::attach(name);
    std::memcpy(shm.data(), text.data(), text.size());
}

void write_through_handle(mp::shared_memory shm, std::string text) {
    std::memcpy(shm.data(), text.data(), text.size());
}

TEST_P(shm_test, a_block_created_here_is_written_by_a_child_that_attaches_by_name) {
    mp::shared_memory shm(4096);
    EXPECT_EQ(shm.size(), 4096u);
    EXPECT_TRUE(shm_exists(shm.name()));
    mp::process p(opts(), write_by_name, shm.name(), std::string("hello by name"));
    p.start();
    ASSERT_TRUE(p.join(patience));
    EXPECT_EQ(p.exitcode(), 0);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(shm.data())), "hello by name");
    shm.unlink();
    EXPECT_FALSE(shm_exists(shm.name()));
}

TEST_P(shm_test, a_block_passed_as_an_argument_is_shared_even_after_unlink) {
    mp::shared_memory shm(100);
    shm.unlink();  // the handle carries the block itself, not just its name
    mp::process p(opts(), write_through_handle, shm, std::string("hello by handle"));
    p.start();
    ASSERT_TRUE(p.join(patience));
    EXPECT_EQ(p.exitcode(), 0);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(shm.data())), "hello by handle");
}

void create_and_leave(mp::queue<std::string> q) {
    mp::shared_memory shm(64);
    std::memcpy(shm.data(), "left", 5);
    q.put(shm.name());
}  // exits without unlinking

TEST_P(shm_test, a_block_a_child_created_outlives_the_child_until_unlinked) {
    if (GetParam() == mp::start_method::fork) {
        // A fork child shares the tracker only if the parent started one
        // before forking; make sure this process has one, as any process that
        // created a segment before would.
        mp::shared_memory warm_up(1);
        warm_up.unlink();
    }
    mp::queue<std::string> q;
    mp::process p(opts(), create_and_leave, q);
    p.start();
    std::string name = q.get(patience);
    ASSERT_TRUE(p.join(patience));
    EXPECT_EQ(p.exitcode(), 0);
    ASSERT_TRUE(shm_exists(name));
    auto shm = mp::shared_memory::attach(name);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(shm.data())), "left");
    shm.unlink();
}

TEST(shared_memory, names_sizes_and_errors) {
    std::string name = test_name("named");
    auto a = mp::shared_memory::create("/" + name, 10);
    EXPECT_EQ(a.name(), name);  // without the leading '/'
    auto b = mp::shared_memory::attach(name);
    EXPECT_EQ(b.size(), 10u);
    b.data()[3] = std::byte{7};
    EXPECT_EQ(a.data()[3], std::byte{7});
    EXPECT_EQ(a.buf().size(), 10u);

    try {
        (void)mp::shared_memory::create(name, 10);
        ADD_FAILURE() << "created a block that exists";
    } catch (const mp::system_error& e) {
        EXPECT_EQ(e.code().value(), EEXIST);
    }
    EXPECT_THROW(mp::shared_memory(0), mp::value_error);
    EXPECT_THROW((void)mp::shared_memory::create("a/b", 10), mp::value_error);
    EXPECT_THROW((void)mp::shared_memory::create("", 10), mp::value_error);

    b.close();
    EXPECT_TRUE(b.closed());
    EXPECT_EQ(b.data(), nullptr);
    b.close();  // idempotent
    a.unlink();
    try {
        (void)mp::shared_memory::attach(name);
        ADD_FAILURE() << "attached an unlinked block";
    } catch (const mp::system_error& e) {
        EXPECT_EQ(e.code().value(), ENOENT);
    }
    EXPECT_THROW(a.unlink(), mp::system_error);

    mp::shared_memory empty;
    EXPECT_FALSE(empty);
    EXPECT_EQ(empty.size(), 0u);
}

// In a child with its own mount namespace and a 16 MiB /dev/shm (Docker's
// default is 64 MiB): a block larger than that must fail when it is made,
// not kill the process with SIGBUS when it is first written.
void create_blocks_in_a_small_dev_shm(mp::queue<std::string> report) {
    if (::unshare(CLONE_NEWNS) != 0 || ::mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        ::mount("tmpfs", "/dev/shm", "tmpfs", 0, "size=16m") != 0) {
        report.put(std::string("cannot mount a small /dev/shm here: ") + std::strerror(errno));
        return;
    }
    std::string outcome = "no error";
    try {
        auto big = mp::shared_memory(64 << 20, {.track = false});
        std::memset(big.data(), 1, big.size());  // without a reservation: SIGBUS here
        big.unlink();
    } catch (const mp::system_error& e) {
        outcome = std::string(e.what());
        if (e.code().value() != ENOSPC) outcome = "wrong errno: " + outcome;
    }
    // The namespace's /dev/shm still works for what fits.
    auto fits = mp::shared_memory(8 << 20, {.track = false});
    std::memset(fits.data(), 2, fits.size());
    fits.unlink();
    report.put(outcome);
}

TEST(shared_memory, a_full_dev_shm_is_an_error_not_a_crash) {
    // Issue 11.4.
    mp::queue<std::string> report;
    mp::process p({.context = mp::get_context(mp::start_method::fork)}, create_blocks_in_a_small_dev_shm, report);
    p.start();
    p.join();
    ASSERT_EQ(p.exitcode(), 0) << "the child died (SIGBUS is -7)";
    std::string outcome = report.get(1s);
    if (outcome.starts_with("cannot mount")) GTEST_SKIP() << outcome << " (needs root or user namespaces)";
    EXPECT_NE(outcome.find("shared memory is full"), std::string::npos) << outcome;
    EXPECT_NE(outcome.find("--shm-size"), std::string::npos) << outcome;
    EXPECT_NE(outcome.find("/dev/shm is 16.0 MiB"), std::string::npos) << outcome;
}

TEST(shared_memory, auto_names_are_unique) {
    mp::shared_memory a(1), b(1);
    EXPECT_NE(a.name(), b.name());
    EXPECT_EQ(a.name().rfind("mp-" + std::to_string(::getpid()) + "-", 0), 0u);
    a.unlink();
    b.unlink();
}

// ---- whole programs ------------------------------------------------------------

/// Runs this test binary as the test program `program` (below), which writes
/// the names of its segments to the file named by MP_SHM_TEST_OUT; returns
/// those names and the program's wait status in `status`.
std::vector<std::string> run_program(const std::string& program, int& status) {
    std::string out = "/tmp/mp-shm-test-" + std::to_string(::getpid()) + "-" + program;
    std::remove(out.c_str());
    status = mp_test::run_program(program, {"MP_SHM_TEST_OUT=" + out});
    std::vector<std::string> names;
    std::ifstream in(out);
    for (std::string name; in >> name;) names.push_back(name);
    std::remove(out.c_str());
    return names;
}

void report_name(const std::string& name) {
    const char* out = std::getenv("MP_SHM_TEST_OUT");
    std::ofstream(out) << name << "\n";
}

void do_nothing() {}

void child_creates_and_reports(mp::queue<std::string> q) {
    mp::shared_memory shm(4096);
    q.put(shm.name());
    for (;;) ::pause();  // dies with its parent
}

MP_TEST_PROGRAM(shm_killed) {
    mp::shared_memory shm(4096);
    report_name(shm.name());
    ::kill(::getpid(), SIGKILL);
}

MP_TEST_PROGRAM(shm_child_killed) {
    mp::queue<std::string> q;
    mp::process p(child_creates_and_reports, q);
    p.start();
    report_name(q.get(patience));
    ::kill(::getpid(), SIGKILL);  // the child dies with us
}

MP_TEST_PROGRAM(shm_exits) {
    mp::shared_memory shm(4096);
    report_name(shm.name());
    std::exit(0);  // normal exit, no unlink
}

MP_TEST_PROGRAM(shm_exits_after_children) {
    for (auto m : {mp::start_method::fork, mp::start_method::spawn, mp::start_method::forkserver}) {
        mp::process p({.context = mp::get_context(m)}, do_nothing);
        p.start();
        p.join();
    }
    mp::shared_memory shm(4096);
    report_name(shm.name());
    std::exit(0);
}

MP_TEST_PROGRAM(shm_untracked) {
    mp::shared_memory shm(4096, {.track = false});
    mp::shared_memory other(4096);
    other.untrack();
    report_name(shm.name() + "\n" + other.name());
    std::exit(0);
}

TEST(shared_memory_program, a_segment_of_a_program_killed_with_sigkill_is_unlinked) {
    int status = 0;
    auto names = run_program("shm_killed", status);
    ASSERT_EQ(names.size(), 1u);
    const std::string& name = names[0];
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "status " << status;
    EXPECT_TRUE(eventually_gone(name)) << name;
}

TEST(shared_memory_program, a_segment_of_a_child_of_a_killed_program_is_unlinked) {
    int status = 0;
    auto names = run_program("shm_child_killed", status);
    ASSERT_EQ(names.size(), 1u);
    const std::string& name = names[0];
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "status " << status;
    EXPECT_TRUE(eventually_gone(name)) << name;
}

TEST(shared_memory_program, a_segment_left_at_normal_exit_is_unlinked_before_the_program_ends) {
    int status = 0;
    auto names = run_program("shm_exits", status);
    ASSERT_EQ(names.size(), 1u);
    const std::string& name = names[0];
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
    EXPECT_FALSE(shm_exists(name)) << name;  // cleanup finished before exit
}

TEST(shared_memory_program, cleanup_at_normal_exit_is_finished_even_after_starting_children) {
    int status = 0;
    auto names = run_program("shm_exits_after_children", status);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
    ASSERT_EQ(names.size(), 1u);
    EXPECT_FALSE(shm_exists(names[0])) << names[0];
}

TEST(shared_memory_program, untracked_segments_survive_the_program) {
    int status = 0;
    auto names = run_program("shm_untracked", status);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
    ASSERT_EQ(names.size(), 2u);
    for (const auto& name : names) {
        EXPECT_TRUE(shm_exists(name)) << name;
        if (shm_exists(name)) mp::shared_memory::attach(name).unlink();
    }
}

INSTANTIATE_TEST_SUITE_P(each_start_method, shm_test,
                         testing::Values(mp::start_method::fork, mp::start_method::spawn,
                                         mp::start_method::forkserver),
                         [](const auto& info) { return std::string(mp::to_string(info.param)); });

}  // namespace
