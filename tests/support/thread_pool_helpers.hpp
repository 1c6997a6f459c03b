// thread_pool_helpers.hpp — the small calls and the gate that the thread
// pool tests share (thread_pool_executor_test, thread_pool_shutdown_test).
#pragma once

#include <pthread.h>

#include <cstddef>
#include <latch>
#include <numeric>
#include <string>
#include <vector>

namespace mp_test {

inline int mul(int x, int y) { return x * y; }

inline int zero() { return 0; }

inline std::vector<int> iota_vector(int from, int to) {
    std::vector<int> v(static_cast<std::size_t>(to - from));
    std::iota(v.begin(), v.end(), from);
    return v;
}

inline std::string this_thread_name() {
    char buf[32] = {};
    ::pthread_getname_np(::pthread_self(), buf, sizeof buf);
    return buf;
}

/// A gate that calls wait at until the test opens it.
struct gate {
    std::latch open_{1};
    void open() { open_.count_down(); }
    void wait() { open_.wait(); }
};

}  // namespace mp_test
