// remote_manager.cpp — a manager server on TCP and a client that uses it
// (Python's BaseManager with an address and an authkey). Here both run in one
// program: the server in a child process, the client in main; across
// machines, the same two halves run in two programs.
#include <mp/mp.hpp>

#include <cstdint>
#include <iostream>
#include <string>
#include <variant>

const std::string authkey = "example key";

// The type the server hosts; clients call its methods through a proxy.
struct tally {
    int total = 0;
    int add(int n) { return total += n; }
};

void serve(mp::queue<int> port_out) {
    mp::manager m({.address = mp::tcp_address{"127.0.0.1", 0}, .authkey = authkey});  // port 0: any free port
    m.register_type<tally>("tally", mp::methods<&tally::add>);
    mp::manager_server server = m.get_server();
    port_out.put(std::get<mp::tcp_address>(server.address()).port);
    server.serve_forever();  // until a client calls shutdown_server()
}

int main(int argc, char** argv) {
    mp::init(argc, argv);

    mp::queue<int> port;
    mp::process server(serve, port);
    server.start();
    auto address = mp::tcp_address{"127.0.0.1", static_cast<std::uint16_t>(port.get())};

    mp::manager client({.address = address, .authkey = authkey});
    client.connect();
    auto t = client.make<tally>("tally");
    for (int n : {1, 2, 3}) std::cout << "add(" << n << ") -> " << t.call<&tally::add>(n) << '\n';
    auto scores = client.dict<std::string, int>();  // the shared types of Python's SyncManager
    scores.set("alice", 3);
    std::cout << "scores[alice] = " << scores.get("alice") << '\n';

    client.shutdown_server();
    server.join();
    std::cout << "server exit code: " << server.exitcode().value_or(-1) << '\n';
}
