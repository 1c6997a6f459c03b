// mpi_wire::send_queue on rank 0, in the mpi_executor_test binary (run by
// the static-mode ctest entries under mpiexec; see CMakeLists.txt).
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "mp/error.hpp"
#include "mp/mpi.hpp"
#include "mpi/layout.hpp"
#include "mpi/wire.hpp"

using namespace std::chrono_literals;

namespace {
std::vector<char> flip_first(std::vector<char> v) {
    v.front() = static_cast<char>(~v.front());
    return v;
}
}  // namespace

// Tasks and results larger than a send that completes at once (OpenMPI's
// rendezvous), crossing between rank 0 and
// every worker rank at the same time. They were sent blocking: rank 0 sent a
// task holding the lock its receiving thread needed for the results, while
// the worker rank's main thread, the one that receives tasks, sent a result
// to rank 0. Each waited for the other for ever (16 tasks of 300 KB on 3
// ranks hung in the first round).
// Then the same with messages sent in place (send_queue::in_place_from and
// larger), whose senders wait until they have left.
TEST(mpi_executor, large_tasks_and_results_crossing_never_deadlock) {
    mp::mpi_pool_executor ex;
    const std::size_t copied = 300'000, in_place = 2 * mp::detail::mpi_wire::send_queue::in_place_from;
    for (int round = 0; round < 26; ++round) {
        const std::size_t size = round < 20 ? copied : in_place;
        std::vector<mp::future<std::vector<char>>> fs;
        for (int i = 0; i < 16; ++i) fs.push_back(ex.submit(flip_first, std::vector<char>(size, static_cast<char>(i))));
        for (int i = 0; i < 16; ++i) {
            const auto& v = fs[static_cast<std::size_t>(i)].get(120s);
            ASSERT_EQ(v.size(), size);
            EXPECT_EQ(v.front(), static_cast<char>(~i));
            EXPECT_EQ(v.back(), static_cast<char>(i));
        }
    }
}

// The send queue sends a buffer it was handed (send_owned) from that buffer,
// in order with copied sends, and hands the buffer back for reuse once its
// send completed. Between rank 0 and itself, on a communicator of its own
// (the boss's service thread receives from any rank on the link).
TEST(mpi_executor, send_queue_owned_buffers_keep_order_and_come_back) {
    MPI_Comm self = MPI_COMM_NULL;
    ASSERT_EQ(MPI_Comm_dup(MPI_COMM_SELF, &self), MPI_SUCCESS);
    namespace wire = mp::detail::mpi_wire;
    {
        wire::send_queue sends;
        EXPECT_TRUE(sends.reusable().empty());
        std::vector<std::vector<std::byte>> expected;
        for (int i = 0; i < 12; ++i) {
            // Even ones owned, from an offset into their buffer; odd ones
            // copied. All over the eager limit of shared memory, the first
            // ones largest.
            std::vector<std::byte> bytes(std::size_t{3000} + static_cast<std::size_t>(12 - i) * 20000);
            for (std::size_t k = 0; k < bytes.size(); ++k) bytes[k] = static_cast<std::byte>((k * 7 + static_cast<std::size_t>(i)) & 0xff);
            if (i % 2 == 0) {
                expected.emplace_back(bytes.begin() + 8, bytes.end());
                const std::size_t size = bytes.size() - 8;
                sends.send_owned(std::move(bytes), 8, size, 0, wire::result, self);
            } else {
                expected.push_back(bytes);
                mp::detail::output_archive ar;
                ar.saveBinary(bytes.data(), bytes.size());
                sends.send(ar, 0, wire::result, self);
            }
        }
        EXPECT_THROW(sends.send_owned(std::vector<std::byte>(16), 8, 9, 0, wire::result, self), mp::value_error);
        std::size_t got = 0;
        wire::message m;
        const auto until = std::chrono::steady_clock::now() + 30s;
        while ((got < expected.size() || !sends.idle()) && std::chrono::steady_clock::now() < until) {
            sends.progress();
            if (!wire::try_receive(m, 0, self)) continue;
            ASSERT_LT(got, expected.size());
            EXPECT_EQ(m.tag, wire::result);
            ASSERT_EQ(m.size, expected[got].size()) << "message " << got;
            EXPECT_TRUE(std::equal(expected[got].begin(), expected[got].end(), m.data())) << "message " << got;
            ++got;
        }
        EXPECT_EQ(got, expected.size());
        EXPECT_TRUE(sends.idle());
        // The owned buffers came back (a few are kept), with their memory.
        auto spare = sends.reusable();
        EXPECT_GE(spare.size(), std::size_t{4000});
    }
    MPI_Comm_free(&self);
}

