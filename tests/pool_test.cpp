#include "mp/pool.hpp"

#include <gtest/gtest.h>

namespace {
int square(int x) { return x * x; }
class pool_test : public testing::TestWithParam<mp::start_method> {};

TEST_P(pool_test, apply_and_map) {
    mp::pool p({.processes = 2, .context = mp::get_context(GetParam())});
    EXPECT_EQ(p.apply(square, 7), 49);
    std::vector<int> xs(1000);
    for (int i = 0; i < 1000; ++i) xs[i] = i;
    auto v = p.map(square, xs);
    ASSERT_EQ(v.size(), 1000u);
    for (int i = 0; i < 1000; ++i) EXPECT_EQ(v[i], i * i);
}
INSTANTIATE_TEST_SUITE_P(all, pool_test,
                         testing::Values(mp::start_method::fork, mp::start_method::spawn, mp::start_method::forkserver),
                         [](const auto& info) { return std::string(mp::to_string(info.param)); });
}  // namespace
