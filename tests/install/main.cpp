// A program that uses mp as a user would: through the umbrella header, with
// no C++ standard set by its build (mp carries C++20 itself). It checks the
// version macros against the version the build expects, then runs a function
// in a child process under each start method and gets its result back.
#include <mp/mp.hpp>
#include <mp/version.hpp>

#include <cstdio>
#include <cstring>
#include <string>

namespace {

void square(mp::queue<int> results, int x) { results.put(x * x); }

}  // namespace

int main(int argc, char** argv) {
    mp::init(argc, argv);
#ifdef MP_EXPECTED_VERSION
    if (std::strcmp(MP_VERSION_STRING, MP_EXPECTED_VERSION) != 0) {
        std::printf("MP_VERSION_STRING is %s, expected %s\n", MP_VERSION_STRING, MP_EXPECTED_VERSION);
        return 1;
    }
#endif
    static_assert(MP_VERSION == MP_VERSION_MAJOR * 10000 + MP_VERSION_MINOR * 100 + MP_VERSION_PATCH);
    for (auto method : {mp::start_method::fork, mp::start_method::spawn, mp::start_method::forkserver}) {
        mp::queue<int> results;
        mp::process p({.context = mp::get_context(method)}, square, results, 7);
        p.start();
        int got = results.get();
        p.join();
        if (got != 49 || p.exitcode() != 0) {
            std::printf("a child under %s returned %d, exit code %d\n", std::string(mp::to_string(method)).c_str(),
                        got, p.exitcode().value_or(-1000));
            return 1;
        }
    }
    std::printf("mp %s: children under fork, spawn and forkserver ran\n", MP_VERSION_STRING);
    return 0;
}
