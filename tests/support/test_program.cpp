#include "support/test_program.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <stdexcept>

extern char** environ;

namespace mp_test {
namespace {

constexpr const char* program_variable = "MP_TEST_PROGRAM";

std::map<std::string, program_body>& programs() {
    static std::map<std::string, program_body> registry;
    return registry;
}

bool names_variable(const char* entry, const std::string& assignment) {
    auto equals = assignment.find('=');
    return std::strncmp(entry, assignment.c_str(), equals + 1) == 0;
}

}  // namespace

bool register_program(const char* name, program_body body) {
    programs().emplace(name, body);
    return true;
}

void run_requested_program() {
    const char* name = std::getenv(program_variable);
    if (!name) return;
    auto found = programs().find(name);
    if (found == programs().end()) {
        std::fprintf(stderr, "no test program named %s in this binary\n", name);
        std::_Exit(2);
    }
    found->second();
    std::exit(0);
}

int run_program(const std::string& name, const std::vector<std::string>& env) {
    std::vector<std::string> added = env;
    added.push_back(std::string(program_variable) + "=" + name);
    added.push_back("MP_TEST_LEAK_CHECK=0");
    std::vector<char*> envp;
    for (auto& entry : added) envp.push_back(entry.data());
    for (char** entry = environ; *entry; ++entry) {
        bool replaced = false;
        for (const auto& assignment : added) replaced = replaced || names_variable(*entry, assignment);
        if (!replaced) envp.push_back(*entry);
    }
    envp.push_back(nullptr);

    std::string exe = std::filesystem::read_symlink("/proc/self/exe");
    char* argv[] = {exe.data(), nullptr};
    posix_spawn_file_actions_t quiet;
    posix_spawn_file_actions_init(&quiet);
    posix_spawn_file_actions_addopen(&quiet, 1, "/dev/null", O_WRONLY, 0);
    pid_t pid = 0;
    int spawned = posix_spawn(&pid, exe.c_str(), &quiet, nullptr, argv, envp.data());
    posix_spawn_file_actions_destroy(&quiet);
    if (spawned != 0) throw std::runtime_error("cannot start test program " + name + ": " + std::strerror(spawned));
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return status;
}

}  // namespace mp_test
