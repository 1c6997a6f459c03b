// mp::queue, simple_queue, joinable_queue across processes under every start
// method: order, the seed's deadlock, dead producers and consumers, bounds.
#include "mp/queue.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <optional>
#include <set>
#include <thread>

#include "mp/connection.hpp"
#include "mp/process.hpp"
#include "mp/shared_memory.hpp"
#include "mp/detail/archive.hpp"
#include "queue/layout.hpp"
#include "queue_hooks.hpp"
#include "sys/memory.hpp"
#include "sys/sys.hpp"

using namespace std::chrono_literals;

namespace {

class queue_test : public testing::TestWithParam<mp::start_method> {
protected:
    mp::process_options opts() { return {.context = mp::get_context(GetParam())}; }
};

void put_range(mp::queue<int> q, int from, int to) {
    for (int i = from; i < to; ++i) q.put(i);
}

void put_big_string(mp::queue<std::string> q) { q.put(std::string(1'000'000, 'X')); }

void put_big_vector(mp::queue<std::vector<double>> q, std::size_t n) {
    std::vector<double> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<double>(i);
    q.put(v);
}

// An item whose loading hangs in a consumer that asked for it: lets a test
// kill a consumer in the middle of get().
std::atomic<bool> hang_while_loading{false};
struct sticky {
    int value = 0;
    template <class Archive>
    void save(Archive& ar) const {
        ar(value);
    }
    template <class Archive>
    void load(Archive& ar) {
        ar(value);
        while (hang_while_loading) ::pause();
    }
};

void hanging_consumer(mp::queue<sticky> q, mp::queue<int> started) {
    hang_while_loading = true;
    started.put(1);
    (void)q.get();
}

void consume_and_mark_done(mp::joinable_queue<int> q, mp::queue<int> out) {
    for (;;) {
        int v = q.get();
        if (v < 0) {
            q.task_done();
            return;
        }
        out.put(v * 10);
        q.task_done();
    }
}

namespace hooks = mp::detail::queue_hooks;

// Installs `h` for the rest of this process (children) or until the end of a test.
struct hook_for_test {
    explicit hook_for_test(hooks::hook h) { hooks::installed = h; }
    ~hook_for_test() { hooks::installed = nullptr; }
};

void die_at(hooks::point wanted, hooks::point reached) {
    if (reached == wanted) ::raise(SIGKILL);
}

void put_then_die_before_publishing(mp::joinable_queue<int> q) {
    hooks::installed = [](hooks::point p) { die_at(hooks::point::before_publish, p); };
    q.put(7);
}

void put_then_die_while_waking(mp::queue<int> q) {
    hooks::installed = [](hooks::point p) { die_at(hooks::point::before_wake, p); };
    q.put(1);
}

void get_then_die_before_returning(mp::queue<int> q) {
    hooks::installed = [](hooks::point p) { die_at(hooks::point::after_take, p); };
    (void)q.get();
}

void get_then_die_after_jumping_back(mp::queue<std::string> q) {
    hooks::installed = [](hooks::point p) { die_at(hooks::point::after_wrap, p); };
    (void)q.get();
}

std::string pattern(std::size_t size, int seed) {
    std::string s(size, '\0');
    for (std::size_t i = 0; i < size; i += 8) s[i] = static_cast<char>('a' + (seed + i / 8) % 26);
    return s;
}

void put_one_string(mp::queue<std::string> q, std::string s) { q.put(s); }

void put_strings(mp::queue<std::string> q, std::size_t size, int count) {
    for (int i = 0; i < count; ++i) q.put(pattern(size, i));
}

// The same queue as another item type (what a mismatched handle does): its
// items then fail to load on the other side.
template <class To, class From>
To same_queue_as(const From& q) {
    mp::detail::output_archive out;
    mp::detail::save_value(out, q);
    std::vector<mp::detail::unique_fd> fds;
    fds.push_back(mp::sys::dup_cloexec(out.fds().at(0)));
    std::vector<std::byte> bytes(out.size());
    out.copy_to(bytes.data());
    mp::detail::input_archive in(bytes, &fds);
    return mp::detail::load_value<To>(in);
}

void get_then_die_while_dropping(mp::joinable_queue<std::int64_t> q) {
    hooks::installed = [](hooks::point p) { die_at(hooks::point::drop_owed, p); };
    (void)q.get();
}

// Items of sizes from 0 to ~400 KiB, each a checkable pattern: pushes the
// ring across the warm window, jumps back and page releases all the time.
std::string varied_item(int producer, int i) {
    std::size_t size = (static_cast<std::size_t>(i) * 7919 + static_cast<std::size_t>(producer) * 104729) % 400'000;
    std::string s = pattern(size, producer * 1000 + i);
    return std::to_string(producer) + ":" + std::to_string(i) + ":" + s;
}

void put_varied_items(mp::queue<std::string> q, int producer, int count) {
    for (int i = 0; i < count; ++i) q.put(varied_item(producer, i));
}

// An item whose load always fails: a corrupt or mismatched item in the queue.
struct unloadable {
    template <class Archive>
    void save(Archive& ar) const {
        ar(std::uint32_t{1});
    }
    template <class Archive>
    void load(Archive&) {
        throw mp::serialization_error("test: this item cannot be loaded");
    }
};


}  // namespace

