// Message framing over AF_UNIX stream sockets, with descriptor passing and
// shared-memory attachments for large bodies.
#include "mp/connection.hpp"

#include <sys/uio.h>

#include <cstring>
#include <deque>
#include <mutex>

#include "sys/sys.hpp"
#include "wire/attachment.hpp"
#include "wire/byte_buffer.hpp"
#include "wire/frame_header.hpp"

namespace mp::detail {
namespace {

// Bodies at least this large go through a memfd: one copy in, one copy out,
// instead of squeezing megabytes through the socket buffer in 200 KiB steps.
constexpr std::size_t attach_threshold = 1 << 20;
// Bodies sent through the socket itself are bounded so that a corrupt length
// cannot make the reader allocate without limit.
constexpr std::uint64_t max_inline_body = std::uint64_t{1} << 30;
// A connection's receive buffer is allocated at its first receive, this
// large, and doubled only when the bytes that arrived fill it: a connection
// that only sends, or receives small messages, holds no more than this.
constexpr std::size_t initial_buffer = 4 * 1024;
// Beyond what the frame being read needs, a receive reads ahead into a
// buffer of up to this size (fewer system calls for a burst of messages).
constexpr std::size_t read_ahead = 64 * 1024;
// A frame up to this size (header, name, body) is read whole into the
// buffer; a larger inline body is received into a buffer of its own.
constexpr std::size_t max_buffered_frame = 4 * 1024 * 1024;

// How long a receiver keeps trying before it sleeps: waking a sleeping process
// costs tens of microseconds here, so a reply that comes sooner than this is
// caught without a sleep; the price is this much CPU per idle wait.
constexpr auto spin_budget = std::chrono::microseconds(50);

}  // namespace

struct connection_core::state {
    unique_fd fd;
    std::mutex send_mutex;
    std::mutex recv_mutex;
    // The read side, guarded by recv_mutex. Bytes buffer[begin, end) have
    // arrived and are not consumed yet.
    byte_buffer buffer;
    std::size_t begin = 0, end = 0;
    std::deque<unique_fd> fds;  // received, not yet claimed by a frame
    sys::spin_history spin_history;  // does spinning pay off for this receiver?
    bool broken = false;        // a corrupt frame was seen: the stream cannot be resynchronised
    std::string broken_reason;

    // The frame read but not yet consumed (kept across a type mismatch).
    struct frame {
        frame_header header{};
        std::string type_name;
        byte_buffer owned;             // body, when it did not fit in `buffer`
        attachment mapped;             // body, when it came as a memfd
        std::size_t body_offset = 0;   // body in `buffer` at this offset (if neither above)
        bool in_buffer = false;
        std::size_t consumed = 0;      // bytes of `buffer` to drop when the frame is consumed
        std::vector<unique_fd> fds;
    };
    std::optional<frame> pending;
    // A frame whose large inline body is still arriving (a receive timed out
    // in the middle of it), and how many body bytes are in it so far.
    std::optional<frame> partial;
    std::size_t partial_received = 0;

    std::size_t buffered() const { return end - begin; }

    // Makes at least `n` bytes available at buffer[begin..]. Returns false on
    // timeout; throws eof_error at EOF.
    bool fill(std::size_t n, std::optional<sys::clock::time_point> deadline, bool mid_message) {
        if (buffered() >= n) return true;
        if (begin > 0) {
            std::memmove(buffer.data(), buffer.data() + begin, buffered());
            end -= begin;
            begin = 0;
        }
        sys::spinner spin(spin_budget, &spin_history);
        std::vector<unique_fd> got;
        while (end < n) {
            if (end == buffer.capacity()) grow_buffer(n);
            long r = sys::recv_some(fd.get(), buffer.data() + end, buffer.capacity() - end, &got, true);
            for (auto& f : got) fds.push_back(std::move(f));
            got.clear();
            if (r > 0) {
                end += static_cast<std::size_t>(r);
                continue;
            }
            if (r == 0) {
                if (mid_message || end > begin)
                    throw eof_error("mp: the other end of the pipe closed in the middle of a message "
                                    "(its process probably died while sending); the partial message was dropped");
                throw eof_error("mp: the other end of the pipe is closed (its process may have ended)");
            }
            if ((!deadline || sys::clock::now() < *deadline) && spin.step()) continue;
            if (!sys::wait_readable(fd.get(), deadline)) return false;
        }
        return true;
    }

