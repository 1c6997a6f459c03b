// queue/pages.cpp — the queue's memory: pages are reserved (fallocate) before
// an item is written, so a full /dev/shm is an exception, not a SIGBUS; only
// pages where data waits are used: those below a small warm window at the
// start of the region stay, the rest are given back as readers pass them.
// Both run under put_lock; producers claiming without it (unbounded queues)
// write only below reserved_to, which never moves back, and pages are given
// back only behind the readers and a lap behind reserved_to, so no producer
// ever writes into a page being given back.
#include <algorithm>
#include <string>

#include "queue/layout.hpp"
#include "queue_hooks.hpp"
#include "sys/memory.hpp"

namespace mp::detail::queue_layout {
namespace {

// Pages are reserved this far past the item being written: one fallocate per
// 256 KiB of new data instead of one per item.
constexpr std::uint64_t reserve_ahead = 256 << 10;

}  // namespace

void ensure_reserved(shared& s, int fd, std::byte* data, std::uint64_t pos, std::uint64_t len, bool map_now) {
    const std::uint64_t lap_start = pos - physical(pos);
    const std::uint64_t begin = physical(pos), end = begin + len;  // a record never crosses a lap's end
    const std::uint64_t warm_reserved = s.warm_reserved.load(std::memory_order_relaxed);
    if (end <= warm_reserved) return;
    std::uint64_t from = begin;
    if (std::uint64_t ahead = forward(pos, s.reserved_to.load(std::memory_order_relaxed)); ahead <= capacity) {
        if (ahead >= len) return;
        from = begin + ahead;
    }
    if (from < warm_reserved) from = warm_reserved;
    const std::uint64_t page = sys::page_size();
    from &= ~(page - 1);
    std::uint64_t to = std::min(capacity, (end + reserve_ahead + page - 1) & ~(page - 1));
    const std::string what = "an mp::queue item of " + std::to_string(len) + " bytes";
    try {
        sys::reserve(fd, header_size + from, to - from, what);
    } catch (const system_error&) {
        // Perhaps the item fits where the look-ahead did not: reserve only what it needs.
        to = (end + page - 1) & ~(page - 1);
        sys::reserve(fd, header_size + from, to - from, what);
    }
    // Mapped here at once: one call instead of a page fault per 4 KiB as
    // the items that follow are written. Not for an item written with write
    // calls: mapping a page for writing makes the kernel zero it first.
    if (map_now) sys::prefault_for_write(data + from, to - from);
    // Release: a producer that reads the new bound finds the pages there.
    s.reserved_to.store(advance(lap_start, to), std::memory_order_release);
    if (from <= warm_reserved && to > warm_reserved)
        s.warm_reserved.store(std::min(to, warm_window), std::memory_order_release);
}

void release_passed_pages(shared& s, int fd) {
    auto tail = end_word::from(s.tail.load(std::memory_order_acquire)).pos;
    std::uint64_t to = tail & ~(release_chunk - 1);
    std::uint64_t from = s.released_to.load(std::memory_order_relaxed);
    if (forward(from, to) == 0 || forward(from, to) > 2 * capacity) return;
    auto head = end_word::from(s.head.load(std::memory_order_acquire)).pos;
    const std::uint64_t reserved_to = s.reserved_to.load(std::memory_order_acquire);
    std::uint64_t in_use = forward(head, reserved_to) <= capacity ? reserved_to : head;
    std::uint64_t floor = (in_use - capacity) & position_mask;  // the lap behind what producers use
    if (forward(from, to) > forward(floor, to)) from = floor;
    queue_hooks::reach(queue_hooks::point::before_release);
    while (forward(from, to) > 0) {
        std::uint64_t lap_end = next_lap(from);
        std::uint64_t stop = forward(from, to) < forward(from, lap_end) ? to : lap_end;
        std::uint64_t lo = std::max(physical(from), warm_window);
        std::uint64_t hi = stop == lap_end ? capacity : physical(stop);
        if (hi > lo) sys::punch_hole(fd, header_size + lo, hi - lo);
        from = stop;
    }
    s.released_to.store(to, std::memory_order_relaxed);
}

}  // namespace mp::detail::queue_layout
