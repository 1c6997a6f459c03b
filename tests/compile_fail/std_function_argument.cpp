// std::function holds code and state that another process does not have.
#include <mp/serialize.hpp>

#include <functional>

static_assert(mp::detail::require_transferable<std::function<int(int)>>());
