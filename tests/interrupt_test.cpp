// Stopping a program that uses mp (SPEC §10, issue 12 item 4): Ctrl-C typed
// at a terminal, SIGTERM, SIGKILL. The program under test (interrupt_program,
// built beside this test) runs a pool, an executor, a manager, a process
// started through the forkserver and named shared memory. Once it is stopped,
// no process it started may remain, nor its /dev/shm names, nor its manager
// socket directory.
//
// Ctrl-C goes through a real pseudo-terminal: the program is a session leader
// with the pty as its controlling terminal (forkpty, as a shell's job would
// be), and the test types the terminal's interrupt character, so the line
// discipline sends SIGINT to the whole foreground process group, workers
// included, exactly as a user's keystroke does.
#include <gtest/gtest.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "support/leak_check.hpp"

using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

/// Live (not zombie) descendants of `root`, `root` excluded.
std::set<int> live_descendants(int root) {
    auto table = mp_test::all_processes();
    std::set<int> found{root};
    for (bool grew = true; grew;) {
        grew = false;
        for (const auto& p : table)
            if (found.count(p.ppid) && found.insert(p.pid).second) grew = true;
    }
    found.erase(root);
    for (const auto& p : table)
        if (p.state == 'Z') found.erase(p.pid);
    return found;
}

bool alive(int pid) {
    auto entry = mp_test::read_stat(pid);
    return entry && entry->state != 'Z';
}

/// The program under test, running on a pty of its own.
struct program {
    int pid = 0;
    int terminal = -1;      // the pty's master side
    fs::path temp_dir;      // its TMPDIR: where its manager makes its socket directory
    std::string shm_name;   // the block it created
    std::set<int> started;  // every process it started, seen once it was ready
    std::string output;     // what it wrote to its terminal

    /// /dev/shm names of this program: the block, and any name carrying the
    /// pid of the program or of a process it started (mp's naming scheme).
    std::vector<std::string> shm_left() const {
        std::vector<std::string> left;
        std::set<int> pids = started;
        pids.insert(pid);
        for (const auto& entry : fs::directory_iterator("/dev/shm")) {
            std::string name = entry.path().filename();
            bool ours = name == shm_name;
            for (int p : pids) {
                std::string tag("-");
                tag.append(std::to_string(p)).append("-");
                if (name.find(tag) != std::string::npos) ours = true;
            }
            if (ours) left.push_back(name);
        }
        return left;
    }

    /// Everything that should be gone but is not, one line each.
    std::vector<std::string> leftovers() const {
        std::vector<std::string> out;
        if (alive(pid)) out.push_back("the program (pid " + std::to_string(pid) + ") still runs");
        for (int p : started)
            if (alive(p)) out.push_back("process " + std::to_string(p) + " it started still runs");
        for (const auto& name : shm_left()) out.push_back("/dev/shm/" + name + " remains");
        for (const auto& entry : fs::directory_iterator(temp_dir))
            out.push_back(entry.path().string() + " (manager socket directory) remains");
        return out;
    }

    /// Kills and removes whatever is left, so that one failure does not leak
    /// into the next test.
    void clean_up() {
        for (int p : started) ::kill(p, SIGKILL);
        ::kill(pid, SIGKILL);
        reap_all();
        for (const auto& name : shm_left()) fs::remove(fs::path("/dev/shm") / name);
        fs::remove_all(temp_dir);
        if (terminal >= 0) ::close(terminal);
    }

    /// Reaps the program and the orphans that came to this process (a subreaper).
    static void reap_all() {
        while (::waitpid(-1, nullptr, WNOHANG) > 0) {
        }
    }
};

std::string program_path() { return MP_INTERRUPT_PROGRAM; }

