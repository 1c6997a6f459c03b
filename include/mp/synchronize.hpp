// mp/synchronize.hpp — locks, semaphores, conditions, events and barriers
// shared between processes (and threads), like Python's
// multiprocessing.synchronize.
//
//     mp::lock lk;
//     mp::process p(worker, lk);           // the child shares lk
//     { std::lock_guard guard(lk); ... }   // excludes the child
//
// Every object is a cheap, copyable handle: copies (and the handles that
// other processes receive) refer to the same kernel object, which lives in a
// small memfd mapped shared, and stays alive while any handle to it exists.
// A fork child inherits its parent's handles; a spawn or forkserver child
// receives them as process arguments (or through a queue or pipe): the memfd
// travels as a file descriptor. All operations are thread-safe and
// fork-safe. Blocking calls take std::chrono durations; one too long to be
// a deadline (hours::max(), ...) means "no timeout".
//
// A lock whose holder dies (killed, crashed, or a thread that exited) is not
// lost: the next acquire succeeds and owner_died() tells it that the data the
// lock protected may be half-updated.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <type_traits>

#include "mp/detail/archive.hpp"
#include "mp/detail/unique_fd.hpp"
#include "mp/detail/deadline.hpp"
#include "mp/error.hpp"
#include "mp/function.hpp"

namespace mp {

namespace detail {

using sync_clock = std::chrono::steady_clock;
/// nullopt: wait forever.
using sync_deadline = std::optional<sync_clock::time_point>;


template <class Clock, class Duration>
[[nodiscard]] sync_deadline deadline_at(const std::chrono::time_point<Clock, Duration>& when) {
    if constexpr (std::is_same_v<Clock, sync_clock>)
        return std::chrono::time_point_cast<sync_clock::duration>(when);
    else
        return deadline_after(when - Clock::now());
}

/// One synchronisation object's shared state: a small memfd, mapped shared,
/// starting with a header that says what it holds (checked when a handle is
/// received from another process). Immutable after construction.
class sync_block {
public:
    enum class kind : std::uint32_t {
        lock = 1, rlock, semaphore, condition, event, barrier, value, array,
        any_lock = 100  // for attach(): a lock or an rlock
    };

    /// A new zero-filled block for `k` with room for `payload` bytes of
    /// `element_size`-byte elements (value/array; 0 for the others), its
    /// state initialised. Throws mp::system_error.
    static std::shared_ptr<sync_block> create(kind k, std::size_t payload = 0, std::size_t element_size = 0);
    /// Maps a block received from another process. Throws
    /// mp::serialization_error if fd is not a block of kind `k` (with
    /// `element_size`-byte elements, when not 0).
    static std::shared_ptr<sync_block> attach(unique_fd fd, kind k, std::size_t element_size = 0);

    sync_block(const sync_block&) = delete;
    sync_block& operator=(const sync_block&) = delete;
    ~sync_block();

    [[nodiscard]] int fd() const noexcept { return fd_.get(); }
    /// The object's state (or, for value/array, the elements), 64-byte aligned.
    [[nodiscard]] void* payload() const noexcept;
    [[nodiscard]] std::size_t payload_size() const noexcept;
    [[nodiscard]] kind type() const noexcept;

private:
    sync_block(unique_fd fd, void* base, std::size_t map_size) noexcept
        : fd_(std::move(fd)), base_(base), map_size_(map_size) {}

    unique_fd fd_;
    void* base_;
    std::size_t map_size_;
};

template <class Archive>
constexpr void require_mp_output_archive() {
    static_assert(std::is_same_v<Archive, output_archive>,
                  "mp: synchronisation objects, mp::value/mp::array and mp::shared_memory can only be "
                  "written with mp's own archive (as a process argument, or through an mp::queue or "
                  "mp::pipe): they travel as file descriptors");
}
template <class Archive>
constexpr void require_mp_input_archive() {
    static_assert(std::is_same_v<Archive, input_archive>,
                  "mp: synchronisation objects, mp::value/mp::array and mp::shared_memory can only be "
                  "read with mp's own archive (as a process argument, or through an mp::queue or "
                  "mp::pipe): they travel as file descriptors");
}

/// Writes a reference to `block` (its fd) into an mp message.
inline void save_block(output_archive& ar, const sync_block& block) {
    std::uint32_t index = ar.add_fd(block.fd());
    ar(index);
}
inline std::shared_ptr<sync_block> load_block(input_archive& ar, sync_block::kind k,
                                              std::size_t element_size = 0) {
    std::uint32_t index = 0;
    ar(index);
    return sync_block::attach(ar.take_fd(index), k, element_size);
}

/// What mp::lock and mp::rlock share: a robust, process-shared pthread mutex.
class basic_lock {
public:
    /// Blocks until this thread holds the lock. Throws mp::lock_error if the
    /// lock is not recursive and this thread already holds it (a certain
    /// deadlock).
    void lock() { (void)acquire_until(std::nullopt, true); }
    /// Takes the lock if it is free (or, for an rlock, held by this thread).
    [[nodiscard]] bool try_lock() { return acquire_until(std::nullopt, false); }
    /// Gives the lock back. Throws mp::lock_error if this thread does not hold it.
    void unlock();

