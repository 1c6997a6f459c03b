// pool_crash.cpp — a pool survives a worker that crashes. In Python a worker
// killed by a signal leaves Pool.map hanging; here only the task that was
// running fails, with mp::worker_crashed, and the pool starts a new worker.
#include <mp/mp.hpp>

#include <csignal>
#include <iostream>
#include <vector>

int risky_square(int x) {
    if (x == 3) std::raise(SIGSEGV);  // a crash, as a bug in native code would cause
    return x * x;
}

int main(int argc, char** argv) {
    mp::init(argc, argv);

    mp::pool pool(2);
    std::vector<mp::async_result<int>> results;
    for (int x = 0; x < 6; ++x) results.push_back(pool.apply_async(risky_square, x));
    for (int x = 0; x < 6; ++x) {
        try {
            int square = results[x].get();
            std::cout << x << " squared is " << square << '\n';
        } catch (const mp::worker_crashed& e) {
            std::cout << x << " failed: " << e.what() << '\n';
        }
    }
    // The pool is whole again: every task below runs.
    std::vector<int> squares = pool.map(risky_square, std::vector{4, 5, 6, 7});
    std::cout << "after the crash, map gives";
    for (int s : squares) std::cout << ' ' << s;
    std::cout << '\n';
}
