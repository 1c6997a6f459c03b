#include "manager/channel.hpp"

#include <sys/uio.h>

#include <cstring>

#include "sys/net.hpp"
#include "sys/sys.hpp"

namespace mp::detail::mgr {

channel::channel(unique_fd fd, std::size_t initial_buffer)
    : fd_(std::move(fd)), buf_(initial_buffer), initial_buffer_(initial_buffer) {}

void channel::begin(output_archive& ar) {
    const std::byte zeros[header_size] = {};
    ar.saveBinary(zeros, header_size);
}

void channel::seal(output_archive& ar) const {
    auto b = ar.buffer();
    std::uint64_t body = ar.size() - header_size;
    if (body > 0xffffffffu)
        throw value_error("mp: a manager message of " + std::to_string(body) +
                          " bytes is larger than the protocol's 4 GiB limit; send less per call");
    auto length = static_cast<std::uint32_t>(body);
    std::memcpy(b.data(), &frame_magic, 4);
    std::memcpy(b.data() + 4, &length, 4);
}

namespace {
std::vector<::iovec> pieces(output_archive& ar) {
    std::vector<::iovec> iov;
    ar.for_each_piece([&](const std::byte* p, std::size_t n) { iov.push_back({const_cast<std::byte*>(p), n}); });
    return iov;
}
}  // namespace

void channel::send(output_archive& ar) {
    seal(ar);
    sys::send_all(fd_.get(), pieces(ar));
}

void channel::send_until(output_archive& ar, clock::time_point deadline) {
    seal(ar);
    sys::send_all_until(fd_.get(), pieces(ar), deadline);
}

bool channel::send_nowait(output_archive& ar) {
    seal(ar);
    std::size_t total = 0, sent = 0;
    for (auto& piece : pieces(ar)) {
        total += piece.iov_len;
        std::size_t n = sys::send_nowait(fd_.get(), piece.iov_base, piece.iov_len);
        sent += n;
        if (n < piece.iov_len) break;
    }
    return sent == total;
}

bool channel::fill(std::size_t n, std::optional<clock::time_point> deadline, clock::duration spin,
                   sys::spin_history* history, bool mid_frame) {
    if (end_ - begin_ >= n) return true;
    if (begin_ > 0) {
        std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
        end_ -= begin_;
        begin_ = 0;
    }
    if (buf_.size() < n) buf_.resize(n);
    bool spinning = spin > clock::duration::zero() && (!history || history->should_spin());
    sys::spinner spinner(std::chrono::duration_cast<std::chrono::microseconds>(spin));  // reported to `history` here
    bool spun = false;
    while (end_ < n) {
        // Not spinning and no deadline: one blocking recv, the fewest system
        // calls. A probe is a plain recv (lighter than recvmsg, which also
        // copies a message header in and out).
        bool block = !spinning && !deadline;
        long r = block ? sys::recv_some(fd_.get(), buf_.data() + end_, buf_.size() - end_, nullptr, false)
                       : sys::recv_nowait(fd_.get(), buf_.data() + end_, buf_.size() - end_);
        if (r > 0) {
            end_ += static_cast<std::size_t>(r);
            if (spinning && spun && history) history->spun_with_success();
            continue;
        }
        if (r == 0)
            throw eof_error(mid_frame || end_ > begin_
                                ? "mp: manager connection closed in the middle of a message (the peer probably died)"
                                : "mp: manager connection closed by the peer");
        if (spinning && (!deadline || clock::now() < *deadline)) {
            if (spinner.step()) {
                spun = true;
                continue;
            }
            spinning = false;
            if (history) history->spun_in_vain();
            if (!deadline) continue;  // now one blocking recv
        }
        if (!sys::wait_readable(fd_.get(), deadline)) return false;
    }
    return true;
}

void channel::discard_consumed() {
    begin_ += consumed_;
    consumed_ = 0;
    if (begin_ == end_) {
        begin_ = end_ = 0;
        // Give back the memory of an unusually large message.
        if (buf_.size() > 4 * initial_buffer_) {
            buf_.resize(initial_buffer_);
            buf_.shrink_to_fit();
        }
    }
}

std::span<const std::byte> channel::receive(std::size_t max_body, std::optional<clock::time_point> deadline,
                                            clock::duration spin, sys::spin_history* history) {
    discard_consumed();
    if (!fill(header_size, deadline, spin, history, false))
        throw timeout_error("mp: manager connection: no message arrived in time");
    std::uint32_t length = checked_length(max_body);
    if (!fill(header_size + length, deadline, spin, history, true))
        throw timeout_error("mp: manager connection: a message arrived only in part before the deadline");
    consumed_ = header_size + length;
    return {buf_.data() + begin_ + header_size, length};
}

std::uint32_t channel::checked_length(std::size_t max_body) const {
    std::uint32_t magic, length;
    std::memcpy(&magic, buf_.data() + begin_, 4);
    std::memcpy(&length, buf_.data() + begin_ + 4, 4);
    if (magic != frame_magic)
        throw frame_error("mp: manager connection: bad frame header (the peer does not speak mp's manager protocol)");
    if (length > max_body)
        throw frame_error("mp: manager connection: a message of " + std::to_string(length) +
                          " bytes exceeds the limit of " + std::to_string(max_body) +
                          " bytes (manager_options::max_message_size)");
    return length;
}

std::optional<std::span<const std::byte>> channel::frame_in_buffer(std::size_t max_body) {
    std::size_t have = end_ - begin_;
    if (have < header_size) return std::nullopt;
    std::size_t need = header_size + checked_length(max_body);
    if (have < need) return std::nullopt;
    consumed_ = need;
    return std::span<const std::byte>(buf_.data() + begin_ + header_size, need - header_size);
}

bool channel::read_once(std::size_t max_body, bool wait) {
    std::size_t have = end_ - begin_;
    std::size_t need = have >= header_size ? header_size + checked_length(max_body) : header_size;
    if (buf_.size() - begin_ < need || end_ == buf_.size()) {
        std::memmove(buf_.data(), buf_.data() + begin_, have);
        begin_ = 0;
        end_ = have;
        if (buf_.size() < need) buf_.resize(need);
        if (end_ == buf_.size()) buf_.resize(buf_.size() + initial_buffer_);  // a read of 0 bytes would look like EOF
    }
    long r = wait ? sys::recv_some(fd_.get(), buf_.data() + end_, buf_.size() - end_, nullptr, false)
                  : sys::recv_nowait(fd_.get(), buf_.data() + end_, buf_.size() - end_);
    if (r < 0) return false;
    if (r == 0)
        throw eof_error(have > 0 ? "mp: manager connection closed in the middle of a message"
                                 : "mp: manager connection closed by the peer");
    end_ += static_cast<std::size_t>(r);
    return true;
}

std::optional<std::span<const std::byte>> channel::poll_frame(std::size_t max_body) {
    discard_consumed();
    for (;;) {
        if (auto frame = frame_in_buffer(max_body)) return frame;
        if (!read_once(max_body, false)) return std::nullopt;
    }
}

std::optional<std::span<const std::byte>> channel::buffered_frame(std::size_t max_body) {
    discard_consumed();
    return frame_in_buffer(max_body);
}

bool channel::wait_for_bytes(std::size_t max_body) { return read_once(max_body, true); }

bool channel::spin_for_bytes(std::size_t max_body, clock::duration budget, sys::spin_history& history) {
    if (!history.should_spin()) return false;
    sys::spinner spinner(std::chrono::duration_cast<std::chrono::microseconds>(budget));
    for (bool spun = false;; spun = true) {
        if (read_once(max_body, false)) {
            if (spun) history.spun_with_success();
            return true;
        }
        if (!spinner.step()) break;
    }
    history.spun_in_vain();
    return false;
}

void channel::shutdown() noexcept { sys::shutdown_socket(fd_.get()); }

}  // namespace mp::detail::mgr
