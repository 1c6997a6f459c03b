// shared_counter.cpp — a lock and a value shared with child processes
// (Python's Lock() and Value('i', 0)): four processes add to one counter.
// The read-modify-write holds the value's own lock; the lock passed as an
// argument keeps the lines they print whole.
#include <mp/mp.hpp>

#include <iostream>
#include <mutex>
#include <vector>

void add(mp::value<int> counter, mp::lock print_lock, int times) {
    for (int i = 0; i < times; ++i) {
        std::lock_guard guard(counter.get_lock());
        counter.set(counter.get() + 1);
    }
    std::lock_guard guard(print_lock);
    std::cout << mp::current_process().name() << " added " << times << std::endl;
}

int main(int argc, char** argv) {
    mp::init(argc, argv);

    mp::value<int> counter(0);
    mp::lock print_lock;
    std::vector<mp::process> workers;
    for (int i = 0; i < 4; ++i) workers.emplace_back(add, counter, print_lock, 10000);
    for (auto& w : workers) w.start();
    for (auto& w : workers) w.join();
    std::cout << "counter = " << counter.get() << " (expected 40000)\n";
    return counter.get() == 40000 ? 0 : 1;
}