    /// Python's acquire(block): blocks if `block`, else tries once.
    /// Returns whether the lock is now held (always true when `block`).
    bool acquire(bool block = true) { return acquire_until(std::nullopt, block); }
    /// Python's acquire(timeout=...): false if the lock was not obtained in
    /// time (at once if this thread holds a non-recursive lock).
    template <class Rep, class Period>
    [[nodiscard]] bool acquire(const std::chrono::duration<Rep, Period>& timeout) {
        return acquire_until(deadline_after(timeout), true);
    }
    void release() { unlock(); }

    // TimedLockable, for std::unique_lock.
    template <class Rep, class Period>
    [[nodiscard]] bool try_lock_for(const std::chrono::duration<Rep, Period>& timeout) {
        return acquire(timeout);
    }
    template <class Clock, class Duration>
    [[nodiscard]] bool try_lock_until(const std::chrono::time_point<Clock, Duration>& when) {
        return acquire_until(deadline_at(when), true);
    }

    /// True when the caller holds the lock and got it from a holder that died
    /// holding it (the data it guards may be inconsistent). Reset by the next
    /// acquire from a normally released lock. Only meaningful to the holder.
    [[nodiscard]] bool owner_died() const noexcept;
    /// True when the calling thread holds the lock.
    [[nodiscard]] bool is_owned() const noexcept;

    template <class Archive>
    void save(Archive& ar) const {
        require_mp_output_archive<Archive>();
        save_block(ar, *block_);
    }
    template <class Archive>
    void load(Archive& ar) {
        require_mp_input_archive<Archive>();
        block_ = load_block(ar, kind_);
    }

    /// The shared state, for mp's own use (mp::condition).
    [[nodiscard]] const std::shared_ptr<sync_block>& block() const noexcept { return block_; }

    /// Two handles are equal when they refer to the same lock.
    friend bool operator==(const basic_lock& a, const basic_lock& b) noexcept { return a.block_ == b.block_; }

    // Copying shares the lock. There is no move: a handle is never empty.
    basic_lock(const basic_lock&) = default;
    basic_lock& operator=(const basic_lock&) = default;

protected:
    explicit basic_lock(sync_block::kind k) : block_(sync_block::create(k)), kind_(k) {}
    bool acquire_until(sync_deadline deadline, bool block);

    std::shared_ptr<sync_block> block_;  // never null
    sync_block::kind kind_;              // lock, rlock, or any_lock (mp::condition's)
};

}  // namespace detail

/// A non-recursive process-shared lock; mp::lock names it. Releasing it from
/// a thread that does not hold it throws mp::lock_error (Python's
/// multiprocessing.Lock would let any process release it).
class lock_type : public detail::basic_lock {
public:
    /// A new, unlocked lock. Throws mp::system_error.
    lock_type() : basic_lock(detail::sync_block::kind::lock) {}
};
using lock = lock_type;

/// A recursive process-shared lock (Python's RLock); mp::rlock names it. The
/// thread holding it may acquire it again and must release it as many times.
class rlock_type : public detail::basic_lock {
public:
    /// A new, unlocked recursive lock. Throws mp::system_error.
    rlock_type() : basic_lock(detail::sync_block::kind::rlock) {}
};
using rlock = rlock_type;

/// A counting semaphore (Python's multiprocessing.Semaphore). Also Lockable:
/// lock() acquires, unlock() releases. Thread-safe and fork-safe.
class semaphore {
public:
    /// Throws mp::system_error.
    explicit semaphore(std::uint32_t value = 1) : semaphore(value, false) {}
    // Copying shares the semaphore. There is no move: a handle is never empty.
    semaphore(const semaphore&) = default;
    semaphore& operator=(const semaphore&) = default;

    bool acquire(bool block = true) { return acquire_until(std::nullopt, block); }
    template <class Rep, class Period>
    [[nodiscard]] bool acquire(const std::chrono::duration<Rep, Period>& timeout) {
        return acquire_until(detail::deadline_after(timeout), true);
    }
    /// Adds n to the counter, waking up to n waiters. Throws mp::value_error
    /// if a bounded_semaphore would go above its initial value, or if the
    /// counter would overflow.
    void release(std::uint32_t n = 1);
    /// The counter's current value (a snapshot).
    [[nodiscard]] std::uint32_t get_value() const noexcept;

