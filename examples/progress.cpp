// progress.cpp — a progress bar over an executor's results (mp::progress).
//
// Run it in a terminal to see the bar on stderr ("squares: 120/200
// [##################------------]  60% 95.2/s ETA 0:01"); with stderr
// redirected or piped it draws nothing, and stdout gets only the result.
#include <chrono>
#include <iostream>
#include <thread>
#include <vector>

#include <mp/context.hpp>
#include <mp/progress.hpp>
#include <mp/thread_pool_executor.hpp>

namespace {

long slow_square(int x) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // stands in for real work
    return static_cast<long>(x) * x;
}

}  // namespace

int main(int argc, char** argv) {
    mp::init(argc, argv);

    std::vector<int> xs;
    for (int i = 0; i < 200; ++i) xs.push_back(i);

    mp::thread_pool_executor ex(4);
    long total = 0;
    // ex.map reads xs lazily and yields results in input order; progress
    // counts them as the loop moves past each one.
    for (long r : mp::progress(ex.map(slow_square, xs), {.total = xs.size(), .desc = "squares"})) total += r;

    std::cout << "sum of squares below 200: " << total << "\n";
}
