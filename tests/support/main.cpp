// main.cpp — main() of every test binary.
#include <gtest/gtest.h>

#include "mp/context.hpp"
#include "support/leak_check.hpp"
#include "support/test_program.hpp"

int main(int argc, char** argv) {
    // First: under spawn and forkserver a child is a fresh run of this binary,
    // and mp::init runs the child's work there and exits. GoogleTest must not
    // see that run.
    mp::init(argc, argv);
    // Then: a run of this binary as one of its test programs.
    mp_test::run_requested_program();
    testing::InitGoogleTest(&argc, argv);
    mp_test::install_leak_check();
    return RUN_ALL_TESTS();
}
