// Managers and proxies on the default (private Unix socket) address: custom
// types, exposure, type checks, generators, modules, the shared types of
// mp::manager, proxies passed to children under every start method, and
// many threads on one proxy.
#include "mp/manager.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "mp/process.hpp"
#include "mp/proxy.hpp"
#include "mp/queue.hpp"

using namespace std::chrono_literals;

namespace {

std::atomic<int> live_counters{0};  // in the server process: Counter objects alive

struct Counter {
    Counter() { ++live_counters; }
    ~Counter() { --live_counters; }
    Counter(const Counter&) = delete;

    int add(int x) { return total_ += x; }
    [[nodiscard]] int total() const { return total_; }
    std::string greet(const std::string& who, int times) {
        std::string s;
        for (int i = 0; i < times; ++i) s += "hi " + who + ";";
        return s;
    }
    void fail(std::string what) { throw std::invalid_argument(what); }
    void _secret() {}

    int total_ = 0;
};

int live() { return live_counters.load(); }

std::vector<int> squares(int n) {
    std::vector<int> v;
    for (int i = 0; i < n; ++i) v.push_back(i * i);
    return v;
}

long add(long a, long b) { return a + b; }
std::string join3(std::string a, std::string b, std::string c) { return a + b + c; }

void register_all(mp::base_manager& m) {
    m.register_type<Counter>("Counter",
                             mp::methods<&Counter::add, &Counter::total, &Counter::greet, &Counter::fail, &Counter::_secret>);
    m.register_type<Counter>("OnlyTotal", mp::methods<&Counter::add, &Counter::total, &Counter::_secret>,
                             mp::exposed{"total", "_secret"});
    m.register_generator("squares", &squares);
    m.register_functions("ops", mp::functions<&add, &join3, &live>);
}

class manager_test : public testing::TestWithParam<mp::start_method> {
protected:
    mp::manager_options opts() { return {.context = mp::get_context(GetParam())}; }
};

TEST_P(manager_test, a_custom_manager_serves_registered_types_generators_and_modules) {
    mp::base_manager m(opts());
    register_all(m);
    m.start();
    ASSERT_TRUE(m.running());

    mp::proxy<Counter> c = m.make<Counter>("Counter");
    EXPECT_EQ(c.call<&Counter::add>(5), 5);
    EXPECT_EQ(c.call<&Counter::add>(short{3}), 8);  // converted to int
    EXPECT_EQ(c.call<&Counter::total>(), 8);
    EXPECT_EQ(c.call<int>("add", 2), 10);
    EXPECT_EQ(c.call<std::string>("greet", "bob", 2), "hi bob;hi bob;");
    c.call("add", 1);  // result discarded
    EXPECT_EQ(c.call<int>("total"), 11);
    EXPECT_EQ(std::set<std::string>(c.exposed().begin(), c.exposed().end()),
              (std::set<std::string>{"add", "total", "greet", "fail"}));

    std::vector<int> got;
    for (int x : m.make_generator<int>("squares", 10)) got.push_back(x);
    EXPECT_EQ(got, squares(10));
    got.clear();
    for (int x : m.make_generator_batched<int>("squares", 1, 4)) got.push_back(x);  // one item per round trip
    EXPECT_EQ(got, squares(4));
    auto empty = m.make_generator<int>("squares", 0);
    EXPECT_EQ(empty.next(), std::nullopt);

    auto ops = m.make_module("ops");
    EXPECT_EQ(ops.call<long>("add", 23L, 45L), 68);
    EXPECT_EQ(ops.call<std::string>("join3", "a", std::string("b"), "c"), "abc");
    EXPECT_EQ(std::set<std::string>(ops.exposed().begin(), ops.exposed().end()),
              (std::set<std::string>{"add", "join3", "live"}));
    m.shutdown();
    EXPECT_FALSE(m.running());
}

TEST_P(manager_test, the_server_enforces_exposure) {
    mp::base_manager m(opts());
    register_all(m);
    m.start();
    auto c = m.make<Counter>("Counter");
    EXPECT_THROW(c.call<&Counter::_secret>(), mp::not_exposed_error);
    EXPECT_THROW(c.call("_secret"), mp::not_exposed_error);
    EXPECT_THROW(c.call("no_such_method"), mp::not_exposed_error);

    auto o = m.make<Counter>("OnlyTotal");
    EXPECT_EQ(std::set<std::string>(o.exposed().begin(), o.exposed().end()),
              (std::set<std::string>{"total", "_secret"}));
    o.call<&Counter::_secret>();
    EXPECT_EQ(o.call<&Counter::total>(), 0);
    try {
        o.call<&Counter::add>(1);
        ADD_FAILURE() << "add is not exposed by OnlyTotal";
    } catch (const mp::not_exposed_error& e) {
        EXPECT_NE(std::string(e.what()).find("'add'"), std::string::npos) << e.what();
    }
    // The server goes on serving the same proxy and connection.
    EXPECT_EQ(c.call<&Counter::add>(1), 1);
}

TEST_P(manager_test, the_server_refuses_wrong_types_and_unknown_names) {
    mp::base_manager m(opts());
    register_all(m);
    m.start();
    auto c = m.make<Counter>("Counter");
    EXPECT_THROW(c.call<int>("add", 1L), mp::serialization_error);        // long for int
    EXPECT_THROW(c.call<int>("add", 1, 2), mp::serialization_error);      // too many
    EXPECT_THROW(c.call<int>("add"), mp::serialization_error);            // too few
    EXPECT_THROW(c.call<std::string>("add", 1), mp::serialization_error); // result type
    EXPECT_THROW((void)m.make<Counter>("Nope"), mp::value_error);
    EXPECT_THROW((void)m.make<std::string>("Counter"), mp::serialization_error);  // registered for another type
    EXPECT_THROW((void)m.make_generator<double>("squares", 3), mp::serialization_error);
    EXPECT_THROW((void)m.make_generator<int>("squares"), mp::serialization_error);  // missing argument
    auto ops = m.make_module("ops");
    EXPECT_THROW(ops.call<long>("add", 1, 2), mp::serialization_error);  // int, int for long, long
    EXPECT_EQ(c.call<&Counter::add>(7), 7);
    EXPECT_EQ(ops.call<long>("add", 1L, 2L), 3);
}

TEST_P(manager_test, exceptions_thrown_by_methods_reach_the_caller) {
    mp::base_manager m(opts());
    register_all(m);
    m.start();
    auto c = m.make<Counter>("Counter");
    try {
        c.call<&Counter::fail>("bad input");
        ADD_FAILURE() << "expected std::invalid_argument";
    } catch (const std::invalid_argument& e) {
        EXPECT_STREQ(e.what(), "bad input");
    }
    EXPECT_EQ(c.call<&Counter::add>(1), 1);
}

TEST_P(manager_test, objects_live_while_a_proxy_holds_them) {
    mp::base_manager m(opts());
    register_all(m);
    m.start();
    auto ops = m.make_module("ops");
    EXPECT_EQ(ops.call<int>("live"), 0);
    {
        auto a = m.make<Counter>("Counter");
        auto copy = a;  // copies share one reference
        auto b = m.make<Counter>("Counter");
        EXPECT_EQ(ops.call<int>("live"), 2);
        a = mp::proxy<Counter>();
        EXPECT_EQ(ops.call<int>("live"), 2);  // `copy` still holds it
        EXPECT_EQ(copy.call<&Counter::add>(1), 1);
    }
    EXPECT_EQ(ops.call<int>("live"), 0);
}

TEST_P(manager_test, proxies_fail_cleanly_after_shutdown) {
    mp::base_manager m(opts());
    register_all(m);
    m.start();
    auto addr = m.address();
    ASSERT_TRUE(std::holds_alternative<mp::unix_address>(addr));
    std::filesystem::path socket = std::get<mp::unix_address>(addr).path;
    struct stat st {};
    ASSERT_EQ(::stat(socket.parent_path().c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0700u) << "the socket's directory must be private";
    auto c = m.make<Counter>("Counter");
    m.shutdown();
    EXPECT_THROW(c.call<&Counter::add>(1), mp::closed_error);
    EXPECT_FALSE(std::filesystem::exists(socket.parent_path())) << "the private directory is removed";
    EXPECT_THROW(m.start(), mp::process_error);
    m.shutdown();  // harmless twice
}

TEST(manager, registering_after_start_or_exposing_an_unknown_name_is_refused) {
    mp::base_manager m;
    EXPECT_THROW(m.register_type<Counter>("X", mp::methods<&Counter::add>, mp::exposed{"total"}), mp::value_error);
    EXPECT_THROW(m.register_type<Counter>("mp.dict", mp::methods<&Counter::add>), mp::value_error);
    EXPECT_THROW((void)m.make<Counter>("X"), mp::process_error);  // not started
    m.start();
    EXPECT_THROW(m.register_type<Counter>("Y", mp::methods<&Counter::add>), mp::process_error);
}

// ---- mp::manager's shared types ----------------------------------------------

TEST(manager, dict_list_value) {
    mp::manager sm;
    sm.start();
    auto d = sm.dict<std::string, int>();
    d.set("a", 1);
    d.set("b", 2);
    d.set("a", 3);
    EXPECT_EQ(d.get("a"), 3);
    EXPECT_THROW((void)d.get("zz"), std::out_of_range);
    EXPECT_EQ(d.get("zz", 42), 42);
    EXPECT_EQ(d.try_get("b"), 2);
    EXPECT_TRUE(d.contains("b"));
    EXPECT_EQ(d.size(), 2u);
    d.update(std::map<std::string, int>{{"c", 4}, {"b", 5}});
    EXPECT_EQ(d.keys(), (std::vector<std::string>{"a", "b", "c"}));  // insertion order
    EXPECT_EQ(d.items(), (std::vector<std::pair<std::string, int>>{{"a", 3}, {"b", 5}, {"c", 4}}));
    EXPECT_TRUE(d.erase("a"));
    EXPECT_FALSE(d.erase("a"));
    EXPECT_EQ(d.size(), 2u);

    auto l = sm.list<std::vector<double>>();
    l.append({1.0, 2.0});
    l.append({3.0});
    EXPECT_EQ(l.get(1), std::vector<double>{3.0});
    EXPECT_EQ(l.get(-2), (std::vector<double>{1.0, 2.0}));
    l.set(0, {});
    EXPECT_EQ(l.size(), 2u);
    EXPECT_THROW((void)l.get(2), std::out_of_range);
    EXPECT_EQ(l.to_vector(), (std::vector<std::vector<double>>{{}, {3.0}}));

    auto v = sm.value<double>(1.5);
    EXPECT_EQ(v.get(), 1.5);
    v.set(-2.25);
    EXPECT_EQ(v.get(), -2.25);
}

TEST(manager, queue_lock_event) {
    mp::manager sm;
    sm.start();
    auto q = sm.queue<std::string>(2);
    q.put("a");
    EXPECT_TRUE(q.try_put("b"));
    EXPECT_FALSE(q.try_put("c"));
    EXPECT_THROW(q.put("c", 10ms), mp::queue_full);
    EXPECT_TRUE(q.full());
    EXPECT_EQ(q.size(), 2u);
    EXPECT_EQ(q.get(), "a");
    EXPECT_EQ(q.get(1s), "b");
    EXPECT_EQ(q.try_get(), std::nullopt);
    EXPECT_THROW((void)q.get(10ms), mp::queue_empty);

    auto lk = sm.lock();
    EXPECT_TRUE(lk.acquire());
    EXPECT_FALSE(lk.try_lock());
    EXPECT_FALSE(lk.acquire(10ms));
    lk.release();
    EXPECT_THROW(lk.release(), mp::value_error);
    {
        std::lock_guard<mp::lock_proxy> guard(lk);
        EXPECT_TRUE(lk.locked());
    }
    EXPECT_FALSE(lk.locked());

    auto e = sm.event();
    EXPECT_FALSE(e.is_set());
    EXPECT_FALSE(e.wait(10ms));
    e.set();
    EXPECT_TRUE(e.wait());
    e.clear();
    EXPECT_FALSE(e.is_set());
}

TEST(manager, a_blocking_call_does_not_hold_up_other_threads) {
    mp::manager sm;
    sm.start();
    auto lk = sm.lock();
    auto e = sm.event();
    lk.lock();
    std::thread waiter([&] {
        lk.lock();  // blocks in the server until the main thread releases
        e.set();
        lk.unlock();
    });
    // These calls go through while the waiter's call blocks in the server.
    EXPECT_FALSE(e.is_set());
    auto d = sm.dict<int, int>();
    d.set(1, 1);
    lk.unlock();
    EXPECT_TRUE(e.wait(30s));
    waiter.join();
}

// In the server process: callers of Gate::pass wait in the method itself
// (not in a shared type's wait, which the server sees coming) until a call
// of Gate::open.
std::mutex gate_mutex;
std::condition_variable gate_opened;
bool gate_open = false;
std::atomic<int> inside_pass{0};

struct Gate {
    bool pass() {
        ++inside_pass;
        std::unique_lock lock(gate_mutex);
        // The limit only ends a failed run: the open() call never came.
        return gate_opened.wait_for(lock, 60s, [] { return gate_open; });
    }
    void open() {
        {
            std::lock_guard guard(gate_mutex);
            gate_open = true;
        }
        gate_opened.notify_all();
    }
    [[nodiscard]] int callers_inside() const { return inside_pass.load(); }
};

TEST(manager, methods_that_hold_every_worker_do_not_hold_up_other_calls) {
    // The server makes a worker per core as calls come, and more only when
    // those are all held: here by calls that wait inside a registered
    // method, more of them than cores. The calls after them must still be
    // served, or the gates never open (each gives up after 60 s and fails).
    mp::base_manager m;
    m.register_type<Gate>("Gate", mp::methods<&Gate::pass, &Gate::open, &Gate::callers_inside>);
    m.start();
    const int held = mp::cpu_count() + 2;
    std::vector<mp::proxy<Gate>> gates;
    for (int i = 0; i < held; ++i) gates.push_back(m.make<Gate>("Gate"));
    auto other = m.make<Gate>("Gate");
    std::atomic<int> passed{0};
    std::vector<std::thread> callers;
    for (auto& g : gates)
        callers.emplace_back([&g, &passed] {
            if (g.call<&Gate::pass>()) ++passed;
        });
    while (other.call<&Gate::callers_inside>() < held) std::this_thread::sleep_for(1ms);
    other.call<&Gate::open>();
    for (auto& t : callers) t.join();
    EXPECT_EQ(passed.load(), held);
}

// ---- proxies in children, under every start method ------------------------------

void child_work(mp::dict_proxy<std::string, int> d, mp::list_proxy<int> l, mp::value_proxy<int> v,
                mp::lock_proxy lk, mp::queue_proxy<std::string> q, mp::event_proxy e, mp::proxy<Counter> c, int n) {
    for (int i = 0; i < n; ++i) {
        std::lock_guard guard(lk);
        v.set(v.get() + 1);
    }
    d.set(mp::current_process().name(), n);
    l.append(n);
    c.call<&Counter::add>(n);
    q.put("done " + std::to_string(n));
    e.wait();
}

TEST_P(manager_test, proxies_passed_to_children_work) {
    mp::manager sm(opts());
    sm.register_type<Counter>("Counter", mp::methods<&Counter::add, &Counter::total>);
    sm.start();
    auto d = sm.dict<std::string, int>();
    auto l = sm.list<int>();
    auto v = sm.value<int>(0);
    auto lk = sm.lock();
    auto q = sm.queue<std::string>();
    auto e = sm.event();
    auto c = sm.make<Counter>("Counter");
    std::vector<mp::process> children;
    for (int i = 1; i <= 3; ++i)
        children.emplace_back(mp::process_options{.context = mp::get_context(GetParam())}, child_work, d, l, v, lk, q, e,
                              c, i * 10);
    for (auto& p : children) p.start();
    std::multiset<std::string> done;
    for (int i = 0; i < 3; ++i) done.insert(q.get(60s));
    EXPECT_EQ(done, (std::multiset<std::string>{"done 10", "done 20", "done 30"}));
    e.set();
    for (auto& p : children) {
        p.join();
        EXPECT_EQ(p.exitcode(), 0);
    }
    EXPECT_EQ(v.get(), 60);
    EXPECT_EQ(d.size(), 3u);
    auto items = l.to_vector();
    EXPECT_EQ(std::multiset<int>(items.begin(), items.end()), (std::multiset<int>{10, 20, 30}));
    EXPECT_EQ(c.call<&Counter::total>(), 60);
}

void receive_through_queue(mp::queue<mp::dict_proxy<int, int>> in, mp::queue<int> out) {
    auto d = in.get();
    d.set(7, 49);
    out.put(static_cast<int>(d.size()));
}

TEST_P(manager_test, a_proxy_sent_through_a_queue_works) {
    mp::manager sm(opts());
    sm.start();
    auto d = sm.dict<int, int>();
    mp::queue<mp::dict_proxy<int, int>> carrier;
    mp::queue<int> out;
    mp::process p({.context = mp::get_context(GetParam())}, receive_through_queue, carrier, out);
    p.start();
    carrier.put(d);
    EXPECT_EQ(out.get(60s), 1);
    p.join();
    EXPECT_EQ(d.get(7), 49);
}

TEST(manager, a_proxy_received_as_another_type_is_refused) {
    mp::manager sm;
    sm.start();
    auto d = sm.dict<int, int>();
    // Same bytes, read back as another proxy type through the raw archive.
    mp::detail::output_archive ar;
    ar(d);
    std::vector<std::byte> bytes(ar.size());
    ar.copy_to(bytes.data());
    mp::detail::input_archive in(bytes);
    mp::list_proxy<int> wrong;
    EXPECT_THROW(in(wrong), mp::serialization_error);
}

// ---- keys and addresses in proxies -------------------------------------------------

/// Calls a shared type's methods by name with any arguments, as a buggy or
/// hostile client could.
template <class P>
struct raw_calls : P {
    explicit raw_calls(const P& p) : P(p) {}
    template <class R, class... A>
    R raw(std::string_view method, const A&... args) const {
        return this->template op<R>(method, args...);
    }
};

/// The bytes of a proxy as save_ref writes them, with any content.
std::string proxy_bytes(const mp::address& a, std::uint64_t id, const std::string& type,
                        const std::vector<std::string>& exposed, std::uint64_t kind) {
    mp::detail::output_archive ar;
    ar(a, id, type, exposed, kind);
    std::string bytes(ar.size(), '\0');
    ar.copy_to(reinterpret_cast<std::byte*>(bytes.data()));
    return bytes;
}

/// A Unix socket nobody should connect to.
struct rogue_listener {
    std::string dir, path;
    int fd = -1;
    rogue_listener() {
        char templ[] = "/tmp/mp-rogue-XXXXXX";
        dir = ::mkdtemp(templ);
        path = dir + "/socket";
        fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::strcpy(a.sun_path, path.c_str());
        EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
        EXPECT_EQ(::listen(fd, 8), 0);
    }
    ~rogue_listener() {
        ::close(fd);
        ::unlink(path.c_str());
        ::rmdir(dir.c_str());
    }
    bool someone_connected() const {
        int c = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) return false;
        ::close(c);
        return true;
    }
};

TEST(manager, a_proxy_carries_no_key) {
    const std::string secret = "a-custom-authkey-0123456789";
    mp::manager sm({.authkey = secret});
    sm.start();
    auto d = sm.dict<int, int>();
    mp::detail::output_archive ar;
    ar(d);
    std::string bytes(ar.size(), '\0');
    ar.copy_to(reinterpret_cast<std::byte*>(bytes.data()));
    EXPECT_EQ(bytes.find(secret), std::string::npos) << "the authkey travels inside the proxy";
    // In this process, which holds the key, it loads and works.
    mp::detail::input_archive in(std::as_bytes(std::span<const char>(bytes.data(), bytes.size())));
    mp::dict_proxy<int, int> back;
    in(back);
    back.set(1, 2);
    EXPECT_EQ(d.get(1), 2);
}

TEST(manager, a_proxy_read_from_a_manager_may_name_only_a_known_server) {
    mp::manager sm;
    sm.start();
    // Proxies of the same server, stored in the server: fine.
    auto inner = sm.dict<int, int>();
    inner.set(1, 10);
    auto l = sm.list<mp::dict_proxy<int, int>>();
    l.append(inner);
    EXPECT_EQ(l.get(0).get(1), 10);
    // One naming an address this process never started or connected to:
    // refused before any connection is made.
    rogue_listener rogue;
    auto planted = proxy_bytes(mp::unix_address{rogue.path}, 1, "mp.dict", inner.exposed(),
                               mp::detail::type_tag<mp::dict_proxy<int, int>>());
    raw_calls<mp::list_proxy<mp::dict_proxy<int, int>>>(l).raw<void>("append", planted);
    EXPECT_THROW((void)l.get(1), mp::authentication_error);
    EXPECT_FALSE(rogue.someone_connected()) << "the program authenticated to an address named in a manager's data";
}

TEST(manager, destroying_a_connected_manager_leaves_other_managers_proxies_working) {
    mp::manager sm;
    sm.start();
    auto mine = sm.dict<int, int>();
    auto other = std::make_unique<mp::manager>(mp::manager_options{.address = sm.address()});
    other->connect();
    auto d = other->dict<int, int>();
    {
        mp::manager first({.address = sm.address()});
        first.connect();
        auto l = first.list<int>();
        l.append(1);
    }  // destroyed here: it shares this process's connections with `other` and `sm`
    d.set(1, 1);
    EXPECT_EQ(d.get(1), 1);
    mine.set(2, 2);
    other.reset();
    EXPECT_EQ(d.get(1), 1);  // a proxy outlives the connected manager that made it
    EXPECT_EQ(mine.get(2), 2);
}

// ---- the built-in types on the typed path -------------------------------------------

TEST(manager, the_server_checks_every_argument_tuple_of_the_shared_types) {
    mp::manager sm;
    sm.start();
    auto d = sm.dict<int, int>();
    raw_calls<mp::dict_proxy<int, int>> r(d);
    EXPECT_THROW(r.raw<void>("set", std::string("only a key")), mp::serialization_error);  // too few
    EXPECT_THROW(r.raw<void>("set", 1, 2), mp::serialization_error);                       // ints, not bytes
    EXPECT_THROW(r.raw<int>("size"), mp::serialization_error);                             // result type
    EXPECT_THROW(r.raw<void>("no_such_method"), mp::not_exposed_error);
    auto q = sm.queue<int>();
    raw_calls<mp::queue_proxy<int>> rq(q);
    EXPECT_THROW(rq.raw<bool>("put", std::string("x")), mp::serialization_error);  // no timeout
    EXPECT_EQ(std::set<std::string>(d.exposed().begin(), d.exposed().end()),
              (std::set<std::string>{"clear", "contains", "erase", "find", "get", "items", "keys", "set", "size",
                                     "update"}));
    d.set(1, 1);  // the object and the connection go on
    EXPECT_EQ(d.get(1), 1);
}

TEST(manager, the_server_refuses_a_proxy_received_as_another_type_than_its_object) {
    mp::manager sm;
    sm.start();
    auto l = sm.list<int>();
    // Bytes that claim a dict_proxy<int, int> for what is a list<int>: the
    // client-side check passes (the claim matches), the server's does not.
    auto forged =
        proxy_bytes(sm.address(), l.id(), "mp.list", l.exposed(), mp::detail::type_tag<mp::dict_proxy<int, int>>());
    mp::detail::input_archive in(std::as_bytes(std::span<const char>(forged.data(), forged.size())));
    mp::dict_proxy<int, int> wrong;
    EXPECT_THROW(in(wrong), mp::serialization_error);
    l.append(3);
    EXPECT_EQ(l.size(), 1u);
}

INSTANTIATE_TEST_SUITE_P(each_start_method, manager_test,
                         testing::Values(mp::start_method::fork, mp::start_method::spawn, mp::start_method::forkserver),
                         [](const auto& info) { return std::string(mp::to_string(info.param)); });

// ---- thread safety --------------------------------------------------------------

TEST(manager, eight_threads_hammer_one_proxy) {
    mp::manager sm;
    sm.register_type<Counter>("Counter", mp::methods<&Counter::add, &Counter::total, &Counter::greet>);
    sm.start();
    auto c = sm.make<Counter>("Counter");
    auto d = sm.dict<int, int>();
    constexpr int threads = 8, calls = 300;
    std::atomic<int> wrong{0};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
        pool.emplace_back([&, t] {
            for (int i = 0; i < calls; ++i) {
                int key = t * calls + i;
                d.set(key, key * 3);
                if (d.get(key) != key * 3) ++wrong;
                std::string who = std::to_string(key);
                if (c.call<&Counter::greet>(who, 1) != "hi " + who + ";") ++wrong;
                c.call<&Counter::add>(1);
            }
        });
    for (auto& th : pool) th.join();
    EXPECT_EQ(wrong.load(), 0);
    EXPECT_EQ(c.call<&Counter::total>(), threads * calls);
    EXPECT_EQ(d.size(), static_cast<std::size_t>(threads * calls));
}

// ---- a server in this process ---------------------------------------------------

TEST(manager, get_server_serves_in_this_process) {
    mp::base_manager server_side;
    register_all(server_side);
    auto srv = server_side.get_server();
    std::thread serving([srv]() mutable { srv.serve_forever(); });
    {
        mp::manager client({.address = srv.address()});
        client.connect();
        auto c = client.make<Counter>("Counter");
        EXPECT_EQ(c.call<&Counter::add>(4), 4);
        auto d = client.dict<int, std::string>();
        d.set(1, "one");
        EXPECT_EQ(d.get(1), "one");
        client.shutdown_server();
    }
    serving.join();
}

}  // namespace
