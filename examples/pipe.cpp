// pipe.cpp — two processes talk over a pipe (Python's Pipe()): the child
// squares every number it receives until it gets -1, then says goodbye.
#include <mp/mp.hpp>

#include <chrono>
#include <iostream>
#include <string>

using namespace std::chrono_literals;

void squarer(mp::connection conn) {
    for (int n = conn.recv<int>(); n >= 0; n = conn.recv<int>()) conn.send(n * n);
    conn.send("goodbye from " + mp::current_process().name());
}

int main(int argc, char** argv) {
    mp::init(argc, argv);  // first line of main, always

    auto [here, there] = mp::pipe();  // duplex: both ends send and receive
    mp::process child(squarer, there);
    child.start();

    std::cout << std::boolalpha << "anything to read yet? " << here.poll(0.1s) << '\n';
    for (int n : {2, 3, 4}) {
        here.send(n);
        std::cout << n << " squared is " << here.recv<int>() << '\n';
    }
    here.send(-1);
    std::cout << here.recv<std::string>() << '\n';
    child.join();
}
