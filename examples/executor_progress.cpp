// executor_progress.cpp — a process_pool_executor (Python's
// ProcessPoolExecutor): submit many tasks, take the results as they complete
// with as_completed, and watch a progress bar on stderr (drawn only when
// stderr is a terminal).
#include <mp/mp.hpp>

#include <algorithm>
#include <iostream>
#include <vector>

// The number of steps the Collatz sequence from n takes to reach 1.
int collatz_steps(long n) {
    int steps = 0;
    for (; n != 1; ++steps) n = n % 2 == 0 ? n / 2 : 3 * n + 1;
    return steps;
}

int main(int argc, char** argv) {
    mp::init(argc, argv);

    mp::process_pool_executor ex(2);
    std::vector<mp::future<int>> futures;
    for (long n = 1; n <= 3000; ++n) futures.push_back(ex.submit(collatz_steps, n * 997));

    int longest = 0;
    for (auto& f : mp::progress(mp::as_completed(futures), {.total = futures.size(), .desc = "collatz"}))
        longest = std::max(longest, f.get());
    std::cout << futures.size() << " sequences, the longest took " << longest << " steps\n";
}
