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
    switch (r) {
        case 0: return lock_result::acquired;
        case EOWNERDEAD:
            // The kernel's robust list told us the holder died. Consistent
            // again at once: repair, where needed, is the caller's business,
            // and is written to be redone if the repairer dies too.
            pthread_mutex_consistent(m);
            return lock_result::acquired_owner_died;
        case EBUSY:
        case ETIMEDOUT: return lock_result::timed_out;
        case EDEADLK: return lock_result::already_held;
        case ENOTRECOVERABLE: return lock_result::not_recoverable;
        case EAGAIN: return lock_result::too_deep;
        default: throw_errno(r, call);
    }
}

}  // namespace

void robust_mutex::init(bool recursive) {
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    pthread_mutexattr_settype(&a, recursive ? PTHREAD_MUTEX_RECURSIVE : PTHREAD_MUTEX_ERRORCHECK);
    int r = pthread_mutex_init(&mutex_, &a);
    pthread_mutexattr_destroy(&a);
    if (r != 0) throw_errno(r, "pthread_mutex_init");
}

lock_result robust_mutex::lock(std::optional<clock::time_point> deadline) {
    if (!deadline) return interpret(&mutex_, pthread_mutex_lock(&mutex_), "pthread_mutex_lock");
    timespec ts = to_monotonic(*deadline);
    return interpret(&mutex_, clocklock(&mutex_, ts), "pthread_mutex_clocklock");
}

lock_result robust_mutex::try_lock() { return interpret(&mutex_, pthread_mutex_trylock(&mutex_), "pthread_mutex_trylock"); }

bool robust_mutex::unlock() noexcept { return pthread_mutex_unlock(&mutex_) == 0; }

robust_lock::robust_lock(robust_mutex& m, std::optional<clock::time_point> deadline) : m_(m) { take(m_.lock(deadline)); }

robust_lock::robust_lock(robust_mutex& m, std::try_to_lock_t) : m_(m) { take(m_.try_lock()); }

void robust_lock::take(lock_result r) {
    switch (r) {
        case lock_result::acquired: locked_ = true; break;
        case lock_result::acquired_owner_died:
            locked_ = true;
            owner_died_ = true;
            break;
        case lock_result::timed_out: break;
        case lock_result::already_held: throw error("mp: internal deadlock: a lock of mp taken twice by one thread");
        case lock_result::not_recoverable:
        case lock_result::too_deep: throw error("mp: a shared lock of mp is corrupt");
    }
}

}  // namespace mp::sys
