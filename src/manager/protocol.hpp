// manager/protocol.hpp — requests and replies of the manager protocol, after
// the handshake (manager/auth.hpp). Each is one frame (manager/channel.hpp)
// whose body is written with mp's binary archive:
//
//   request  u8 op, then by op:
//     call      u64 object, string method, u64 args_tag, u64 result_tag, args
//     create    string type, u64 expect_tag, u64 args_tag, args
//     incref    u64 object, u64 proxy kind (checked against the object's)
//     decref    u64 object
//     shutdown                         ping
//   reply    u8 status, then: ok → the result (create: u64 id, exposed names);
//                               error → an exception_record
//
// `args` is one serialized std::tuple of the arguments; args_tag is
// type_tag of that tuple, checked by the server against the method's before
// it reads a byte of them (for every type, the built-in ones included).
// result_tag 0 means "any result; the caller discards it".
#pragma once

#include <cstdint>

namespace mp::detail::mgr {

enum class op : std::uint8_t { call = 1, create = 2, incref = 3, decref = 4, shutdown = 5, ping = 6 };
enum class status : std::uint8_t { ok = 0, error = 1 };

}  // namespace mp::detail::mgr
