// queue/waiting.cpp — waking the processes that sleep at a waiting place.
#include "queue/layout.hpp"
#include "queue_hooks.hpp"

namespace mp::detail::queue_layout {

void wake_all(waiting_place& w) {
    // Pairs with the sleeper's increment of `sleepers` before it re-checks:
    // either it sees our change, or we see it and wake it.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (w.sleepers.load(std::memory_order_relaxed) == 0) return;
    // One wake-up per sleep: a sleeper that was woken but has not run yet
    // (a loaded machine) does not cost the waker a system call per item.
    if (w.wake_pending.exchange(1, std::memory_order_seq_cst) != 0) return;
    queue_hooks::reach(queue_hooks::point::before_wake);
    w.seq.fetch_add(1, std::memory_order_seq_cst);
    sys::futex_wake(futex_word(w.seq), INT_MAX);
}

}  // namespace mp::detail::queue_layout
