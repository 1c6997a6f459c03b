// mp::shared_array: handed over between processes without copying its
// elements, through a pipe, a queue whose producer exits at once, and pool
// and executor results, under every start method; a corrupt or absent
// message is an mp::serialization_error; no /dev/shm name or fd is left
// behind (the suite's leak check).
#include "mp/shared_array.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "mp/connection.hpp"
#include "mp/pool.hpp"
#include "mp/process.hpp"
#include "mp/process_pool_executor.hpp"
#include "mp/queue.hpp"
#include "support/test_program.hpp"


using namespace std::chrono_literals;

namespace {

constexpr auto patience = 30s;

mp::shared_array<double> iota_array(std::size_t n, double first) {
    mp::shared_array<double> a(n);
    std::iota(a.begin(), a.end(), first);
    return a;
}

bool is_iota(const mp::shared_array<double>& a, std::size_t n, double first) {
    if (a.size() != n) return false;
    for (std::size_t i = 0; i < n; ++i)
        if (a[i] != first + static_cast<double>(i)) return false;
    return true;
}

class shared_array_test : public testing::TestWithParam<mp::start_method> {
protected:
    mp::process_options opts() { return {.context = mp::get_context(GetParam())}; }
};

TEST(shared_array, holds_zeroed_elements_and_behaves_as_a_range) {
    mp::shared_array<std::int32_t> a(1000);
    ASSERT_EQ(a.size(), 1000u);
    EXPECT_FALSE(a.empty());
    for (auto v : a) EXPECT_EQ(v, 0);
    a[3] = 7;
    EXPECT_EQ(a.span()[3], 7);
    auto copy = a;  // copies share the elements
    copy[4] = 9;
    EXPECT_EQ(a[4], 9);
    std::vector<std::int32_t> v{1, 2, 3};
    auto b = mp::shared_array<std::int32_t>::copy_of(v);
    EXPECT_EQ(b.to_vector(), v);
    mp::shared_array<char> none;
    EXPECT_TRUE(none.empty());
    EXPECT_EQ(none.data(), nullptr);
    EXPECT_EQ(none.begin(), none.end());
}

// The child checks what it got, writes into the same memory, and answers
// with an array of its own.
void pipe_partner(mp::connection c) {
    auto a = c.recv<mp::shared_array<double>>();
    if (!is_iota(a, 1 << 20, 1.0)) std::_Exit(3);
    a[0] = -1;  // seen by the parent: the same pages, not a copy
    c.send(iota_array(1000, 5.0));
    (void)c.recv<int>();  // the parent looked at a[0]
}

TEST_P(shared_array_test, a_pipe_hands_over_the_same_memory_both_ways) {
    auto [mine, theirs] = mp::pipe();
    mp::process p(opts(), pipe_partner, theirs);
    p.start();
    auto a = iota_array(1 << 20, 1.0);
    mine.send(a);
    auto back = mine.recv<mp::shared_array<double>>();
    EXPECT_TRUE(is_iota(back, 1000, 5.0));
    EXPECT_EQ(a[0], -1.0);
    mine.send(0);
    ASSERT_TRUE(p.join(patience));
    EXPECT_EQ(p.exitcode(), 0);
}

// copy_of writes a large array with write calls before mapping it: the
// mapping must then show those bytes, and stay the memory a receiver shares.
void put_copy_then_check(mp::queue<mp::shared_array<double>> q, mp::queue<int> answer) {
    std::vector<double> v(3 << 20);  // 24 MiB, past the one-pass threshold
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = 1.0 + static_cast<double>(i);
    auto a = mp::shared_array<double>::copy_of(v);
    if (a.to_vector() != v) std::_Exit(3);
    q.put(a);
    (void)answer.get();  // the parent wrote into the array it received
    if (a[v.size() - 1] != -5.0) std::_Exit(4);
}

TEST_P(shared_array_test, a_large_copy_holds_its_values_and_is_shared) {
    mp::queue<mp::shared_array<double>> q;
    mp::queue<int> answer;
    mp::process p(opts(), put_copy_then_check, q, answer);
    p.start();
    auto a = q.get(patience);
    ASSERT_TRUE(is_iota(a, 3 << 20, 1.0));
    a[a.size() - 1] = -5.0;
    answer.put(1);
    ASSERT_TRUE(p.join(patience));
    EXPECT_EQ(p.exitcode(), 0);
}

void put_and_exit(mp::queue<mp::shared_array<double>> q) {
    q.put(iota_array(300'000, 2.0));
    q.put(mp::shared_array<double>());
}  // exits at once: the memory must outlive this process

TEST_P(shared_array_test, a_queue_carries_one_whose_producer_exited_at_once) {
    mp::queue<mp::shared_array<double>> q;
    mp::process p(opts(), put_and_exit, q);
    p.start();
    ASSERT_TRUE(p.join(patience));
    EXPECT_EQ(p.exitcode(), 0);
    auto a = q.get(patience);
    EXPECT_TRUE(is_iota(a, 300'000, 2.0));
    EXPECT_TRUE(q.get(patience).empty());
}

TEST(shared_array, one_array_sent_twice_reaches_both_receivers_as_the_same_memory) {
    mp::queue<mp::shared_array<int>> q;
    mp::shared_array<int> a(10);
    q.put(a);
    q.put(a);
    auto first = q.get(patience), second = q.get(patience);
    first[1] = 11;
    EXPECT_EQ(second[1], 11);
    EXPECT_EQ(a[1], 11);
}

mp::shared_array<double> make_array(std::size_t n, double first) { return iota_array(n, first); }

TEST_P(shared_array_test, a_pool_task_returns_one) {
    mp::pool pool({.processes = 2, .context = mp::get_context(GetParam())});
    auto a = pool.apply(make_array, std::size_t{500'000}, 3.0);
    EXPECT_TRUE(is_iota(a, 500'000, 3.0));
    auto many = pool.map([](int i) { return iota_array(100, i); }, std::vector<int>{1, 2, 3, 4});
    ASSERT_EQ(many.size(), 4u);
    for (int i = 0; i < 4; ++i) EXPECT_TRUE(is_iota(many[i], 100, i + 1));
}

double sum_of(mp::shared_array<double> a) { return std::accumulate(a.begin(), a.end(), 0.0); }

TEST_P(shared_array_test, an_executor_task_takes_and_returns_one) {
    mp::process_pool_executor ex({.max_workers = 1, .context = mp::get_context(GetParam())});
    auto a = ex.submit(make_array, std::size_t{1000}, 1.0).get();
    EXPECT_TRUE(is_iota(a, 1000, 1.0));
    EXPECT_EQ(ex.submit(sum_of, a).get(), 1000.0 * 1001.0 / 2);
}

void send_doubles(mp::connection c) { c.send(iota_array(10, 0.0)); }

TEST_P(shared_array_test, a_pipe_refuses_another_type_and_keeps_the_array_for_the_right_one) {
    auto [mine, theirs] = mp::pipe();
    mp::process p(opts(), send_doubles, theirs);
    p.start();
    EXPECT_THROW((void)mine.recv<mp::shared_array<float>>(), mp::serialization_error);
    EXPECT_THROW((void)mine.recv<std::vector<double>>(), mp::serialization_error);  // documented: to_vector()
    EXPECT_EQ(mine.recv<mp::shared_array<double>>().to_vector(), iota_array(10, 0.0).to_vector());
    ASSERT_TRUE(p.join(patience));
}

TEST(shared_array, another_element_type_is_a_clear_error_and_leaks_nothing) {
    mp::detail::output_archive out;
    mp::detail::save_value(out, iota_array(10, 0.0));
    std::vector<std::byte> bytes(out.size());
    out.copy_to(bytes.data());
    mp::detail::input_archive in(bytes);
    try {
        (void)mp::detail::load_value<mp::shared_array<float>>(in);
        ADD_FAILURE() << "received doubles as floats";
    } catch (const mp::serialization_error& e) {
        EXPECT_NE(std::string(e.what()).find("8-byte elements"), std::string::npos) << e.what();
    }
}

mp::shared_array<double> load_from(const mp::detail::output_archive& out) {
    std::vector<std::byte> bytes(out.size());
    out.copy_to(bytes.data());
    mp::detail::input_archive in(bytes);
    return mp::detail::load_value<mp::shared_array<double>>(in);
}

std::string error_of(const mp::detail::output_archive& out) {
    try {
        (void)load_from(out);
    } catch (const mp::serialization_error& e) {
        return e.what();
    }
    return "no error";
}

std::string error_of_message(std::uint32_t magic, std::uint64_t count, const std::string& name) {
    mp::detail::output_archive out;
    out(magic, std::uint32_t{sizeof(double)}, count, name);
    return error_of(out);
}

TEST(shared_array, an_absent_or_corrupt_name_is_a_clear_error) {
    auto absent = error_of_message(mp::detail::shared_array_magic, 4, "/mp-array-1-00000000deadbeef");
    EXPECT_NE(absent.find("is gone"), std::string::npos) << absent;
    auto foreign = error_of_message(mp::detail::shared_array_magic, 4, "/some-other-object");
    EXPECT_NE(foreign.find("is not the name of an mp::shared_array"), std::string::npos) << foreign;
    auto not_one = error_of_message(0x12345678, 4, "x");
    EXPECT_NE(not_one.find("does not hold a shared_array"), std::string::npos) << not_one;

    // A real name with a size that does not match its memory.
    mp::shared_array<double> a(16);
    mp::detail::output_archive out;
    mp::detail::save_value(out, a);
    std::vector<std::byte> bytes(out.size());
    out.copy_to(bytes.data());
    std::uint64_t wrong = 17;
    std::memcpy(bytes.data() + 8, &wrong, sizeof wrong);  // after magic and element size
    mp::detail::input_archive in(bytes);
    try {
        (void)mp::detail::load_value<mp::shared_array<double>>(in);
        ADD_FAILURE() << "loaded a shared_array of the wrong size";
    } catch (const mp::serialization_error& e) {
        EXPECT_NE(std::string(e.what()).find("holds 128 bytes"), std::string::npos) << e.what();
    }
}

TEST(shared_array, received_memory_is_released_with_its_last_handle) {
    mp::detail::output_archive out;
    {
        auto a = iota_array(100, 0.0);
        mp::detail::save_value(out, a);
    }  // the sender's handle is gone; the handed-over name keeps the memory
    {
        auto b = load_from(out);
        EXPECT_TRUE(is_iota(b, 100, 0.0));
    }  // the receiver's last handle: the memory and its name are gone
    auto again = error_of(out);
    EXPECT_NE(again.find("is gone"), std::string::npos) << again;
}

// ---- a whole program killed with arrays held and sent but never received ----
// The tracker cleans up when a whole program is gone, so this test runs this
// binary again as a separate program (array_holder_killed).

bool shm_exists(const std::string& name) { return ::access(("/dev/shm/" + name).c_str(), F_OK) == 0; }

MP_TEST_PROGRAM(array_holder_killed) {
    mp::queue<mp::shared_array<int>> q;
    mp::shared_array<int> held(1000);
    q.put(held);  // handed over, never received
    std::ofstream names(std::getenv("MP_ARRAY_TEST_OUT"));
    const std::string mine = "mp-array-" + std::to_string(::getpid()) + "-";
    for (const auto& e : std::filesystem::directory_iterator("/dev/shm"))
        if (e.path().filename().string().starts_with(mine)) names << e.path().filename().string() << "\n";
    names.close();
    ::kill(::getpid(), SIGKILL);
}

TEST(shared_array, killed_program_leaves_no_array_behind) {
    std::string out = "/tmp/mp-array-test-" + std::to_string(::getpid());
    int status = mp_test::run_program("array_holder_killed", {"MP_ARRAY_TEST_OUT=" + out});
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    std::vector<std::string> names;
    std::ifstream in(out);
    for (std::string name; in >> name;) names.push_back(name);
    std::remove(out.c_str());
    EXPECT_EQ(names.size(), 2u);  // the holder's name and the one handed over through the queue
    auto deadline = std::chrono::steady_clock::now() + patience;
    for (const auto& name : names) {
        while (shm_exists(name) && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(5ms);
        EXPECT_FALSE(shm_exists(name)) << name;
    }
}

INSTANTIATE_TEST_SUITE_P(each_start_method, shared_array_test,
                         testing::Values(mp::start_method::fork, mp::start_method::spawn,
                                         mp::start_method::forkserver),
                         [](const auto& info) { return std::string(mp::to_string(info.param)); });

}  // namespace
