// Functions received from a message are checked before they can be called:
// same build, start of a function mp knows to be sendable, never through a
// manager; and resolving one never takes a lock a fork child may inherit held.
#include "mp/detail/code_ref.hpp"

#include <gtest/gtest.h>
#include <link.h>
#include <malloc.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <cstddef>
#include <thread>

#if defined(__SANITIZE_ADDRESS__)
// The sanitizer runtime's count of live heap bytes (its header is not
// installed with every compiler).
extern "C" std::size_t __sanitizer_get_current_allocated_bytes();
#endif

#include "mp/connection.hpp"
#include "mp/function.hpp"
#include "mp/manager.hpp"
#include "mp/process.hpp"

using namespace std::chrono_literals;

// External linkage, as a user's function usually has.
int triple(int x) { return 3 * x; }

namespace {

int negate(int x) { return -x; }  // internal linkage: found in .symtab

template <class T>
std::vector<std::byte> encoded(const T& value) {
    mp::detail::output_archive out;
    mp::detail::save_value(out, value);
    std::vector<std::byte> bytes(out.size());
    out.copy_to(bytes.data());
    return bytes;
}

template <class T>
T decoded(const std::vector<std::byte>& bytes, bool data_only = false) {
    mp::detail::input_archive in(bytes);
    if (data_only) in.set_data_only();
    return mp::detail::load_value<T>(in);
}

using int_fn = mp::function<int(int)>;

// An mp::function message ends with [offset u64][name: u64 size, bytes].
std::vector<std::byte> with_offset_moved(const int_fn& f, std::int64_t by) {
    auto bytes = encoded(f);
    std::size_t at = bytes.size() - (8 + f.name().size()) - 8;
    std::uint64_t offset = 0;
    std::memcpy(&offset, bytes.data() + at, 8);
    offset += static_cast<std::uint64_t>(by);
    std::memcpy(bytes.data() + at, &offset, 8);
    return bytes;
}

}  // namespace

TEST(code_ref, functions_of_every_kind_round_trip) {
    int_fn plain = &triple;
    int_fn internal = &negate;
    int_fn from_fn = mp::fn<&triple>;
    int_fn lambda = [](int x) { return x + 100; };
    EXPECT_EQ(decoded<int_fn>(encoded(plain))(2), 6);
    EXPECT_EQ(decoded<int_fn>(encoded(internal))(2), -2);
    EXPECT_EQ(decoded<int_fn>(encoded(from_fn))(2), 6);
    EXPECT_EQ(decoded<int_fn>(encoded(lambda))(2), 102);
}

// Before the fix the altered reference was accepted, and calling it jumped
// into the middle of a function.
TEST(code_ref, an_offset_that_is_not_the_start_of_a_function_is_refused) {
    for (int_fn f : {int_fn(&triple), int_fn(&negate), int_fn(mp::fn<&triple>), int_fn([](int x) { return x; })}) {
        for (std::int64_t by : {std::int64_t{1}, std::int64_t{4}, std::int64_t{-1}, std::int64_t{1} << 20, std::int64_t{1} << 40})
            EXPECT_THROW((void)decoded<int_fn>(with_offset_moved(f, by)), mp::serialization_error) << by;
    }
}

TEST(code_ref, an_altered_function_on_a_pipe_is_a_serialization_error_not_a_crash) {
    auto [a, b] = mp::pipe();
    auto [c, d] = mp::pipe();
    int_fn f = &triple;
    a.send(f);
    std::vector<char> frame(4096);
    ssize_t n = ::read(b.fileno(), frame.data(), frame.size());
    ASSERT_GT(n, 16);
    // The body ends with the function's offset, then its name "triple".
    std::size_t at = static_cast<std::size_t>(n) - (8 + 6) - 8;
    frame[at] = static_cast<char>(frame[at] + 2);
    ASSERT_EQ(::write(c.fileno(), frame.data(), static_cast<std::size_t>(n)), n);
    EXPECT_THROW((void)d.recv<int_fn>(), mp::serialization_error);
    a.send(f);  // the connection goes on
    EXPECT_EQ(b.recv<int_fn>()(5), 15);
}

