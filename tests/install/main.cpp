// Uses the installed mp package: init first, then ask for the CPU count.
#include <mp/context.hpp>

#include <iostream>

int main(int argc, char** argv) {
    mp::init(argc, argv);
    int n = mp::cpu_count();
    std::cout << "mp::cpu_count() = " << n << '\n';
    return n >= 1 ? 0 : 1;
}
