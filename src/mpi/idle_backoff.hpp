// mpi/idle_backoff.hpp — how a thread that polls MPI waits between polls.
//
// MPI has no way to sleep until a message arrives (a rank blocked in
// MPI_Recv spins a whole core), so the polling thread decides: right after
// activity (a message, a result sent) it polls, yielding the core at each
// poll, as the next message of a busy exchange comes within microseconds;
// once quiet for longer it sleeps between polls, longer and longer up to a
// cap. Activity reported from another thread wakes a
// sleeping poller at once, so a task sent right after a result, or a result
// produced after a long task, never waits for a sleep to end.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>

namespace mp::detail {

class idle_backoff {
public:
    using clock = std::chrono::steady_clock;

    // After activity, poll and yield the core at each poll until this long
    // after it. No pure spinning: on a 2-core machine with rank 0, a worker
    // rank and the rank's worker process, a poller that does not yield keeps
    // the process that must answer off the core (measured: a submit().get()
    // round trip of 620 µs with 200 µs of pure spinning first, 14 µs with none).
    static constexpr auto yield_until = std::chrono::milliseconds(3);
    // Then sleep, growing from min_sleep to max_sleep. Trade-off: a longer cap
    // costs less when idle (each wake-up is one poll, a few microseconds) and
    // delays a message that arrives unannounced by up to that much; 2 ms keeps
    // an idle rank far under 1% of a core.
    static constexpr auto min_sleep = std::chrono::microseconds(50);
    static constexpr auto max_sleep = std::chrono::milliseconds(2);

    /// Something happened: poll eagerly again. Thread-safe; wakes a sleeper.
    void activity() noexcept {
        last_ns_.store(now_ns(), std::memory_order_relaxed);
        // A counter, not the time, tells a sleeper that something happened:
        // two readings of the clock can be equal. seq_cst with the sleeper's
        // store of sleeping_ then load of seq_: one side sees the other.
        seq_.fetch_add(1, std::memory_order_seq_cst);
        if (sleeping_.load(std::memory_order_seq_cst)) {
            {
                std::lock_guard lock(mutex_);
                ++epoch_;
            }
            cv_.notify_all();
        }
    }

    /// Taken by the poller before it checks its conditions (a stop flag,
    /// work in flight): an activity() after it cuts the next idle() short.
    [[nodiscard]] std::uint64_t ticket() const noexcept { return seq_.load(std::memory_order_seq_cst); }

    /// A poll found nothing: wait a little, as the time since the last
    /// activity says. With `nothing_expected` (no reply can come unless
    /// someone first calls activity()), sleeps until activity(). Returns at
    /// once if there was activity since `ticket`.
    void idle(std::uint64_t ticket, bool nothing_expected = false) {
        const auto quiet = std::chrono::nanoseconds(now_ns() - last_ns_.load(std::memory_order_relaxed));
        if (!nothing_expected && quiet < yield_until) {
            std::this_thread::yield();
            return;
        }
        std::unique_lock lock(mutex_);
        const auto seen = epoch_;
        sleeping_.store(true, std::memory_order_seq_cst);
        // Re-check after announcing: an activity() between the load above
        // and here would otherwise be missed until the timeout.
        if (seq_.load(std::memory_order_seq_cst) != ticket) {
            sleeping_.store(false, std::memory_order_relaxed);
            return;
        }
        if (nothing_expected) {
            cv_.wait(lock, [&] { return epoch_ != seen; });
        } else {
            auto nap = std::clamp<std::chrono::nanoseconds>((quiet - yield_until) / 4, min_sleep, max_sleep);
            cv_.wait_for(lock, nap, [&] { return epoch_ != seen; });
        }
        sleeping_.store(false, std::memory_order_relaxed);
    }

private:
    static std::int64_t now_ns() noexcept {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(clock::now().time_since_epoch()).count();
    }

    std::atomic<std::int64_t> last_ns_{0};   // when activity() was last called
    std::atomic<std::uint64_t> seq_{0};      // activity() calls so far: what a ticket is
    std::atomic<bool> sleeping_{false};
    std::mutex mutex_;
    std::condition_variable cv_;
    std::uint64_t epoch_ = 0;  // guarded by mutex_: bumped by activity() while someone sleeps
};

}  // namespace mp::detail
