// A known Python failure, fixed: a process_pool_executor task runs a
// thread_pool_executor inside and returns its results. Returning the inner
// futures themselves (the Python mistake, "can't pickle _thread.RLock")
// does not compile: tests/compile_fail/executor_returns_futures.cpp.
#include <mp/mp.hpp>
#include <mp/process_pool_executor.hpp>
#include <mp/thread_pool_executor.hpp>

#include <iostream>
#include <vector>

int inner_concurrent(int num) {
    std::cout << "num = " << num << std::endl;
    return num * num;
}

std::vector<int> outer_concurrent() {
    std::vector<mp::future<int>> futures;
    {
        mp::thread_pool_executor executor(1);
        for (int i = 0; i < 3; ++i) futures.push_back(executor.submit(inner_concurrent, i));
    }
    std::vector<int> results;  // the futures' values, not the futures
    for (auto& f : futures) results.push_back(f.get());
    return results;
}

int main(int argc, char** argv) {
    mp::init(argc, argv);
    std::vector<mp::future<std::vector<int>>> futures;
    {
        mp::process_pool_executor executor(1);
        for (int i = 0; i < 1; ++i) futures.push_back(executor.submit(outer_concurrent));
    }
    for (auto& outer_f : futures)
        for (int inner : outer_f.get()) std::cout << "result = " << inner << std::endl;
}
