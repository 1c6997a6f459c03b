#include "mp/detail/archive.hpp"
#include "sys/memory.hpp"

namespace mp::detail {

void prepare_item_buffer(void* data, std::size_t bytes) noexcept {
    if (bytes < large_decode_bytes) return;
    sys::advise_huge_pages(data, bytes);
    sys::prefault_for_write(data, bytes);
}

}  // namespace mp::detail
