// transport/shm/large_results.hpp — where a pool worker puts a large result,
// so that the pool decodes it where it lies.
//
// A result travels through the shared result queue, whose reader copies it
// out under the queue's lock (decoding runs user types' code, which must not
// run under a lock of ours). For a small result that copy costs nothing; for
// a large one (a 256 MiB vector) it is a whole extra pass over fresh memory.
// So a result of at least large_result_threshold bytes goes into its
// worker's own area instead, and only a small notice goes through the queue;
// the pool's result thread decodes the value straight from the area, with no
// lock held, then hands the area back.
//
// One area per worker slot, owned by the pool (it outlives the workers).
// Its pages stay between results, so a worker returning large results one
// after another writes into pages that exist and are mapped (no page faults,
// no zeroing on its side). It grows to the largest result written since the
// worker last went idle (only the new part is reserved and mapped); a worker
// that finds no task for idle_shrink_after gives back every page beyond the
// first warm_size bytes, so a huge result does not hold its memory while the
// pool idles. Only the slot's worker grows or shrinks it, and only while it
// is free; the populated size is kept in the header so that a replacement
// worker knows what its predecessor left.
//
// Its state word says who may touch the data: free (the slot's worker may write
// its next large result) or full (the pool reads it), tagged with the
// generation of the worker that filled it (a replacement is the next
// generation). Handover, each step one atomic store or compare-and-swap:
//   worker: waits for free, writes the data, stores full(gen), sends the notice;
//   pool:   reads the notice, decodes, frees (only if still full(gen)).
// A worker that dies with its area full and no notice sent leaves full(gen)
// behind; the pool frees it when it learns of the death (after every notice
// that worker sent), and the compare-and-swap keeps that from freeing an
// area that the replacement has filled since.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "mp/detail/unique_fd.hpp"

namespace mp::detail {

class output_archive;

/// From this size on a result goes through its worker's area. Trade-off:
/// below it, the copy out of the queue is cheaper than the area's handover
/// (a futex wake-up and a page reservation); above it the copy dominates.
constexpr std::size_t large_result_threshold = std::size_t{1} << 20;

/// How long a worker finds no task before its area gives back its spare pages.
constexpr auto idle_shrink_after = std::chrono::seconds(1);

class large_result_area {
public:
    /// Creates an area (the pool's side).
    large_result_area();
    /// Maps an area received by a worker.
    explicit large_result_area(unique_fd fd);
    ~large_result_area();
    large_result_area(const large_result_area&) = delete;
    large_result_area& operator=(const large_result_area&) = delete;

    [[nodiscard]] int fd() const noexcept { return fd_.get(); }

    // ---- the worker's side ----
    /// Waits until the area is free, copies `result` in and marks it full by
    /// `generation`. Throws mp::system_error when shared memory is full (the
    /// area stays free) and mp::value_error when the result is too large.
    void fill(const output_archive& result, std::uint32_t generation);
    /// Undoes fill() when the notice could not be sent.
    void unfill(std::uint32_t generation) noexcept;
    /// Whether the area holds pages that shrink_when_idle() would give back.
    [[nodiscard]] bool holds_spare_pages() const noexcept;
    /// Gives back the pages beyond the first warm_size bytes if the pool has
    /// handed the area back (else leaves them: called again later).
    void shrink_when_idle() noexcept;

    // ---- the pool's side ----
    /// The `size` bytes filled by `generation`; nullopt when the area is not
    /// full by that generation or the size is out of bounds (a stale or
    /// corrupt notice).
    [[nodiscard]] std::optional<std::span<const std::byte>> filled(std::uint32_t generation, std::size_t size) const;
    /// Hands the area back to the worker of `generation` if it is still
    /// full by it. Its pages stay for the worker's next result.
    void release(std::uint32_t generation) noexcept;

private:
    std::atomic<std::uint32_t>& state() const noexcept;
    // Bytes of data pages that may be allocated (the worker's high-water mark).
    std::atomic<std::uint64_t>& populated() const noexcept;

    unique_fd fd_;
    std::byte* base_ = nullptr;
    // The worker's side: data bytes whose pages it has reserved and mapped.
    std::size_t ready_ = 0;
    // The worker's side: data bytes reserved (what populated() says, once reserve succeeded).
    std::size_t populated_bytes_ = 0;
};

}  // namespace mp::detail
