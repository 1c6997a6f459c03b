#include "manager/auth.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <array>
#include <cstring>
#include <string_view>

#include "sys/net.hpp"

namespace mp::detail::mgr {
namespace {

constexpr std::string_view challenge_prefix = "#CHALLENGE#";
constexpr std::string_view welcome = "#WELCOME#";
constexpr std::string_view failure = "#FAILURE#";
constexpr std::size_t nonce_size = 32;
constexpr std::size_t digest_size = 32;
constexpr std::size_t max_handshake_frame = 64;

using digest = std::array<unsigned char, digest_size>;

digest hmac(const std::string& key, std::string_view label, std::span<const std::byte> message) {
    std::string data(label);
    data.append(reinterpret_cast<const char*>(message.data()), message.size());
    digest out{};
    unsigned int len = 0;
    static const unsigned char empty = 0;
    const void* k = key.empty() ? static_cast<const void*>(&empty) : key.data();
    if (!HMAC(EVP_sha256(), k, static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
              data.size(), out.data(), &len) ||
        len != digest_size)
        throw error("mp: manager authentication: HMAC-SHA256 failed in OpenSSL");
    return out;
}

void send_bytes(channel& ch, std::span<const std::byte> bytes) {
    output_archive ar;
    channel::begin(ar);
    ar.saveBinary(bytes.data(), bytes.size());
    ch.send(ar);
}

void send_text(channel& ch, std::string_view text) {
    send_bytes(ch, std::as_bytes(std::span<const char>(text.data(), text.size())));
}

std::vector<std::byte> receive(channel& ch, clock::time_point deadline) {
    auto body = ch.receive(max_handshake_frame, deadline, clock::duration::zero());
    return {body.begin(), body.end()};
}

bool equals(std::span<const std::byte> a, std::string_view text) {
    return a.size() == text.size() && std::memcmp(a.data(), text.data(), a.size()) == 0;
}

std::vector<std::byte> make_challenge() {
    std::vector<std::byte> msg(challenge_prefix.size() + nonce_size);
    std::memcpy(msg.data(), challenge_prefix.data(), challenge_prefix.size());
    sys::random_bytes(msg.data() + challenge_prefix.size(), nonce_size);
    return msg;
}

/// Sends a challenge and checks the answer was made with `key` under `label`.
bool deliver_challenge(channel& ch, const std::string& key, std::string_view label, clock::time_point deadline) {
    auto challenge = make_challenge();
    send_bytes(ch, challenge);
    auto answer = receive(ch, deadline);
    auto expected = hmac(key, label, challenge);
    return answer.size() == digest_size && CRYPTO_memcmp(answer.data(), expected.data(), digest_size) == 0;
}

/// Answers a challenge with `key` under `label`.
void answer_challenge(channel& ch, const std::string& key, std::string_view label, clock::time_point deadline) {
    auto challenge = receive(ch, deadline);
    if (challenge.size() != challenge_prefix.size() + nonce_size ||
        std::memcmp(challenge.data(), challenge_prefix.data(), challenge_prefix.size()) != 0)
        throw authentication_error("mp: manager authentication: the peer sent no valid challenge "
                                   "(it does not speak mp's manager protocol)");
    auto d = hmac(key, label, challenge);
    send_bytes(ch, std::as_bytes(std::span(d)));
}

}  // namespace

server_handshake::server_handshake(const std::string& key) : key_(key), challenge_(make_challenge()) {
    queue_frame(challenge_);
}

void server_handshake::queue_frame(std::span<const std::byte> body) {
    std::uint32_t length = static_cast<std::uint32_t>(body.size());
    std::byte header[header_size];
    std::memcpy(header, &frame_magic, 4);
    std::memcpy(header + 4, &length, 4);
    out_.insert(out_.end(), header, header + header_size);
    out_.insert(out_.end(), body.begin(), body.end());
}

server_handshake::state server_handshake::received(std::size_t n) {
    if (state_ != state::running) return state_;
    have_ += n;
    if (have_ < want_) return state_;
    if (want_ == header_size) {
        std::uint32_t magic, length;
        std::memcpy(&magic, frame_.data(), 4);
        std::memcpy(&length, frame_.data() + 4, 4);
        if (magic != frame_magic || length > max_handshake_frame) return state_ = state::failed;
        want_ = header_size + length;
        if (length > 0) return state_;
    }
    std::span<const std::byte> body(frame_.data() + header_size, want_ - header_size);
    have_ = 0;
    want_ = header_size;
    frame_complete(body);
    return state_;
}

void server_handshake::frame_complete(std::span<const std::byte> body) {
    switch (stage_) {
        case stage::client_answer: {
            auto expected = hmac(key_, "client", challenge_);
            if (body.size() != digest_size || CRYPTO_memcmp(body.data(), expected.data(), digest_size) != 0) {
                queue_frame(std::as_bytes(std::span(failure.data(), failure.size())));
                state_ = state::failed;
                return;
            }
            queue_frame(std::as_bytes(std::span(welcome.data(), welcome.size())));
            stage_ = stage::client_challenge;
            return;
        }
        case stage::client_challenge: {
            if (body.size() != challenge_prefix.size() + nonce_size ||
                std::memcmp(body.data(), challenge_prefix.data(), challenge_prefix.size()) != 0) {
                state_ = state::failed;
                return;
            }
            auto d = hmac(key_, "server", body);
            queue_frame(std::as_bytes(std::span(d)));
            stage_ = stage::client_verdict;
            return;
        }
        case stage::client_verdict: state_ = equals(body, welcome) ? state::done : state::failed; return;
    }
}

void authenticate_to_server(channel& ch, const std::string& key, clock::time_point deadline) {
    answer_challenge(ch, key, "client", deadline);
    auto verdict = receive(ch, deadline);
    if (!equals(verdict, welcome))
        throw authentication_error("mp: manager authentication failed: the server rejected this process's authkey; "
                                   "connect with the authkey the server was started with");
    if (!deliver_challenge(ch, key, "server", deadline)) {
        try {
            send_text(ch, failure);
        } catch (const error&) {
        }
        throw authentication_error("mp: manager authentication failed: the server answered the challenge with "
                                   "another authkey (is something else listening at this address?)");
    }
    send_text(ch, welcome);
}

}  // namespace mp::detail::mgr