program start_program() {
    program p;
    p.temp_dir = fs::temp_directory_path() / ("mp-interrupt-test-" + std::to_string(::getpid()));
    fs::create_directories(p.temp_dir);
    std::string path = program_path();
    std::string tmpdir = p.temp_dir.string();
    p.pid = ::forkpty(&p.terminal, nullptr, nullptr, nullptr);
    if (p.pid == 0) {
        ::setenv("TMPDIR", tmpdir.c_str(), 1);
        ::execl(path.c_str(), path.c_str(), static_cast<char*>(nullptr));
        ::_exit(127);
    }
    if (p.pid < 0) throw std::runtime_error("forkpty failed");
    // Read its terminal until it says it is ready.
    auto until = std::chrono::steady_clock::now() + 60s;
    auto ready = [&] {
        auto at = p.output.find("ready ");
        return at != std::string::npos && p.output.find('\n', at) != std::string::npos;
    };
    while (!ready() && std::chrono::steady_clock::now() < until) {
        pollfd pfd{p.terminal, POLLIN, 0};
        if (::poll(&pfd, 1, 100) <= 0) continue;
        char buf[512];
        ssize_t n = ::read(p.terminal, buf, sizeof buf);
        if (n <= 0) break;
        p.output.append(buf, static_cast<std::size_t>(n));
    }
    auto at = p.output.find("ready ");
    if (at != std::string::npos) {
        auto end = p.output.find_first_of("\r\n", at);
        p.shm_name = p.output.substr(at + 6, end - at - 6);
    }
    p.started = live_descendants(p.pid);
    return p;
}

/// Waits (reaping) until nothing is left, or `limit`; returns the leftovers
/// and how long it took.
std::vector<std::string> wait_until_clean(program& p, std::chrono::milliseconds limit,
                                          std::chrono::milliseconds& took) {
    auto from = std::chrono::steady_clock::now();
    std::vector<std::string> left;
    for (;;) {
        program::reap_all();
        left = p.leftovers();
        took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - from);
        if (left.empty() || took > limit) return left;
        std::this_thread::sleep_for(10ms);
    }
}

enum class stop_by { ctrl_c, sigterm, sigkill };

void stop(program& p, stop_by how) {
    switch (how) {
        case stop_by::ctrl_c: {
            termios t{};
            ASSERT_EQ(::tcgetattr(p.terminal, &t), 0);
            char interrupt = static_cast<char>(t.c_cc[VINTR]);
            ASSERT_EQ(::write(p.terminal, &interrupt, 1), 1);
            break;
        }
        case stop_by::sigterm: ::kill(p.pid, SIGTERM); break;
        case stop_by::sigkill: ::kill(p.pid, SIGKILL); break;
    }
}

class interrupt_test : public testing::TestWithParam<stop_by> {
protected:
    static void SetUpTestSuite() {
        // Orphans of the program come to this process, so that the test sees
        // (and reaps) whatever outlives it.
        ::prctl(PR_SET_CHILD_SUBREAPER, 1);
    }
};

}  // namespace

TEST_P(interrupt_test, a_stopped_program_leaves_no_process_shared_memory_or_socket_directory) {
    program p = start_program();
    ASSERT_FALSE(p.shm_name.empty()) << "the program did not get ready; it wrote: " << p.output;
    // The pool's and the executor's workers, the forkserver and its children,
    // the manager's server, the shared-memory tracker: all running.
    EXPECT_GE(p.started.size(), 7u);
    stop(p, GetParam());
    std::chrono::milliseconds took{};
    // SPEC §10 promises a second; the bound here is generous because the
    // machine running the suite may be loaded: it only catches what stays.
    auto left = wait_until_clean(p, 10s, took);
    std::string report;
    for (const auto& line : left) report += "  " + line + "\n";
    EXPECT_TRUE(left.empty()) << "after " << took.count() << " ms:\n" << report;
    RecordProperty("cleaned_up_ms", static_cast<int>(took.count()));
    std::printf("everything was gone %lld ms after the stop\n", static_cast<long long>(took.count()));
    p.clean_up();
}

INSTANTIATE_TEST_SUITE_P(each_way, interrupt_test,
                         testing::Values(stop_by::ctrl_c, stop_by::sigterm, stop_by::sigkill),
                         [](const auto& info) {
                             switch (info.param) {
                                 case stop_by::ctrl_c: return std::string("ctrl_c");
                                 case stop_by::sigterm: return std::string("sigterm");
                                 case stop_by::sigkill: return std::string("sigkill");
                             }
                             return std::string("?");
                         });
