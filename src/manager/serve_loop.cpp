// The manager server's event loop and worker set (see serve_loop.hpp).
//
// Ownership of a connection: while it waits for authentication the loop owns
// it. Once authenticated it lives in authenticated_ and, while it waits for
// a request, is armed (one-shot) in the workers' epoll set under a key
// listed in armed_. A worker that takes a report claims the connection by
// removing its key from armed_ (under mutex_); from then on it alone owns
// it until it re-arms it (hand_back) or closes it. The loop closes an idle
// connection only by claiming it the same way, so a report naming a key no
// longer in armed_ is stale and ignored, and no thread touches a connection
// another one owns.
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

/// How long a worker reads a connection without sleeping, after a reply,
/// before it re-arms it and takes another (when the connection's history
/// says that pays off, see channel.hpp, and another worker is idle, so that
/// no ready connection waits for the spin). Trade-off: a client calling back
/// to back is served without a wake-up; a client that pauses costs this much
/// CPU per call, until its history turns spinning off.
constexpr auto request_spin = std::chrono::microseconds(20);
/// Requests served from one connection before its worker stops waiting for
/// more there and takes the next ready connection (a client calling back to
/// back cannot keep a worker to itself).
constexpr int requests_per_turn = 32;
/// How long every worker may be busy without one finishing a call before
/// another worker is made (a slow method, a call waiting in a registered
/// type), and how often the loop checks while all are busy.
constexpr auto stall_time = std::chrono::milliseconds(10);
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

char listener_tag, wake_tag, nudge_tag;

std::int64_t now_ns() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(clock::now().time_since_epoch()).count();
}

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
    std::uintptr_t key = 0;                       // its name in the workers' epoll set and armed_
    bool closed = false;                          // loop-only: freed after this round

    [[nodiscard]] int socket() const noexcept { return ch ? ch->fd() : fd.get(); }
};

serve_loop::serve_loop(unique_fd listener, const std::string& key, serve_limits limits, request_handler& handler)
    : listener_(std::move(listener)),
      key_(key),
      limits_(limits),
      handler_(handler),
      epoll_(sys::epoll_open()),
      work_epoll_(sys::epoll_open()),
      wake_(sys::flag_open()),
      nudge_(sys::flag_open()) {
    if (limits_.max_pending == 0) limits_.max_pending = 1;
    if (limits_.max_workers == 0) limits_.max_workers = 1;
    eager_workers_ = std::min(limits_.max_workers, static_cast<std::size_t>(sys::usable_cpu_count()));
    pending_cap_ = limits_.max_pending;
    // Clients reuse a pooled connection used within the last second without
    // checking it (see client.cpp): never close one as idle that soon.
    limits_.idle_timeout = std::max(limits_.idle_timeout, min_idle_timeout);
    sys::set_nonblocking(listener_.get(), true);
    sys::epoll_add(epoll_.get(), listener_.get(), sys::ready_in, &listener_tag);
    sys::epoll_add(epoll_.get(), wake_.get(), sys::ready_in, &wake_tag);
    sys::epoll_add(epoll_.get(), nudge_.get(), sys::ready_in, &nudge_tag);
    // Level-triggered and never cleared once raised: every worker sees it.
    sys::epoll_add(work_epoll_.get(), wake_.get(), sys::ready_in, nullptr);
    note_progress();
}

serve_loop::~serve_loop() { finish(); }

