// mpi/buffers.hpp — the memory that large MPI messages are received into.
//
// A 256 MiB argument or result costs far more in fresh pages than in the
// copy itself: receiving it into newly allocated memory takes one page fault
// and one zeroed page per 4 KiB (measured here: five times a warm memcpy).
// So a message of at least large_message_bytes is received into a block from
// a pool that keeps the last block for the next large message: the second
// and later ones land in memory that is already mapped. Two kinds:
// - private memory (rank 0's results): huge pages where allowed, mapped in
//   one call when the block is made;
// - named shared memory (a worker rank's tasks): the rank's local worker
//   process maps the block and decodes the task where it lies, so the task
//   crosses from rank 0 to the process that runs it with one copy, MPI's.
// A pool keeps at most one spare block, and lets it go once it has been
// unused for spare_lifetime (an idle program does not hold 256 MiB).
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>

#include "mp/detail/unique_fd.hpp"

namespace mp::detail::mpi_wire {

/// From this size on a received message goes into a pooled block. Below it,
/// a plain allocation is cheaper than the pool's handover.
constexpr std::size_t large_message_bytes = std::size_t{1} << 20;

/// A block of memory a message is received into; back to its pool when the
/// last shared_ptr to it goes.
class large_block {
public:
    large_block(const large_block&) = delete;
    large_block& operator=(const large_block&) = delete;
    ~large_block();

    [[nodiscard]] std::byte* data() const noexcept { return data_; }
    [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }
    /// The block's name in /dev/shm (with its leading '/'), for another
    /// process of this host to map; "" for private memory.
    [[nodiscard]] const std::string& shm_name() const noexcept { return name_; }

private:
    friend class block_pool;
    large_block() = default;

    std::byte* data_ = nullptr;
    std::size_t capacity_ = 0;
    std::string name_;
    unique_fd fd_;
};

/// Hands out blocks of at least a given size, reusing the last one given
/// back. Thread-safe; blocks may outlive the pool.
class block_pool {
public:
    enum class kind { private_memory, shared_memory };
    /// How long an unused spare block is kept (see trim()).
    static constexpr auto spare_lifetime = std::chrono::seconds(1);

    explicit block_pool(kind k);
    block_pool(const block_pool&) = delete;
    block_pool& operator=(const block_pool&) = delete;

    /// A block of at least `size` bytes, every page mapped. Throws
    /// mp::system_error when memory (or /dev/shm) is full.
    [[nodiscard]] std::shared_ptr<large_block> acquire(std::size_t size);
    /// Frees the spare block if it has been unused for spare_lifetime. From
    /// a polling loop; cheap when there is nothing to free.
    void trim() noexcept;
    /// Whether a spare block is kept (a poller must come back to trim it).
    [[nodiscard]] bool holds_spare() const noexcept;

private:
    struct state;
    std::shared_ptr<state> state_;
};

/// In a local worker process: maps the shared block `name` read-only (every
/// page at once) and keeps it mapped while this lives.
class mapped_block {
public:
    explicit mapped_block(const std::string& name);
    mapped_block(const mapped_block&) = delete;
    mapped_block& operator=(const mapped_block&) = delete;
    ~mapped_block();
    [[nodiscard]] const std::byte* data() const noexcept { return data_; }
    [[nodiscard]] std::size_t size() const noexcept { return size_; }

private:
    const std::byte* data_ = nullptr;
    std::size_t size_ = 0;
};

}  // namespace mp::detail::mpi_wire
