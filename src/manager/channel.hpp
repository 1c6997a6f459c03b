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
#include "sys/sys.hpp"

namespace mp::detail::mgr {

using clock = std::chrono::steady_clock;

inline constexpr std::uint32_t frame_magic = 0x676d706d;  // "mpmg"
inline constexpr std::size_t header_size = 8;

/// Spinning before sleeping: waking a sleeping reader costs more than a
/// whole call on an idle machine (a proxy call took 45 µs where two spinning
/// peers answer in a few), but a reader that spins on a machine with no idle
/// core delays the very peer it waits for (a 12 µs call became 40 µs) and
/// costs throughput with many clients. So a reader spins only as its
/// sys::spin_history allows: a wait that spins in vain turns spinning off for
/// a growing number of waits, one that succeeds turns it back on.
/// Thrown when a frame header is bad (magic, length over the limit): the
/// stream cannot be resynchronised.
class frame_error : public serialization_error {
public:
    using serialization_error::serialization_error;
};

class channel {
public:
    /// `initial_buffer`: the receive buffer's starting size; it grows to the
    /// largest frame received (at most header + the receiver's limit) and
    /// shrinks back after it.
    explicit channel(unique_fd fd, std::size_t initial_buffer = 64 * 1024);

    /// Starts a frame: `ar` gets the header's place; write the body after it.
    static void begin(output_archive& ar);
    /// Sends the frame `ar` (begun with begin()). Throws eof_error if the
    /// peer is gone.
    void send(output_archive& ar);
    /// send() on a non-blocking socket, waiting at most until `deadline` for
    /// the peer to make room (timeout_error past it).
    void send_until(output_archive& ar, clock::time_point deadline);
    /// Sends what fits without waiting; false if the frame did not fit whole
    /// (the stream is then unusable: close it). For a last word before closing.
    bool send_nowait(output_archive& ar);

    /// The next frame's body, valid until the next receive(). Throws
    /// eof_error (peer closed), frame_error (bad header, length > max_body),
    /// timeout_error (deadline passed; the stream is then unusable mid-frame).
    /// Spins up to `spin` before sleeping, if `history` (when given) says
    /// spinning pays off here.
    std::span<const std::byte> receive(std::size_t max_body, std::optional<clock::time_point> deadline,
                                       clock::duration spin, sys::spin_history* history = nullptr);

    /// Reads what has arrived, without waiting: the next frame's body if it
    /// is complete now (valid until the next receive), else nullopt (the
    /// part that came is kept). Throws as receive() does.
    std::optional<std::span<const std::byte>> poll_frame(std::size_t max_body);
    /// poll_frame() without reading the socket: a frame already buffered
    /// (one the peer sent right behind the last).
    std::optional<std::span<const std::byte>> buffered_frame(std::size_t max_body);
    /// One blocking read of what arrives next (the socket's receive timeout
    /// bounds the wait, see sys::set_receive_timeout): false if nothing came
    /// in time. Throws as receive() does. Then try buffered_frame().
    bool wait_for_bytes(std::size_t max_body);
    /// Reads without sleeping for at most `budget`, if `history` says
    /// spinning pays off here: true if bytes arrived (then try
    /// buffered_frame()), false if the caller should block. Throws as
    /// receive() does.
    bool spin_for_bytes(std::size_t max_body, clock::duration budget, sys::spin_history& history);

    [[nodiscard]] int fd() const noexcept { return fd_.get(); }
    /// Wakes a thread blocked on this socket (it then sees end of file).
    void shutdown() noexcept;

private:
    void discard_consumed();
    std::optional<std::span<const std::byte>> frame_in_buffer(std::size_t max_body);
    /// One read into the buffer (room made for the frame being received);
    /// false if nothing was there (or came before the receive timeout).
    bool read_once(std::size_t max_body, bool wait);
    /// The length of the frame whose header is buffered; throws frame_error.
    std::uint32_t checked_length(std::size_t max_body) const;
    void seal(output_archive& ar) const;
    bool fill(std::size_t n, std::optional<clock::time_point> deadline, clock::duration spin,
              sys::spin_history* history, bool mid_frame);

    unique_fd fd_;
    std::vector<std::byte> buf_;
    std::size_t initial_buffer_;
    std::size_t begin_ = 0, end_ = 0, consumed_ = 0;
};

}  // namespace mp::detail::mgr