    // The buffer is full and `n` bytes are wanted: at most doubles it, so
    // that what is allocated stays within twice what arrived (a header's
    // declared size is not believed before its bytes are here).
    void grow_buffer(std::size_t n) {
        std::size_t grown = std::max(initial_buffer, 2 * buffer.capacity());
        buffer.reserve(std::min(grown, std::max(n, read_ahead)), end);
    }

    [[noreturn]] void corrupt(const std::string& why) {
        broken = true;
        broken_reason = why;
        throw serialization_error(why);
    }

    // Reads one whole frame into `pending`. Returns false on timeout.
    //
    // The deadline holds for the whole frame, not only its first byte. A
    // frame cut short by the deadline is not lost and does not desynchronise
    // the stream: its bytes stay buffered in this connection (in `buffer`, or
    // for a large inline body in `partial`), and the next receive resumes
    // where this one stopped, as if it had never timed out.
    bool read_frame(std::optional<sys::clock::time_point> deadline) {
        if (pending) return true;
        if (broken) throw serialization_error(broken_reason + " (the connection cannot be used any more)");
        if (partial) return finish_large_body(deadline);
        if (!fill(sizeof(frame_header), deadline, false)) return false;
        frame f;
        std::memcpy(&f.header, buffer.data() + begin, sizeof(frame_header));
        const auto& h = f.header;
        if (h.magic != frame_magic)
            corrupt("mp: corrupt message on a pipe: bad frame header (was something other than mp "
                    "writing to this socket?)");
        bool attached = (h.flags & flag_attached) != 0;
        if (!attached && h.body_size > max_inline_body)
            corrupt("mp: corrupt message on a pipe: it declares a body of " + std::to_string(h.body_size) +
                    " bytes, more than the limit of " + std::to_string(max_inline_body));
        std::size_t head = sizeof(frame_header) + h.name_size;
        std::size_t inline_body = attached ? 0 : static_cast<std::size_t>(h.body_size);
        if (head + inline_body <= std::max(buffer.capacity(), max_buffered_frame)) {
            // On timeout the bytes read so far stay in `buffer`, header
            // included: the next call parses the header again and goes on.
            if (!fill(head + inline_body, deadline, true)) return false;
            f.type_name.assign(reinterpret_cast<const char*>(buffer.data() + begin + sizeof(frame_header)),
                               h.name_size);
            f.in_buffer = true;
            f.body_offset = begin + head;
            f.consumed = head + inline_body;
            return complete(std::move(f));
        }
        if (!fill(head, deadline, true)) return false;
        f.type_name.assign(reinterpret_cast<const char*>(buffer.data() + begin + sizeof(frame_header)), h.name_size);
        begin += head;
        // From here the frame's bytes leave `buffer`: they are kept in
        // `partial` until the body is complete. The body grows as its bytes
        // arrive (see finish_large_body), never by the size the header
        // declares: a corrupt header must not make us allocate a gigabyte.
        std::size_t have = std::min(buffered(), inline_body);
        f.owned.reserve(std::max(have, read_ahead), 0);
        std::memcpy(f.owned.data(), buffer.data() + begin, have);
        begin += have;
        partial_received = have;
        partial = std::move(f);
        return finish_large_body(deadline);
    }

    // Receives the rest of the large inline body in `partial`.
    bool finish_large_body(std::optional<sys::clock::time_point> deadline) {
        frame& f = *partial;
        const auto whole_size = static_cast<std::size_t>(f.header.body_size);
        while (partial_received < whole_size) {
            // At most twice what arrived so far is allocated.
            if (partial_received == f.owned.capacity())
                f.owned.reserve(std::min(whole_size, 2 * f.owned.capacity()), partial_received);
            const std::size_t room = std::min(whole_size, f.owned.capacity()) - partial_received;
            std::vector<unique_fd> got;
            long r = sys::recv_some(fd.get(), f.owned.data() + partial_received, room, &got, true);
            for (auto& g : got) fds.push_back(std::move(g));
            if (r == 0) {
                partial.reset();
                throw eof_error("mp: the other end of the pipe closed in the middle of a message "
                                "(its process probably died while sending); the partial message was dropped");
            }
            if (r > 0) {
                partial_received += static_cast<std::size_t>(r);
                continue;
            }
            if (!sys::wait_readable(fd.get(), deadline)) return false;
        }
        frame whole = std::move(*partial);
        partial.reset();
        return complete(std::move(whole));
    }

