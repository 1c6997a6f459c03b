#include "sys/after_fork.hpp"

#include <pthread.h>

#include <new>
#include <vector>

namespace mp::sys {

// One pthread_atfork registration serves every hook and every guarded mutex:
// prepare takes the registry's lock and then each guarded mutex (so no other
// thread is inside one at the moment of the copy), the parent releases them,
// the child makes them fresh and then runs the hooks.
struct fork_registry {
    std::mutex mutex;
    std::vector<void (*)()> hooks;         // guarded by mutex
    fork_guarded_mutex* first = nullptr;   // guarded by mutex; in creation order
    fork_guarded_mutex* last = nullptr;    // guarded by mutex

    static fork_registry& get() {
        // Never destroyed: a fork may happen while static destructors run.
        static fork_registry* r = [] {
            auto* reg = new fork_registry;
            ::pthread_atfork(&prepare, &in_parent, &in_child);
            return reg;
        }();
        return *r;
    }

    static void prepare() {
        auto& r = get();
        r.mutex.lock();
        for (auto* m = r.first; m; m = m->next_) m->mutex_.lock();
    }

    static void in_parent() {
        auto& r = get();
        for (auto* m = r.first; m; m = m->next_) m->mutex_.unlock();
        r.mutex.unlock();
    }

    static void in_child() {
        // Fresh, not unlocked: the thread that locked them is not this one
        // (same code, another tid), and a fresh mutex is unlocked by definition.
        auto& r = get();
        for (auto* m = r.first; m; m = m->next_) new (&m->mutex_) std::mutex;
        new (&r.mutex) std::mutex;
        for (auto hook : r.hooks) hook();
    }
};

void register_after_fork(void (*hook)()) {
    auto& r = fork_registry::get();
    std::lock_guard guard(r.mutex);
    r.hooks.push_back(hook);
}

fork_guarded_mutex::fork_guarded_mutex() noexcept {
    auto& r = fork_registry::get();
    std::lock_guard guard(r.mutex);
    if (r.last)
        r.last->next_ = this;
    else
        r.first = this;
    r.last = this;
}

fork_guarded_mutex::~fork_guarded_mutex() {
    auto& r = fork_registry::get();
    std::lock_guard guard(r.mutex);
    fork_guarded_mutex* previous = nullptr;
    for (auto* m = r.first; m; previous = m, m = m->next_) {
        if (m != this) continue;
        (previous ? previous->next_ : r.first) = next_;
        if (r.last == this) r.last = previous;
        break;
    }
}

}  // namespace mp::sys
