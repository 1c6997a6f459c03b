// pool_initargs.cpp — a pool's initializer with arguments (Python's
// Pool(initializer=init, initargs=(q, lock))): every worker, and every
// replacement the pool starts later, receives the same queue and lock once,
// keeps them, and its tasks report through them.
#include <mp/mp.hpp>

#include <iostream>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

std::optional<mp::queue<std::string>> reports;  // set in each worker by init
std::optional<mp::lock> print_lock;

void init(mp::queue<std::string> q, mp::lock lk) {
    reports = q;
    print_lock = lk;
    q.put(mp::current_process().name() + " is ready");
}

int square(int x) {
    {
        std::lock_guard guard(*print_lock);
        std::cout << mp::current_process().name() << " squares " << x << std::endl;
    }
    reports->put(mp::current_process().name() + " did " + std::to_string(x));
    return x * x;
}

int main(int argc, char** argv) {
    mp::init(argc, argv);

    mp::queue<std::string> q;
    mp::lock lk;
    // maxtasksperchild = 2: workers are replaced, and replacements run init too.
    mp::pool pool({.processes = 2, .initializer = mp::bind(init, q, lk), .maxtasksperchild = 2});
    std::vector<int> squares = pool.map(square, std::vector<int>{1, 2, 3, 4, 5, 6}, 1);
    pool.close();
    pool.join();

    std::set<std::string> ready, did;
    while (auto line = q.try_get()) (line->ends_with("is ready") ? ready : did).insert(*line);
    for (auto& r : ready) std::cout << r << "\n";
    std::cout << squares.size() << " squares, " << did.size() << " reports, " << ready.size()
              << " workers initialized (at least 3: two tasks each)\n";
    return did.size() == 6 && ready.size() >= 3 ? 0 : 1;
}