    // The frame's bytes have all arrived: claims its descriptors, maps its
    // attachment and makes it `pending`.
    bool complete(frame f) {
        const auto& h = f.header;
        // The fds of this frame were sent with its first byte, so they have
        // arrived by now.
        if (fds.size() < h.fd_count) corrupt("mp: corrupt message on a pipe: file descriptors missing");
        for (std::uint16_t i = 0; i < h.fd_count; ++i) {
            f.fds.push_back(std::move(fds.front()));
            fds.pop_front();
        }
        if (h.flags & flag_attached) {
            if (f.fds.empty()) corrupt("mp: corrupt message on a pipe: shared-memory attachment missing");
            unique_fd memfd = std::move(f.fds.back());
            f.fds.pop_back();
            try {
                f.mapped = attachment::open(std::move(memfd), static_cast<std::size_t>(h.body_size));
            } catch (const serialization_error&) {
                // The frame itself was whole: drop it (and the descriptors it
                // brought) and keep the stream usable for the next message.
                if (f.in_buffer) begin += f.consumed;
                if (begin == end) begin = end = 0;
                throw;
            }
        }
        pending = std::move(f);
        return true;
    }

    std::span<const std::byte> body() const {
        const frame& f = *pending;
        if (f.mapped) return f.mapped.bytes();
        if (f.in_buffer)
            return {buffer.data() + f.body_offset, static_cast<std::size_t>(f.header.body_size)};
        return {f.owned.data(), static_cast<std::size_t>(f.header.body_size)};
    }

    void consume() {
        if (pending->in_buffer) begin += pending->consumed;
        pending.reset();
        if (begin == end) {
            begin = end = 0;
            // Only a peer that is not mp sends an inline frame this large
            // (mp sends such bodies in a memfd): do not keep its memory.
            if (buffer.capacity() > attach_threshold) buffer.release();
        }
    }
};

connection_core::connection_core(unique_fd fd, bool readable, bool writable)
    : s_(std::make_unique<state>()), readable_(readable), writable_(writable) {
    s_->fd = std::move(fd);
}

connection_core::~connection_core() = default;

int connection_core::fd() const { return s_->fd.get(); }
bool connection_core::closed() const { return !s_->fd; }

void connection_core::close() {
    std::scoped_lock guard(s_->send_mutex, s_->recv_mutex);
    s_->fd.reset();
}

void connection_core::send_message(std::uint64_t tag, std::string_view type_name, const output_archive& body) {
    if (!writable_) throw closed_error("mp: this end of the pipe is read-only (mp::pipe(false) returns (reader, writer))");
    std::lock_guard guard(s_->send_mutex);
    if (!s_->fd) throw closed_error("mp: send on a closed connection");
    frame_header h{};
    h.magic = frame_magic;
    h.body_size = body.size();
    h.type_tag = tag;
    h.name_size = static_cast<std::uint16_t>(std::min<std::size_t>(type_name.size(), 65535));
    std::vector<int> fds(body.fds());
    attachment attached;
    if (body.size() >= attach_threshold) {
        attached = attachment::create(body);
        h.flags |= flag_attached;
        fds.push_back(attached.fd());
    }
    if (fds.size() > 250) throw error("mp: a message can carry at most 250 file descriptors");
    h.fd_count = static_cast<std::uint16_t>(fds.size());  // the attachment, if any, is the last
    std::vector<::iovec> iov;
    iov.push_back({&h, sizeof h});
    iov.push_back({const_cast<char*>(type_name.data()), h.name_size});
    if (!attached)
        body.for_each_piece([&](const std::byte* p, std::size_t n) {
            iov.push_back({const_cast<std::byte*>(p), n});
        });
    sys::send_all(s_->fd.get(), iov, fds);
}

void connection_core::recv_message(std::uint64_t tag, std::string_view type_name,
                                   std::optional<std::chrono::steady_clock::time_point> deadline,
                                   void (*read)(void*, input_archive&), void* context) {
    if (!readable_) throw closed_error("mp: this end of the pipe is write-only (mp::pipe(false) returns (reader, writer))");
    std::lock_guard guard(s_->recv_mutex);
    if (!s_->fd) throw closed_error("mp: recv on a closed connection");
    if (!s_->read_frame(deadline)) throw timeout_error("mp: recv timed out: no message arrived in time");
    auto& f = *s_->pending;
    if (f.header.type_tag != tag)
        throw serialization_error("mp: received a message of type '" + f.type_name + "' but recv<" +
                                  std::string(type_name) + ">() was called; the message is kept: "
                                  "receive it with the type it was sent as");
    std::vector<unique_fd> fds = std::move(f.fds);
    struct consume_on_exit {
        state* s;
        ~consume_on_exit() { s->consume(); }
    } done{s_.get()};
    input_archive ar(s_->body(), &fds);
    read(context, ar);
}

std::vector<std::byte> connection_core::recv_raw(std::optional<std::chrono::steady_clock::time_point> deadline) {
    if (!readable_) throw closed_error("mp: this end of the pipe is write-only");
    std::lock_guard guard(s_->recv_mutex);
    if (!s_->fd) throw closed_error("mp: recv on a closed connection");
    if (!s_->read_frame(deadline)) throw timeout_error("mp: recv timed out: no message arrived in time");
    auto body = s_->body();
    std::vector<std::byte> out(body.begin(), body.end());
    s_->consume();
    return out;
}

bool connection_core::has_buffered() const { return s_->pending || s_->partial || s_->buffered() > 0; }

bool connection_core::poll(std::optional<std::chrono::steady_clock::time_point> deadline) {
    if (!s_->fd) throw closed_error("mp: poll on a closed connection");
    if (has_buffered()) return true;
    return sys::wait_readable(s_->fd.get(), deadline);
}

}  // namespace mp::detail

