// interrupt_program — the program interrupt_test stops with Ctrl-C (through a
// terminal), SIGTERM or SIGKILL. It holds one of everything that leaves
// something behind if it is not cleaned up: a pool and an executor with busy
// workers, a manager (server process and socket directory), a process started
// through the forkserver, and named shared memory. It prints one line,
// "ready <shared memory name>", once all of it runs, then waits to be stopped.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "mp/manager.hpp"
#include "mp/pool.hpp"
#include "mp/process.hpp"
#include "mp/process_pool_executor.hpp"
#include "mp/shared_memory.hpp"

namespace {

int sleep_long(int seconds) {
    std::this_thread::sleep_for(std::chrono::seconds(seconds));
    return seconds;
}

void sleep_forever() {
    for (;;) ::pause();
}

}  // namespace

int main(int argc, char** argv) {
    mp::init(argc, argv);
    mp::set_start_method(mp::start_method::forkserver);
    mp::shared_memory block(4096);
    mp::pool pool(2);
    auto pool_result = pool.apply_async(sleep_long, 600);
    mp::process_pool_executor executor(2);
    auto executor_result = executor.submit(sleep_long, 600);
    mp::manager manager;
    manager.start();
    auto shared = manager.dict<std::string, int>();
    mp::process child({}, sleep_forever);
    child.start();
    // Both tasks have reached a worker: the queues between them are in use.
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    std::printf("ready %s\n", block.name().c_str());
    std::fflush(stdout);
    static_cast<void>(pool_result.get());
    static_cast<void>(executor_result.get());
    return 0;
}
