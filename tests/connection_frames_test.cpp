// mp::connection against a misbehaving peer at the byte level: a frame that
// arrives in pieces, a large-message attachment the sender tampers with.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/mman.h>
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

namespace {

// Reads one frame as sent over `fd`: its bytes and the descriptors it carried.
std::pair<std::vector<char>, std::vector<int>> raw_frame_with_fds(int fd) {
    std::vector<char> bytes(1 << 16);
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 8)];
    ::iovec iov{bytes.data(), bytes.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
    bytes.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    std::vector<int> fds;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (std::size_t i = 0; i < count; ++i) {
            int one;
            std::memcpy(&one, CMSG_DATA(c) + i * sizeof(int), sizeof one);
            fds.push_back(one);
        }
    }
    return {bytes, fds};
}

void send_with_fd(int socket, const std::vector<char>& bytes, int fd) {
    ::iovec iov{const_cast<char*>(bytes.data()), bytes.size()};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
    ASSERT_EQ(::sendmsg(socket, &msg, 0), static_cast<ssize_t>(bytes.size()));
}

constexpr std::size_t large = 2 << 20;  // sent through a memfd attachment

}  // namespace

TEST(connection_frames, a_large_message_travels_in_a_memfd_its_sender_cannot_change) {
    auto [a, b] = mp::pipe();
    a.send(std::string(large, 'q'));
    auto [bytes, fds] = raw_frame_with_fds(b.fileno());
    ASSERT_EQ(fds.size(), 1u);
    int memfd = fds[0];
    int seals = ::fcntl(memfd, F_GET_SEALS);
    EXPECT_EQ(seals & (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL),
              F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
    EXPECT_EQ(::ftruncate(memfd, 0), -1);  // what a hostile sender would do mid-decode
    EXPECT_EQ(errno, EPERM);
    ::close(memfd);
}

// An attachment its sender could still shrink (SIGBUS in the receiver) or
// rewrite is refused, and the connection goes on. (Before the fix it was
// mapped and decoded: the recv returned the string.)
TEST(connection_frames, an_unsealed_attachment_is_refused_and_the_connection_goes_on) {
    auto [a, b] = mp::pipe();
    // A genuine frame's header and type name; its memfd is replaced below.
    std::vector<char> head;
    {
        auto [c, d] = mp::pipe();
        c.send(std::string(large, 'q'));
        auto [bytes, fds] = raw_frame_with_fds(d.fileno());
        for (int fd : fds) ::close(fd);
        head = bytes;
    }
    std::uint64_t body_size = 0;
    std::memcpy(&body_size, head.data() + 8, 8);
    ASSERT_EQ(body_size, 8 + large);
    std::string body(8 + large, 'u');
    std::uint64_t length = large;
    std::memcpy(body.data(), &length, 8);

    for (int seals : {-1, 0, F_SEAL_SHRINK | F_SEAL_GROW, F_SEAL_WRITE}) {
        int memfd = ::memfd_create("test-unsealed", MFD_CLOEXEC | (seals >= 0 ? MFD_ALLOW_SEALING : 0));
        ASSERT_GE(memfd, 0);
        ASSERT_EQ(::write(memfd, body.data(), body.size()), static_cast<ssize_t>(body.size()));
        if (seals > 0) {
            ASSERT_EQ(::fcntl(memfd, F_ADD_SEALS, seals), 0);
        }
        send_with_fd(a.fileno(), head, memfd);
        ::close(memfd);
        EXPECT_THROW((void)b.recv<std::string>(5s), mp::serialization_error) << "seals " << seals;
        a.send(std::string("next"));
        EXPECT_EQ(b.recv<std::string>(5s), "next");
    }
    // and a genuine large message still arrives
    a.send(std::string(large, 'g'));
    EXPECT_EQ(b.recv<std::string>(5s), std::string(large, 'g'));
}
