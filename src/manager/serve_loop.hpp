// manager/serve_loop.hpp — the manager server's connections: one event loop
// (epoll) accepts every connection and runs its authentication handshake
// without a thread of its own; a bounded set of worker threads serves the
// requests of authenticated connections.
//
// Bounds, so that no client can stall or kill the server:
// - at most `max_pending` connections wait for authentication; each holds a
//   socket and its handshake state (about half a kilobyte: one frame of at
//   most 72 bytes, the challenge, what to send), and must finish
//   within `handshake_timeout`. A connection arriving at the cap pushes out
//   the oldest waiting one, so a flood of silent connections cannot keep a
//   correct client from being accepted and authenticated at once;
// - an authenticated connection with no request in flight holds a socket
//   and its receive buffer (4 KiB; grown for a large request, up to
//   max_message, and shrunk after it), and is closed after `idle_timeout`
//   of silence;
// - at most `max_workers` threads run requests. The workers wait on an epoll
//   set of their own holding every authenticated connection that waits for
//   a request (one-shot: a report hands a connection to one worker). A
//   worker serves the requests its connection has ready, then re-arms it and
//   takes the next ready connection, without sleeping while any is ready: on
//   a busy server one wake-up serves many calls, and a call costs no
//   hand-over between threads. As many workers as cores are made as
//   requests come; more only when all of them are held (a call that waits
//   in the server, a slow method), so that a ready connection never waits
//   for a call that waits;
// - running out of fds (EMFILE/ENFILE) drops the oldest unauthenticated
//   connections (a few more than needed, so that the rest of the process
//   keeps some fds, and fewer wait from then on) or, with none waiting,
//   pauses accepting for a moment; a thread that cannot be
//   created leaves the request queued for an existing worker. Neither ends
//   the loop.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "manager/channel.hpp"
#include "mp/detail/unique_fd.hpp"
#include "mp/serialize.hpp"

namespace mp::detail::mgr {

class wait_observer;

/// What a call that waits in the server (a lock's acquire, a queue's get)
/// watches: its client's socket and the server's stopping flag.
struct wait_context {
    int fd;
    const std::atomic<bool>* stopping;
    /// Told before the call first sleeps (so that the server can let another
    /// thread serve meanwhile); may be null.
    wait_observer* observer = nullptr;
};

/// Told by a call before it first sleeps in the server.
class wait_observer {
public:
    virtual void about_to_wait() noexcept = 0;

protected:
    ~wait_observer() = default;
};

/// Thrown by a waiting call when its client hung up: no reply is sent.
struct client_gone {};

struct serve_limits {
    std::chrono::milliseconds handshake_timeout{5000};
    std::chrono::milliseconds idle_timeout{std::chrono::minutes(10)};
    std::size_t max_message = std::size_t{64} << 20;
    std::size_t max_pending = 128;
    std::size_t max_workers = 128;
};

/// Serves one request: reads it from `in`, writes the reply's result to
/// `out`; throws what the caller should get back. Called from the worker
/// threads, concurrently.
class request_handler {
public:
    virtual ~request_handler() = default;
    virtual void handle(input_archive& in, output_archive& out, const wait_context& ctx, bool& stop_after) = 0;
};

/// What the server replies to one request (a frame's body, read whole):
/// the whole reply frame in `out`, begun with channel::begin and written
/// into `buffer`'s memory: status ok and the result, or status error and the
/// exception record (a result over `max_message` is an error too). False
/// when a call that waited found its client gone: no reply is due. Sets
/// `stop_after` when the request asks the server to stop. The one path
/// every request takes, in the server and in the dispatcher's fuzz target.
bool reply_to(request_handler& handler, std::span<const std::byte> request, const wait_context& ctx,
              std::size_t max_message, std::vector<std::byte> buffer, std::optional<output_archive>& out,
              bool& stop_after);

/// Test hook: the next `n` worker-thread creations fail as if the system
/// had no threads left (std::system_error, EAGAIN).
void inject_thread_creation_failures(int n) noexcept;

class serve_loop final : wait_observer {
public:
    /// `listener`: a listening socket (made non-blocking here). `key` must
    /// outlive the loop.
    serve_loop(unique_fd listener, const std::string& key, serve_limits limits, request_handler& handler);
    ~serve_loop();
    serve_loop(const serve_loop&) = delete;
    serve_loop& operator=(const serve_loop&) = delete;

    /// Serves until stop(); then closes every connection (waiting calls are
    /// woken) and joins the workers. Neither a client nor a shortage of fds,
    /// memory or threads makes it throw.
    void run();
    /// Makes run() return soon. Thread-safe, from any thread; never throws.
    void stop() noexcept;

    /// Connections waiting for authentication / authenticated, and worker
    /// threads, now (for tests and diagnostics).
    struct counts {
        std::size_t pending = 0, authenticated = 0, workers = 0;
    };
    [[nodiscard]] counts current_counts();

private:
    struct connection;
    using connection_list = std::list<std::unique_ptr<connection>>;

    // The loop's side.
    void on_listener();
    void add_pending(unique_fd fd);
    void on_pending(connection& c);
    bool flush_handshake(connection& c);
    void promote(connection& c);
    void close_in_loop(connection& c) noexcept;
    void sweep();
    int next_timeout();
    void add_worker(std::unique_lock<std::mutex>& lock) noexcept;
    void finish() noexcept;

    // The workers' side.
    void worker_main() noexcept;
    connection* take(void* key);
    void serve(connection& c) noexcept;
    bool answer(connection& c);
    std::optional<std::span<const std::byte>> next_request(connection& c, bool first, bool may_spin);
    void hand_back(connection& c) noexcept;
    void close_from_worker(connection& c) noexcept;
    void about_to_wait() noexcept override;
    void note_progress() noexcept;

    unique_fd listener_;
    const std::string& key_;
    serve_limits limits_;
    request_handler& handler_;
    std::size_t eager_workers_;  // made as soon as requests find every worker busy: one per core
    unique_fd epoll_;            // the loop's: the listener, connections authenticating
    unique_fd work_epoll_;       // the workers': authenticated connections waiting for a request
    unique_fd wake_;             // raised by stop(): wakes the loop and every worker
    unique_fd nudge_;            // raised by a worker: the loop should watch the workers closely
    std::atomic<bool> stopping_{false};
    std::atomic<bool> loop_dozing_{false};  // the loop sleeps long: a worker nudges it when all are busy
    std::atomic<std::int64_t> last_progress_{0};  // when a worker last finished a call or went idle (ns)

    // Loop-only state (pending_ changes under mutex_ too, for current_counts()).
    connection_list pending_;  // oldest first (so also by handshake deadline)
    std::size_t pending_cap_;  // max_pending, lowered while fds run out
    std::vector<std::unique_ptr<connection>> closed_this_round_;  // freed after the events that may name them
    std::optional<clock::time_point> listener_paused_until_;
    clock::time_point next_idle_sweep_{};

    std::mutex mutex_;
    connection_list authenticated_;                           // guarded by mutex_
    std::unordered_map<std::uintptr_t, connection*> armed_;  // guarded by mutex_: by key, those in work_epoll_
    std::uintptr_t next_key_ = 1;                             // guarded by mutex_
    std::vector<std::thread> workers_;                        // guarded by mutex_
    std::size_t idle_workers_ = 0;                            // guarded by mutex_: waiting on work_epoll_
};

}  // namespace mp::detail::mgr
