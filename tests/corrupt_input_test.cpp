// Bytes another process wrote, corrupted: a frame header on a pipe that
// declares a huge body, a queue record whose size runs past what producers
// published. Regressions of the fuzz findings in tests/fuzz/corpus
// (pipe_frame-inline-body-allocated-before-it-arrives,
// queue_record-record-runs-past-head, queue_record-record-size-believed-allocates).
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "mp/connection.hpp"
#include "mp/queue.hpp"
#include "mp/serialize.hpp"

using namespace std::chrono_literals;

namespace {

// Resident memory of this process in KiB (VmRSS of /proc/self/status).
long resident_kib() {
    std::ifstream status("/proc/self/status");
    std::string word;
    while (status >> word)
        if (word == "VmRSS:") {
            long kib = 0;
            status >> kib;
            return kib;
        }
    return -1;
}

// The bytes of one frame as mp writes it: sent through one pipe and read raw
// from the other end.
std::vector<char> one_frame(std::string_view body) {
    auto [a, b] = mp::pipe();
    a.send_bytes(body);
    std::vector<char> frame(4096);
    ssize_t n = ::read(b.fileno(), frame.data(), frame.size());
    EXPECT_GT(n, 32);
    frame.resize(static_cast<std::size_t>(n));
    return frame;
}

void write_all(int fd, const char* data, std::size_t size) {
    while (size > 0) {
        ssize_t n = ::write(fd, data, size);
        ASSERT_GT(n, 0);
        data += n;
        size -= static_cast<std::size_t>(n);
    }
}

constexpr std::size_t body_size_offset = 8;  // frame_header: magic, flags, then the body's size

TEST(corrupt_input, a_frame_declaring_a_huge_body_allocates_only_what_arrived) {
    auto frame = one_frame("x");
    const std::size_t head = frame.size() - 1;  // header and type name, without the 1-byte body
    std::uint64_t declared = (std::uint64_t{1} << 30) - 1;  // just under the inline limit
    std::memcpy(frame.data() + body_size_offset, &declared, 8);
    auto [c, d] = mp::pipe();
    write_all(c.fileno(), frame.data(), head + 1);  // the header and one byte of the body
    const long before = resident_kib();
    // The body is incomplete: the receive times out, keeping what arrived.
    EXPECT_THROW((void)d.recv<std::string>(200ms), mp::timeout_error);
    const long grown = resident_kib() - before;
    EXPECT_LT(grown, 256 * 1024) << "the reader allocated " << grown << " KiB for a body of which one byte arrived";
    c.close();
    EXPECT_THROW((void)d.recv_bytes(), mp::eof_error);
}

// A header declaring `declared` body bytes, then one byte of the body: the
// receive times out, and what the reader allocated meanwhile (KiB of RSS).
long kib_allocated_for_a_declared_body(std::uint64_t declared) {
    auto frame = one_frame("x");
    const std::size_t head = frame.size() - 1;
    std::memcpy(frame.data() + body_size_offset, &declared, 8);
    auto [c, d] = mp::pipe();
    write_all(c.fileno(), frame.data(), head + 1);
    const long before = resident_kib();
    EXPECT_THROW((void)d.recv<std::string>(100ms), mp::timeout_error);
    return resident_kib() - before;
}

TEST(corrupt_input, a_declared_body_is_not_allocated_before_its_bytes_arrive) {
    // Under the size a connection buffers whole (4 MiB), and over it; the
    // reader used to zero-fill 4 MiB for either before the body came.
    for (std::uint64_t declared : {std::uint64_t{4 * 1024 * 1024 - 100}, std::uint64_t{64 * 1024 * 1024}}) {
        long grown = kib_allocated_for_a_declared_body(declared);
        EXPECT_LT(grown, 1024) << "the reader allocated " << grown << " KiB for a body of " << declared
                               << " bytes of which one byte arrived";
    }
}

TEST(corrupt_input, connections_hold_no_receive_buffer_before_they_receive) {
    // Each connection used to allocate and zero 64 KiB when made: 400 ends,
    // 25 MiB, before a byte arrived.
    const long before = resident_kib();
    std::vector<std::pair<mp::connection, mp::connection>> pipes;
    for (int i = 0; i < 200; ++i) pipes.push_back(mp::pipe());
    for (auto& [a, b] : pipes) EXPECT_FALSE(b.poll());
    const long grown = resident_kib() - before;
    EXPECT_LT(grown, 4 * 1024) << "400 idle connection ends took " << grown << " KiB";
}

TEST(corrupt_input, a_large_inline_body_arrives_whole_in_pieces) {
    // Bodies of a megabyte and more normally travel as a memfd; a frame may
    // still carry one inline: the reader grows it as its bytes arrive.
    constexpr std::size_t size = 9 * 1024 * 1024 + 13;
    auto frame = one_frame("x");
    frame.pop_back();
    std::uint64_t declared = size;
    std::memcpy(frame.data() + body_size_offset, &declared, 8);
    std::string body(size, '\0');
    for (std::size_t i = 0; i < size; ++i) body[i] = static_cast<char>(i * 7 + i / 4096);
    auto [c, d] = mp::pipe();
    std::thread writer([&, fd = c.fileno()] {
        write_all(fd, frame.data(), frame.size());
        for (std::size_t at = 0; at < size; at += 1 << 20)
            write_all(fd, body.data() + at, std::min<std::size_t>(1 << 20, size - at));
    });
    auto got = d.recv_bytes();
    writer.join();
    ASSERT_EQ(got.size(), size);
    EXPECT_TRUE(std::memcmp(got.data(), body.data(), size) == 0);
}

// The queue's data region starts one page into its memfd; a record starts
// with its size (u32).
constexpr off_t first_record = 4096;

int memfd_of(const mp::queue<std::string>& q, mp::detail::output_archive& out) {
    mp::detail::save_value(out, q);
    return out.fds().at(0);
}

void overwrite_first_record_size(const mp::queue<std::string>& q, std::uint32_t size) {
    mp::detail::output_archive out;
    ASSERT_EQ(::pwrite(memfd_of(q, out), &size, sizeof size, first_record), static_cast<ssize_t>(sizeof size));
}

TEST(corrupt_input, a_queue_record_running_past_the_head_is_refused_and_the_queue_goes_on) {
    for (std::uint32_t size : {std::uint32_t{64}, std::uint32_t{1835365482}}) {
        mp::queue<std::string> q;
        q.put(std::string("first"));
        q.put(std::string("second"));
        overwrite_first_record_size(q, size);
        // The record claims more than was published: where the next record
        // starts is unknown, so both items are dropped, with an error.
        EXPECT_THROW((void)q.try_get(), mp::serialization_error) << "record size " << size;
        EXPECT_EQ(q.try_get(), std::nullopt) << "record size " << size;
        q.put(std::string("after"));
        EXPECT_EQ(q.get(1s), "after");
    }
}

TEST(corrupt_input, items_dropped_as_unreadable_count_as_done_for_join) {
    mp::joinable_queue<std::string> q;
    q.put(std::string("first"));
    q.put(std::string("second"));
    overwrite_first_record_size(q, 1u << 30);
    EXPECT_THROW((void)q.try_get(), mp::serialization_error);
    EXPECT_TRUE(q.join(1s));
}

}  // namespace
