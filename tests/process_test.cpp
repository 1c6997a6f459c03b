// mp::process under every start method: exit codes, names, arguments,
// stdin, orphans, misuse.
#include "mp/process.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "mp/connection.hpp"
#include "mp/function.hpp"
#include "mp/queue.hpp"
#include "runtime.hpp"

using namespace std::chrono_literals;

namespace {

class process_test : public testing::TestWithParam<mp::start_method> {
protected:
    mp::process_options opts(std::string name = {}) {
        return {.name = std::move(name), .daemon = false, .context = mp::get_context(GetParam())};
    }
};

void do_nothing() {}
void throw_runtime() { throw std::runtime_error("boom"); }
void exit_with(int code) { std::exit(code); }
void sleep_forever() {
    for (;;) ::pause();
}
void report_identity(mp::queue<std::string> q) {
    auto parent = mp::parent_process();
    q.put(mp::current_process().name());
    q.put(parent ? parent->name() : std::string("none"));
    q.put(std::to_string(mp::current_process().pid() == ::getpid()));
}
void sum_args(mp::queue<long> q, int a, std::string s, std::vector<double> v, std::map<std::string, int> m) {
    long total = a + static_cast<long>(s.size());
    for (double d : v) total += static_cast<long>(d);
    for (auto& [k, x] : m) total += x + static_cast<long>(k.size());
    q.put(total);
}
void read_stdin(mp::queue<int> q) {
    char c;
    q.put(static_cast<int>(::read(0, &c, 1)));  // /dev/null: 0 bytes, end of file
}
void put_one(mp::queue<int> q, int v) { q.put(v); }
void relay(mp::queue<int> in, mp::queue<int> out) { out.put(in.get() + 1); }
void start_grandchild(mp::queue<int> q, mp::start_method m) {
    mp::process g({.context = mp::get_context(m)}, sleep_forever);
    g.start();
    q.put(g.pid());
    sleep_forever();
}
void nested(mp::queue<std::string> q, mp::start_method m) {
    mp::process inner({.context = mp::get_context(m)}, report_identity, q);
    inner.start();
    inner.join();
    q.put("inner exit " + std::to_string(*inner.exitcode()));
}

struct functor {
    int add = 0;
    template <class Archive>
    void serialize(Archive& ar) {
        ar(add);
    }
    void operator()(mp::queue<int> q, int x) const { q.put(x + add); }
};

int open_fd_count() {
    int count = 0;
    for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
        static_cast<void>(entry);
        ++count;
    }
    return count - 1;  // the directory iterator's own
}
void report_fd_count(mp::queue<int> q) { q.put(open_fd_count()); }

bool process_gone(int pid) {
    // Gone, or a zombie waiting for whoever adopted it.
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    if (!stat) return true;
    std::string line;
    std::getline(stat, line);
    auto close = line.rfind(')');
    return close != std::string::npos && line.size() > close + 2 && line[close + 2] == 'Z';
}

}  // namespace

TEST_P(process_test, a_normal_return_exits_with_zero) {
    mp::process p(opts(), do_nothing);
    EXPECT_EQ(p.exitcode(), std::nullopt);
    EXPECT_FALSE(p.is_alive());
    p.start();
    EXPECT_GT(p.pid(), 0);
    p.join();
    EXPECT_EQ(p.exitcode(), 0);
    EXPECT_FALSE(p.is_alive());
}

TEST_P(process_test, an_uncaught_exception_exits_with_one_and_says_why) {
    testing::internal::CaptureStderr();
    mp::process p(opts("thrower"), throw_runtime);
    p.start();
    p.join();
    std::string err = testing::internal::GetCapturedStderr();
    EXPECT_EQ(p.exitcode(), 1);
    // A forkserver child writes to the stderr the server was started with,
    // before this test redirected it (as in Python).
    if (GetParam() == mp::start_method::forkserver) return;
    EXPECT_NE(err.find("Process thrower:"), std::string::npos) << err;
    EXPECT_NE(err.find("std::runtime_error: boom"), std::string::npos) << err;
}

TEST_P(process_test, std_exit_sets_the_exit_code) {
    mp::process p(opts(), exit_with, 7);
    p.start();
    p.join();
    EXPECT_EQ(p.exitcode(), 7);
}

TEST_P(process_test, a_killed_child_reports_minus_the_signal) {
    mp::process p(opts(), sleep_forever);
    p.start();
    EXPECT_TRUE(p.is_alive());
    EXPECT_FALSE(p.join(50ms));
    p.kill();
    p.join();
    EXPECT_EQ(p.exitcode(), -SIGKILL);

    mp::process t(opts(), sleep_forever);
    t.start();
    t.terminate();
    t.join();
    EXPECT_EQ(t.exitcode(), -SIGTERM);
}

