// task_gates.hpp — gates between a test and the tasks it runs in worker
// processes, as files (tasks travel as bytes, so they cannot share memory
// with the test), and a log of which items ran.
#pragma once

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "mp/future.hpp"

namespace mp_test {

/// A path of this test process's own: `what` names the gate or log.
inline std::string gate_path(const std::string& what) {
    return "/tmp/mp-gate-" + std::to_string(::getpid()) + "-" + what;
}

/// A task that waits until the file `path` exists.
inline int wait_file(std::string path) {
    while (!std::filesystem::exists(path)) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return 1;
}

/// A task that records that item `i` ran, in the file `log` (one line per run).
inline int record(std::string log, int i) {
    std::ofstream(log, std::ios::app) << i << "\n";
    return i;
}
/// record() of a (log, item) pair.
inline int record_item(std::pair<std::string, int> p) { return record(std::move(p.first), p.second); }

/// The items recorded in `log`, in the order they ran.
inline std::vector<int> runs_in(const std::string& log) {
    std::vector<int> out;
    std::ifstream in(log);
    for (int i; in >> i;) out.push_back(i);
    return out;
}

/// A gate file `go` and a run log `log`, removed before and after the test.
struct gate_files {
    std::string go = gate_path("go"), log = gate_path("log");
    gate_files() { cleanup(); }
    ~gate_files() { cleanup(); }
    gate_files(const gate_files&) = delete;
    gate_files& operator=(const gate_files&) = delete;
    void open() const { std::ofstream(go) << "x"; }
    void cleanup() const {
        std::filesystem::remove(go);
        std::filesystem::remove(log);
    }
};

/// Waits (at most 30 s) until a worker has taken `f`'s task.
inline void wait_until_running(const mp::future<int>& f) {
    for (int i = 0; i < 30000 && !f.running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ASSERT_TRUE(f.running());
}

}  // namespace mp_test
