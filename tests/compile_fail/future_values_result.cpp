// Control for vector_of_future_result: the futures' values cross.
#include <mp/future.hpp>
#include <mp/serialize.hpp>

#include <vector>

static_assert(mp::detail::require_transferable<std::vector<int>>());
static_assert(!mp::transferable<mp::future<int>>);
static_assert(!mp::transferable<std::vector<mp::future<void>>>);

int main() {}
