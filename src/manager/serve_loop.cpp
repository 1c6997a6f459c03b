// The manager server's event loop and worker set (see serve_loop.hpp).
//
// Ownership of a connection: while it waits for authentication, or waits for
// a request while armed in epoll (one-shot), the loop owns it. Once a whole
// request has arrived it is `busy`: epoll has disarmed it, and exactly one
// worker owns it until that worker re-arms it (hand_back) or closes it. So no
// epoll report can name a connection a worker is using, and a worker can
// free its connection without telling the loop.
#include "manager/serve_loop.hpp"

#include <algorithm>
#include <array>
#include <optional>
#include <span>
#include <system_error>
#include <utility>

#include "manager/auth.hpp"
#include "manager/protocol.hpp"
#include "sys/net.hpp"
#include "sys/sys.hpp"

namespace mp::detail::mgr {

namespace {

std::atomic<int> thread_failures_to_inject{0};

/// How long a worker stays with its connection after a reply, waiting for
/// the next request. Trade-off: longer keeps a busy client's calls at one
/// wake-up each; shorter hands idle connections back to the loop sooner
/// (a lingering worker lets go at once when others wait for a worker).
constexpr auto linger_time = std::chrono::milliseconds(200);
/// How often a lingering worker wakes to check whether others want a
/// worker. Trade-off: shorter lets go sooner when every worker is taken,
/// longer costs fewer wake-ups of idle lingering workers.
constexpr auto linger_slice = std::chrono::milliseconds(10);
/// How long a lingering worker reads without sleeping before it blocks for
/// the next request (when the connection's history says that pays off, see
/// channel.hpp). Trade-off: a client calling back to back is served without
/// a wake-up; a client that pauses costs this much CPU per call, until its
/// history turns spinning off. On an idle machine the next request of a
/// client calling back to back comes 2-4 µs after the reply; with many
/// clients on few cores it comes after the others' calls (100 µs and more
/// with 16 clients on 2 cores), so a spin that long only takes CPU from
/// them: 10 µs catches the first and gives up early on the second (with 20
/// µs, 16 clients made 3-5% fewer calls per second, bench/manager_bench.cpp).
constexpr auto request_spin = std::chrono::microseconds(10);
/// How long accepting pauses when the process is out of fds and no
/// unauthenticated connection can be dropped to make room.
constexpr auto accept_backoff = std::chrono::milliseconds(100);
/// The shortest idle timeout the server applies (see the constructor).
constexpr auto min_idle_timeout = std::chrono::milliseconds(2000);
/// Fds left free for the rest of the process when unauthenticated
/// connections have used up the others.
constexpr std::size_t fd_headroom = 8;
/// How often idle authenticated connections are checked against their
/// deadline (and the lowered cap on waiting connections is raised again).
constexpr auto idle_sweep_interval = std::chrono::seconds(1);
/// Connections accepted per readiness report, so that a flood of new
/// connections cannot starve the ones already there.
constexpr int accepts_per_round = 64;
/// A new authenticated connection's receive buffer.
constexpr std::size_t initial_receive_buffer = 4096;
/// The largest reply buffer an idle connection keeps for its next reply.
constexpr std::size_t max_kept_reply_buffer = 64 * 1024;

char listener_tag, wake_tag;

int ms_until(clock::time_point t) {
    auto left = std::chrono::ceil<std::chrono::milliseconds>(t - clock::now()).count();
    return left < 0 ? 0 : static_cast<int>(std::min<long long>(left, 60'000));
}

void reply_error_nowait(channel& ch) noexcept {
    // A frame error (garbage, an oversized length): say why, then the caller
    // hangs up (the stream cannot be resynchronised).
    try {
        output_archive out;
        channel::begin(out);
        save_value(out, static_cast<std::uint8_t>(status::error));
        save_value(out, detail::capture_exception(std::current_exception()));
        (void)ch.send_nowait(out);
    } catch (...) {
    }
}

}  // namespace

void inject_thread_creation_failures(int n) noexcept { thread_failures_to_inject = n; }

struct serve_loop::connection {
    unique_fd fd;                                 // until authenticated; then `ch` owns the socket
    std::unique_ptr<server_handshake> handshake;  // while authenticating
    std::unique_ptr<channel> ch;                  // once authenticated
    clock::time_point deadline;                   // handshake, then idle deadline
    connection_list::iterator where;              // in pending_ or authenticated_
    std::span<const std::byte> request;           // the complete request a worker serves
    std::vector<std::byte> reply_buffer;          // reused between replies
    sys::spin_history spin;                       // do requests come while its worker spins?
    bool busy = false;                            // guarded by mutex_: a worker owns it
    bool closed = false;                          // loop-only: freed after this round

    [[nodiscard]] int socket() const noexcept { return ch ? ch->fd() : fd.get(); }
};

serve_loop::serve_loop(unique_fd listener, const std::string& key, serve_limits limits, request_handler& handler)
    : listener_(std::move(listener)),
      key_(key),
      limits_(limits),
      handler_(handler),
      epoll_(sys::epoll_open()),
      wake_(sys::flag_open()) {
    if (limits_.max_pending == 0) limits_.max_pending = 1;
    if (limits_.max_workers == 0) limits_.max_workers = 1;
    pending_cap_ = limits_.max_pending;
    // Clients reuse a pooled connection used within the last second without
    // checking it (see client.cpp): never close one as idle that soon.
    limits_.idle_timeout = std::max(limits_.idle_timeout, min_idle_timeout);
    sys::set_nonblocking(listener_.get(), true);
    sys::epoll_add(epoll_.get(), listener_.get(), sys::ready_in, &listener_tag);
    sys::epoll_add(epoll_.get(), wake_.get(), sys::ready_in, &wake_tag);
}

serve_loop::~serve_loop() { finish(); }

void serve_loop::stop() noexcept {
    stopping_ = true;
    sys::raise_flag(wake_.get());
    try {
        std::lock_guard guard(mutex_);  // no worker can miss the notification between its check and its wait
        work_ready_.notify_all();
    } catch (...) {
    }
}

serve_loop::counts serve_loop::current_counts() {
    std::lock_guard guard(mutex_);
    return {pending_.size(), authenticated_.size(), workers_.size()};
}

// ---- the loop ------------------------------------------------------------------

void serve_loop::run() {
    std::array<sys::ready_event, 64> events;
    while (!stopping_) {
        std::size_t n = 0;
        try {
            n = sys::epoll_ready(epoll_.get(), events, next_timeout());
        } catch (...) {
            // epoll_wait fails only for a bad argument; pause rather than spin.
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        for (std::size_t i = 0; i < n && !stopping_; ++i) {
            void* data = events[i].data;
            try {
                if (data == &wake_tag) {
                    sys::clear_flag(wake_.get());
                } else if (data == &listener_tag) {
                    on_listener();
                } else {
                    auto& c = *static_cast<connection*>(data);
                    if (c.closed) continue;
                    if (c.handshake)
                        on_pending(c);
                    else
                        on_authenticated(c);
                }
            } catch (...) {
                // One connection's trouble (or a shortage) never ends the loop.
                if (data == &listener_tag) {
                    sys::epoll_remove(epoll_.get(), listener_.get());
                    listener_paused_until_ = clock::now() + accept_backoff;
                } else if (data != &wake_tag) {
                    close_in_loop(*static_cast<connection*>(data));
                }
            }
        }
        closed_this_round_.clear();
        sweep();
        closed_this_round_.clear();
    }
    finish();
}

int serve_loop::next_timeout() {
    std::optional<clock::time_point> next;
    auto consider = [&](clock::time_point t) {
        if (!next || t < *next) next = t;
    };
    if (listener_paused_until_) consider(*listener_paused_until_);
    if (!pending_.empty()) consider(pending_.front()->deadline);
    {
        std::lock_guard guard(mutex_);
        if (!authenticated_.empty()) consider(next_idle_sweep_);
        // Requests queued with no worker (one could not be created): retry soon.
        if (!jobs_.empty() && idle_workers_ == 0) consider(clock::now() + std::chrono::milliseconds(50));
    }
    return next ? ms_until(*next) : -1;
}

void serve_loop::on_listener() {
    for (int i = 0; i < accepts_per_round; ++i) {
        auto got = sys::accept_nonblocking(listener_.get());
        if (!got.fd) {
            if (!got.out_of_fds) return;
            if (!pending_.empty()) {
                // Out of fds with strangers waiting: drop the oldest few, and
                // wait with fewer from now on, so that the newcomer gets an
                // fd and the rest of the process keeps some (a worker thread,
                // a method that opens a file).
                std::size_t keep = pending_.size() > fd_headroom ? pending_.size() - fd_headroom : 0;
                while (pending_.size() > keep) close_in_loop(*pending_.front());
                pending_cap_ = std::max<std::size_t>(keep, 1);
                continue;
            }
            sys::epoll_remove(epoll_.get(), listener_.get());
            listener_paused_until_ = clock::now() + accept_backoff;
            return;
        }
        if (pending_.size() >= pending_cap_) close_in_loop(*pending_.front());
        add_pending(std::move(got.fd));
    }
}

void serve_loop::add_pending(unique_fd fd) {
    auto owned = std::make_unique<connection>();
    auto& c = *owned;
    c.fd = std::move(fd);
    c.handshake = std::make_unique<server_handshake>(key_);
    c.deadline = clock::now() + limits_.handshake_timeout;
    if (!flush_handshake(c)) return;  // dropped with `owned`
    sys::epoll_add(epoll_.get(), c.socket(), sys::ready_in, &c);
    std::lock_guard guard(mutex_);  // current_counts() reads the list from other threads
    c.where = pending_.insert(pending_.end(), std::move(owned));
}

bool serve_loop::flush_handshake(connection& c) {
    const auto& out = c.handshake->output();
    if (out.empty()) return true;
    // At most three frames of under 80 bytes, on a socket whose buffer holds
    // kilobytes: a peer whose buffer is full of them is not a real client.
    bool whole = sys::send_nowait(c.socket(), out.data(), out.size()) == out.size();
    c.handshake->output_sent();
    return whole;
}

void serve_loop::on_pending(connection& c) {
    for (;;) {
        long r = sys::recv_nowait(c.socket(), c.handshake->read_position(), c.handshake->read_size());
        if (r < 0) return;  // wait for more
        if (r == 0) {
            close_in_loop(c);
            return;
        }
        auto state = c.handshake->received(static_cast<std::size_t>(r));
        bool sent = flush_handshake(c);  // the next step, or "#FAILURE#" before closing
        if (state == server_handshake::state::failed || !sent) {
            close_in_loop(c);
            return;
        }
        if (state == server_handshake::state::done) {
            promote(c);
            return;
        }
    }
}

void serve_loop::promote(connection& c) {
    c.handshake.reset();
    sys::set_receive_timeout(c.fd.get(), linger_slice);
    c.ch = std::make_unique<channel>(std::move(c.fd), initial_receive_buffer);
    c.deadline = clock::now() + limits_.idle_timeout;
    {
        std::lock_guard guard(mutex_);
        authenticated_.splice(authenticated_.end(), pending_, c.where);
    }
    // One-shot from now on: a report hands the connection to one worker.
    // Armed level-style, so a request that came with the handshake's last
    // frame is reported at once.
    sys::epoll_modify(epoll_.get(), c.socket(), sys::ready_in | sys::ready_oneshot, &c);
}

void serve_loop::on_authenticated(connection& c) {
    std::optional<std::span<const std::byte>> request;
    try {
        request = c.ch->poll_frame(limits_.max_message);
    } catch (const frame_error&) {
        reply_error_nowait(*c.ch);
        close_in_loop(c);
        return;
    }
    if (!request) {
        // Part of a request: keep it, wait for the rest.
        c.deadline = clock::now() + limits_.idle_timeout;
        sys::epoll_modify(epoll_.get(), c.socket(), sys::ready_in | sys::ready_oneshot, &c);
        return;
    }
    c.request = *request;
    dispatch(c);
}

void serve_loop::dispatch(connection& c) {
    std::unique_lock lock(mutex_);
    c.busy = true;
    jobs_.push_back(&c);
    add_workers(lock);
    work_ready_.notify_one();
}

void serve_loop::add_workers(std::unique_lock<std::mutex>&) noexcept {
    while (idle_workers_ < jobs_.size() && workers_.size() < limits_.max_workers) {
        try {
            if (thread_failures_to_inject > 0) {
                --thread_failures_to_inject;
                throw std::system_error(EAGAIN, std::generic_category(), "thread creation failure injected by a test");
            }
            workers_.emplace_back([this] { worker_main(); });
            ++idle_workers_;  // it counts as idle until it takes a job
        } catch (...) {
            // No thread now: the request waits for a worker that is running
            // (or one made on the next try, see next_timeout).
            break;
        }
    }
    // Every worker is busy and no more may be made: lingering ones let go of
    // their connections (within a linger slice) and come for the queue.
    if (idle_workers_ < jobs_.size()) workers_wanted_ = true;
}

void serve_loop::close_in_loop(connection& c) noexcept {
    if (c.closed) return;
    c.closed = true;
    sys::epoll_remove(epoll_.get(), c.socket());
    auto& list = c.ch ? authenticated_ : pending_;
    // The socket goes now (a newcomer may be waiting for its fd); the object
    // after this round, whose later reports may still name it.
    c.ch.reset();
    c.fd.reset();
    std::lock_guard guard(mutex_);
    closed_this_round_.push_back(std::move(*c.where));
    list.erase(c.where);
}

void serve_loop::sweep() {
    auto now = clock::now();
    while (!pending_.empty() && pending_.front()->deadline <= now) close_in_loop(*pending_.front());
    if (listener_paused_until_ && now >= *listener_paused_until_) {
        try {
            sys::epoll_add(epoll_.get(), listener_.get(), sys::ready_in, &listener_tag);
            listener_paused_until_.reset();
        } catch (...) {
            listener_paused_until_ = now + accept_backoff;
        }
    }
    std::vector<connection*> expired;
    {
        std::unique_lock lock(mutex_);
        if (!jobs_.empty()) add_workers(lock);
        if (now >= next_idle_sweep_) {
            next_idle_sweep_ = now + idle_sweep_interval;
            // Fds may have come back since the cap was lowered: try a few more
            // (the next EMFILE lowers it again).
            pending_cap_ = std::min(limits_.max_pending, pending_cap_ + fd_headroom);
            for (auto& c : authenticated_)
                if (!c->busy && c->deadline <= now) expired.push_back(c.get());
        }
    }
    for (auto* c : expired) close_in_loop(*c);
}

void serve_loop::finish() noexcept {
    stop();
    listener_.reset();
    std::vector<std::thread> workers;
    {
        std::lock_guard guard(mutex_);
        // Wake workers blocked on a socket (sending, or waiting in a call,
        // which also notices stopping_ within a wait slice).
        for (auto& c : authenticated_) sys::shutdown_socket(c->socket());
        workers.swap(workers_);
    }
    for (auto& t : workers)
        if (t.joinable()) t.join();
    std::lock_guard guard(mutex_);
    jobs_.clear();
    closed_this_round_.clear();
    pending_.clear();
    authenticated_.clear();
}

// ---- the workers ------------------------------------------------------------------

void serve_loop::worker_main() noexcept {
    std::unique_lock lock(mutex_);
    for (;;) {
        work_ready_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
        if (stopping_) return;  // queued connections are closed by finish()
        connection* c = jobs_.front();
        jobs_.pop_front();
        --idle_workers_;
        if (jobs_.size() <= idle_workers_) workers_wanted_ = false;
        lock.unlock();
        serve(*c);
        lock.lock();
        ++idle_workers_;
    }
}

void serve_loop::serve(connection& c) noexcept {
    try {
        for (;;) {
            if (!answer(c)) break;
            auto next = linger(c);
            if (!next) {
                hand_back(c);
                return;
            }
            c.request = *next;
        }
    } catch (const frame_error&) {
        reply_error_nowait(*c.ch);
    } catch (...) {
        // The client left, or its socket failed: only this connection ends.
    }
    close_from_worker(c);
}

bool reply_to(request_handler& handler, std::span<const std::byte> request, const wait_context& ctx,
              std::size_t max_message, std::vector<std::byte> buffer, std::optional<output_archive>& out,
              bool& stop_after) {
    out.emplace(std::move(buffer));
    channel::begin(*out);
    save_value(*out, static_cast<std::uint8_t>(status::ok));
    try {
        input_archive in(request);
        in.set_data_only();  // SPEC §8: a request never carries code
        handler.handle(in, *out, ctx, stop_after);
        if (out->size() - header_size > max_message)
            throw value_error("mp: manager: the result is " + std::to_string(out->size()) +
                              " bytes, more than max_message_size (" + std::to_string(max_message) +
                              "); raise the limit or return less per call");
    } catch (const client_gone&) {
        return false;
    } catch (...) {
        auto record = detail::capture_exception(std::current_exception());
        auto reuse = out->take_buffer();
        out.emplace(std::move(reuse));
        channel::begin(*out);
        save_value(*out, static_cast<std::uint8_t>(status::error));
        save_value(*out, record);
    }
    return true;
}

bool serve_loop::answer(connection& c) {
    bool stop_after = false;
    std::optional<output_archive> out;
    if (!reply_to(handler_, c.request, wait_context{c.ch->fd(), &stopping_}, limits_.max_message,
                  std::move(c.reply_buffer), out, stop_after))
        return false;
    // A client that does not read its reply is given the idle timeout.
    c.ch->send_until(*out, clock::now() + limits_.idle_timeout);
    c.reply_buffer = out->take_buffer();
    if (c.reply_buffer.capacity() > max_kept_reply_buffer) c.reply_buffer = {};  // keep no large reply's memory
    if (stop_after) stop();
    return true;
}

std::optional<std::span<const std::byte>> serve_loop::linger(connection& c) {
    // A blocking read, woken by the next request (one system call, as with
    // a thread per connection) or by the socket's receive timeout every
    // linger_slice, to let go when others want a worker or time is up.
    auto until = clock::now() + linger_time;
    bool spin = true;  // once per wait, before the first blocking read
    for (;;) {
        // Also a request that came in one read with the last one.
        if (auto next = c.ch->buffered_frame(limits_.max_message)) return next;
        if (stopping_ || workers_wanted_) return std::nullopt;
        if (std::exchange(spin, false) && c.ch->spin_for_bytes(limits_.max_message, request_spin, c.spin)) continue;
        if (!c.ch->wait_for_bytes(limits_.max_message) && clock::now() >= until) return std::nullopt;
    }
}

void serve_loop::hand_back(connection& c) noexcept {
    {
        std::lock_guard guard(mutex_);
        c.busy = false;
        c.deadline = clock::now() + limits_.idle_timeout;
    }
    try {
        // From here on the loop owns it again: touch nothing after this.
        sys::epoll_modify(epoll_.get(), c.socket(), sys::ready_in | sys::ready_oneshot, &c);
    } catch (...) {
        close_from_worker(c);
    }
}

void serve_loop::close_from_worker(connection& c) noexcept {
    std::unique_ptr<connection> gone;
    std::lock_guard guard(mutex_);
    gone = std::move(*c.where);
    authenticated_.erase(c.where);
}

}  // namespace mp::detail::mgr
