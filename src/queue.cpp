// The queue: a byte ring in a sparse memfd, written under a producers' lock
// and read under a consumers' lock (both robust: a process killed holding one
// does not block the others).
//
// Layout: one header page, then a data region of `capacity` bytes addressed
// by 64-bit positions that only grow (physical offset = position % capacity).
// A record is [u32 size][u32 kind][payload], 8-byte aligned; a record that
// would run past the end of the region is preceded by a wrap record that
// sends readers back to offset 0. Memory is only used where data is waiting:
// pages the readers have passed are given back, except for a small warm
// window at the start of the region, to which positions jump back whenever
// the queue runs empty.
#include "mp/queue.hpp"

#include <pthread.h>

#include <atomic>
#include <climits>
#include <cstring>

#include "sys/robust_mutex.hpp"
#include "sys/sys.hpp"

namespace mp::detail {
namespace {

constexpr std::uint32_t queue_magic = 0x7571706d;  // "mpqu"
constexpr std::size_t header_size = 4096;
constexpr std::uint64_t capacity = std::uint64_t{8} << 30;
constexpr std::uint64_t max_item = capacity / 4;
// Pages below this offset stay allocated: a queue that keeps running empty
// reuses them and never page-faults. Above it, pages are given back in
// chunks as readers pass them.
constexpr std::uint64_t warm_window = 2 << 20;
constexpr std::uint64_t release_chunk = 2 << 20;

// Items this large get their pages allocated in one call before the copy
// (one system call saves hundreds of page faults); smaller ones mostly land
// in pages that are already there.
constexpr std::uint64_t prefault_threshold = 1 << 20;

constexpr std::uint32_t kind_item = 0;
constexpr std::uint32_t kind_wrap = 1;

// A consumer that finds the queue empty keeps looking this long before it
// sleeps: a producer that is in the middle of a burst hands over the next item
// without a wake-up, which costs far more than this on a loaded machine.
constexpr auto get_spin = std::chrono::microseconds(50);

constexpr std::uint64_t align8(std::uint64_t n) { return (n + 7) & ~std::uint64_t{7}; }

struct record_header {
    std::uint32_t size;
    std::uint32_t kind;
};

}  // namespace

struct queue_core::shared {
    std::uint32_t magic;
    std::uint32_t joinable;
    std::uint64_t maxsize;

    pthread_mutex_t put_lock;
    pthread_mutex_t get_lock;

    alignas(64) std::atomic<std::uint64_t> head;  // written under put_lock
    std::atomic<std::uint64_t> puts;              // written under put_lock

    alignas(64) std::atomic<std::uint64_t> tail;  // written under get_lock
    std::atomic<std::uint64_t> gets;              // written under get_lock
    std::uint64_t released_to;                    // guarded by get_lock

    alignas(64) std::atomic<std::uint32_t> data_seq;  // bumped when items arrive and someone sleeps
    std::atomic<std::uint32_t> sleeping_consumers;

    alignas(64) std::atomic<std::uint32_t> space_seq;  // bumped when room appears and someone sleeps
    std::atomic<std::uint32_t> sleeping_producers;
    std::atomic<std::uint64_t> slots_used;  // bounded queues: items put but not yet got