void serve_loop::stop() noexcept {
    stopping_ = true;
    sys::raise_flag(wake_.get());
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
                    // Raised only by stop(): stays raised for the workers.
                } else if (data == &nudge_tag) {
                    sys::clear_flag(nudge_.get());  // next_timeout() now watches the workers
                } else if (data == &listener_tag) {
                    on_listener();
                } else {
                    auto& c = *static_cast<connection*>(data);
                    if (!c.closed) on_pending(c);
                }
            } catch (...) {
                // One connection's trouble (or a shortage) never ends the loop.
                if (data == &listener_tag) {
                    sys::epoll_remove(epoll_.get(), listener_.get());
                    listener_paused_until_ = clock::now() + accept_backoff;
                } else if (data != &wake_tag && data != &nudge_tag) {
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
        // Connections with no worker (one could not be made): retry soon.
        if (!authenticated_.empty() && workers_.empty()) consider(clock::now() + std::chrono::milliseconds(50));
        // Every worker busy: check soon that one of them makes progress.
        bool watching = idle_workers_ == 0 && !workers_.empty() && workers_.size() < limits_.max_workers;
        if (watching) consider(clock::now() + stall_time);
        // Sleeping longer than a stall: a worker that finds all busy nudges
        // us (set under the lock take() reads it under, so no nudge is lost).
        loop_dozing_ = !watching;
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
    c.ch = std::make_unique<channel>(std::move(c.fd), initial_receive_buffer);
    c.deadline = clock::now() + limits_.idle_timeout;
    sys::epoll_remove(epoll_.get(), c.socket());
    std::unique_lock lock(mutex_);
    authenticated_.splice(authenticated_.end(), pending_, c.where);
    c.key = next_key_++;
    armed_.emplace(c.key, &c);
    if (workers_.empty()) add_worker(lock);
    // Armed level-style, so a request that came with the handshake's last
    // frame is reported at once. From here on the workers own it.
    try {
        sys::epoll_add(work_epoll_.get(), c.socket(), sys::ready_in | sys::ready_oneshot,
                       reinterpret_cast<void*>(c.key));
    } catch (...) {
        armed_.erase(c.key);
        auto gone = std::move(*c.where);
        authenticated_.erase(c.where);
        lock.unlock();
        gone.reset();
    }
}

void serve_loop::add_worker(std::unique_lock<std::mutex>&) noexcept {
    // Stopping: finish() joins the workers it has taken from workers_.
    if (workers_.size() >= limits_.max_workers || stopping_) return;
    try {
        if (thread_failures_to_inject > 0) {
            --thread_failures_to_inject;
            throw std::system_error(EAGAIN, std::generic_category(), "thread creation failure injected by a test");
        }
        workers_.emplace_back([this] { worker_main(); });
        ++idle_workers_;  // it counts as idle until it takes a connection
    } catch (...) {
        // No thread now: the connections wait for a worker that is running,
        // or one made on the loop's next try (see next_timeout).
    }
}

void serve_loop::close_in_loop(connection& c) noexcept {
    // A connection still authenticating, or an idle one the loop claimed.
    if (c.closed) return;
    c.closed = true;
    bool authenticated = c.ch != nullptr;
    sys::epoll_remove(authenticated ? work_epoll_.get() : epoll_.get(), c.socket());
    auto& list = authenticated ? authenticated_ : pending_;
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
        if (!authenticated_.empty() && workers_.empty()) add_worker(lock);
        // Every worker held past a stall (slow calls, calls that wait): one
        // more serves the connections that are ready meanwhile.
        auto since = std::chrono::nanoseconds(now_ns() - last_progress_.load(std::memory_order_relaxed));
        if (idle_workers_ == 0 && !workers_.empty() && since >= stall_time) {
            add_worker(lock);
            note_progress();  // the next one only after another stall
        }
        if (now >= next_idle_sweep_) {
            next_idle_sweep_ = now + idle_sweep_interval;
            // Fds may have come back since the cap was lowered: try a few more
            // (the next EMFILE lowers it again).
            pending_cap_ = std::min(limits_.max_pending, pending_cap_ + fd_headroom);
            // Claimed here, as a worker claims a connection it serves.
            for (auto& c : authenticated_)
                if (c->deadline <= now && armed_.erase(c->key)) expired.push_back(c.get());
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
    armed_.clear();
    closed_this_round_.clear();
    pending_.clear();
    authenticated_.clear();
}

// ---- the workers ------------------------------------------------------------------

void serve_loop::note_progress() noexcept { last_progress_.store(now_ns(), std::memory_order_relaxed); }

void serve_loop::worker_main() noexcept {
    std::array<sys::ready_event, 1> event;
    while (!stopping_) {
        std::size_t n = 0;
        try {
            n = sys::epoll_ready(work_epoll_.get(), event, -1);
        } catch (...) {
            std::this_thread::sleep_for(std::chrono::milliseconds(10));  // a bad argument: pause rather than spin
        }
        if (n == 0 || event[0].data == nullptr) continue;  // EINTR, or stop(): checked above
        connection* c = take(event[0].data);
        if (!c) continue;
        serve(*c);
        note_progress();
        std::lock_guard guard(mutex_);
        ++idle_workers_;
    }
}

serve_loop::connection* serve_loop::take(void* key) {
    std::unique_lock lock(mutex_);
    auto it = armed_.find(reinterpret_cast<std::uintptr_t>(key));
    if (it == armed_.end()) return nullptr;  // the loop closed it as idle meanwhile
    connection* c = it->second;
    armed_.erase(it);
    --idle_workers_;
    if (idle_workers_ == 0) {
        // Up to one worker per core as soon as all are busy; beyond that the
        // loop adds one if all stay busy past a stall, so wake it if it dozes.
        if (workers_.size() < eager_workers_)
            add_worker(lock);
        else if (workers_.size() < limits_.max_workers && loop_dozing_.exchange(false))
            sys::raise_flag(nudge_.get());
    }
    return c;
}

void serve_loop::about_to_wait() noexcept {
    // A call is about to sleep in the server holding this worker: another
    // one serves the ready connections meanwhile.
    std::unique_lock lock(mutex_);
    if (idle_workers_ == 0) add_worker(lock);
}

void serve_loop::serve(connection& c) noexcept {
    try {
        for (int served = 0;; ++served) {
            // Requests already read are served whatever the count: epoll
            // would not report them after a re-arm.
            auto request = next_request(c, served == 0, served < requests_per_turn);
            if (!request) break;
            c.request = *request;
            if (!answer(c)) {
                close_from_worker(c);  // the client left during a call that waited
                return;
            }
        }
        hand_back(c);
        return;
    } catch (const frame_error&) {
        reply_error_nowait(*c.ch);
    } catch (...) {
        // The client left, or its socket failed: only this connection ends.
    }
    close_from_worker(c);
}

std::optional<std::span<const std::byte>> serve_loop::next_request(connection& c, bool first, bool may_spin) {
    // On a report, what has arrived. After a reply, a request already read
    // with the last one; else, rather than a read that mostly finds nothing,
    // the connection is re-armed, and epoll reports it at once if the next
    // request came meanwhile.
    if (first) return c.ch->poll_frame(limits_.max_message);
    if (auto request = c.ch->buffered_frame(limits_.max_message)) return request;
    if (!may_spin || stopping_ || !cores_to_spare()) return std::nullopt;
    {
        // Spin only while another worker is idle: with all busy, a spinner
        // delays the connections that are ready.
        std::lock_guard guard(mutex_);
        if (idle_workers_ == 0) return std::nullopt;
    }
    if (c.ch->spin_for_bytes(limits_.max_message, request_spin, c.spin)) return c.ch->buffered_frame(limits_.max_message);
    return std::nullopt;
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
    if (!reply_to(handler_, c.request, wait_context{c.ch->fd(), &stopping_, this}, limits_.max_message,
                  std::move(c.reply_buffer), out, stop_after))
        return false;
    // A client that does not read its reply is given the idle timeout.
    c.ch->send_until(*out, clock::now() + limits_.idle_timeout);
    c.reply_buffer = out->take_buffer();
    if (c.reply_buffer.capacity() > max_kept_reply_buffer) c.reply_buffer = {};  // keep no large reply's memory
    if (stop_after) stop();
    return true;
}

void serve_loop::hand_back(connection& c) noexcept {
    std::unique_lock lock(mutex_);
    c.deadline = clock::now() + limits_.idle_timeout;
    armed_.emplace(c.key, &c);
    try {
        // Re-armed under the lock: the worker that takes it next, under the
        // lock too, comes after this in every thread's view (ThreadSanitizer
        // does not count a re-arm as ordering the fd's later close). From
        // here on another worker (or the loop, to close it) may own it.
        sys::epoll_modify(work_epoll_.get(), c.socket(), sys::ready_in | sys::ready_oneshot,
                          reinterpret_cast<void*>(c.key));
    } catch (...) {
        armed_.erase(c.key);
        lock.unlock();
        close_from_worker(c);
    }
}

void serve_loop::close_from_worker(connection& c) noexcept {
    sys::epoll_remove(work_epoll_.get(), c.socket());
    std::unique_ptr<connection> gone;
    {
        std::lock_guard guard(mutex_);
        gone = std::move(*c.where);
        authenticated_.erase(c.where);
    }
    gone.reset();  // closes the socket, outside the lock
}

}  // namespace mp::detail::mgr
