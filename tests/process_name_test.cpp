// Default process names follow Python: Process-N, N counting the process
// objects made in this process (named ones too), Process-N:M in a child.
#include "mp/process.hpp"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

#include "mp/mp.hpp"

using namespace std::chrono_literals;

namespace {

int number_of(const std::string& name) { return std::stoi(name.substr(name.rfind('-') + 1)); }

void nothing() {}

TEST(ProcessName, DefaultIsProcessNCountedWhenMade) {
    mp::process first(nothing);
    ASSERT_EQ(first.name().rfind("Process-", 0), 0u) << first.name();
    int n = number_of(first.name());
    mp::process named({.name = "worker"}, nothing);
    mp::process third(nothing);
    EXPECT_EQ(named.name(), "worker");
    EXPECT_EQ(third.name(), "Process-" + std::to_string(n + 2));  // "worker" took n + 1, as in Python

    third.start();  // starting does not renumber
    EXPECT_EQ(third.name(), "Process-" + std::to_string(n + 2));
    ASSERT_TRUE(third.join(60s));
}

void check_names_inside(mp::queue<std::string> out) {
    mp::process grandchild(nothing);
    out.put(mp::current_process().name() + " " + grandchild.name());
}

TEST(ProcessName, AChildNumbersItsOwnChildren) {
    for (auto method : {mp::start_method::fork, mp::start_method::spawn, mp::start_method::forkserver}) {
        mp::queue<std::string> out;
        mp::process child({.context = mp::get_context(method)}, check_names_inside, out);
        const std::string name = child.name();
        child.start();
        EXPECT_EQ(out.get(60s), name + " " + name + ":1") << mp::to_string(method);
        ASSERT_TRUE(child.join(60s));
    }
}

}  // namespace
