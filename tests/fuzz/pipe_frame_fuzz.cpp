// fuzz_pipe_frame — the frame reader of mp::connection (src/connection.cpp)
// over a real socketpair whose other end writes the fuzz bytes.
//
// Input: [u8 flags][if flags & 1: u16 n, then n bytes: the contents of a
// memfd sent with the first byte of the stream][the stream]. The reader
// then receives until the stream ends, as recv<std::string>, recv_bytes or
// recv<std::vector<std::int32_t>> in turn (flags pick the first), polling
// first when flags & 2. Every receive must return a value or throw
// mp::serialization_error (corrupt), mp::eof_error (end of stream) or
// mp::timeout_error; nothing may hang, crash or leak.
//
// Frame layout: src/wire/frame_header.hpp, shared with the reader.
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstring>

#include "fuzz_support.hpp"
#include "mp/connection.hpp"
#include "sys/sys.hpp"
#include "wire/frame_header.hpp"

namespace {

using mp::detail::frame_header;
using mp::detail::unique_fd;

unique_fd memfd_with(std::span<const std::byte> contents) {
    auto fd = mp::sys::memfd("mp-fuzz", contents.size());
    if (!contents.empty()) {
        void* p = mp::sys::map_shared(fd.get(), contents.size());
        std::memcpy(p, contents.data(), contents.size());
        mp::sys::unmap(p, contents.size());
    }
    return fd;
}

enum class outcome { received, refused, ended };

// One receive of the kind `turn` picks.
outcome receive_one(mp::connection& reader, unsigned turn) {
    try {
        switch (turn % 3) {
            case 0: (void)reader.recv<std::string>(std::chrono::milliseconds(100)); break;
            case 1: (void)reader.recv_bytes(); break;
            case 2: (void)reader.recv<std::vector<std::int32_t>>(std::chrono::milliseconds(100)); break;
        }
    } catch (const mp::serialization_error&) {
        // A message of another type stays for the next receive; a corrupt
        // one breaks the connection, which says so on every later receive.
        return outcome::refused;
    } catch (const mp::eof_error&) {
        return outcome::ended;
    }
    return outcome::received;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    std::uint8_t flags = data[0];
    std::size_t at = 1;
    unique_fd attached;
    if (flags & 1) {
        if (size < at + 2) return 0;
        std::size_t n = std::min<std::size_t>(data[at] | (data[at + 1] << 8), size - at - 2);
        at += 2;
        attached = memfd_with(mp_fuzz::as_bytes(data + at, n));
        at += n;
    }
    auto [reader_fd, writer_fd] = mp::sys::socket_pair();
    // The inputs are far smaller than a socket buffer: the whole stream is
    // written before the reader starts, and closing the writer ends it.
    ::iovec iov{const_cast<std::uint8_t*>(data + at), size - at};
    int fds[1] = {attached.get()};
    if (size > at || attached)
        mp::sys::send_all(writer_fd.get(), std::span<const ::iovec>(&iov, size > at ? 1 : 0),
                          std::span<const int>(fds, attached ? 1 : 0));
    writer_fd.reset();
    mp::connection reader(std::move(reader_fd));
    if (flags & 2) (void)reader.poll();
    // A message of another type is taken by one of the next two receives
    // (the kinds rotate and recv_bytes takes any type), so three refusals in
    // a row mean a broken connection: it has shown it stays broken, and more
    // receives would only repeat the same throw.
    int refused_in_a_row = 0;
    for (unsigned turn = flags >> 2, i = 0; i < 32 && refused_in_a_row < 3; ++turn, ++i) {
        auto got = receive_one(reader, turn);
        if (got == outcome::ended) break;
        refused_in_a_row = got == outcome::refused ? refused_in_a_row + 1 : 0;
    }
    return 0;
}

namespace mp_fuzz {

// Everything one mp::connection writes for these messages, as the reader sees it.
std::vector<std::byte> stream_of(void (*send)(mp::connection&)) {
    auto [a, b] = mp::pipe();
    send(a);
    a.close();
    std::vector<std::byte> out(1 << 16);
    std::vector<unique_fd> fds;
    long n = mp::sys::recv_some(b.fileno(), out.data(), out.size(), &fds, true);
    out.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    return out;
}

void write_seeds() {
    auto plain = [](std::initializer_list<std::uint8_t> flags, std::vector<std::byte> stream) {
        return mp_fuzz::prefixed(flags, stream);
    };
    mp_fuzz::write_seed("string", plain({0}, stream_of([](mp::connection& c) { c.send(std::string("hello")); })));
    mp_fuzz::write_seed("bytes", plain({4}, stream_of([](mp::connection& c) { c.send_bytes("raw bytes"); })));
    mp_fuzz::write_seed("vector", plain({8}, stream_of([](mp::connection& c) {
                                              c.send(std::vector<std::int32_t>{1, 2, 3});
                                          })));
    mp_fuzz::write_seed("three", plain({2}, stream_of([](mp::connection& c) {
                                            c.send(std::string("a"));
                                            c.send_bytes("b");
                                            c.send(std::vector<std::int32_t>{7});
                                        })));
    mp_fuzz::write_seed("mismatch", plain({8}, stream_of([](mp::connection& c) { c.send(std::string("x")); })));
    // A body in an attached memfd, as connection.cpp sends bodies of 1 MiB
    // and more (a seed that size would be too large; the reader only checks
    // that the memfd holds body_size bytes).
    auto body = mp_fuzz::encode(std::string("attached body"));
    std::string name(mp::detail::type_name<std::string>());
    frame_header h{mp::detail::frame_magic, mp::detail::flag_attached, body.size(), mp::detail::type_tag<std::string>(),
                   static_cast<std::uint16_t>(name.size()), 1, 0};
    std::vector<std::byte> seed{std::byte{1}, static_cast<std::byte>(body.size() & 0xff),
                                static_cast<std::byte>(body.size() >> 8)};
    seed.insert(seed.end(), body.begin(), body.end());
    auto* hp = reinterpret_cast<const std::byte*>(&h);
    seed.insert(seed.end(), hp, hp + sizeof h);
    for (char ch : name) seed.push_back(static_cast<std::byte>(ch));
    mp_fuzz::write_seed("attached", seed);
}

}  // namespace mp_fuzz
