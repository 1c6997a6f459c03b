// mp::value and mp::array: shared between processes under every start
// method, increments under get_lock() giving exact totals.
#include "mp/value.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <numeric>
#include <thread>
#include <vector>

#include "mp/process.hpp"

using namespace std::chrono_literals;

namespace {

constexpr auto patience = 30s;
constexpr int increments = 2000;

class value_test : public testing::TestWithParam<mp::start_method> {
protected:
    mp::process_options opts() { return {.context = mp::get_context(GetParam())}; }
};

void add_many(mp::value<long> v) {
    for (int i = 0; i < increments; ++i) {
        std::lock_guard guard(v.get_lock());
        v.set(v.get() + 1);  // get/set take the (recursive) lock again
    }
}

TEST_P(value_test, increments_from_several_processes_under_get_lock_are_exact) {
    mp::value<long> v(0);
    std::vector<std::unique_ptr<mp::process>> ps;
    for (int i = 0; i < 4; ++i) {
        ps.push_back(std::make_unique<mp::process>(opts(), add_many, v));
        ps.back()->start();
    }
    add_many(v);
    for (auto& p : ps) {
        ASSERT_TRUE(p->join(patience));
        EXPECT_EQ(p->exitcode(), 0);
    }
    EXPECT_EQ(v.get(), 5L * increments);
}

struct point {
    double x;
    int y;
};

void fill_array(mp::array<int> a, mp::value<point> pt, int who) {
    for (int i = 0; i < increments; ++i) {
        std::lock_guard guard(a.get_lock());
        ++a[0];
        ++a[static_cast<std::size_t>(who)];
    }
    pt.set({1.5, who});
}

TEST_P(value_test, an_array_is_shared_and_guarded_by_its_lock) {
    mp::array<int> a(4);
    ASSERT_EQ(a.size(), 4u);
    EXPECT_EQ(a.to_vector(), (std::vector<int>{0, 0, 0, 0}));
    mp::value<point> pt(point{0, 0});
    std::vector<std::unique_ptr<mp::process>> ps;
    for (int who = 1; who <= 3; ++who) {
        ps.push_back(std::make_unique<mp::process>(opts(), fill_array, a, pt, who));
        ps.back()->start();
    }
    for (auto& p : ps) {
        ASSERT_TRUE(p->join(patience));
        EXPECT_EQ(p->exitcode(), 0);
    }
    EXPECT_EQ(a.to_vector(), (std::vector<int>{3 * increments, increments, increments, increments}));
    EXPECT_EQ(pt.get().x, 1.5);
    EXPECT_GE(pt.get().y, 1);
}

void bump_raw(mp::value<int> v, mp::lock lk) {
    std::lock_guard guard(lk);
    *v.data() += 10;
}

TEST_P(value_test, a_value_without_lock_can_be_guarded_by_a_lock_of_ones_own) {
    mp::value<int> v(5, mp::no_lock);
    mp::lock lk;
    EXPECT_FALSE(v.has_lock());
    EXPECT_THROW((void)v.get_lock(), mp::value_error);
    mp::process p(opts(), bump_raw, v, lk);
    p.start();
    ASSERT_TRUE(p.join(patience));
    EXPECT_EQ(p.exitcode(), 0);
    EXPECT_EQ(v.get(), 15);
}

TEST(value, values_can_share_one_lock) {
    mp::rlock lk;
    mp::value<int> a(1, lk);
    mp::value<int> b(2, lk);
    EXPECT_TRUE(a.get_lock() == b.get_lock());
    std::lock_guard guard(a.get_lock());
    a.set(b.get() + a.get());
    EXPECT_EQ(a.get(), 3);
}

TEST(array, construction_access_and_bounds) {
    mp::array<double> a{1.0, 2.0, 3.0};
    EXPECT_EQ(a.size(), 3u);
    EXPECT_EQ(std::accumulate(a.begin(), a.end(), 0.0), 6.0);
    a.set(1, 5.0);
    EXPECT_EQ(a.get(1), 5.0);
    EXPECT_THROW((void)a.get(3), std::out_of_range);
    EXPECT_THROW(a.assign(std::vector<double>{1.0}), mp::value_error);
    std::vector<double> src{7, 8, 9};
    a.assign(src);
    EXPECT_EQ(a.to_vector(), src);
    mp::array<double> copy = a;  // same memory
    copy[0] = 42;
    EXPECT_EQ(a[0], 42);
    mp::array<char> raw(std::size_t{3}, mp::no_lock);
    EXPECT_FALSE(raw.has_lock());
    EXPECT_EQ(raw.span().size(), 3u);
    mp::array<int> empty;
    EXPECT_TRUE(empty.empty());
}

INSTANTIATE_TEST_SUITE_P(each_start_method, value_test,
                         testing::Values(mp::start_method::fork, mp::start_method::spawn,
                                         mp::start_method::forkserver),
                         [](const auto& info) { return std::string(mp::to_string(info.param)); });

}  // namespace
