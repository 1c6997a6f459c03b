#include "mpi/buffers.hpp"

#include <atomic>
#include <cstdio>

#include "log.hpp"
#include "mp/error.hpp"
#include "sys/memory.hpp"
#include "sys/process.hpp"
#include "sys/sync_sys.hpp"

namespace mp::detail::mpi_wire {
namespace {

// Blocks grow in steps of a huge page, so that a message a little larger
// than the last one still fits a reused block next time.
constexpr std::size_t block_step = std::size_t{2} << 20;

std::size_t round_up(std::size_t size) { return (size + block_step - 1) / block_step * block_step; }

}  // namespace

struct block_pool::state {
    kind what;
    std::mutex mutex;
    std::unique_ptr<large_block> spare;          // guarded by mutex
    std::chrono::steady_clock::time_point spare_since;  // guarded by mutex
    std::atomic<bool> has_spare{false};
};

large_block::~large_block() {
    if (name_.empty()) {
        delete[] data_;
        return;
    }
    sys::unmap(data_, capacity_);
    try {
        sys::shm_remove(name_);
    } catch (const std::exception& e) {
        detail::log(log_level::warning, std::string("mp: MPI worker rank: removing its receive block: ") + e.what());
    }
}

block_pool::block_pool(kind k) : state_(std::make_shared<state>()) { state_->what = k; }

std::shared_ptr<large_block> block_pool::acquire(std::size_t size) {
    std::unique_ptr<large_block> block;
    {
        std::lock_guard lock(state_->mutex);
        // A spare that fits, and is not far larger than needed (a 1 GiB block
        // is not kept busy for a 2 MiB message while a large one may come).
        if (state_->spare && state_->spare->capacity_ >= size && state_->spare->capacity_ / 4 <= size) {
            block = std::move(state_->spare);
            state_->has_spare.store(false, std::memory_order_relaxed);
        }
    }
    if (!block) {
        block.reset(new large_block);
        const std::size_t capacity = round_up(size);
        if (state_->what == kind::private_memory) {
            block->data_ = new std::byte[capacity];
            block->capacity_ = capacity;
            // Fresh, untouched memory: huge pages where allowed, then every
            // page mapped in one call instead of one fault per 4 KiB.
            sys::advise_huge_pages(block->data_, capacity);
        } else {
            char name[64];
            std::snprintf(name, sizeof name, "/mp-mpi-%d-%016llx", sys::current_pid(),
                          static_cast<unsigned long long>(sys::random_u64()));
            block->fd_ = sys::shm_create(name, capacity);  // pages reserved: a full /dev/shm throws here
            block->name_ = name;
            try {
                block->data_ = static_cast<std::byte*>(sys::map_shared(block->fd_.get(), capacity));
            } catch (...) {
                sys::shm_remove(name);
                block->name_.clear();  // nothing to unmap or remove any more
                throw;
            }
            block->capacity_ = capacity;
        }
        sys::prefault_for_write(block->data_, capacity);
    }
    auto keep = state_;
    return std::shared_ptr<large_block>(block.release(), [keep](large_block* b) {
        std::unique_ptr<large_block> returned(b), dropped;  // freed after the lock
        std::lock_guard lock(keep->mutex);
        // Keep the larger of the two: the next message is likely as large.
        if (!keep->spare || keep->spare->capacity_ <= returned->capacity_) {
            dropped = std::move(keep->spare);
            keep->spare = std::move(returned);
        }
        keep->spare_since = std::chrono::steady_clock::now();
        keep->has_spare.store(true, std::memory_order_relaxed);
    });
}

void block_pool::trim() noexcept {
    if (!state_->has_spare.load(std::memory_order_relaxed)) return;
    std::unique_ptr<large_block> old;
    {
        std::lock_guard lock(state_->mutex);
        if (!state_->spare || std::chrono::steady_clock::now() - state_->spare_since < spare_lifetime) return;
        old = std::move(state_->spare);
        state_->has_spare.store(false, std::memory_order_relaxed);
    }
}

bool block_pool::holds_spare() const noexcept { return state_->has_spare.load(std::memory_order_relaxed); }

mapped_block::mapped_block(const std::string& name) {
    auto fd = sys::shm_attach(name);
    size_ = sys::fd_size(fd.get());
    if (size_ == 0) throw serialization_error("mp: MPI worker: the task's shared block " + name + " is empty");
    data_ = static_cast<const std::byte*>(sys::map_populated(fd.get(), size_, false));
}

mapped_block::~mapped_block() {
    if (data_) sys::unmap(const_cast<std::byte*>(data_), size_);
}

}  // namespace mp::detail::mpi_wire