TEST_P(queue_test, items_from_a_child_arrive_in_order) {
    mp::queue<int> q;
    mp::process p(opts(), put_range, q, 0, 10000);
    p.start();
    for (int i = 0; i < 10000; ++i) ASSERT_EQ(q.get(10s), i);
    p.join();
    EXPECT_TRUE(q.empty());
}

TEST_P(queue_test, the_seeds_deadlock_example_completes) {
    // Python: the child's feeder thread blocks until the parent reads, and the
    // parent joins first: deadlock. Here the item is already in shared memory.
    mp::queue<std::string> q;
    mp::process p(opts(), put_big_string, q);
    p.start();
    p.join();
    EXPECT_EQ(p.exitcode(), 0);
    EXPECT_EQ(q.get(10s), std::string(1'000'000, 'X'));
}

TEST_P(queue_test, producers_may_exit_before_anyone_reads) {
    mp::queue<int> q;
    std::vector<mp::process> producers;
    for (int k = 0; k < 3; ++k) producers.emplace_back(opts(), put_range, q, k * 1000, (k + 1) * 1000);
    for (auto& p : producers) p.start();
    for (auto& p : producers) p.join();
    EXPECT_EQ(q.size(), 3000u);
    std::set<int> seen;
    for (int i = 0; i < 3000; ++i) seen.insert(q.get(1s));
    EXPECT_EQ(seen.size(), 3000u);
    EXPECT_EQ(*seen.rbegin(), 2999);
}

TEST_P(queue_test, a_large_item_arrives_whole) {
    mp::queue<std::vector<double>> q;
    const std::size_t n = 4 << 20;  // 32 MiB
    mp::process p(opts(), put_big_vector, q, n);
    p.start();
    auto v = q.get(30s);
    p.join();
    ASSERT_EQ(v.size(), n);
    for (std::size_t i = 0; i < n; i += 1021) ASSERT_EQ(v[i], static_cast<double>(i));
}

TEST_P(queue_test, a_consumer_killed_inside_get_loses_nothing_else) {
    mp::queue<sticky> q;
    mp::queue<int> started;
    for (int i = 0; i < 5; ++i) q.put(sticky{i});
    mp::process p(opts(), hanging_consumer, q, started);
    p.start();
    EXPECT_EQ(started.get(10s), 1);
    // Wait until the child holds the consumers' lock, inside get().
    std::this_thread::sleep_for(100ms);
    p.kill();
    p.join();
    // The item it was reading was never taken out: all five are still there.
    for (int i = 0; i < 5; ++i) EXPECT_EQ(q.get(10s).value, i);
    q.put(sticky{99});
    EXPECT_EQ(q.get(1s).value, 99);
}

TEST_P(queue_test, joinable_queue_join_waits_for_task_done) {
    mp::joinable_queue<int> q;
    mp::queue<int> out;
    mp::process p(opts(), consume_and_mark_done, q, out);
    p.start();
    for (int i = 1; i <= 100; ++i) q.put(i);
    q.put(-1);
    q.join();
    EXPECT_EQ(out.size(), 100u);
    p.join();
    EXPECT_THROW(q.task_done(), mp::value_error);
}

