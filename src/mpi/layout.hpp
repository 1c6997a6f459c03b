// mpi/layout.hpp — the layout of the MPI messages that hold other messages:
// a `pieces` header (one message sent in segments) and a batch (several
// task or result messages in one). Bytes received from another rank: the
// readers check every length before they trust it (fuzzed by
// tests/fuzz/mpi_message_fuzz.cpp). No MPI here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "mp/detail/archive.hpp"

namespace mp::detail::mpi_wire {

// The segments of each split message carry a tag of their own, so that the
// segments of messages sent by several threads at once never mix.
inline constexpr int first_segment_tag = 1000;
inline constexpr int segment_tags = 30000;  // first_segment_tag + segment_tags <= 32767, MPI's least MPI_TAG_UB

/// What a `pieces` header announces: a message of `tag` that follows as
/// `sizes.size()` messages with `segment_tag`, to be received side by side.
struct pieces_header {
    std::int32_t tag = 0;
    std::int32_t segment_tag = 0;
    std::vector<std::size_t> sizes;
    std::size_t total = 0;  // the sum of sizes: the whole message fits one MPI receive
};

/// Writes the header: [i32 tag][i32 segment tag][u32 n][u64 size] * n.
void write_pieces_header(output_archive& out, int tag, int segment_tag, std::span<const std::size_t> sizes);

/// Reads a header received from another rank. Throws mp::serialization_error
/// unless the bytes are exactly one header whose segment tag is one that
/// write_pieces_header's senders use, with at least one segment, none
/// empty, and all together under 2 GiB (INT_MAX bytes).
pieces_header read_pieces_header(std::span<const std::byte> bytes);

/// The items of a batch, ([u64 size][the item's bytes]) * n, as views into
/// `bytes`. Throws mp::serialization_error ("<what> is cut short") if an
/// item's size runs past the end; nothing is returned then.
std::vector<std::span<const std::byte>> split_batch(std::span<const std::byte> bytes, const char* what);

}  // namespace mp::detail::mpi_wire
