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
// - at most `max_workers` threads run requests. A worker stays with its
//   connection between requests for a moment (so back-to-back calls cost one
//   wake-up, as with a thread per connection), and gives it back to the loop
//   within a few milliseconds when other requests wait for a worker;
// - running out of fds (EMFILE/ENFILE) drops the oldest unauthenticated
//   connections (a few more than needed, so that the rest of the process
//   keeps some fds, and fewer wait from then on) or, with none waiting,
//   pauses accepting for a moment; a thread that cannot be
//   created leaves the request queued for an existing worker. Neither ends
//   the loop.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "manager/channel.hpp"
#include "mp/detail/unique_fd.hpp"
#include "mp/serialize.hpp"

namespace mp::detail::mgr {

/// What a call that waits in the server (a lock's acquire, a queue's get)
/// watches: its client's socket and the server's stopping flag.
struct wait_context {
    int fd;
    const std::atomic<bool>* stopping;
    /// Every call is served as if its timeout were 0 (a get on an empty
    /// queue is empty at once, an acquire of a held lock fails at once), as
    /// a client asking not to block is served. For the dispatcher's fuzz
    /// target, which serves requests one after another on one thread: a call
    /// that waited there would wait for a request that never comes.
    bool never_wait = false;
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

class serve_loop {
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
    void on_authenticated(connection& c);
    void close_in_loop(connection& c) noexcept;
    void sweep();
    int next_timeout();
    void dispatch(connection& c);
    void add_workers(std::unique_lock<std::mutex>& lock) noexcept;
    void finish() noexcept;

    // The workers' side.
    void worker_main() noexcept;
    void serve(connection& c) noexcept;
    bool answer(connection& c);
    std::optional<std::span<const std::byte>> linger(connection& c);
    void hand_back(connection& c) noexcept;
    void close_from_worker(connection& c) noexcept;

    unique_fd listener_;
    const std::string& key_;
    serve_limits limits_;
    request_handler& handler_;
    unique_fd epoll_;
    unique_fd wake_;  // raised by stop(): wakes the loop
    std::atomic<bool> stopping_{false};
    std::atomic<bool> workers_wanted_{false};  // requests wait for a worker: lingering ones let go

    // Loop-only state (pending_ changes under mutex_ too, for current_counts()).
    connection_list pending_;  // oldest first (so also by handshake deadline)
    std::size_t pending_cap_;  // max_pending, lowered while fds run out
    std::vector<std::unique_ptr<connection>> closed_this_round_;  // freed after the events that may name them
    std::optional<clock::time_point> listener_paused_until_;
    clock::time_point next_idle_sweep_{};

    std::mutex mutex_;
    std::condition_variable work_ready_;
    connection_list authenticated_;     // guarded by mutex_
    std::deque<connection*> jobs_;      // guarded by mutex_: connections with a complete request
    std::vector<std::thread> workers_;  // guarded by mutex_
    std::size_t idle_workers_ = 0;      // guarded by mutex_
};

}  // namespace mp::detail::mgr