    alignas(64) std::atomic<std::uint64_t> unfinished;  // joinable: put minus task_done
    std::atomic<std::uint32_t> done_seq;
    std::atomic<std::uint32_t> sleeping_joiners;
};
static_assert(sizeof(queue_core::shared) <= header_size);

struct queue_core::local {
    sys::spin_history spin;  // does spinning in get() pay off in this process?
};

namespace {

std::uint32_t* word(std::atomic<std::uint32_t>& a) { return reinterpret_cast<std::uint32_t*>(&a); }

void wake_all(std::atomic<std::uint32_t>& seq, std::atomic<std::uint32_t>& sleepers) {
    // Pairs with the sleeper's increment of `sleepers` before it re-checks:
    // either it sees our change, or we see it and wake it.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (sleepers.load(std::memory_order_relaxed) == 0) return;
    seq.fetch_add(1, std::memory_order_seq_cst);
    sys::futex_wake(word(seq), INT_MAX);
}

// Sleeps on `seq` unless `ready()` already holds. false on timeout.
template <class Ready>
bool sleep_until(std::atomic<std::uint32_t>& seq, std::atomic<std::uint32_t>& sleepers, Ready ready,
                 std::optional<sys::clock::time_point> deadline) {
    sleepers.fetch_add(1, std::memory_order_seq_cst);
    std::uint32_t seen = seq.load(std::memory_order_seq_cst);
    bool ok = true;
    if (!ready()) ok = sys::futex_wait(word(seq), seen, deadline);
    sleepers.fetch_sub(1, std::memory_order_relaxed);
    return ok;
}

struct unlock_on_exit {
    pthread_mutex_t* m;
    ~unlock_on_exit() { pthread_mutex_unlock(m); }
};

}  // namespace

queue_core::queue_core(std::size_t maxsize, bool joinable) : local_(std::make_unique<local>()) {
    fd_ = sys::memfd("mp-queue", header_size + capacity);
    mapped_ = header_size + capacity;
    auto* base = static_cast<std::byte*>(sys::map_shared(fd_.get(), mapped_, 0, true));
    shared_ = new (base) shared{};
    data_ = base + header_size;
    shared_->magic = queue_magic;
    shared_->joinable = joinable ? 1 : 0;
    shared_->maxsize = maxsize;
    sys::robust_mutex_init(&shared_->put_lock);
    sys::robust_mutex_init(&shared_->get_lock);
}

queue_core::queue_core(unique_fd fd) : fd_(std::move(fd)), local_(std::make_unique<local>()) {
    if (sys::file_size(fd_.get()) != header_size + capacity)
        throw serialization_error("mp: received a queue whose shared memory has the wrong size");
    mapped_ = header_size + capacity;
    auto* base = static_cast<std::byte*>(sys::map_shared(fd_.get(), mapped_, 0, true));
    shared_ = reinterpret_cast<shared*>(base);
    data_ = base + header_size;
    if (shared_->magic != queue_magic) {
        sys::unmap(base, mapped_);
        throw serialization_error("mp: received a file descriptor that is not an mp queue");
    }
}

queue_core::~queue_core() { sys::unmap(shared_, mapped_); }

int queue_core::fd() const noexcept { return fd_.get(); }
std::size_t queue_core::maxsize() const noexcept { return shared_->maxsize; }
bool queue_core::joinable() const noexcept { return shared_->joinable != 0; }

std::size_t queue_core::size() const noexcept {
    auto gets = shared_->gets.load(std::memory_order_acquire);
    auto puts = shared_->puts.load(std::memory_order_acquire);
    return puts > gets ? static_cast<std::size_t>(puts - gets) : 0;
}

bool queue_core::put(const output_archive& item, std::optional<clock::time_point> deadline) {
    auto& s = *shared_;
    const std::uint64_t payload = item.size();
    if (payload > max_item)
        throw value_error("mp: an item of " + std::to_string(payload) + " bytes is larger than a queue can hold (" +
                          std::to_string(max_item) + "); send it through mp::shared_memory instead");
    const std::uint64_t need = align8(sizeof(record_header) + payload);

    if (s.maxsize != 0) {  // take a slot, waiting for one
        for (;;) {
            auto used = s.slots_used.load(std::memory_order_relaxed);
            if (used < s.maxsize) {
                if (s.slots_used.compare_exchange_weak(used, used + 1, std::memory_order_acq_rel)) break;
                continue;
            }
            bool now_only = deadline && *deadline <= clock::now();
            if (now_only) return false;
            bool woke = sleep_until(
                s.space_seq, s.sleeping_producers,
                [&] { return s.slots_used.load(std::memory_order_seq_cst) < s.maxsize; }, deadline);
            if (!woke && deadline && clock::now() >= *deadline &&
                s.slots_used.load(std::memory_order_relaxed) >= s.maxsize)
                return false;
        }
    }
    if (s.joinable) s.unfinished.fetch_add(1, std::memory_order_acq_rel);

    sys::robust_mutex_lock(&s.put_lock);  // a dead holder's half-written record was never published
    unlock_on_exit unlock{&s.put_lock};
    std::uint64_t pos = s.head.load(std::memory_order_relaxed);
    std::uint64_t phys = pos % capacity;
    if (phys + need > capacity) {
        auto* wrap = reinterpret_cast<record_header*>(data_ + phys);
        wrap->size = 0;
        wrap->kind = kind_wrap;
        pos += capacity - phys;
        phys = 0;
    }
    // Full only with gigabytes unread: wait for readers rather than fail.
    while (pos + need - s.tail.load(std::memory_order_acquire) > capacity) {
        sleep_until(
            s.space_seq, s.sleeping_producers,
            [&] { return pos + need - s.tail.load(std::memory_order_seq_cst) <= capacity; }, std::nullopt);
    }
    auto* rec = reinterpret_cast<record_header*>(data_ + phys);
    if (need >= prefault_threshold) sys::prefault_for_write(rec, need);
    rec->size = static_cast<std::uint32_t>(payload);
    rec->kind = kind_item;
    item.copy_to(data_ + phys + sizeof(record_header));
    s.head.store(pos + need, std::memory_order_release);
    s.puts.store(s.puts.load(std::memory_order_relaxed) + 1, std::memory_order_release);
    wake_all(s.data_seq, s.sleeping_consumers);
    return true;
}

bool queue_core::get(reader read, void* context, std::optional<clock::time_point> deadline) {
    auto& s = *shared_;
    auto has_data = [&] {
        return s.head.load(std::memory_order_seq_cst) != s.tail.load(std::memory_order_seq_cst);
    };
    sys::spinner spin(get_spin, &local_->spin);
    for (;;) {
        if (!has_data()) {
            if (deadline && clock::now() >= *deadline) return false;
            if (spin.step()) continue;
            sleep_until(s.data_seq, s.sleeping_consumers, has_data, deadline);
            continue;
        }
        if (sys::robust_mutex_lock(&s.get_lock, deadline) == sys::lock_result::timed_out) return false;
        unlock_on_exit unlock{&s.get_lock};
        std::uint64_t pos = s.tail.load(std::memory_order_relaxed);
        if (pos == s.head.load(std::memory_order_acquire)) continue;  // another consumer took it
        std::uint64_t phys = pos % capacity;
        auto* rec = reinterpret_cast<record_header*>(data_ + phys);
        if (rec->kind == kind_wrap) {
            s.tail.store(pos + (capacity - phys), std::memory_order_release);
            continue;
        }
        const std::uint64_t need = align8(sizeof(record_header) + rec->size);
        struct finish {
            queue_core::shared& s;
            std::uint64_t next;
            int fd;
            ~finish() {
                // Advance even when reading threw: a poisoned item must not block the queue.
                s.tail.store(next, std::memory_order_release);
                s.gets.store(s.gets.load(std::memory_order_relaxed) + 1, std::memory_order_release);
                release_passed_pages();
            }
            void release_passed_pages() {
                std::uint64_t target = next & ~(release_chunk - 1);
                if (s.head.load(std::memory_order_acquire) == next && next % capacity > warm_window &&
                    sys::robust_mutex_try_lock(&s.put_lock) != sys::lock_result::timed_out) {
                    // Empty: jump both ends back to the warm start of the region.
                    if (s.head.load(std::memory_order_relaxed) == next) {
                        std::uint64_t lap = next - next % capacity + capacity;
                        s.tail.store(lap, std::memory_order_release);
                        s.head.store(lap, std::memory_order_release);
                        target = lap;
                    }
                    pthread_mutex_unlock(&s.put_lock);
                }
                std::uint64_t from = s.released_to;
                if (target <= from) return;
                while (from < target) {
                    std::uint64_t lap_start = from - from % capacity;
                    std::uint64_t to = std::min(target, lap_start + capacity);
                    std::uint64_t lo = std::max(from - lap_start, warm_window), hi = to - lap_start;
                    if (hi > lo) sys::punch_hole(fd, header_size + lo, hi - lo);
                    from = to;
                }
                s.released_to = target;
            }
        } done{s, pos + need, fd_.get()};
        input_archive ar({data_ + phys + sizeof(record_header), rec->size});
        read(context, ar);
        break;
    }
    if (s.maxsize != 0) {
        s.slots_used.fetch_sub(1, std::memory_order_acq_rel);
        wake_all(s.space_seq, s.sleeping_producers);
    }
    return true;
}

void queue_core::task_done() {
    auto& s = *shared_;
    if (!s.joinable) throw value_error("mp: task_done() on a queue that is not a joinable_queue");
    auto left = s.unfinished.load(std::memory_order_acquire);
    do {
        if (left == 0) throw value_error("mp: task_done() called more times than there were items put");
    } while (!s.unfinished.compare_exchange_weak(left, left - 1, std::memory_order_acq_rel));
    if (left == 1) wake_all(s.done_seq, s.sleeping_joiners);
}

bool queue_core::join(std::optional<clock::time_point> deadline) {
    auto& s = *shared_;
    if (!s.joinable) throw value_error("mp: join() on a queue that is not a joinable_queue");
    auto all_done = [&] { return s.unfinished.load(std::memory_order_seq_cst) == 0; };
    while (!all_done()) {
        sleep_until(s.done_seq, s.sleeping_joiners, all_done, deadline);
        if (deadline && clock::now() >= *deadline) return all_done();
    }
    return true;
}

}  // namespace mp::detail