namespace mp {

connection::connection(detail::unique_fd fd, bool readable, bool writable)
    : core_(std::make_shared<detail::connection_core>(std::move(fd), readable, writable)) {}

namespace {
detail::connection_core& checked(const std::shared_ptr<detail::connection_core>& core) {
    if (!core) throw closed_error("mp: this connection was default-constructed and is not connected to anything");
    return *core;
}
}  // namespace

void connection::send_bytes(std::span<const std::byte> bytes) {
    detail::output_archive ar;
    ar.saveBinary(bytes.data(), bytes.size());
    checked(core_).send_message(detail::type_tag<detail::bytes_message>(), "bytes", ar);
}

void connection::send_bytes(std::string_view bytes) {
    send_bytes(std::as_bytes(std::span<const char>(bytes.data(), bytes.size())));
}

std::vector<std::byte> connection::recv_bytes() { return checked(core_).recv_raw(std::nullopt); }

bool connection::poll(duration timeout) {
    return checked(core_).poll(std::chrono::steady_clock::now() + timeout);
}

bool connection::poll_forever() { return checked(core_).poll(std::nullopt); }

void connection::close() {
    if (core_) core_->close();
}

bool connection::closed() const { return !core_ || core_->closed(); }

int connection::fileno() const { return checked(core_).fd(); }

std::pair<connection, connection> pipe(bool duplex) {
    auto [a, b] = sys::socket_pair();
    if (duplex) return {connection(std::move(a), true, true), connection(std::move(b), true, true)};
    return {connection(std::move(a), true, false), connection(std::move(b), false, true)};
}

namespace {
std::optional<sys::clock::time_point> deadline_after(std::optional<sys::clock::duration> timeout) {
    if (!timeout) return std::nullopt;
    return sys::clock::now() + *timeout;
}
}  // namespace

std::vector<connection> wait(const std::vector<connection>& connections,
                             std::optional<timeout_duration> timeout) {
    std::vector<connection> ready;
    for (const auto& c : connections)
        if (c.has_buffered()) ready.push_back(c);
    if (!ready.empty()) return ready;
    std::vector<int> fds;
    for (const auto& c : connections) fds.push_back(c.fileno());
    for (auto i : sys::wait_any_readable(fds, deadline_after(timeout))) ready.push_back(connections[i]);
    return ready;
}

std::vector<int> wait(const std::vector<int>& fds, std::optional<timeout_duration> timeout) {
    std::vector<int> ready;
    for (auto i : sys::wait_any_readable(fds, deadline_after(timeout))) ready.push_back(fds[i]);
    return ready;
}

}  // namespace mp
