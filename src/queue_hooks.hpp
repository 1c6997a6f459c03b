// queue_hooks.hpp — test-only hooks into the queue's critical windows. Not
// part of the public API: tests include it through the src include directory
// to pause or kill a process at an exact point inside put() or get(), which
// is how crash-consistency and race fixes are shown to hold.
#pragma once

#include <atomic>

namespace mp::detail::queue_hooks {

enum class point {
    before_publish,  // put(): the record is written, not yet stamped (claimed on an unbounded queue;
                     // on another, not yet visible: put lock held)
    after_take,      // get(): the item left the queue, get() has not returned yet
    after_wrap,      // get(): a consumer moved past a jump back to the start of the ring
    before_release,  // a reader's pages are about to be given back to the system
    drop_owed,       // get(): an unreadable item left the queue, its drop not yet counted
    before_wake,     // a waker announced its wake-up (wake_pending), has not made it yet
    before_settle,   // get(): a consumer is about to look for the owner of an unstamped claim
    large_piece_announced,  // put(): a piece of a large item was announced to consumers, the rest not yet written
    large_piece_read,       // get(): a consumer copied a piece of a large item its producer still writes
};

using hook = void (*)(point);

/// The installed hook (none by default). Called in the process that reaches the point.
inline std::atomic<hook> installed{nullptr};

inline void reach(point p) {
    if (hook h = installed.load(std::memory_order_relaxed)) h(p);
}

}  // namespace mp::detail::queue_hooks