    void lock() { (void)acquire(true); }
    [[nodiscard]] bool try_lock() { return acquire(false); }
    void unlock() { release(); }
    template <class Rep, class Period>
    [[nodiscard]] bool try_lock_for(const std::chrono::duration<Rep, Period>& timeout) {
        return acquire(timeout);
    }
    template <class Clock, class Duration>
    [[nodiscard]] bool try_lock_until(const std::chrono::time_point<Clock, Duration>& when) {
        return acquire_until(detail::deadline_at(when), true);
    }

    template <class Archive>
    void save(Archive& ar) const {
        detail::require_mp_output_archive<Archive>();
        detail::save_block(ar, *block_);
    }
    template <class Archive>
    void load(Archive& ar) {
        detail::require_mp_input_archive<Archive>();
        block_ = detail::load_block(ar, detail::sync_block::kind::semaphore);
    }

protected:
    semaphore(std::uint32_t value, bool bounded);

private:
    bool acquire_until(detail::sync_deadline deadline, bool block);
    std::shared_ptr<detail::sync_block> block_;
};

/// A semaphore whose release() throws mp::value_error rather than go above
/// its initial value (Python's BoundedSemaphore).
class bounded_semaphore : public semaphore {
public:
    explicit bounded_semaphore(std::uint32_t value = 1) : semaphore(value, true) {}
};

/// A condition variable bound to a process-shared lock (Python's
/// multiprocessing.Condition). Lockable itself: lock()/unlock() act on its
/// lock. wait() may return spuriously: wait_for(predicate) handles that.
class condition {
public:
    /// With a new rlock. Throws mp::system_error.
    condition();
    /// With `lk` as its lock (shared with every other handle to it).
    explicit condition(const lock_type& lk);
    explicit condition(const rlock_type& lk);
    // Copying shares the condition. There is no move: a handle is never empty.
    condition(const condition&) = default;
    condition& operator=(const condition&) = default;

    void lock() { lock_.lock(); }
    [[nodiscard]] bool try_lock() { return lock_.try_lock(); }
    void unlock() { lock_.unlock(); }
    bool acquire(bool block = true) { return lock_.acquire(block); }
    template <class Rep, class Period>
    [[nodiscard]] bool acquire(const std::chrono::duration<Rep, Period>& timeout) {
        return lock_.acquire(timeout);
    }
    void release() { lock_.unlock(); }
    [[nodiscard]] bool owner_died() const noexcept { return lock_.owner_died(); }

    /// Releases the lock (fully, for an rlock held several times), sleeps
    /// until notified, then re-acquires it to the same depth. Throws
    /// mp::lock_error if the calling thread does not hold the lock.
    void wait() { (void)wait_until(std::nullopt); }
    /// As wait(); false if it timed out. The lock is held again either way.
    template <class Rep, class Period>
    [[nodiscard]] bool wait(const std::chrono::duration<Rep, Period>& timeout) {
        return wait_until(detail::deadline_after(timeout));
    }
    /// Waits until pred() is true (checked with the lock held) or the timeout
    /// passes; returns the last value of pred().
    template <class Predicate>
    bool wait_for(Predicate pred) {
        while (!pred()) (void)wait_until(std::nullopt);
        return true;
    }
    template <class Predicate, class Rep, class Period>
    bool wait_for(Predicate pred, const std::chrono::duration<Rep, Period>& timeout) {
        auto deadline = detail::deadline_after(timeout);
        bool result = pred();
        while (!result) {
            bool in_time = wait_until(deadline);
            result = pred();
            if (!in_time) break;
        }
        return result;
    }
    /// Wakes at least one waiter if there is one (up to n; a woken waiter
    /// re-checks its predicate). Throws mp::lock_error if the calling thread
    /// does not hold the lock.
    void notify(std::uint32_t n = 1);
    void notify_all();

    template <class Archive>
    void save(Archive& ar) const {
        detail::require_mp_output_archive<Archive>();
        detail::save_block(ar, *block_);
        ar(lock_);
    }
    template <class Archive>
    void load(Archive& ar) {
        detail::require_mp_input_archive<Archive>();
        block_ = detail::load_block(ar, detail::sync_block::kind::condition);
        ar(lock_);
    }

private:
    /// Any basic_lock; lock_type and rlock_type add nothing but constructors.
    struct any_lock : detail::basic_lock {
        any_lock() : basic_lock(detail::sync_block::kind::rlock) { kind_ = detail::sync_block::kind::any_lock; }
        explicit any_lock(const basic_lock& other) : basic_lock(other) {
            kind_ = detail::sync_block::kind::any_lock;
        }
    };
    bool wait_until(detail::sync_deadline deadline);

