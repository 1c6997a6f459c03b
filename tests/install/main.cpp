// Uses the installed mp package through its umbrella header: init first,
// then ask for the CPU count.
#include <mp/mp.hpp>

#include <iostream>

int main(int argc, char** argv) {
    mp::init(argc, argv);
    int n = mp::cpu_count();
    std::cout << "mp::cpu_count() = " << n << '\n';
    return n >= 1 ? 0 : 1;
}