TEST(code_ref, a_function_from_another_build_is_refused) {
    auto ref = mp::detail::code_ref_of(&triple);
    ASSERT_NE(ref.build, 0u) << "the test executable should carry a GNU build-id";
    EXPECT_EQ(mp::detail::resolve_function_as<int (*)(int)>(ref)(3), 9);
    ref.build ^= 1;
    EXPECT_THROW((void)mp::detail::resolve_function_as<int (*)(int)>(ref), mp::serialization_error);
    auto missing = mp::detail::code_ref_of(&triple);
    missing.module = "/nowhere/libnot-loaded.so";
    EXPECT_THROW((void)mp::detail::resolve_function_as<int (*)(int)>(missing), mp::serialization_error);
}

// Bytes the program holds on the heap now (freed ones excluded, also those
// AddressSanitizer keeps in quarantine, which RSS would count).
std::size_t live_heap_bytes() {
#if defined(__SANITIZE_ADDRESS__)
    return __sanitizer_get_current_allocated_bytes();
#else
    struct mallinfo2 m = ::mallinfo2();
    return m.uordblks + m.hblkhd;
#endif
}

TEST(code_ref, references_to_modules_that_are_not_loaded_cost_no_memory) {
    // Each one used to walk the loader's list into a new module table, kept
    // for ever: a peer could grow the receiver by kilobytes per message.
    auto missing = mp::detail::code_ref_of(&triple);
    missing.module = "/nowhere/libnot-loaded.so";
    const std::size_t before = live_heap_bytes();
    for (int i = 0; i < 20000; ++i)
        EXPECT_THROW((void)mp::detail::resolve_function_as<int (*)(int)>(missing), mp::serialization_error);
    const std::size_t after = live_heap_bytes();
    EXPECT_LT(after, before + 1024 * 1024) << "20000 refused references kept " << (after - before) / 1024 << " KiB";
}

TEST(code_ref, an_entry_point_must_be_registered) {
    // A plain function is the start of a function, but not an entry point.
    auto plain = mp::detail::code_ref_of(&triple);
    EXPECT_THROW((void)mp::detail::resolve_as<int (*)(int)>(plain), mp::serialization_error);
    auto entry = mp::detail::code_ref_of(mp::detail::sendable<&negate>());
    EXPECT_EQ(mp::detail::resolve_as<int (*)(int)>(entry)(3), -3);
}

TEST(code_ref, a_data_only_archive_refuses_functions) {
    auto bytes = encoded(std::pair<int, int_fn>{7, int_fn(&triple)});
    EXPECT_THROW((void)(decoded<std::pair<int, int_fn>>(bytes, true)), mp::serialization_error);
    EXPECT_EQ((decoded<std::pair<int, int_fn>>(bytes, false).second(1)), 3);
    EXPECT_EQ(decoded<std::vector<int>>(encoded(std::vector<int>{1, 2}), true), (std::vector<int>{1, 2}));
}

namespace {

struct applier {
    int apply(int_fn f, int x) { return f(x); }
    int twice(int x) { return 2 * x; }
};

}  // namespace

// SPEC §8: the manager wire carries data only. Before the fix a function in a
// method's arguments was decoded by the server, and one stored in a shared
// dict by the client that read it.
TEST(code_ref, a_manager_refuses_functions_both_ways) {
    mp::base_manager m({.context = mp::get_context(mp::start_method::fork)});
    m.register_type<applier>("applier", mp::methods<&applier::apply, &applier::twice>);
    m.start();
    auto p = m.make<applier>("applier");
    EXPECT_THROW((void)p.call<&applier::apply>(int_fn(&triple), 2), mp::serialization_error);
    EXPECT_EQ(p.call<&applier::twice>(4), 8);  // and the server goes on
    m.shutdown();

    mp::manager sm({.context = mp::get_context(mp::start_method::fork)});
    sm.start();
    auto d = sm.dict<std::string, int_fn>();
    d.set("f", int_fn(&triple));
    EXPECT_THROW((void)d.get("f"), mp::serialization_error);
    sm.shutdown();
}

