// The area of one worker slot for large results (large_results.hpp).
#include "transport/shm/large_results.hpp"

#include <string>

#include "mp/detail/archive.hpp"
#include "mp/error.hpp"
#include "sys/memory.hpp"
#include "sys/sys.hpp"

namespace mp::detail {

namespace {

constexpr std::size_t header_size = 4096;
// A result may be as large as a queue item.
constexpr std::size_t capacity = std::size_t{2} << 30;
// The pages of this much of the area stay even while its worker idles.
constexpr std::size_t warm_size = std::size_t{8} << 20;
// Header layout: the state word, then the populated size.
constexpr std::size_t populated_offset = 8;

constexpr std::uint32_t full_bit = 1;
constexpr std::uint32_t full_by(std::uint32_t generation) { return generation << 1 | full_bit; }
constexpr std::uint32_t free_after(std::uint32_t generation) { return generation << 1; }

std::size_t page_round(std::size_t n) {
    const std::size_t page = sys::page_size();
    return (n + page - 1) & ~(page - 1);
}

}  // namespace

large_result_area::large_result_area() {
    fd_ = sys::memfd_sparse("mp-pool-large-result", header_size + capacity);
    sys::reserve(fd_.get(), 0, header_size, "a pool's large-result area");
    base_ = static_cast<std::byte*>(sys::map_shared(fd_.get(), header_size + capacity, 0, true));
    new (base_) std::atomic<std::uint32_t>(0);
    new (base_ + populated_offset) std::atomic<std::uint64_t>(0);
}

large_result_area::large_result_area(unique_fd fd) : fd_(std::move(fd)) {
    if (sys::file_size(fd_.get()) != header_size + capacity)
        throw serialization_error("mp: a pool worker received a large-result area of the wrong size");
    // What a predecessor left (populated() says how far it got) is neither
    // counted as reserved nor mapped here: the first fill() reserves and maps
    // what it needs, and shrink_when_idle() gives back the rest.
    base_ = static_cast<std::byte*>(sys::map_shared(fd_.get(), header_size + capacity, 0, true));
}

large_result_area::~large_result_area() { sys::unmap(base_, header_size + capacity); }

std::atomic<std::uint32_t>& large_result_area::state() const noexcept {
    return *reinterpret_cast<std::atomic<std::uint32_t>*>(base_);
}

std::atomic<std::uint64_t>& large_result_area::populated() const noexcept {
    return *reinterpret_cast<std::atomic<std::uint64_t>*>(base_ + populated_offset);
}

void large_result_area::fill(const output_archive& result, std::uint32_t generation) {
    const std::size_t size = result.size();
    if (size > capacity)
        throw value_error("mp: a task's result of " + std::to_string(size) + " bytes is larger than a pool can return (" +
                          std::to_string(capacity) + "); return an mp::shared_array or mp::shared_memory instead");
    // The pool reads the previous large result still: wait until it hands the area back.
    for (;;) {
        std::uint32_t s = state().load(std::memory_order_acquire);
        if ((s & full_bit) == 0) break;
        (void)sys::futex_wait(reinterpret_cast<const std::uint32_t*>(&state()), s, std::nullopt);
    }
    std::byte* data = base_ + header_size;
    const std::size_t need = page_round(size);
    if (need > populated_bytes_) {
        // Recorded first: pages of a worker that dies while reserving them
        // are given back by its replacement.
        populated().store(need, std::memory_order_release);
        sys::reserve(fd_.get(), header_size + populated_bytes_, need - populated_bytes_, "a task's result");
        populated_bytes_ = need;
    }
    if (need > ready_) {
        // Mapped in one call, not one page fault per 4 KiB during the copy.
        sys::prefault_for_write(data + ready_, need - ready_);
        ready_ = need;
    }
    result.copy_to(data);
    state().store(full_by(generation), std::memory_order_release);
}

void large_result_area::unfill(std::uint32_t generation) noexcept {
    auto expected = full_by(generation);
    (void)state().compare_exchange_strong(expected, free_after(generation), std::memory_order_acq_rel);
}

std::optional<std::span<const std::byte>> large_result_area::filled(std::uint32_t generation, std::size_t size) const {
    if (state().load(std::memory_order_acquire) != full_by(generation) || size > capacity) return std::nullopt;
    // Mapped here in one call (pages of earlier results stay mapped).
    if (size >= large_result_threshold) sys::prefault_for_read(base_ + header_size, size);
    return std::span<const std::byte>(base_ + header_size, size);
}

void large_result_area::release(std::uint32_t generation) noexcept {
    // Only the pool's result thread frees an area, so nothing frees it between the check and the store.
    if (state().load(std::memory_order_acquire) != full_by(generation)) return;
    state().store(free_after(generation), std::memory_order_release);
    sys::futex_wake(reinterpret_cast<std::uint32_t*>(&state()), 1);
}

bool large_result_area::holds_spare_pages() const noexcept {
    return populated().load(std::memory_order_relaxed) > warm_size;
}

void large_result_area::shrink_when_idle() noexcept {
    const auto extent = static_cast<std::size_t>(populated().load(std::memory_order_acquire));
    if (extent <= warm_size) return;
    // Full: the pool still reads the last result; the worker asks again later.
    if (state().load(std::memory_order_acquire) & full_bit) return;
    sys::punch_hole(fd_.get(), header_size + warm_size, extent - warm_size);
    populated_bytes_ = std::min(populated_bytes_, warm_size);
    ready_ = std::min(ready_, warm_size);
    populated().store(warm_size, std::memory_order_release);
}

}  // namespace mp::detail
