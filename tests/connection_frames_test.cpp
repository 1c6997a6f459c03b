// mp::connection against a misbehaving peer at the byte level: a frame that
// arrives in pieces, a large-message attachment the sender tampers with.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <future>
#include <thread>

#include "mp/connection.hpp"

using namespace std::chrono_literals;

namespace {

// The raw bytes of the frame that `value` is sent as.
template <class T>
std::vector<char> frame_of(const T& value) {
    auto [a, b] = mp::pipe();
    a.send(value);
    a.close();
    std::vector<char> bytes;
    char chunk[65536];
    for (;;) {
        ssize_t n = ::read(b.fileno(), chunk, sizeof chunk);
        if (n <= 0) break;
        bytes.insert(bytes.end(), chunk, chunk + n);
    }
    return bytes;
}

void write_all(int fd, const char* p, std::size_t n) {
    while (n > 0) {
        ssize_t w = ::write(fd, p, n);
        ASSERT_GT(w, 0);
        p += w;
        n -= static_cast<std::size_t>(w);
    }
}

// Writes the first `split` bytes of `frame`, waits until the reader timed out
// (or, if it never does, at most a few seconds), then writes the rest.
std::thread write_in_two_parts(int fd, std::vector<char> frame, std::size_t split, std::future<void> reader_timed_out) {
    return std::thread([fd, frame = std::move(frame), split, f = std::move(reader_timed_out)]() mutable {
        write_all(fd, frame.data(), split);
        (void)f.wait_for(3s);
        write_all(fd, frame.data() + split, frame.size() - split);
    });
}

// recv(timeout) gives up when a frame has begun but its rest does not come,
// and the next recv gets the whole message: the part already read is kept.
// (Before the fix, the rest of a frame was awaited without the deadline: the
// first recv returned only when the rest came, 3 s later, instead of throwing.)
template <class T>
void a_partial_frame_times_out_and_resumes(const T& value, std::size_t split) {
    auto [a, b] = mp::pipe();
    auto frame = frame_of(value);
    ASSERT_LT(split, frame.size());
    std::promise<void> timed_out;
    auto writer = write_in_two_parts(a.fileno(), frame, split, timed_out.get_future());
    auto started = std::chrono::steady_clock::now();
    EXPECT_THROW((void)b.recv<T>(300ms), mp::timeout_error);
    EXPECT_LT(std::chrono::steady_clock::now() - started, 2s);  // only catches a hang
    timed_out.set_value();
    EXPECT_EQ(b.recv<T>(30s), value);
    writer.join();
    // The stream is still in step.
    a.send(T(value));
    EXPECT_EQ(b.recv<T>(30s), value);
}

}  // namespace

TEST(connection_frames, a_frame_cut_in_its_header_times_out_and_resumes) {
    a_partial_frame_times_out_and_resumes(std::string("short"), 10);
}

TEST(connection_frames, a_frame_cut_in_its_body_times_out_and_resumes) {
    a_partial_frame_times_out_and_resumes(std::string(100'000, 'b'), 50'000);
}

TEST(connection_frames, a_large_inline_body_cut_short_times_out_and_resumes) {
    // mp sends bodies of a megabyte or more through a memfd; a peer may still
    // send one inline. Build such a frame from a small one: same header and
    // type name, body_size (at offset 8) patched, then the body itself.
    constexpr std::size_t n = 6 << 20;
    auto small = frame_of(std::string("x"));
    std::size_t small_body = 8 + 1;
    std::vector<char> frame(small.begin(), small.end() - static_cast<std::ptrdiff_t>(small_body));
    std::uint64_t body_size = 8 + n;
    std::memcpy(frame.data() + 8, &body_size, 8);
    std::uint64_t length = n;
    frame.insert(frame.end(), reinterpret_cast<char*>(&length), reinterpret_cast<char*>(&length) + 8);
    std::string text(n, 'z');
    text[n / 2] = 'm';
    frame.insert(frame.end(), text.begin(), text.end());

    auto [a, b] = mp::pipe();
    std::promise<void> timed_out;
    auto writer = write_in_two_parts(a.fileno(), frame, frame.size() / 2, timed_out.get_future());
    EXPECT_THROW((void)b.recv<std::string>(300ms), mp::timeout_error);
    EXPECT_THROW((void)b.recv<std::string>(50ms), mp::timeout_error);  // and again, still in the middle
    timed_out.set_value();
    EXPECT_EQ(b.recv<std::string>(30s), text);
    writer.join();
    a.send(std::string("next"));
    EXPECT_EQ(b.recv<std::string>(30s), "next");
}
