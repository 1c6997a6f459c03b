// The culprit inside a container is named, beside the whole type.
#include <mp/serialize.hpp>

#include <mutex>
#include <vector>

static_assert(mp::detail::require_transferable<std::vector<std::mutex>>());
