// fuzz_mpi_message — the MPI executor's messages that hold other messages,
// as a worker rank or rank 0 receives them from another rank
// (src/mpi/layout.cpp): the header of a message sent in segments, and a
// batch of task or result messages.
//
// A header that reads must announce what a receiver can take: at least one
// segment, none empty, all together under 2 GiB, a segment tag that senders
// use; and it must be exactly what write_pieces_header writes for it. A
// batch that splits must give items inside the input that, written again,
// are the input.
//
// Input: [u8 what: 0 pieces header, 1 batch][bytes].
#include <climits>

#include "fuzz_support.hpp"
#include "mpi/layout.hpp"

namespace {

namespace d = mp::detail;
namespace wire = mp::detail::mpi_wire;

bool same(std::span<const std::byte> a, std::span<const std::byte> b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
}

void check_header(std::span<const std::byte> bytes) {
    wire::pieces_header h;
    if (!mp_fuzz::decoded([&] { h = wire::read_pieces_header(bytes); })) return;
    std::size_t sum = 0;
    for (auto n : h.sizes) {
        if (n == 0) mp_fuzz::fail("a pieces header announced an empty segment");
        sum += n;
    }
    if (h.sizes.empty() || sum != h.total || h.total > static_cast<std::size_t>(INT_MAX))
        mp_fuzz::fail("a pieces header's segments do not add up to one receivable message");
    if (h.segment_tag < wire::first_segment_tag || h.segment_tag >= wire::first_segment_tag + wire::segment_tags)
        mp_fuzz::fail("a pieces header carries a tag that is not a segment tag");
    d::output_archive again;
    wire::write_pieces_header(again, h.tag, h.segment_tag, h.sizes);
    if (!same(again.buffer(), bytes)) mp_fuzz::fail("a pieces header read does not write back to its bytes");
}

void check_batch(std::span<const std::byte> bytes) {
    std::vector<std::span<const std::byte>> items;
    if (!mp_fuzz::decoded([&] { items = wire::split_batch(bytes, "a fuzzed batch"); })) return;
    d::output_archive again;
    for (auto item : items) {
        if (item.data() < bytes.data() || item.data() + item.size() > bytes.data() + bytes.size())
            mp_fuzz::fail("a batch item lies outside the batch");
        again(static_cast<std::uint64_t>(item.size()));
        again.saveBinary(item.data(), item.size());
    }
    if (!same(mp_fuzz::flatten(again), bytes)) mp_fuzz::fail("a batch split does not write back to its bytes");
}

}  // namespace

namespace mp_fuzz {

void write_seeds() {
    const std::size_t sizes[] = {40, 268435456, 9};
    d::output_archive header;
    wire::write_pieces_header(header, 103, wire::first_segment_tag + 17, sizes);
    write_seed("pieces_header", prefixed({0}, header.buffer()));
    d::output_archive batch;
    for (const char* item : {"one task", "", "a third, longer task message"}) {
        const std::size_t n = std::char_traits<char>::length(item);
        batch(static_cast<std::uint64_t>(n));
        batch.saveBinary(item, n);
    }
    write_seed("batch", prefixed({1}, flatten(batch)));
}

}  // namespace mp_fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    const auto body = mp_fuzz::as_bytes(data + 1, size - 1);
    if (data[0] % 2 == 0)
        check_header(body);
    else
        check_batch(body);
    return 0;
}