TEST_P(queue_test, a_producer_killed_inside_put_leaves_no_trace) {
    // Issue 11.2: the slot and the unfinished count were taken before the
    // item was written, and never given back by a producer that died.
    mp::joinable_queue<int> q(1);
    mp::process p(opts(), put_then_die_before_publishing, q);
    p.start();
    p.join();
    ASSERT_EQ(p.exitcode(), -SIGKILL);
    EXPECT_EQ(q.size(), 0u);
    EXPECT_TRUE(q.join(1s)) << "the dead producer's item counts as unfinished";
    EXPECT_TRUE(q.try_put(5)) << "the dead producer's slot was never given back";
    EXPECT_EQ(q.get(1s), 5);
    q.task_done();
    EXPECT_TRUE(q.join(1s));
}

TEST_P(queue_test, a_producer_killed_while_waking_a_sleeping_consumer_does_not_leave_it_asleep) {
    // Found by the pool soak (tests/soak, a whole pool stalled with results
    // waiting): a producer killed between announcing its wake-up and making
    // it left the announcement behind, and every later producer skipped its
    // own wake-up, so the consumer slept until its deadline.
    // A deadline far past the bound below, so that the deadline's own wake-up
    // does not hide the lost ones.
    mp::queue<int> q;
    std::optional<int> got;
    std::thread consumer([&] {
        try {
            got = q.get(30s);
        } catch (const mp::timeout_error&) {
        }
    });
    std::this_thread::sleep_for(300ms);  // the consumer is asleep in get()
    mp::process p(opts(), put_then_die_while_waking, q);
    p.start();
    p.join();
    ASSERT_EQ(p.exitcode(), -SIGKILL);
    q.put(2);  // a later producer
    auto put_at = std::chrono::steady_clock::now();
    consumer.join();
    EXPECT_EQ(got, std::optional<int>(1));
    // Normally a fraction of a second; the bound only catches the consumer
    // sleeping through both items until its deadline.
    EXPECT_LT(std::chrono::steady_clock::now() - put_at, 10s) << "the consumer slept through two items";
    EXPECT_EQ(q.get(1s), 2);
}

TEST_P(queue_test, a_consumer_killed_after_taking_an_item_gives_its_slot_back) {
    // Issue 11.2: the tail moved, then the consumer died before the slot count went down.
    mp::queue<int> q(1);
    q.put(1);
    mp::process p(opts(), get_then_die_before_returning, q);
    p.start();
    p.join();
    ASSERT_EQ(p.exitcode(), -SIGKILL);
    EXPECT_EQ(q.size(), 0u);
    EXPECT_TRUE(q.try_put(2)) << "the dead consumer's slot was never given back";
    EXPECT_EQ(q.get(1s), 2);
}

TEST_P(queue_test, a_consumer_killed_while_the_queue_jumps_back_leaves_it_usable) {
    // Issue 11.3: the jump back to the start of the ring was two stores (tail,
    // then head); a consumer killed between them left producers asleep forever.
    mp::queue<std::string> q;
    using mp::detail::queue_layout::jump_from;
    const std::string first = pattern(jump_from + (1 << 20), 1), second = pattern(3 << 20, 2),
                      third = pattern(1000, 3);
    q.put(first);  // far enough into the ring that the next empty moment jumps back
    ASSERT_EQ(q.get(10s), first);
    q.put(second);
    mp::process consumer(opts(), get_then_die_after_jumping_back, q);
    consumer.start();
    consumer.join();
    ASSERT_EQ(consumer.exitcode(), -SIGKILL);
    // A producer in another process, so that a hang shows as a timeout here.
    mp::process producer(opts(), put_one_string, q, third);
    producer.start();
    if (!producer.join(20s)) {
        producer.kill();
        producer.join();
        FAIL() << "a producer hangs after a consumer died in the jump back";
    }
    std::vector<std::string> got;
    while (auto item = q.try_get()) got.push_back(std::move(*item));
    // Killed after passing the jump back, before taking `second`: it took nothing.
    ASSERT_EQ(got.size(), 2u);
    EXPECT_TRUE(got[0] == second);
    EXPECT_TRUE(got[1] == third);
    q.put("after");
    EXPECT_EQ(q.get(1s), "after");
}

TEST_P(queue_test, items_of_every_size_from_several_producers_arrive_whole_and_in_order) {
    mp::queue<std::string> q;
    constexpr int producers = 2, each = 300;
    std::vector<mp::process> children;
    for (int k = 0; k < producers; ++k) children.emplace_back(opts(), put_varied_items, q, k, each);
    for (auto& c : children) c.start();
    std::vector<int> next(producers, 0);
    for (int n = 0; n < producers * each; ++n) {
        std::string item = q.get(30s);
        int producer = std::stoi(item.substr(0, item.find(':')));
        ASSERT_GE(producer, 0);
        ASSERT_LT(producer, producers);
        ASSERT_TRUE(item == varied_item(producer, next[producer])) << "item " << next[producer] << " of producer " << producer;
        ++next[producer];
    }
    for (auto& c : children) c.join();
    EXPECT_TRUE(q.empty());
}