    std::shared_ptr<detail::sync_block> block_;
    any_lock lock_;
};

/// A flag processes can wait for (Python's multiprocessing.Event).
class event {
public:
    /// A new event, not set. Throws mp::system_error.
    event();
    // Copying shares the event. There is no move: a handle is never empty.
    event(const event&) = default;
    event& operator=(const event&) = default;
    /// Sets the flag and wakes every waiter.
    void set() noexcept;
    void clear() noexcept;
    [[nodiscard]] bool is_set() const noexcept;
    /// Blocks until the flag is set; returns true.
    bool wait() { return wait_until(std::nullopt); }
    /// True if the flag was set before the timeout (even if cleared since).
    template <class Rep, class Period>
    [[nodiscard]] bool wait(const std::chrono::duration<Rep, Period>& timeout) {
        return wait_until(detail::deadline_after(timeout));
    }

    template <class Archive>
    void save(Archive& ar) const {
        detail::require_mp_output_archive<Archive>();
        detail::save_block(ar, *block_);
    }
    template <class Archive>
    void load(Archive& ar) {
        detail::require_mp_input_archive<Archive>();
        block_ = detail::load_block(ar, detail::sync_block::kind::event);
    }

private:
    bool wait_until(detail::sync_deadline deadline);
    std::shared_ptr<detail::sync_block> block_;
};

/// A barrier for a fixed number of parties (Python's
/// multiprocessing.Barrier, with threading.Barrier's semantics).
class barrier {
public:
    using timeout_type = std::chrono::nanoseconds;

    /// `parties` must be at least 1 (else mp::value_error). `action`, if
    /// given, is run by one party (the last to arrive) before the others are
    /// released; if it throws, the barrier breaks. `timeout` is the default
    /// for wait(). Throws mp::system_error.
    explicit barrier(std::uint32_t parties = 1, function<void()> action = {},
                     std::optional<timeout_type> timeout = std::nullopt);
    template <class Rep, class Period>
    barrier(std::uint32_t parties, function<void()> action, std::chrono::duration<Rep, Period> timeout)
        : barrier(parties, std::move(action),
                  std::optional<timeout_type>(std::chrono::ceil<timeout_type>(timeout))) {}
    // Copying shares the barrier. There is no move: a handle is never empty.
    barrier(const barrier&) = default;
    barrier& operator=(const barrier&) = default;

    /// Waits until all parties have called wait(); returns this party's
    /// arrival index, 0 .. parties()-1. Throws mp::broken_barrier_error if
    /// the barrier is or becomes broken: abort(), reset() while waiting, a
    /// failing action, or a wait that timed out (which breaks it for all).
    std::uint32_t wait() { return wait_until(default_deadline()); }
    template <class Rep, class Period>
    std::uint32_t wait(const std::chrono::duration<Rep, Period>& timeout) {
        return wait_until(detail::deadline_after(timeout));
    }
    /// Back to the empty state; current waiters get mp::broken_barrier_error.
    void reset();
    /// Breaks the barrier: current and future waiters get
    /// mp::broken_barrier_error until reset().
    void abort();
    [[nodiscard]] std::uint32_t parties() const noexcept;
    [[nodiscard]] std::uint32_t n_waiting() const;
    [[nodiscard]] bool broken() const;

    template <class Archive>
    void save(Archive& ar) const {
        detail::require_mp_output_archive<Archive>();
        detail::save_block(ar, *block_);
        ar(action_, timeout_.has_value(), static_cast<std::int64_t>(timeout_ ? timeout_->count() : 0));
    }
    template <class Archive>
    void load(Archive& ar) {
        detail::require_mp_input_archive<Archive>();
        block_ = detail::load_block(ar, detail::sync_block::kind::barrier);
        bool has_timeout = false;
        std::int64_t ns = 0;
        ar(action_, has_timeout, ns);
        timeout_ = has_timeout ? std::optional<timeout_type>(timeout_type(ns)) : std::nullopt;
    }

private:
    detail::sync_deadline default_deadline() const {
        return timeout_ ? detail::deadline_after(*timeout_) : std::nullopt;
    }
    std::uint32_t wait_until(detail::sync_deadline deadline);

    std::shared_ptr<detail::sync_block> block_;
    function<void()> action_;
    std::optional<timeout_type> timeout_;
};

}  // namespace mp
