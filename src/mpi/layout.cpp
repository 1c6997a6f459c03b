#include "mpi/layout.hpp"

#include <climits>
#include <string>

#include "mp/error.hpp"

namespace mp::detail::mpi_wire {

void write_pieces_header(output_archive& out, int tag, int segment_tag, std::span<const std::size_t> sizes) {
    out(static_cast<std::int32_t>(tag), static_cast<std::int32_t>(segment_tag), static_cast<std::uint32_t>(sizes.size()));
    for (auto n : sizes) out(static_cast<std::uint64_t>(n));
}

pieces_header read_pieces_header(std::span<const std::byte> bytes) {
    constexpr std::size_t fixed = 4 + 4 + 4;
    auto corrupt = [](const std::string& why) {
        return serialization_error("mp: a split MPI message's header is corrupt (" + why +
                                   "): the sending rank runs another build, or its memory is damaged");
    };
    if (bytes.size() < fixed) throw corrupt("it is " + std::to_string(bytes.size()) + " bytes long");
    input_archive in(bytes);
    pieces_header h;
    std::uint32_t count = 0;
    in(h.tag, h.segment_tag, count);
    // The count is believed only as far as the bytes that carry the sizes.
    if (count == 0 || (bytes.size() - fixed) / 8 != count || (bytes.size() - fixed) % 8 != 0)
        throw corrupt(std::to_string(count) + " segments announced in " + std::to_string(bytes.size()) + " bytes");
    if (h.segment_tag < first_segment_tag || h.segment_tag >= first_segment_tag + segment_tags)
        throw corrupt("segment tag " + std::to_string(h.segment_tag));
    h.sizes.reserve(count);
    for (std::uint32_t i = 0; i < count; ++i) {
        std::uint64_t n = 0;
        in(n);
        // Each term is checked before it is added: the sum cannot wrap.
        if (n == 0 || n > static_cast<std::uint64_t>(INT_MAX) - h.total)
            throw corrupt("segment " + std::to_string(i) + " of " + std::to_string(n) + " bytes after " +
                          std::to_string(h.total));
        h.sizes.push_back(static_cast<std::size_t>(n));
        h.total += static_cast<std::size_t>(n);
    }
    return h;
}

std::vector<std::span<const std::byte>> split_batch(std::span<const std::byte> bytes, const char* what) {
    input_archive batch(bytes);
    std::vector<std::span<const std::byte>> items;
    while (batch.remaining() > 0) {
        std::uint64_t size = 0;
        batch(size);
        if (size > batch.remaining()) throw serialization_error(std::string("mp: ") + what + " is cut short");
        items.push_back(batch.take(static_cast<std::size_t>(size)));
    }
    return items;
}

}  // namespace mp::detail::mpi_wire