INSTANTIATE_TEST_SUITE_P(each_start_method, queue_test,
                         testing::Values(mp::start_method::fork, mp::start_method::spawn,
                                         mp::start_method::forkserver),
                         [](const auto& info) { return std::string(mp::to_string(info.param)); });

TEST(queue, timeouts_and_non_blocking_calls) {
    mp::queue<int> q;
    EXPECT_THROW((void)q.get(10ms), mp::queue_empty);
    EXPECT_EQ(q.try_get(), std::nullopt);
    EXPECT_THROW((void)q.get_nowait(), mp::queue_empty);
    q.put(3);
    EXPECT_EQ(q.size(), 1u);
    EXPECT_EQ(q.get_nowait(), 3);
}

TEST(queue, a_bounded_queue_refuses_when_full) {
    mp::queue<int> q(2);
    EXPECT_EQ(q.maxsize(), 2u);
    q.put(1);
    EXPECT_TRUE(q.try_put(2));
    EXPECT_TRUE(q.full());
    EXPECT_FALSE(q.try_put(3));
    EXPECT_THROW(q.put(3, 10ms), mp::queue_full);
    EXPECT_THROW(q.put_nowait(3), mp::queue_full);
    std::thread consumer([&] {
        std::this_thread::sleep_for(20ms);
        (void)q.get();
    });
    q.put(3);  // waits for the consumer to make room
    consumer.join();
    EXPECT_EQ(q.get(), 2);
    EXPECT_EQ(q.get(), 3);
}

TEST(queue, a_closed_handle_refuses_puts_and_gets) {
    mp::queue<int> q;
    auto other = q;
    q.put(1);
    q.close();
    EXPECT_THROW(q.put(2), mp::closed_error);
    EXPECT_THROW((void)q.get(), mp::closed_error);
    EXPECT_EQ(other.get(), 1);
}

TEST(queue, simple_queue_puts_and_gets) {
    mp::simple_queue<std::string> q;
    EXPECT_TRUE(q.empty());
    q.put("a");
    EXPECT_FALSE(q.empty());
    EXPECT_EQ(q.get(), "a");
}

TEST(queue, many_threads_put_and_get_everything_exactly_once) {
    mp::queue<int> q;
    constexpr int producers = 4, consumers = 3, each = 5000;
    std::vector<std::thread> threads;
    std::atomic<long> sum{0};
    std::atomic<int> got{0};
    for (int p = 0; p < producers; ++p)
        threads.emplace_back([&, p] {
            for (int i = 0; i < each; ++i) q.put(p * each + i);
        });
    for (int c = 0; c < consumers; ++c)
        threads.emplace_back([&] {
            while (got.fetch_add(1) < producers * each) sum += q.get();
        });
    for (auto& t : threads) t.join();
    long n = producers * each;
    EXPECT_EQ(sum.load(), n * (n - 1) / 2);
}

