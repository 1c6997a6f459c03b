// manager/channel.hpp — length-prefixed frames over one stream socket (Unix
// or TCP), the transport of the manager protocol.
//
// Why not connection_core: a manager socket may face another program or
// another machine, so frames carry no file descriptors and no shared-memory
// attachments (a peer must not be able to make the server map a memfd of its
// choosing), and every length is bounded by the receiver's own limit before
// anything is allocated. The archives (mp/detail/archive.hpp) are shared.
//
// Frame: u32 magic "mpmg", u32 body length, body. A bad magic or an
// oversized length leaves the stream unusable: the caller closes it.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>

#include "mp/detail/archive.hpp"
#include "mp/detail/unique_fd.hpp"

namespace mp::detail::mgr {

using clock = std::chrono::steady_clock;

inline constexpr std::uint32_t frame_magic = 0x676d706d;  // "mpmg"
inline constexpr std::size_t header_size = 8;

/// Readers of a manager connection do not spin before sleeping (unlike
/// mp::connection): measured on a 2-core machine, a blocking recv woke in a
/// few microseconds, while a spinning reader on a machine with no idle core
/// delayed the very peer it waited for (a 12 µs call became 40 µs) and cost
/// throughput with many clients. receive() accepts a spin budget for callers
/// that know a core is free.
/// Thrown when a frame header is bad (magic, length over the limit): the
/// stream cannot be resynchronised.
class frame_error : public serialization_error {
public:
    using serialization_error::serialization_error;
};

class channel {
public:
    explicit channel(unique_fd fd);

    /// Starts a frame: `ar` gets the header's place; write the body after it.
    static void begin(output_archive& ar);
    /// Sends the frame `ar` (begun with begin()). Throws eof_error if the
    /// peer is gone.
    void send(output_archive& ar);

    /// The next frame's body, valid until the next receive(). Throws
    /// eof_error (peer closed), frame_error (bad header, length > max_body),
    /// timeout_error (deadline passed; the stream is then unusable mid-frame).
    /// Spins up to `spin` before sleeping.
    std::span<const std::byte> receive(std::size_t max_body, std::optional<clock::time_point> deadline,
                                       clock::duration spin);

    [[nodiscard]] int fd() const noexcept { return fd_.get(); }
    /// Wakes a thread blocked on this socket (it then sees end of file).
    void shutdown() noexcept;

private:
    void discard_consumed();
    bool fill(std::size_t n, std::optional<clock::time_point> deadline, clock::duration spin, bool mid_frame);

    unique_fd fd_;
    std::vector<std::byte> buf_;
    std::size_t begin_ = 0, end_ = 0, consumed_ = 0;
};

}  // namespace mp::detail::mgr