namespace {

void call_received_functions(mp::connection c) {
    for (int i = 0; i < 4; ++i) {
        auto f = c.recv<int_fn>();
        c.send(f(10));
    }
}

class code_ref_across : public testing::TestWithParam<mp::start_method> {};

}  // namespace

// A spawn or forkserver child never encoded these functions; it accepts them
// because their entry points registered at its own static initialisation, and
// plain functions are found in its symbol table.
TEST_P(code_ref_across, a_child_calls_functions_received_on_a_pipe) {
    auto [mine, theirs] = mp::pipe();
    mp::process p({.context = mp::get_context(GetParam())}, &call_received_functions, theirs);
    p.start();
    mine.send(int_fn(&triple));
    EXPECT_EQ(mine.recv<int>(30s), 30);
    mine.send(int_fn(&negate));
    EXPECT_EQ(mine.recv<int>(30s), -10);
    mine.send(int_fn(mp::fn<&triple>));
    EXPECT_EQ(mine.recv<int>(30s), 30);
    mine.send(int_fn([](int x) { return x * x; }));
    EXPECT_EQ(mine.recv<int>(30s), 100);
    p.join();
    EXPECT_EQ(p.exitcode(), 0);
}

INSTANTIATE_TEST_SUITE_P(each_start_method, code_ref_across,
                         testing::Values(mp::start_method::fork, mp::start_method::spawn,
                                         mp::start_method::forkserver),
                         [](const auto& info) { return std::string(mp::to_string(info.param)); });

namespace {

std::atomic<bool> hammering{false};

// Holds the loader's lock (dl_iterate_phdr's) a little while per module.
int hold_the_loader_lock(dl_phdr_info*, std::size_t, void*) {
    std::this_thread::sleep_for(200us);
    return 0;
}

}  // namespace

// Item 11 of issue 11: a fork child must not take a lock another thread of
// its parent may have held at the fork. Before the fix, resolving a function
// in libc walked dl_iterate_phdr, and most children forked while a parent
// thread was inside it hung for ever.
TEST(code_ref, fork_children_resolve_functions_while_a_parent_thread_holds_the_loader_lock) {
    int_fn upper = static_cast<int (*)(int)>(&::toupper);  // lives in libc, not in the executable
    int_fn mine = &triple;
    auto upper_bytes = encoded(upper);
    auto mine_bytes = encoded(mine);
    hammering = true;
    std::thread hammer([] {
        while (hammering) dl_iterate_phdr(hold_the_loader_lock, nullptr);
    });
    constexpr int children = 30;
    int hung = 0, failed = 0;
    for (int i = 0; i < children; ++i) {
        pid_t pid = ::fork();
        if (pid == 0) {
            int ok = 1;
            try {
                ok = decoded<int_fn>(upper_bytes)('a') == 'A' && decoded<int_fn>(mine_bytes)(2) == 6 ? 0 : 2;
            } catch (...) {
                ok = 3;
            }
            ::_exit(ok);
        }
        ASSERT_GT(pid, 0);
        int status = 0;
        auto give_up = std::chrono::steady_clock::now() + 3s;  // only catches a hang
        pid_t done = 0;
        while ((done = ::waitpid(pid, &status, WNOHANG)) == 0 && std::chrono::steady_clock::now() < give_up)
            std::this_thread::sleep_for(1ms);
        if (done == 0) {
            ++hung;
            ::kill(pid, SIGKILL);
            ::waitpid(pid, &status, 0);
        } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            ++failed;
        }
    }
    hammering = false;
    hammer.join();
    EXPECT_EQ(hung, 0) << "of " << children << " fork children";
    EXPECT_EQ(failed, 0);
}
