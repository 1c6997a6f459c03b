#include "sys/robust_mutex.hpp"

#include <cerrno>
#include <ctime>

#if defined(__SANITIZE_THREAD__)
#define MP_THREAD_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MP_THREAD_SANITIZER 1
#endif
#endif
#ifdef MP_THREAD_SANITIZER
#include <sanitizer/tsan_interface.h>
#endif

namespace mp::sys {
namespace {

// ThreadSanitizer (GCC 12's) intercepts pthread_mutex_lock and
// unlock but not pthread_mutex_clocklock: without telling it, a lock taken
// with a deadline is invisible to it, and the unlock that follows is
// reported as "unlock of an unlocked mutex". A timed lock is told as a
// try-lock: it may fail.
int clocklock(pthread_mutex_t* m, const timespec& ts) {
#ifdef MP_THREAD_SANITIZER
    __tsan_mutex_pre_lock(m, __tsan_mutex_try_lock);
    int r = pthread_mutex_clocklock(m, CLOCK_MONOTONIC, &ts);
    bool got = r == 0 || r == EOWNERDEAD;
    __tsan_mutex_post_lock(m, __tsan_mutex_try_lock | (got ? 0 : __tsan_mutex_try_lock_failed), 0);
    return r;
#else
    return pthread_mutex_clocklock(m, CLOCK_MONOTONIC, &ts);
#endif
}

timespec to_monotonic(clock::time_point t) {
    // std::chrono::steady_clock is CLOCK_MONOTONIC on Linux.
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
    if (ns < 0) ns = 0;
    return timespec{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
}

lock_result interpret(pthread_mutex_t* m, int r, const char* call) {
    if (r == 0) return lock_result::acquired;
    if (r == EOWNERDEAD) {
        pthread_mutex_consistent(m);
        return lock_result::acquired_owner_died;
    }
    if (r == ETIMEDOUT || r == EBUSY) return lock_result::timed_out;
    throw_errno(r, call);
}
}  // namespace

void robust_mutex_init(pthread_mutex_t* m, bool recursive) {
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    pthread_mutexattr_settype(&a, recursive ? PTHREAD_MUTEX_RECURSIVE : PTHREAD_MUTEX_ERRORCHECK);
    int r = pthread_mutex_init(m, &a);
    pthread_mutexattr_destroy(&a);
    if (r != 0) throw_errno(r, "pthread_mutex_init");
}

lock_result robust_mutex_lock(pthread_mutex_t* m, std::optional<clock::time_point> deadline) {
    if (!deadline) return interpret(m, pthread_mutex_lock(m), "pthread_mutex_lock");
    timespec ts = to_monotonic(*deadline);
    return interpret(m, clocklock(m, ts), "pthread_mutex_clocklock");
}

lock_result robust_mutex_try_lock(pthread_mutex_t* m) {
    return interpret(m, pthread_mutex_trylock(m), "pthread_mutex_trylock");
}

void robust_mutex_unlock(pthread_mutex_t* m) {
    int r = pthread_mutex_unlock(m);
    if (r == EPERM) throw error("mp: released a lock that this thread does not hold");
    if (r != 0) throw_errno(r, "pthread_mutex_unlock");
}

}  // namespace mp::sys
