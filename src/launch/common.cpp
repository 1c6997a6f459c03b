// What every start method shares: running a child's work, bootstrapping a
// fresh child from its socket.

#include <cstdio>
#include <iostream>

#include "launch/launch.hpp"
#include "mp/connection.hpp"
#include "shm_tracker.hpp"

namespace mp::detail::launch {

namespace {
struct bootstrap_message {};  // the type tag of a bootstrap frame
}  // namespace

void popen::send_signal(int sig) {
    if (exit_code_ || pid_ <= 0) return;
    if (poll()) return;  // ended already: its pid may belong to someone else now
    sys::send_signal(pid_, sig);
}

int run_guarded(std::string_view process_name, const std::function<void()>& body) noexcept {
    try {
        body();
        return 0;
    } catch (const std::exception& e) {
        std::fflush(stdout);
        std::cout.flush();
        std::fprintf(stderr, "Process %.*s:\n%s: %s\n", static_cast<int>(process_name.size()),
                     process_name.data(), demangle(typeid(e).name()).c_str(), e.what());
    } catch (...) {
        std::fflush(stdout);
        std::fprintf(stderr, "Process %.*s:\nan exception that is not a std::exception\n",
                     static_cast<int>(process_name.size()), process_name.data());
    }
    std::fflush(stderr);
    return 1;
}

void check_startable_fresh(const identity& child, const process_target& target, start_method method) {
    if (!runtime::get().initialized)
        throw bootstrap_error(
            "mp: cannot start a " + std::string(to_string(method)) +
            " child: mp::init(argc, argv) was not called. A " + std::string(to_string(method)) +
            " child is a fresh run of this executable, and mp::init is where it takes up its work: "
            "make `mp::init(argc, argv);` the first line of main() (the C++ form of Python's "
            "`if __name__ == '__main__':` guard)");
    if (!target.entry)
        throw serialization_error(
            "mp: process '" + child.name + "' cannot be started with the " + std::string(to_string(method)) +
            " method: its target (" + target.unsendable +
            ") cannot be sent to a fresh process (a lambda with captures, say). Pass a plain function, "
            "a captureless lambda, mp::fn<&f>, or a serializable function object, with the data as "
            "arguments; or use the fork start method, whose child inherits the target");
}

void write_bootstrap(output_archive& ar, const identity& child, const process_target& target) {
    ar(child);
    int tracker = shm_tracker::fd_for_child();
    ar(tracker >= 0);
    if (tracker >= 0) ar(ar.add_fd(tracker));
    ar(code_ref_of(target.entry));
    target.save(ar);
}

void send_bootstrap(unique_fd fd, output_archive& ar) {
    connection_core conn(std::move(fd), false, true);
    try {
        conn.send_message(type_tag<bootstrap_message>(), "bootstrap", ar);
    } catch (const eof_error&) {
        // The child died before reading its work; its exit code will say so.
    }
}

}  // namespace mp::detail::launch

namespace mp::detail {

void run_bootstrapped_child(int fd) {
    connection_core conn(unique_fd(fd), true, false);
    struct outcome {
        std::string name = "child";
        int code = 1;
    } result;
    try {
        conn.recv_message(
            type_tag<launch::bootstrap_message>(), "bootstrap", std::nullopt,
            [](void* ctx, input_archive& ar) {
                auto* out = static_cast<outcome*>(ctx);
                identity id;
                ar(id);
                out->name = id.name;
                bool has_tracker = false;
                ar(has_tracker);
                if (has_tracker) {
                    std::uint32_t index = 0;
                    ar(index);
                    shm_tracker::adopt(ar.take_fd(index));
                }
                code_ref entry_ref;
                ar(entry_ref);
                auto entry = resolve_as<void (*)(input_archive&)>(entry_ref);
                runtime::get().adopt(std::move(id));
                out->code = launch::run_guarded(out->name, [&] { entry(ar); });
            },
            &result);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "Process %s: could not start: %s\n", result.name.c_str(), e.what());
        result.code = 1;
    }
    sys::flush_and_exit(result.code);
}

}  // namespace mp::detail
