// sys/robust_mutex.hpp — a process-shared mutex in shared memory that
// survives its holder's death: the next locker gets it, and is told.
#pragma once

#include <pthread.h>

#include <optional>

#include "sys/sys.hpp"

namespace mp::sys {

enum class lock_result { acquired, acquired_owner_died, timed_out };

/// Initialises a robust, process-shared mutex in place (once, by its creator).
void robust_mutex_init(pthread_mutex_t* m, bool recursive = false);
/// Locks, waiting until `deadline` (none: forever). After a holder died the
/// mutex is made consistent again and acquired_owner_died is returned.
lock_result robust_mutex_lock(pthread_mutex_t* m, std::optional<clock::time_point> deadline = std::nullopt);
lock_result robust_mutex_try_lock(pthread_mutex_t* m);
/// Throws mp::error if the caller does not hold the mutex.
void robust_mutex_unlock(pthread_mutex_t* m);

/// RAII holder for a robust mutex.
class robust_guard {
public:
    explicit robust_guard(pthread_mutex_t* m) : m_(m) { robust_mutex_lock(m_); }
    robust_guard(const robust_guard&) = delete;
    robust_guard& operator=(const robust_guard&) = delete;
    ~robust_guard() { pthread_mutex_unlock(m_); }

private:
    pthread_mutex_t* m_;
};

}  // namespace mp::sys