TEST(queue, memory_is_given_back_as_the_queue_drains) {
    // Push far more than the warm window through the queue; it must keep
    // working across the jumps back to the start of its region, and give
    // back the pages readers have passed.
    struct probe : mp::queue<std::string> {
        std::uint64_t bytes_in_memory() const {
            struct stat st {};
            ::fstat(core().fd(), &st);
            return static_cast<std::uint64_t>(st.st_blocks) * 512;
        }
    } q;
    using mp::detail::queue_layout::warm_window;
    std::string item(100'000, 'q');
    const int items = static_cast<int>(2 * warm_window / item.size());
    for (int round = 0; round < 5; ++round) {
        for (int i = 0; i < items; ++i) q.put(item);
        EXPECT_GT(q.bytes_in_memory(), items * item.size());
        for (int i = 0; i < items; ++i) ASSERT_EQ(q.get().size(), item.size());
        EXPECT_LT(q.bytes_in_memory(), warm_window + (4 << 20)) << "round " << round;
    }
}

TEST(queue, a_stream_that_keeps_running_empty_stays_in_the_warm_window) {
    // Producer and consumer taking turns (64 items put, then taken): the
    // queue is empty at the first put of each turn only, not at the puts
    // that cross a page. It must jump back to the start at those empty
    // moments and never reserve a page beyond the warm window (a jump asked
    // for only at page crossings ran into fresh pages).
    using mp::detail::queue_layout::warm_window;
    struct probe : mp::queue<std::array<std::byte, 64>> {
        std::uint64_t bytes_in_memory() const {
            struct stat st {};
            ::fstat(core().fd(), &st);
            return static_cast<std::uint64_t>(st.st_blocks) * 512;
        }
    } q;
    std::array<std::byte, 64> item{};
    const std::uint64_t turns = 4 * warm_window / (64 * 80);
    for (std::uint64_t turn = 0; turn < turns; ++turn) {
        for (int i = 0; i < 64; ++i) {
            item[0] = static_cast<std::byte>(i);
            q.put(item);
        }
        for (int i = 0; i < 64; ++i) ASSERT_EQ(q.get()[0], static_cast<std::byte>(i));
    }
    EXPECT_LE(q.bytes_in_memory(), warm_window);
}

TEST(queue, a_large_item_put_while_readers_give_pages_back_arrives_whole) {
    // Issue 11.1: pages were given back after the put lock was released, so a
    // large item written meanwhile at the start of the ring lost its end.
    // The hook holds the releasing consumer right before it gives pages back
    // and lets the producer write its next item in that moment.
    static std::atomic<int> releases{0};
    hook_for_test hook([](hooks::point p) {
        if (p != hooks::point::before_release) return;
        releases.fetch_add(1);
        releases.notify_all();
        std::this_thread::sleep_for(50ms);
    });
    mp::queue<std::string> q;
    constexpr int items = 6;
    const std::size_t size = (3 << 20) + 123;
    std::thread producer([&] {
        for (int i = 0; i < items; ++i) {
            int seen = releases.load();
            q.put(pattern(size, i));
            // Wait until the consumer is giving pages back, then put the next item.
            auto until = std::chrono::steady_clock::now() + 2s;
            while (releases.load() == seen && std::chrono::steady_clock::now() < until)
                std::this_thread::sleep_for(1ms);
        }
    });
    for (int i = 0; i < items; ++i) {
        std::string got = q.get(30s);
        ASSERT_EQ(got.size(), size);
        EXPECT_TRUE(got == pattern(size, i)) << "item " << i << " came back damaged";
    }
    producer.join();
    EXPECT_GT(releases.load(), 0) << "the test never reached the window it tests";
}

TEST(queue, a_failed_load_gives_its_slot_back_and_counts_as_done) {
    // Issue 11.2: a get() whose load threw kept the item's slot and unfinished count.
    mp::joinable_queue<unloadable> q(2);
    q.put(unloadable{});
    q.put(unloadable{});
    EXPECT_THROW((void)q.get(1s), mp::serialization_error);
    EXPECT_THROW((void)q.get(1s), mp::serialization_error);
    EXPECT_EQ(q.size(), 0u);
    EXPECT_TRUE(q.join(1s)) << "dropped items still count as unfinished";
    EXPECT_TRUE(q.try_put(unloadable{}));
    EXPECT_TRUE(q.try_put(unloadable{})) << "the failed loads kept their slots";
    EXPECT_FALSE(q.try_put(unloadable{}));
}

TEST(queue, an_item_that_does_not_fit_in_shared_memory_is_an_error_and_the_queue_stays_usable) {
    // Issue 11.4: the queue's pages were allocated by the copy into them, so a
    // full shared memory killed the producer with SIGBUS. Shared memory that
    // has room for 1 MiB more, simulated (a memfd has no filesystem of its own
    // to make small):
    struct limit {
        limit() { mp::sys::test_hooks::fail_reservations_over = 1 << 20; }
        ~limit() { mp::sys::test_hooks::fail_reservations_over = SIZE_MAX; }
    };
    mp::queue<std::string> q;
    const std::string big = pattern(8 << 20, 4);
    {
        limit full;
        try {
            q.put(big);
            ADD_FAILURE() << "an 8 MiB item went into shared memory with room for 1 MiB";
        } catch (const mp::system_error& e) {
            EXPECT_EQ(e.code().value(), ENOSPC);
            EXPECT_NE(std::string(e.what()).find("--shm-size"), std::string::npos) << e.what();
        }
        EXPECT_EQ(q.size(), 0u);
        q.put("small");
        EXPECT_TRUE(q.get(1s) == "small");
    }
    q.put(big);
    EXPECT_TRUE(q.get(10s) == big);
}

// Without the check, the put succeeded and get() failed later, in another
// process, with "refers to a file descriptor that did not arrive with it".
TEST(queue, an_item_that_travels_as_a_file_descriptor_is_refused_by_put) {
    mp::queue<mp::shared_memory> q;
    mp::shared_memory block(64);
    try {
        q.put(block);
        ADD_FAILURE() << "a queue took an item it cannot carry";
    } catch (const mp::value_error& e) {
        EXPECT_NE(std::string(e.what()).find("file descriptor"), std::string::npos) << e.what();
    }
    block.unlink();
    EXPECT_EQ(q.size(), 0u);
    auto [a, b] = mp::pipe();
    mp::queue<mp::connection> qc;
    EXPECT_THROW(qc.put(a), mp::value_error);
    q.put(mp::shared_memory());  // an empty handle carries no descriptor: it may go
    EXPECT_FALSE(static_cast<bool>(q.get()));
}

TEST_P(queue_test, a_consumer_killed_while_dropping_an_unreadable_item_leaves_the_counts_exact) {
    // A consumer of plain items claims them with one compare-and-swap; one it
    // cannot load is dropped by moving the tail with a "drop owed" mark, then
    // counting the drop. Killed in between, the next consumer must count it:
    // otherwise join() waits forever for an item nobody can take.
    mp::joinable_queue<std::int64_t> q;
    auto as_strings = same_queue_as<mp::joinable_queue<std::string>>(q);
    as_strings.put("abc");  // 3 bytes: not an int64
    q.put(5);
    mp::process consumer(opts(), get_then_die_while_dropping, q);
    consumer.start();
    consumer.join();
    ASSERT_EQ(consumer.exitcode(), -SIGKILL) << "the consumer never reached the drop";
    EXPECT_EQ(q.size(), 1u);
    EXPECT_EQ(q.get(1s), 5);
    q.task_done();
    EXPECT_TRUE(q.join(1s)) << "the dropped item still counts as unfinished";
    EXPECT_THROW(q.task_done(), mp::value_error) << "the drop was counted twice";
    q.put(6);
    EXPECT_EQ(q.get(1s), 6);
}

TEST_P(queue_test, a_producer_never_waits_after_the_queue_emptied_far_into_its_ring) {
    // The queue jumps back to the start of its ring when it runs empty; the
    // tail stayed on the jump until a reader passed it, so a producer that
    // wrote more than the ring's used part before anyone read waited for a
    // reader: put() on an unbounded queue blocked (here: forever, as the
    // parent reads only after the producer ended).
    mp::queue<std::string> q;
    const std::string first = pattern(3 << 20, 9);
    q.put(first);
    ASSERT_EQ(q.get(10s), first);
    mp::process producer(opts(), put_strings, q, std::size_t{1} << 20, 6);
    producer.start();
    if (!producer.join(20s)) {
        producer.kill();
        producer.join();
        FAIL() << "put() waited for a reader on an unbounded queue";
    }
    for (int i = 0; i < 6; ++i) EXPECT_TRUE(q.get(1s) == pattern(std::size_t{1} << 20, i)) << "item " << i;
}

TEST(queue, a_head_that_counts_items_it_does_not_hold_is_an_error_not_a_hang) {
    // Shared memory any process of the queue can write: a head word whose
    // count says items wait where its position says none do must make get()
    // throw, not spin. (The head is the end word at byte 192 of the header:
    // checked below against a real put.)
    struct probe : mp::queue<std::int64_t> {
        std::atomic<std::uint64_t>* head = nullptr;
        void* base = nullptr;
        probe() {
            base = mp::sys::map_shared(core().fd(), 4096);
            head = reinterpret_cast<std::atomic<std::uint64_t>*>(static_cast<std::byte*>(base) + 192);
        }
        ~probe() { mp::sys::unmap(base, 4096); }
    } q;
    const std::uint64_t count_before = q.head->load() >> 33;
    q.put(1);
    ASSERT_EQ((q.head->load() >> 33) - count_before, 1u) << "the queue's header layout changed: update this test";
    EXPECT_EQ(q.get(1s), 1);
    q.head->fetch_add(std::uint64_t{5} << 33);  // five more items counted, none written
    EXPECT_THROW((void)q.try_get(), mp::serialization_error);
    q.put(2);
    EXPECT_EQ(q.get(1s), 2);
}
