// manager/auth.hpp — the HMAC-SHA256 challenge both ends of every manager
// connection pass before any request is read (Python's deliver_challenge /
// answer_challenge, in both directions).
//
//   server → client  "#CHALLENGE#" + 32 random bytes
//   client → server  HMAC(key, "client" + that message)
//   server → client  "#WELCOME#" (or "#FAILURE#", then the server closes)
//   client → server  "#CHALLENGE#" + 32 random bytes
//   server → client  HMAC(key, "server" + that message)
//   client → server  "#WELCOME#" (or "#FAILURE#", then the client closes)
//
// The client proves itself first, so the server never answers a challenge
// for someone who does not hold the key; the "client"/"server" labels keep
// an answer from one direction from being replayed in the other. Digests are
// compared in constant time. Every frame of the handshake is at most 64 bytes.
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <vector>

#include "manager/channel.hpp"

namespace mp::detail::mgr {

/// The server's side of the handshake as a state machine that does no I/O,
/// so that one event loop can run it for every new connection at once
/// without a thread each. It holds at most one handshake frame (72 bytes):
/// a peer can make it allocate nothing more.
///
///   server_handshake hs(key);
///   send(hs.output()); hs.output_sent();     // the challenge
///   while reading: recv(fd, hs.read_position(), hs.read_size()) → hs.received(n)
///   after each received(): send hs.output() if any; done() / failed()
///
/// It never asks for more bytes than the current frame has left, so bytes a
/// client sends right after the handshake (its first request) stay in the
/// socket for the request reader.
class server_handshake {
public:
    enum class state { running, done, failed };

    explicit server_handshake(const std::string& key);

    /// What to send now (may be empty); call output_sent() once it is sent.
    [[nodiscard]] const std::vector<std::byte>& output() const noexcept { return out_; }
    void output_sent() noexcept { out_.clear(); }

    [[nodiscard]] std::byte* read_position() noexcept { return frame_.data() + have_; }
    [[nodiscard]] std::size_t read_size() const noexcept { return want_ - have_; }
    /// Takes `n` bytes read at read_position(). Returns the new state: failed
    /// for garbage, an oversized frame, a wrong key (output() then holds
    /// "#FAILURE#" when the client should be told).
    state received(std::size_t n);
    [[nodiscard]] state current() const noexcept { return state_; }

private:
    enum class stage { client_answer, client_challenge, client_verdict };
    void frame_complete(std::span<const std::byte> body);
    void queue_frame(std::span<const std::byte> body);

    const std::string& key_;
    std::vector<std::byte> challenge_;
    std::vector<std::byte> out_;
    std::array<std::byte, 72> frame_{};
    std::size_t have_ = 0, want_ = header_size;
    stage stage_ = stage::client_answer;
    state state_ = state::running;
};

/// The client's side. Throws mp::authentication_error if either side's key
/// is wrong.
void authenticate_to_server(channel& ch, const std::string& key, clock::time_point deadline);

}  // namespace mp::detail::mgr
