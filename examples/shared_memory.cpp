// shared_memory.cpp — a block of shared memory filled by two child processes
// and read by the parent without copying (Python's
// shared_memory.SharedMemory). The children find the block by its name.
#include <mp/mp.hpp>

#include <cstddef>
#include <iostream>
#include <numeric>
#include <span>
#include <string>

constexpr std::size_t count = 1'000'000;

// Writes i * i for i in [begin, end) into the block called `name`.
void fill(std::string name, std::size_t begin, std::size_t end) {
    mp::shared_memory block = mp::shared_memory::attach(name);
    auto* squares = reinterpret_cast<double*>(block.data());
    for (std::size_t i = begin; i < end; ++i) squares[i] = static_cast<double>(i) * static_cast<double>(i);
}

int main(int argc, char** argv) {
    mp::init(argc, argv);

    mp::shared_memory block(count * sizeof(double));  // zero-filled, with a fresh name
    std::cout << "block " << block.name() << ": " << block.size() << " bytes\n";
    mp::process low(fill, block.name(), std::size_t{0}, count / 2);
    mp::process high(fill, block.name(), count / 2, count);
    low.start();
    high.start();
    low.join();
    high.join();

    std::span<const double> squares(reinterpret_cast<const double*>(block.data()), count);
    double sum = std::accumulate(squares.begin(), squares.end(), 0.0);
    std::cout << "sum of i^2 for i < " << count << ": " << sum << '\n';
    block.unlink();  // no one attaches any more: remove the name
}