TEST_P(process_test, arguments_of_many_types_arrive_intact) {
    mp::queue<long> q;
    mp::process p(opts(), sum_args, q, 5, std::string("abc"), std::vector<double>{1.0, 2.0},
                  std::map<std::string, int>{{"k", 10}});
    p.start();
    EXPECT_EQ(q.get(10s), 5 + 3 + 3 + 11);
    p.join();
    EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(process_test, names_and_parents_follow_python) {
    mp::queue<std::string> q;
    mp::process p(opts(), report_identity, q);
    p.start();
    std::string name = q.get(10s);
    EXPECT_EQ(name, p.name());
    EXPECT_EQ(name.rfind("Process-", 0), 0u) << name;
    EXPECT_EQ(q.get(10s), "MainProcess");
    EXPECT_EQ(q.get(10s), "1");
    p.join();

    mp::process named(opts("worker-1"), report_identity, q);
    named.start();
    EXPECT_EQ(q.get(10s), "worker-1");
    (void)q.get(10s);
    (void)q.get(10s);
    named.join();
    EXPECT_EQ(mp::current_process().name(), "MainProcess");
    EXPECT_FALSE(mp::parent_process().has_value());
}

TEST_P(process_test, a_child_can_start_its_own_children) {
    mp::queue<std::string> q;
    mp::process p(opts(), nested, q, GetParam());
    p.start();
    std::string inner = q.get(20s);
    EXPECT_EQ(inner.rfind(p.name() + ":", 0), 0u) << inner << " inside " << p.name();
    EXPECT_EQ(q.get(10s), p.name());  // the inner child's parent
    (void)q.get(10s);
    EXPECT_EQ(q.get(10s), "inner exit 0");
    p.join();
    EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(process_test, the_childs_stdin_is_dev_null) {
    mp::queue<int> q;
    mp::process p(opts(), read_stdin, q);
    p.start();
    EXPECT_EQ(q.get(10s), 0);
    p.join();
}

TEST_P(process_test, lambdas_and_function_objects_are_targets) {
    mp::queue<int> q;
    mp::process a(opts(), [](mp::queue<int> out, int x) { out.put(x * 2); }, q, 21);
    a.start();
    EXPECT_EQ(q.get(10s), 42);
    a.join();
    mp::process b(opts(), functor{100}, q, 1);
    b.start();
    EXPECT_EQ(q.get(10s), 101);
    b.join();
    mp::process c(opts(), mp::fn<&do_nothing>);
    c.start();
    c.join();
    EXPECT_EQ(c.exitcode(), 0);
}

TEST_P(process_test, a_lambda_with_captures_runs_only_under_fork) {
    mp::queue<int> q;
    int captured = 9;
    mp::process p(opts(), [captured, q]() mutable { q.put(captured); });
    if (GetParam() == mp::start_method::fork) {
        p.start();
        EXPECT_EQ(q.get(10s), 9);
        p.join();
    } else {
        try {
            p.start();
            FAIL() << "start() should have thrown";
        } catch (const mp::serialization_error& e) {
            EXPECT_NE(std::string(e.what()).find("fork"), std::string::npos) << e.what();
        }
        EXPECT_EQ(p.pid(), 0);
    }
}

TEST_P(process_test, misuse_is_a_named_error) {
    mp::process p(opts(), do_nothing);
    EXPECT_THROW(p.join(), mp::process_error);
    EXPECT_THROW((void)p.sentinel(), mp::process_error);
    p.start();
    EXPECT_THROW(p.start(), mp::process_error);
    p.join();
}

TEST_P(process_test, the_sentinel_becomes_readable_when_the_child_ends) {
    mp::process p(opts(), sleep_forever);
    p.start();
    EXPECT_TRUE(mp::wait(std::vector<int>{p.sentinel()}, 20ms).empty());
    p.terminate();
    EXPECT_EQ(mp::wait(std::vector<int>{p.sentinel()}, 10s).size(), 1u);
    p.join();
}

TEST_P(process_test, the_destructor_joins_and_a_daemon_is_terminated) {
    {
        mp::process p({.daemon = true, .context = mp::get_context(GetParam())}, sleep_forever);
        p.start();
        EXPECT_TRUE(p.daemon());
    }  // would hang without terminate
    {
        mp::process p(opts(), do_nothing);
        p.start();
    }  // joined: the leak check sees no zombie
}

TEST_P(process_test, active_children_lists_running_children) {
    mp::process p(opts("sleeper"), sleep_forever);
    p.start();
    auto kids = mp::active_children();
    ASSERT_EQ(kids.size(), 1u);
    EXPECT_EQ(kids[0].name(), "sleeper");
    EXPECT_EQ(kids[0].pid(), p.pid());
    p.kill();
    p.join();
    EXPECT_TRUE(mp::active_children().empty());
}

TEST_P(process_test, a_child_dies_with_its_parent_even_after_sigkill) {
    mp::queue<int> q;
    mp::process p(opts(), start_grandchild, q, GetParam());
    p.start();
    int grandchild = q.get(20s);
    ASSERT_GT(grandchild, 0);
    EXPECT_FALSE(process_gone(grandchild));
    p.kill();
    p.join();
    auto until = std::chrono::steady_clock::now() + 10s;
    while (!process_gone(grandchild) && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(5ms);
    EXPECT_TRUE(process_gone(grandchild)) << "grandchild " << grandchild << " outlived its parent";
}

INSTANTIATE_TEST_SUITE_P(each_start_method, process_test,
                         testing::Values(mp::start_method::fork, mp::start_method::spawn,
                                         mp::start_method::forkserver),
                         [](const auto& info) { return std::string(mp::to_string(info.param)); });

TEST(process, spawn_without_init_is_a_bootstrap_error) {
    auto& rt = mp::detail::runtime::get();
    rt.initialized = false;
    for (auto m : {mp::start_method::spawn, mp::start_method::forkserver}) {
        mp::process p({.context = mp::get_context(m)}, do_nothing);
        try {
            p.start();
            ADD_FAILURE() << "expected mp::bootstrap_error";
        } catch (const mp::bootstrap_error& e) {
            EXPECT_NE(std::string(e.what()).find("mp::init(argc, argv)"), std::string::npos) << e.what();
        }
    }
    rt.initialized = true;
}

TEST(process, fork_with_threads_running_warns_once_naming_them) {
    std::atomic<bool> stop{false}, named{false};
    std::thread busy([&] {
        pthread_setname_np(pthread_self(), "busy-helper");
        named = true;
        while (!stop) std::this_thread::sleep_for(1ms);
    });
    while (!named) std::this_thread::yield();
    {
        std::lock_guard guard(mp::detail::runtime::get().mutex);
        mp::detail::runtime::get().warned_threads_at_fork = false;
    }
    testing::internal::CaptureStderr();
    for (int i = 0; i < 2; ++i) {
        mp::process p({.context = mp::get_context(mp::start_method::fork)}, do_nothing);
        p.start();
        p.join();
    }
    std::string err = testing::internal::GetCapturedStderr();
    stop = true;
    busy.join();
    EXPECT_NE(err.find("busy-helper"), std::string::npos) << err;
    EXPECT_EQ(err.find("warning"), err.rfind("warning")) << "warned more than once: " << err;
}

TEST(process, the_default_start_method_is_forkserver) {
    EXPECT_EQ(mp::get_start_method(), mp::start_method::forkserver);
    EXPECT_GE(mp::cpu_count(), 1);
}

TEST_P(process_test, a_child_started_from_a_thread_outlives_that_thread) {
    mp::queue<int> go, out;
    std::optional<mp::process> p;
    std::thread starter([&] {
        p.emplace(opts(), relay, go, out);
        p->start();
    });
    starter.join();  // the thread that started the child is gone
    go.put(5);       // the child is still there to answer
    EXPECT_EQ(out.get(10s), 6);
    p->join();
    EXPECT_EQ(p->exitcode(), 0);
}

TEST_P(process_test, a_context_makes_processes_and_queues) {
    auto ctx = mp::get_context(GetParam());
    auto q = ctx.queue<int>();
    auto p = ctx.process(put_one, q, 11);
    EXPECT_EQ(p.method(), GetParam());
    p.start();
    EXPECT_EQ(q.get(10s), 11);
    p.join();
}

TEST(process, a_forkserver_child_holds_none_of_its_siblings_descriptors) {
    // The server keeps a status socket per child; a child forked from it must
    // not inherit its siblings' (a pool of n workers gave each n fds).
    auto ctx = mp::get_context(mp::start_method::forkserver);
    auto fds_of_a_new_child = [&] {
        mp::queue<int> q;
        auto p = ctx.process(report_fd_count, q);
        p.start();
        int count = q.get(10s);
        p.join();
        return count;
    };
    int alone = fds_of_a_new_child();
    std::vector<mp::process> siblings;
    for (int i = 0; i < 50; ++i) {
        siblings.push_back(ctx.process(sleep_forever));
        siblings.back().start();
    }
    int with_siblings = fds_of_a_new_child();
    for (auto& s : siblings) s.kill();
    for (auto& s : siblings) s.join();
    EXPECT_EQ(with_siblings, alone) << "a forkserver child with 50 live siblings holds " << with_siblings
                                    << " descriptors, one started alone " << alone;
}
