// mp::bind and initializer arguments (Python's initargs): a pool's or a
// process executor's workers receive queues, locks, values and shared memory
// through `.initializer = mp::bind(init, ...)`, once each, replacements
// included, under every start method; an initializer that throws fails the
// tasks with an error that says so.
#include "mp/bind.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "mp/pool.hpp"
#include "mp/process.hpp"
#include "mp/process_pool_executor.hpp"
#include "mp/queue.hpp"
#include "mp/shared_memory.hpp"
#include "mp/synchronize.hpp"
#include "mp/value.hpp"

using namespace std::chrono_literals;

namespace {

// What the initializer leaves in a worker for its tasks.
std::optional<mp::queue<int>> g_queue;
std::optional<mp::lock> g_lock;
std::optional<mp::value<long>> g_counter;
mp::shared_memory g_shm;

int add(int a, int b) { return a + b; }

void init_queue(mp::queue<int> q) {
    q.put(static_cast<int>(::getpid()));
    g_queue = q;
}

void init_all(mp::queue<int> q, mp::lock lk, mp::value<long> counter, mp::shared_memory shm) {
    g_queue = q;
    g_lock = lk;
    g_counter = counter;
    g_shm = shm;
    std::lock_guard guard(*g_lock);
    auto* inits = reinterpret_cast<int*>(g_shm.data());
    ++*inits;  // how many workers ran the initializer
    q.put(static_cast<int>(::getpid()));
}

void init_fails() { throw std::runtime_error("no database at db.example"); }

// A read-modify-write that only the shared lock makes exact.
int bump(int) {
    std::lock_guard guard(*g_lock);
    long v = g_counter->get();
    std::this_thread::yield();
    g_counter->set(v + 1);
    return 0;
}

// Marks byte `i` (after the init counter) of the shared memory.
int mark(int i) {
    g_shm.data()[sizeof(int) + static_cast<std::size_t>(i)] = std::byte{1};
    return i;
}

// The worker's pid, after checking the initializer gave it its queue.
int initialized_pid(int) {
    if (!g_queue) throw std::logic_error("this worker did not run the initializer");
    return static_cast<int>(::getpid());
}

int die(int) {
    ::raise(SIGKILL);
    return 0;
}

void put_sum(mp::queue<int> q, int a, int b) { q.put(a + b); }

// Takes `n` items from `q` (each within a generous limit that only catches hangs).
std::multiset<int> take(mp::queue<int>& q, std::size_t n) {
    std::multiset<int> out;
    while (out.size() < n) out.insert(q.get(30s));
    return out;
}

class initializer_test : public testing::TestWithParam<mp::start_method> {
protected:
    mp::context ctx() const { return mp::get_context(GetParam()); }
};

TEST(bind, calls_with_bound_arguments_first) {
    auto add10 = mp::bind(add, 10);
    EXPECT_EQ(add10(5), 15);
    mp::function<int(int)> f = add10;
    EXPECT_EQ(f(7), 17);
    mp::function<int()> g = mp::bind(mp::fn<&add>, 2, 3);
    EXPECT_EQ(g(), 5);
    EXPECT_EQ(g.name(), "add");
    EXPECT_TRUE(static_cast<bool>(g));
}

TEST(bind, converts_to_an_initializer) {
    mp::queue<int> q;
    mp::function<void()> init = mp::bind(init_queue, q);
    init();
    EXPECT_EQ(q.get(5s), static_cast<int>(::getpid()));
    g_queue.reset();
}

TEST_P(initializer_test, bound_call_is_a_process_target) {
    mp::queue<int> q;
    mp::process p({.context = ctx()}, mp::bind(put_sum, q, 40), 2);
    p.start();
    EXPECT_EQ(q.get(30s), 42);
    p.join();
    EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(initializer_test, bound_call_is_a_task) {
    mp::pool pool({.processes = 2, .context = ctx()});
    EXPECT_EQ(pool.map(mp::bind(add, 100), std::vector<int>{1, 2, 3}), (std::vector<int>{101, 102, 103}));
    EXPECT_EQ(pool.apply(mp::bind(add, 1, 2)), 3);
    // Task arguments travel as bytes: a bound queue is refused there.
    mp::queue<int> q;
    EXPECT_THROW((void)pool.apply(mp::bind(put_sum, q, 1), 2), mp::serialization_error);
}

TEST_P(initializer_test, every_pool_worker_gets_the_queue) {
    mp::queue<int> q;
    mp::pool pool({.processes = 2, .initializer = mp::bind(init_queue, q), .context = ctx()});
    auto got = take(q, 2);
    auto pids = pool.worker_pids();
    EXPECT_EQ(std::set<int>(got.begin(), got.end()), std::set<int>(pids.begin(), pids.end()));
    for (int pid : pool.map(initialized_pid, std::vector<int>(20, 0), 1)) EXPECT_TRUE(got.count(pid)) << pid;
    pool.close();
    pool.join();
    EXPECT_FALSE(q.try_get().has_value());  // once per worker
}

TEST_P(initializer_test, lock_value_and_shared_memory_are_shared) {
    mp::queue<int> q;
    mp::lock lk;
    mp::value<long> counter(0, mp::no_lock);
    mp::shared_memory shm(4096);
    std::memset(shm.data(), 0, shm.size());
    {
        mp::pool pool({.processes = 2, .initializer = mp::bind(init_all, q, lk, counter, shm), .context = ctx()});
        (void)pool.map(bump, std::vector<int>(300, 0), 1);
        EXPECT_EQ(counter.get(), 300);
        std::vector<int> idx(100);
        for (int i = 0; i < 100; ++i) idx[static_cast<std::size_t>(i)] = i;
        (void)pool.map(mark, idx, 3);
        pool.close();
        pool.join();
    }
    for (int i = 0; i < 100; ++i) EXPECT_EQ(shm.data()[sizeof(int) + static_cast<std::size_t>(i)], std::byte{1}) << i;
    int inits = 0;
    std::memcpy(&inits, shm.data(), sizeof inits);
    EXPECT_EQ(inits, 2);
    EXPECT_EQ(take(q, 2).size(), 2u);
    shm.unlink();
}

TEST_P(initializer_test, replacement_workers_get_it_after_maxtasksperchild) {
    mp::queue<int> q;
    mp::pool pool({.processes = 2, .initializer = mp::bind(init_queue, q), .maxtasksperchild = 1, .context = ctx()});
    std::vector<mp::future<int>> fs;
    for (int i = 0; i < 6; ++i) fs.push_back(pool.apply_async(initialized_pid, i));
    std::set<int> task_pids;
    for (auto& f : fs) task_pids.insert(f.get());  // each ran after its worker's initializer
    EXPECT_EQ(task_pids.size(), 6u);              // one task per worker
    pool.close();
    pool.join();
    std::multiset<int> init_pids;
    while (auto pid = q.try_get()) init_pids.insert(*pid);
    for (int pid : task_pids) EXPECT_EQ(init_pids.count(pid), 1u) << pid;
}

TEST_P(initializer_test, replacement_workers_get_it_after_a_crash) {
    mp::queue<int> q;
    mp::pool pool({.processes = 1, .initializer = mp::bind(init_queue, q), .context = ctx()});
    int first = q.get(30s);
    EXPECT_THROW((void)pool.apply(die, 0), mp::worker_crashed);
    int second = pool.apply(initialized_pid, 0);
    EXPECT_NE(second, first);
    EXPECT_EQ(q.get(30s), second);
}

TEST_P(initializer_test, executor_workers_get_it) {
    mp::queue<int> q;
    mp::process_pool_executor ex({.max_workers = 2, .context = ctx(), .initializer = mp::bind(init_queue, q),
                                  .max_tasks_per_child = 2});
    std::vector<mp::future<int>> fs;
    for (int i = 0; i < 8; ++i) fs.push_back(ex.submit(initialized_pid, i));
    std::set<int> task_pids;
    for (auto& f : fs) task_pids.insert(f.get());
    ex.shutdown(true);
    std::set<int> init_pids;
    while (auto pid = q.try_get()) init_pids.insert(*pid);
    for (int pid : task_pids) EXPECT_TRUE(init_pids.count(pid)) << pid;
}

TEST_P(initializer_test, a_throwing_initializer_fails_tasks_with_its_error) {
    auto expect_initializer_error = [](auto&& call) {
        try {
            call();
            ADD_FAILURE() << "the task ran although the initializer threw";
        } catch (const std::runtime_error& e) {  // the initializer's own type
            std::string what = e.what();
            EXPECT_NE(what.find("initializer"), std::string::npos) << what;
            EXPECT_NE(what.find("no database at db.example"), std::string::npos) << what;
        }
    };
    {
        mp::pool pool({.processes = 2, .initializer = init_fails, .context = ctx()});
        expect_initializer_error([&] { (void)pool.apply(add, 1, 2); });
        auto f = pool.apply_async(add, 3, 4);
        expect_initializer_error([&] { (void)f.get(); });
    }
    mp::process_pool_executor ex({.max_workers = 1, .context = ctx(), .initializer = mp::bind(init_fails)});
    expect_initializer_error([&] { (void)ex.submit(add, 1, 2).get(); });
}

INSTANTIATE_TEST_SUITE_P(all, initializer_test,
                         testing::Values(mp::start_method::fork, mp::start_method::spawn, mp::start_method::forkserver),
                         [](const auto& info) { return std::string(mp::to_string(info.param)); });

}  // namespace