// A message sent in place (a large borrowed block, as a 256 MiB argument)
// arrives whole and in order with the others, and wait() returns only once
// its memory is no longer needed: changing it afterwards changes nothing
// that arrives.
TEST(mpi_executor, send_queue_in_place_sends_arrive_whole) {
    MPI_Comm self = MPI_COMM_NULL;
    ASSERT_EQ(MPI_Comm_dup(MPI_COMM_SELF, &self), MPI_SUCCESS);
    namespace wire = mp::detail::mpi_wire;
    {
        wire::send_queue sends;
        // Small pieces around two large blocks (split into segments), one
        // large block alone, and a small message with no block at all.
        std::vector<std::byte> first(3u << 20), second(700u << 10), alone(1u << 20);
        for (std::size_t k = 0; k < first.size(); ++k) first[k] = static_cast<std::byte>(k * 13 & 0xff);
        for (std::size_t k = 0; k < second.size(); ++k) second[k] = static_cast<std::byte>(k * 5 & 0xff);
        for (std::size_t k = 0; k < alone.size(); ++k) alone[k] = static_cast<std::byte>(k * 3 & 0xff);
        std::vector<std::vector<std::byte>> expected;
        std::vector<std::shared_ptr<wire::send_queue::in_place>> sent;
        {
            mp::detail::output_archive ar;
            ar(std::uint32_t{7});
            ar.saveBinary(first.data(), first.size());
            ar(std::uint64_t{42});
            ar.saveBinary(second.data(), second.size());
            ar(std::uint8_t{1});
            ASSERT_EQ(ar.borrowed_blocks().size(), 2u);
            expected.emplace_back(ar.size());
            ar.copy_to(expected.back().data());
            sent.push_back(sends.send_in_place(ar, 0, wire::result, self));
            // The archive's own bytes were copied (the small pieces): it may go now.
        }
        {
            mp::detail::output_archive ar;
            ar.saveBinary(alone.data(), alone.size());
            expected.push_back(alone);
            sent.push_back(sends.send_in_place(ar, 0, wire::task, self));
        }
        mp::detail::output_archive small;
        small(std::uint64_t{99});
        expected.emplace_back(small.size());
        small.copy_to(expected.back().data());
        sent.push_back(sends.send_in_place(small, 0, wire::stop_task, self));
        std::size_t got = 0;
        wire::message m;
        const int tags[] = {wire::result, wire::task, wire::stop_task};
        const auto until = std::chrono::steady_clock::now() + 30s;
        while (got < expected.size() && std::chrono::steady_clock::now() < until) {
            sends.progress();
            if (!wire::try_receive(m, 0, self)) continue;
            EXPECT_EQ(m.tag, tags[got]);
            ASSERT_EQ(m.size, expected[got].size()) << "message " << got;
            EXPECT_TRUE(std::equal(expected[got].begin(), expected[got].end(), m.data())) << "message " << got;
            ++got;
        }
        EXPECT_EQ(got, expected.size());
        for (const auto& s : sent) sends.wait(*s);
        EXPECT_TRUE(sends.idle());
        std::fill(first.begin(), first.end(), std::byte{0});  // free to change now
    }
    MPI_Comm_free(&self);
}

// The headers of split messages and the batches come from another rank:
// a length that does not add up is refused with mp::serialization_error,
// before anything is received or handed on (a segment size that wrapped the
// sum around made a receive write past its buffer before).
TEST(mpi_executor, corrupt_pieces_headers_and_batches_are_refused) {
    namespace wire = mp::detail::mpi_wire;
    auto header = [](std::int32_t tag, std::int32_t segment_tag, std::uint32_t count,
                     std::vector<std::uint64_t> sizes) {
        mp::detail::output_archive out;
        out(tag, segment_tag, count);
        for (auto n : sizes) out(n);
        return std::vector<std::byte>(out.buffer().begin(), out.buffer().end());
    };
    const std::size_t good_sizes[] = {100, 300000, 7};
    mp::detail::output_archive written;
    wire::write_pieces_header(written, wire::task, wire::first_segment_tag + 5, good_sizes);
    const auto good = wire::read_pieces_header(written.buffer());
    EXPECT_EQ(good.tag, wire::task);
    EXPECT_EQ(good.segment_tag, wire::first_segment_tag + 5);
    EXPECT_EQ(good.sizes, (std::vector<std::size_t>{100, 300000, 7}));
    EXPECT_EQ(good.total, 300107u);

    const int tag = wire::first_segment_tag;
    const std::vector<std::vector<std::byte>> corrupt = {
        {},                                                               // too short for the fixed part
        header(wire::task, tag, 0, {}),                                   // no segment
        header(wire::task, tag, 3, {1, 2}),                               // fewer sizes than announced
        header(wire::task, tag, 1, {1, 2}),                               // more sizes than announced
        header(wire::task, tag, 0xffffffffu, {1}),                        // a count to allocate 32 GiB for
        header(wire::task, 7, 1, {1}),                                    // not a segment tag
        header(wire::task, tag, 2, {10, 0}),                              // an empty segment
        header(wire::task, tag, 2, {~std::uint64_t{0} - 9, 20}),         // a sum that wraps around to 10
        header(wire::task, tag, 2, {std::uint64_t{1} << 30, std::uint64_t{1} << 30}),  // 2 GiB together
    };
    for (std::size_t i = 0; i < corrupt.size(); ++i)
        EXPECT_THROW((void)wire::read_pieces_header(corrupt[i]), mp::serialization_error) << "header " << i;

    mp::detail::output_archive batch;
    batch(std::uint64_t{3});
    batch.saveBinary("abc", 3);
    batch(std::uint64_t{0});
    const auto items = wire::split_batch(batch.buffer(), "a test batch");
    ASSERT_EQ(items.size(), 2u);
    EXPECT_EQ(items[0].size(), 3u);
    EXPECT_TRUE(items[1].empty());
    batch(std::uint64_t{5});
    batch.saveBinary("ab", 2);
    try {
        (void)wire::split_batch(batch.buffer(), "a test batch");
        FAIL() << "a batch cut short was split";
    } catch (const mp::serialization_error& e) {
        EXPECT_NE(std::string(e.what()).find("a test batch is cut short"), std::string::npos) << e.what();
    }
}
