// sys/after_fork.hpp — what a process redoes when it finds itself a fork
// child. One registry, as CPython's multiprocessing.util.register_after_fork:
// child-side hooks run in every fork child, in registration order. And one
// kind of mutex that no fork child inherits locked.
//
// Why both: fork() copies the memory of every thread but keeps only the one
// that called it. A lock another thread held at that moment stays locked in
// the child forever, and the data it guarded may be half-written; a cached
// thread id or a handle to a helper process of the parent is wrong there.
#pragma once

#include <mutex>

namespace mp::sys {

/// Registers `hook` to run in the child of every fork() of this process (mp's
/// fork start method, the forkserver's forks, the program's own fork()), in
/// the forking thread before fork() returns there, after every
/// fork_guarded_mutex has been made unlocked, in registration order.
/// A hook resets state the child must not share with its parent (a cached
/// thread id, a handle to one of the parent's helpers); it must not block,
/// throw, or take a lock other than a fork_guarded_mutex. Hooks stay
/// registered for the life of the process: register once per process-wide
/// object. Not run for posix_spawn (a fresh program) nor for raw _Fork().
void register_after_fork(void (*hook)());

/// A mutex that a fork child never inherits locked: fork() waits until no
/// other thread holds it, and the child gets it unlocked with the data it
/// guards consistent (the way glibc protects malloc). For process-wide leaf
/// locks held for a short time: a registry, a handle to a helper process.
/// Rules: never call fork() while holding one, and never take one while
/// holding another (fork() takes them all, in creation order). Objects must
/// outlive every fork of the process (static storage).
class fork_guarded_mutex {
public:
    fork_guarded_mutex() noexcept;
    ~fork_guarded_mutex();
    fork_guarded_mutex(const fork_guarded_mutex&) = delete;
    fork_guarded_mutex& operator=(const fork_guarded_mutex&) = delete;

    void lock() { mutex_.lock(); }
    bool try_lock() { return mutex_.try_lock(); }
    void unlock() { mutex_.unlock(); }

private:
    friend struct fork_registry;
    std::mutex mutex_;
    fork_guarded_mutex* next_ = nullptr;  // guarded by the registry's own lock
};

}  // namespace mp::sys
