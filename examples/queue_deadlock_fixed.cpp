// The guideline "joining processes that use queues": in Python this program
// deadlocks, because the child cannot exit until its feeder thread has pushed
// the 1,000,000-byte item through a pipe that nobody reads yet. An mp::queue
// keeps items in shared memory, so the child exits at once and the program
// completes with the lines in their original order.
#include <mp/mp.hpp>

#include <iostream>
#include <string>

void f(mp::queue<std::string> q) { q.put(std::string(1000000, 'X')); }

int main(int argc, char** argv) {
    mp::init(argc, argv);

    mp::queue<std::string> queue;
    mp::process p(f, queue);
    p.start();
    p.join();  // this deadlocks in Python
    std::string obj = queue.get();
    std::cout << "joined the child (exit code " << *p.exitcode() << "), then got an item of " << obj.size()
              << " bytes: no deadlock\n";
}
