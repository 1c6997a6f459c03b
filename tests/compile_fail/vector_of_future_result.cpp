// The seed report's mistake: a task that returns the futures of an inner
// thread pool instead of their values. The message says to return the values.
#include <mp/future.hpp>
#include <mp/serialize.hpp>

#include <vector>

static_assert(mp::detail::require_transferable<std::vector<mp::future<int>>>());
