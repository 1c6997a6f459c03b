// Python's queue-fed worker farm example: four worker processes take
// (function, arguments) tasks from one queue and put their results on
// another. Functions travel as data: mp::function knows its name.
#include <mp/mp.hpp>

#include <chrono>
#include <iostream>
#include <optional>
#include <random>
#include <sstream>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

using binary_fn = mp::function<int(int, int)>;
// A task, or nullopt: the STOP sentinel of the Python original.
using task = std::optional<std::pair<binary_fn, std::tuple<int, int>>>;

void random_sleep() {
    thread_local std::mt19937 rng{std::random_device{}()};
    std::this_thread::sleep_for(std::chrono::duration<double>(0.5 * std::uniform_real_distribution<>(0, 1)(rng)));
}

int mul(int a, int b) {
    random_sleep();
    return a * b;
}

int plus(int a, int b) {
    random_sleep();
    return a + b;
}

std::string calculate(const binary_fn& func, const std::tuple<int, int>& args) {
    int result = std::apply(func, args);
    std::ostringstream out;
    out << mp::current_process().name() << " says that " << func.name() << "(" << std::get<0>(args) << ", "
        << std::get<1>(args) << ") = " << result;
    return out.str();
}

// Function run by worker processes.
void worker(mp::queue<task> input, mp::queue<std::string> output) {
    for (task t = input.get(); t; t = input.get()) output.put(calculate(t->first, t->second));
}

int main(int argc, char** argv) {
    mp::init(argc, argv);

    const int number_of_processes = 4;
    std::vector<task> tasks1, tasks2;
    for (int i = 0; i < 20; ++i) tasks1.emplace_back(std::pair{binary_fn(mp::fn<&mul>), std::tuple{i, 7}});
    for (int i = 0; i < 10; ++i) tasks2.emplace_back(std::pair{binary_fn(mp::fn<&plus>), std::tuple{i, 8}});

    // Create queues
    mp::queue<task> task_queue;
    mp::queue<std::string> done_queue;

    // Submit tasks
    for (const auto& t : tasks1) task_queue.put(t);

    // Start worker processes
    std::vector<mp::process> workers;
    for (int i = 0; i < number_of_processes; ++i) {
        workers.emplace_back(worker, task_queue, done_queue);
        workers.back().start();
    }

    // Get and print results
    std::cout << "Unordered results:\n";
    for (std::size_t i = 0; i < tasks1.size(); ++i) std::cout << "\t " << done_queue.get() << '\n';

    // Add more tasks using put()
    for (const auto& t : tasks2) task_queue.put(t);

    // Get and print some more results
    for (std::size_t i = 0; i < tasks2.size(); ++i) std::cout << "\t " << done_queue.get() << '\n';

    // Tell child processes to stop
    for (int i = 0; i < number_of_processes; ++i) task_queue.put(std::nullopt);
    // The workers' destructors join them: no zombies.
}
