// Starting processes at the limits of the machine (issue 11 item 7, issue 12
// item 3): out of file descriptors (RLIMIT_NOFILE) and out of processes
// (RLIMIT_NPROC, fork failing with EAGAIN). Each start either works or throws
// a clear mp::system_error; a start that throws leaves no child behind,
// running or zombie; and starting works again once the resource is back.
//
// Each scenario runs in a child of the test (spawn: a fresh run of this
// binary), so that the limits it sets and the forkserver it starts under them
// are its own.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "launch/launch.hpp"
#include "mp/process.hpp"
#include "mp/queue.hpp"
#include "runtime.hpp"
#include "support/leak_check.hpp"

using namespace std::chrono_literals;

namespace {

void exit_with(int code) { std::exit(code); }

/// Children of `parent` (from /proc), zombies included, helpers excluded.
std::vector<int> children_of(int parent) {
    std::vector<int> out;
    auto helpers = mp::detail::helper_pids();
    for (const auto& p : mp_test::all_processes())
        if (p.ppid == parent && std::find(helpers.begin(), helpers.end(), p.pid) == helpers.end()) out.push_back(p.pid);
    return out;
}

int forkserver_pid() { return mp::detail::launch::forkserver_pid(); }

/// Takes every free descriptor but `spare`, until release().
class descriptor_hog {
public:
    explicit descriptor_hog(int spare) {
        for (;;) {
            int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
            if (fd < 0) break;
            held_.push_back(fd);
        }
        for (int i = 0; i < spare && !held_.empty(); ++i) {
            ::close(held_.back());
            held_.pop_back();
        }
    }
    ~descriptor_hog() { release(); }
    void release() {
        for (int fd : held_) ::close(fd);
        held_.clear();
    }

private:
    std::vector<int> held_;
};

/// Starts processes with 0, 1, 2, ... free descriptors; returns what went wrong.
std::string start_with_few_descriptors(mp::start_method method) {
    std::string problems;
    auto ctx = mp::get_context(method);
    // Low enough to reach quickly; the forkserver, started by the first
    // attempt that gets far enough, starts under this limit too.
    rlimit lim{};
    ::getrlimit(RLIMIT_NOFILE, &lim);
    lim.rlim_cur = 64;
    if (::setrlimit(RLIMIT_NOFILE, &lim) != 0) return "setrlimit failed";
    bool refused = false, started_once = false;
    for (int spare = 0; spare <= 12; ++spare) {
        std::string at = "with " + std::to_string(spare) + " free descriptors: ";
        descriptor_hog hog(spare);
        std::optional<mp::process> p;
        p.emplace(ctx.process(exit_with, 3));
        bool started = false;
        try {
            p->start();
            started = true;
        } catch (const mp::system_error& e) {
            std::string what = e.what();
            if (e.code().value() != EMFILE) problems += at + "error code " + std::to_string(e.code().value()) + ": " + what + "\n";
            if (what.find("could not start process") == std::string::npos || what.find("ulimit -n") == std::string::npos)
                problems += at + "the message names neither the process nor the remedy: " + what + "\n";
        } catch (const std::exception& e) {
            problems += at + "not an mp::system_error: " + e.what() + "\n";
        }
        refused |= !started;
        started_once |= started;
        hog.release();  // reading /proc needs descriptors
        // No child runs on (or stays a zombie) after a start that threw.
        std::size_t expected_own = started && method != mp::start_method::forkserver ? 1 : 0;
        auto own = children_of(::getpid());
        if (own.size() != expected_own)
            problems += at + std::to_string(own.size()) + " children of this process, expected " +
                        std::to_string(expected_own) + (started ? " (started)" : " (start threw)") + "\n";
        if (int server = forkserver_pid(); server > 0 && !started) {
            auto theirs = children_of(server);
            if (!theirs.empty())
                problems += at + std::to_string(theirs.size()) + " children of the forkserver after a failed start\n";
        }
        if (started) {
            if (!p->join(10s)) {
                p->kill();
                p->join();
                problems += at + "the started child did not end\n";
            } else if (p->exitcode() != 3) {
                problems += at + "the started child exited with " + std::to_string(*p->exitcode()) + "\n";
            }
        }
    }
    if (!refused) problems += "no start was refused with no free descriptor\n";
    if (!started_once) problems += "no start worked with 12 free descriptors\n";
    // The resource is back: starting works again.
    auto p = ctx.process(exit_with, 3);
    p.start();
    if (!p.join(10s) || p.exitcode() != 3) problems += "a start with descriptors free again failed\n";
    return problems;
}

/// Tries to start one process; "" if it started (and was joined), "EAGAIN"
/// if it threw the expected error, else what went wrong.
std::string try_start(mp::context& ctx, int expected_error) {
    auto p = ctx.process(exit_with, 3);
    try {
        p.start();
    } catch (const mp::system_error& e) {
        std::string what = e.what();
        if (e.code().value() != expected_error) return "error code " + std::to_string(e.code().value()) + ": " + what;
        if (what.find("could not start process") == std::string::npos || what.find("ulimit -u") == std::string::npos)
            return "the message names neither the process nor the remedy: " + what;
        return "refused";
    } catch (const std::exception& e) {
        return std::string("not an mp::system_error: ") + e.what();
    }
    if (!p.join(10s)) {
        p.kill();
        p.join();
        return "the started child did not end";
    }
    return p.exitcode() == 3 ? "" : "the child exited with " + std::to_string(*p.exitcode());
}

/// Starts a process while this user may not have one more (RLIMIT_NPROC), as
/// a user that is not root (root is exempt from the limit).
std::string start_without_processes_left(mp::start_method method) {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) return "cannot become the user nobody";
    auto ctx = mp::get_context(method);
    rlimit plenty{4096, 4096};
    if (::setrlimit(RLIMIT_NPROC, &plenty) != 0) return "setrlimit failed";
    // Works with processes to spare (and starts the forkserver, if used).
    if (auto r = try_start(ctx, EAGAIN); !r.empty()) return "before the limit: " + r;
    // One process for this user at most: this one already counts. The
    // forkserver forks with the limit it has itself: lower it there too.
    rlimit none{1, 4096};
    ::setrlimit(RLIMIT_NPROC, &none);
    int server = forkserver_pid();
    if (method == mp::start_method::forkserver && ::prlimit(server, RLIMIT_NPROC, &none, nullptr) != 0)
        return "prlimit on the forkserver failed";
    std::string problems;
    if (auto r = try_start(ctx, EAGAIN); r != "refused") problems += "at the limit: " + (r.empty() ? "it started" : r) + "\n";
    auto own = children_of(::getpid());
    if (!own.empty()) problems += std::to_string(own.size()) + " children of this process after the refused start\n";
    if (server > 0 && !children_of(server).empty()) problems += "children of the forkserver after the refused start\n";
    // The resource is back: starting works again.
    ::setrlimit(RLIMIT_NPROC, &plenty);
    if (method == mp::start_method::forkserver) ::prlimit(server, RLIMIT_NPROC, &plenty, nullptr);
    if (auto r = try_start(ctx, EAGAIN); !r.empty()) problems += "after the limit was raised: " + r + "\n";
    return problems;
}

