// mp/connection.hpp — pipes between processes: Python's multiprocessing.Pipe.
//
//     auto [a, b] = mp::pipe();        // duplex: both ends send and receive
//     auto [r, w] = mp::pipe(false);   // r receives, w sends
//     a.send(std::vector<int>{1, 2});  b.recv<std::vector<int>>();
//     a.send_bytes(bytes);             b.recv_bytes();
//     b.poll(100ms);                   // data waiting?
//
// Promises:
// - Every message carries its type: recv<T>() of a message sent as another
//   type throws mp::serialization_error naming both types and leaves the
//   message in place, so a recv of the right type still gets it.
// - A corrupt or truncated message is an mp::serialization_error, a peer that
//   closed or died is an mp::eof_error; never a crash or a hang.
// - Large contiguous data (vectors of numbers, strings, byte buffers of a
//   megabyte or more) travels through shared memory, not through the socket.
// - A connection passed as a process argument works under every start method;
//   copies of a connection share the same end.
// - send() and recv() may be called from several threads at once (each call
//   is atomic with respect to the others of its kind).
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mp/detail/archive.hpp"
#include "mp/detail/type_name.hpp"
#include "mp/serialize.hpp"
#include "mp/timeout.hpp"

namespace mp {

namespace detail {

struct bytes_message {};  // the tag of send_bytes() messages

class connection_core {
public:
    connection_core(unique_fd fd, bool readable, bool writable);
    ~connection_core();

    void send_message(std::uint64_t tag, std::string_view type_name, const output_archive& body);
    /// Reads the next message (blocking until `deadline`), checks it is of
    /// `tag`, and hands its body to `read`. A mismatch keeps the message.
    void recv_message(std::uint64_t tag, std::string_view type_name,
                      std::optional<std::chrono::steady_clock::time_point> deadline,
                      void (*read)(void* context, input_archive& ar), void* context);
    std::vector<std::byte> recv_raw(std::optional<std::chrono::steady_clock::time_point> deadline);
    bool poll(std::optional<std::chrono::steady_clock::time_point> deadline);
    [[nodiscard]] bool has_buffered() const;
    void close();
    [[nodiscard]] int fd() const;
    [[nodiscard]] bool readable() const noexcept { return readable_; }
    [[nodiscard]] bool writable() const noexcept { return writable_; }
    [[nodiscard]] bool closed() const;

    struct state;

private:
    std::unique_ptr<state> s_;
    bool readable_, writable_;
};

}  // namespace detail

class connection {
public:
    using duration = timeout_duration;

    /// Wraps one end of a connected AF_UNIX socket. Normally made by mp::pipe().
    connection(detail::unique_fd fd, bool readable = true, bool writable = true);

    /// Sends `value`. Throws mp::eof_error if the other end is gone, mp::closed_error after close().
    template <class T>
    void send(const T& value) {
        static_assert(detail::require_transferable<T>());
        detail::output_archive ar;
        detail::save_value(ar, value);
        core_->send_message(detail::type_tag<T>(), detail::type_name<T>(), ar);
    }

    /// Receives the next message as a T. Blocks until one arrives.
    /// Throws mp::serialization_error if it was sent as another type (the
    /// message stays), mp::eof_error if the other end closed.
    template <class T>
    [[nodiscard]] T recv() {
        return recv_until<T>(std::nullopt);
    }
    /// As recv(), but throws mp::timeout_error after `timeout`. The timeout
    /// holds for the whole message: when only part of one has arrived, the
    /// part is kept in this connection and the next recv resumes it.
    template <class T>
    [[nodiscard]] T recv(duration timeout) {
        return recv_until<T>(std::chrono::steady_clock::now() + timeout);
    }

    /// Sends raw bytes (Python's send_bytes).
    void send_bytes(std::span<const std::byte> bytes);
    void send_bytes(std::string_view bytes);
    /// Receives the next message's raw bytes, whatever its type.
    [[nodiscard]] std::vector<std::byte> recv_bytes();

    /// Whether data is waiting; waits up to `timeout` (zero: just look).
    [[nodiscard]] bool poll(duration timeout = duration::zero());
    /// Waits with no limit until data is waiting.
    [[nodiscard]] bool poll_forever();

    void close();
    [[nodiscard]] bool closed() const;
    [[nodiscard]] bool readable() const noexcept { return core_->readable(); }
    [[nodiscard]] bool writable() const noexcept { return core_->writable(); }
    [[nodiscard]] int fileno() const;
    /// True if a message (or part of one) is already buffered in this process.
    [[nodiscard]] bool has_buffered() const { return core_->has_buffered(); }

    template <class Archive>
    void save(Archive& ar) const {
        static_assert(std::is_same_v<Archive, detail::output_archive>,
                      "mp::connection can only be sent with mp's own archives");
        ar(ar.add_fd(fileno()), readable(), writable());
    }
    template <class Archive>
    void load(Archive& ar) {
        static_assert(std::is_same_v<Archive, detail::input_archive>,
                      "mp::connection can only be received with mp's own archives");
        std::uint32_t index = 0;
        bool r = false, w = false;
        ar(index, r, w);
        core_ = std::make_shared<detail::connection_core>(ar.take_fd(index), r, w);
    }

    /// A connection to nothing yet: what a received connection is loaded into.
    connection() = default;

private:
    template <class T>
    T recv_until(std::optional<std::chrono::steady_clock::time_point> deadline) {
        static_assert(detail::require_transferable<T>());
        std::optional<T> out;
        core_->recv_message(
            detail::type_tag<T>(), detail::type_name<T>(), deadline,
            [](void* context, detail::input_archive& ar) {
                static_cast<std::optional<T>*>(context)->emplace(detail::load_value<T>(ar));
            },
            &out);
        return std::move(*out);
    }

    std::shared_ptr<detail::connection_core> core_;
};

/// A connected pair. duplex (default): both ends send and receive; otherwise
/// the first end only receives and the second only sends.
[[nodiscard]] std::pair<connection, connection> pipe(bool duplex = true);

/// Waits until at least one connection has data (or its peer closed), or the
/// timeout passes; returns the ready ones (possibly none). Python's
/// multiprocessing.connection.wait.
[[nodiscard]] std::vector<connection> wait(const std::vector<connection>& connections,
                                           std::optional<timeout_duration> timeout = std::nullopt);
/// The same for raw fds such as process sentinels: returns the ready fds.
[[nodiscard]] std::vector<int> wait(const std::vector<int>& fds,
                                    std::optional<timeout_duration> timeout = std::nullopt);

}  // namespace mp
