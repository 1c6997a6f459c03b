// wire/frame_header.hpp — the header of every message mp::connection sends
// (src/connection.cpp), in its own header so that the pipe frame fuzz target
// (tests/fuzz/pipe_frame_fuzz.cpp) writes its seeds with the very layout the
// reader parses.
//
// Frame: this header, then `name_size` bytes of the type's name, then the
// body (`body_size` bytes; none inline when flag_attached says it came in a
// memfd sent with the frame's first byte, with the frame's other fds).
#pragma once

#include <cstdint>

namespace mp::detail {

inline constexpr std::uint32_t frame_magic = 0x6e63706d;  // "mpcn"
inline constexpr std::uint32_t flag_attached = 1;         // the body is in a memfd sent with the frame

struct frame_header {
    std::uint32_t magic;
    std::uint32_t flags;
    std::uint64_t body_size;
    std::uint64_t type_tag;
    std::uint16_t name_size;
    std::uint16_t fd_count;
    std::uint32_t reserved;
};
static_assert(sizeof(frame_header) == 32);

}  // namespace mp::detail
