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

#include <string>

#include "manager/channel.hpp"

namespace mp::detail::mgr {

/// Throws mp::authentication_error (after telling the client) for a wrong
/// key, timeout_error past `deadline`, eof_error / frame_error for a peer
/// that leaves or speaks garbage.
void authenticate_client(channel& ch, const std::string& key, clock::time_point deadline);

/// The client's side. Throws mp::authentication_error if either side's key
/// is wrong.
void authenticate_to_server(channel& ch, const std::string& key, clock::time_point deadline);

}  // namespace mp::detail::mgr
