// fuzz_manager_handshake — both sides of the manager handshake
// (src/manager/auth.cpp) facing a peer that sends the fuzz bytes.
//
// Entry points: mgr::server_handshake (the server's side, the state machine
// the serve loop drives; here fed the fuzz bytes as they would arrive) and
// mgr::authenticate_to_server (a client's side, over one end of a socketpair
// whose other end has written the fuzz bytes and then shut down its writing
// side). Neither may succeed: the server's side must fail or still wait for
// bytes when they run out, the client's side must end with an mp:: error
// (the peer does not hold the key, left, or spoke garbage) within its
// deadline; never crash or hang, and never allocate what a declared length
// asks for (run-fuzz.sh's allocation limit turns a blow-up into a finding).
//
// Input: [u8 side: even = server's side, odd = client's side][peer bytes].
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cstring>

#include "fuzz_support.hpp"
#include "manager/auth.hpp"
#include "manager/channel.hpp"
#include "sys/sys.hpp"

namespace {

namespace mgr = mp::detail::mgr;
const std::string key = "mp-fuzz-authkey";

}  // namespace

namespace {

// The server's side: the fuzz bytes arrive in the pieces the handshake asks
// for; what it would send back is dropped.
void server_side(const std::uint8_t* data, std::size_t size) {
    mgr::server_handshake hs(key);
    auto state = hs.current();
    while (state == mgr::server_handshake::state::running && size > 0 && hs.read_size() > 0) {
        hs.output_sent();
        std::size_t n = std::min(size, hs.read_size());
        std::memcpy(hs.read_position(), data, n);
        data += n;
        size -= n;
        state = hs.received(n);
    }
    if (state == mgr::server_handshake::state::done)
        mp_fuzz::fail("a handshake succeeded with a peer that cannot know the key's answer to a fresh challenge");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    if (data[0] % 2 == 0) {
        server_side(data + 1, size - 1);
        return 0;
    }
    auto [ours, peer] = mp::sys::socket_pair();
    if (size > 1) {
        ::iovec iov{const_cast<std::uint8_t*>(data + 1), size - 1};
        mp::sys::send_all(peer.get(), std::span<const ::iovec>(&iov, 1));
    }
    ::shutdown(peer.get(), SHUT_WR);  // the peer says no more; it still reads what we send
    mgr::channel ch(std::move(ours));
    auto deadline = mgr::clock::now() + std::chrono::seconds(2);
    try {
        mgr::authenticate_to_server(ch, key, deadline);
    } catch (const mp::error&) {
        return 0;  // refused: what a peer without the key must get
    }
    mp_fuzz::fail("a handshake succeeded with a peer that cannot know the key's answer to a fresh challenge");
}

namespace mp_fuzz {

std::vector<std::byte> frame(std::string_view text) {
    mp::detail::output_archive ar;
    mgr::channel::begin(ar);
    ar.saveBinary(text.data(), text.size());
    // channel::send writes the header; do the same here without a socket.
    auto bytes = mp_fuzz::flatten(ar);
    std::uint32_t magic = mgr::frame_magic, length = static_cast<std::uint32_t>(text.size());
    std::memcpy(bytes.data(), &magic, 4);
    std::memcpy(bytes.data() + 4, &length, 4);
    return bytes;
}

void write_seeds() {
    auto seed = [](const char* name, std::uint8_t side, std::initializer_list<std::string> frames) {
        std::vector<std::byte> s{static_cast<std::byte>(side)};
        for (auto& f : frames) {
            auto b = frame(f);
            s.insert(s.end(), b.begin(), b.end());
        }
        mp_fuzz::write_seed(name, s);
    };
    std::string digest(32, 'd');
    std::string challenge = "#CHALLENGE#" + std::string(32, 'c');
    seed("server-side-wrong-digest", 0, {digest});
    seed("server-side-welcome", 0, {digest, "#WELCOME#", challenge});
    seed("client-side", 1, {challenge, "#WELCOME#", digest});
    seed("client-side-failure", 1, {challenge, "#FAILURE#"});
    seed("empty", 0, {});
}

}  // namespace mp_fuzz
