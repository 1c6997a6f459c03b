// sys/robust_mutex.hpp — the one process-shared mutex of mp: it lives in
// shared memory and survives its holder's death. The next locker gets it, is
// told (acquired_owner_died), and decides whether what it guards needs repair.
// Used by the queue's producer and consumer locks and by mp::lock, mp::rlock
// and mp::barrier.
#pragma once

#include <pthread.h>

#include <mutex>
#include <optional>

#include "sys/sys.hpp"

namespace mp::sys {

enum class lock_result {
    acquired,
    acquired_owner_died,  // acquired from a holder that died holding it; marked consistent again
    timed_out,            // the deadline passed, or try_lock found it held
    already_held,         // a non-recursive mutex locked again by its holder
    not_recoverable,      // a holder that got it from a dead one released it unrepaired
    too_deep,             // a recursive mutex locked too many times by its holder
};

/// Lives in shared memory (standard layout, no pointers). Error-checking:
/// unlocking by a non-holder fails instead of corrupting it, relocking by the
/// holder reports already_held instead of hanging.
class robust_mutex {
public:
    /// Initialises the mutex in place: once, by the creator of the memory it lives in.
    void init(bool recursive = false);
    /// Locks, waiting until `deadline` (none: forever).
    [[nodiscard]] lock_result lock(std::optional<clock::time_point> deadline = std::nullopt);
    [[nodiscard]] lock_result try_lock();
    /// false (and no change) if the calling thread does not hold it.
    bool unlock() noexcept;

private:
    pthread_mutex_t mutex_;
};

/// Holds a robust mutex for a scope. Its holder dying is reported, not thrown:
/// whoever guards state with it checks owner_died() where repair matters.
class robust_lock {
public:
    /// Locks until `deadline`; check locked() when a deadline is given.
    explicit robust_lock(robust_mutex& m, std::optional<clock::time_point> deadline = std::nullopt);
    /// Locks only if the mutex is free now; check locked().
    robust_lock(robust_mutex& m, std::try_to_lock_t);
    robust_lock(const robust_lock&) = delete;
    robust_lock& operator=(const robust_lock&) = delete;
    ~robust_lock() { unlock(); }
    [[nodiscard]] bool locked() const noexcept { return locked_; }
    [[nodiscard]] bool owner_died() const noexcept { return owner_died_; }
    void unlock() noexcept {
        if (locked_) m_.unlock();
        locked_ = false;
    }

private:
    void take(lock_result r);

    robust_mutex& m_;
    bool locked_ = false;
    bool owner_died_ = false;
};

}  // namespace mp::sys
