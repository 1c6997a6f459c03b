// test_program.hpp — a test binary that can also run as a small program.
//
// Some promises hold only for a whole program (the tracker cleans up when a
// program is gone, not when one of its processes is), so a test starts its
// own binary again as a separate program. Such a program is declared with
// MP_TEST_PROGRAM(name) { ... } and is not a test: main() runs it when the
// binary is started with MP_TEST_PROGRAM=<name> (after mp::init, before
// GoogleTest), and a normal test run never sees it.
#pragma once

#include <string>
#include <vector>

namespace mp_test {

using program_body = void (*)();

/// Registers `body` under `name`; MP_TEST_PROGRAM does this at start-up.
bool register_program(const char* name, program_body body);

/// Runs the program named by MP_TEST_PROGRAM and exits with its status, if
/// the variable is set; returns otherwise. main() calls this.
void run_requested_program();

/// Starts this binary as the program `name` with `env` ("NAME=value" strings)
/// added to the environment, its standard output quiet and the leak check of
/// its own run off; waits for it and returns its wait status.
int run_program(const std::string& name, const std::vector<std::string>& env = {});

}  // namespace mp_test

#define MP_TEST_PROGRAM(name)                                                           \
    static void name##_test_program();                                                  \
    [[maybe_unused]] static const bool name##_test_program_registered =                 \
        mp_test::register_program(#name, name##_test_program);                          \
    static void name##_test_program()