enum class scenario { few_descriptors, no_processes_left };

void run_scenario(mp::queue<std::string> out, scenario which, mp::start_method method) {
    std::string result;
    try {
        result = which == scenario::few_descriptors ? start_with_few_descriptors(method)
                                                    : start_without_processes_left(method);
    } catch (const std::exception& e) {
        result = std::string("the scenario threw: ") + e.what();
    }
    // Stop the forkserver this process started, as its exit would.
    for (int helper : mp::detail::helper_pids()) {
        ::kill(helper, SIGKILL);
        ::waitpid(helper, nullptr, 0);
    }
    out.put(result);
}

/// Runs a scenario in a process of its own (a spawn child: a fresh run of
/// this binary) and returns what went wrong ("" if nothing).
std::string run_in_child_process(scenario which, mp::start_method method) {
    mp::queue<std::string> out;
    auto p = mp::get_context(mp::start_method::spawn).process(run_scenario, out, which, method);
    p.start();
    std::string result;
    for (auto until = std::chrono::steady_clock::now() + 120s;;) {
        try {
            result = out.get(100ms);
            break;
        } catch (const mp::queue_empty&) {
        } catch (const mp::timeout_error&) {
        }
        if (!p.is_alive()) {
            result = "the scenario process died (exit code " + std::to_string(*p.exitcode()) + ")";
            break;
        }
        if (std::chrono::steady_clock::now() > until) {
            result = "no answer from the scenario process";
            p.kill();
            break;
        }
    }
    p.join();
    return result;
}

class limits_test : public testing::TestWithParam<mp::start_method> {};

}  // namespace

TEST_P(limits_test, out_of_descriptors_a_start_throws_leaves_no_child_and_works_again) {
#if defined(__SANITIZE_ADDRESS__)
    // UBSan checks a dynamic type it has not met before by probing memory
    // through a pipe of its own: with no descriptor free it reports a false
    // "invalid vptr" and stops the process, and a suppression cannot help (it
    // needs descriptors too). Verified with a 5-line program outside mp.
    GTEST_SKIP() << "the sanitizer runtime cannot run out of descriptors; the release build runs this";
#endif
    std::string problems = run_in_child_process(scenario::few_descriptors, GetParam());
    EXPECT_EQ(problems, "");
}

INSTANTIATE_TEST_SUITE_P(each_start_method, limits_test,
                         testing::Values(mp::start_method::fork, mp::start_method::spawn,
                                         mp::start_method::forkserver),
                         [](const auto& info) { return std::string(mp::to_string(info.param)); });

TEST_P(limits_test, out_of_processes_a_start_throws_leaves_no_child_and_works_again) {
    std::string problems = run_in_child_process(scenario::no_processes_left, GetParam());
    EXPECT_EQ(problems, "");
}
