// thread_pool_test_hooks.hpp — fault injection for thread_pool_executor's
// regression tests. Inert unless a test sets it; not reachable from the
// public API. It opens a window that cannot be produced reliably from outside:
// a submitter preempted between counting its call and linking it.
#pragma once

#include <atomic>

namespace mp::detail::thread_pool_test_hooks {

/// Microseconds a submit sleeps between counting its call in the queue and
/// linking it (0: none). links_delayed counts the submits that slept there
/// (incremented before the sleep).
extern std::atomic<int> link_delay_us;
extern std::atomic<int> links_delayed;

}  // namespace mp::detail::thread_pool_test_hooks
