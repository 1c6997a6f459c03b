// The queue: a byte ring in a sparse memfd, written under a producers' lock
// (robust: a producer killed holding it does not block the others). Plain
// items (numbers, strings and vectors of them) are taken without a lock: a
// consumer copies the item out, then claims it with one compare-and-swap of
// the tail; items with their own loading (which may act on what it reads)
// are taken under a consumers' lock, one at a time.
//
// Layout: one header page, then a data region of `capacity` bytes. A record
// is [u32 size][u32 kind][payload], 8-byte aligned; a wrap record sends
// readers to the start of the next lap.
//
// Crash consistency. Each end of the queue is one 64-bit word, changed in one
// step: `head` (a store under the producers' lock) holds the position after
// the last record and the number of items ever put, `tail` (a
// compare-and-swap) the position of the next record and the number of items
// ever taken. A process killed anywhere leaves each word either before or
// after its change, never between, so the counts a bounded or joinable queue
// needs (items waiting, items unfinished) are derived from these words and
// cannot leak: a producer killed before its store put nothing; a consumer
// killed before its claim took nothing (and a consumer whose claim fails
// read an item another took: it reads again). The one two-word change (a
// consumer dropping an item it failed to load) is journaled, then announced
// by a mark on the tail word that every consumer completes before it takes.
//
// Memory. Only pages where data is waiting are used: pages below a small warm
// window at the start of the region stay, the rest are given back as readers
// pass them. When a producer finds the queue empty far into the region, it
// jumps back to the warm start (a wrap record, published with its item), so a
// queue that keeps running empty stays in pages that are already there.
// Pages are given back only under the producers' lock and only behind the
// readers and the producers' reservations, so no producer ever writes into a
// page being given back. Pages are reserved (fallocate) before an item is
// copied in, so a full /dev/shm is an exception, not a SIGBUS.
#include "mp/queue.hpp"

#include <atomic>
#include <climits>
#include <cstring>
#include <thread>

#include "queue_hooks.hpp"
#include "sys/robust_mutex.hpp"
#include "sys/sys.hpp"

namespace mp::detail {
namespace {

constexpr std::uint32_t queue_magic = 0x7571706e;  // "npqu": the second layout
constexpr std::size_t header_size = 4096;
constexpr std::uint64_t capacity = std::uint64_t{8} << 30;
constexpr std::uint64_t max_item = capacity / 4;
// Pages below this offset stay allocated: a queue that keeps running empty
// reuses them and never page-faults. Above it, pages are given back in
// chunks as readers pass them.
constexpr std::uint64_t warm_window = 2 << 20;
constexpr std::uint64_t release_chunk = 2 << 20;
// Consumers give pages back when they find the producers' lock free; past
// this much passed and not given back, the next producer does it.
constexpr std::uint64_t producer_release_lag = 4 * release_chunk;
// A producer that finds the ring full (8 GiB unread) looks again this often.
constexpr auto ring_full_poll = std::chrono::milliseconds(1);
// Pages are reserved this far past the item being written: one fallocate per
// 256 KiB of new data instead of one per item.
constexpr std::uint64_t reserve_ahead = 256 << 10;

// Items this large get their pages mapped in one call before the copy (one
// system call saves hundreds of page faults); smaller ones mostly land in
// pages that are already mapped.
constexpr std::uint64_t prefault_threshold = large_item_bytes;

constexpr std::uint32_t kind_item = 0;
constexpr std::uint32_t kind_wrap = 1;

// A consumer that finds the queue empty keeps looking this long before it
// sleeps: a producer that is in the middle of a burst hands over the next item
// without a wake-up, which costs far more than this on a loaded machine.
constexpr auto get_spin = std::chrono::microseconds(50);

constexpr std::uint64_t align8(std::uint64_t n) { return (n + 7) & ~std::uint64_t{7}; }

// ---- positions and end words ---------------------------------------------------
// Positions count bytes modulo 2^36 (eight laps of the region): the distance
// between any two positions the queue compares is at most two laps, so modular
// differences are exact. An end word packs a position (in 8-byte units, 33
// bits) with an item count modulo 2^30 (fewer than 2^30 items wait: a lap
// holds at most 2^30 records of 8 bytes, and an empty item may not fill the
// ring's last 8 bytes). The tail's top bit says a drop is owed (below).
constexpr unsigned unit_bits = 33;
constexpr std::uint64_t position_mask = (std::uint64_t{1} << (unit_bits + 3)) - 1;
constexpr std::uint64_t count_mask = (std::uint64_t{1} << 30) - 1;
constexpr std::uint64_t owed_bit = std::uint64_t{1} << 63;

constexpr std::uint64_t forward(std::uint64_t from, std::uint64_t to) { return (to - from) & position_mask; }
constexpr std::uint64_t advance(std::uint64_t pos, std::uint64_t n) { return (pos + n) & position_mask; }
constexpr std::uint64_t physical(std::uint64_t pos) { return pos % capacity; }
constexpr std::uint64_t next_lap(std::uint64_t pos) { return advance(pos, capacity - physical(pos)); }

struct end_word {
    std::uint64_t pos;
    std::uint64_t count;
    static end_word from(std::uint64_t w) { return {(w & (position_mask >> 3)) << 3, (w >> unit_bits) & count_mask}; }
    [[nodiscard]] std::uint64_t word() const { return ((count & count_mask) << unit_bits) | (pos >> 3); }
};

constexpr std::uint64_t count_between(std::uint64_t older, std::uint64_t newer) { return (newer - older) & count_mask; }

struct record_header {
    std::uint32_t size;
    std::uint32_t kind;
};

}  // namespace

/// Where processes sleep until a condition on the queue holds (a futex word).
struct waiting_place {
    std::atomic<std::uint32_t> seq;           // bumped by a wake-up
    std::atomic<std::uint32_t> sleepers;      // processes between announcing a sleep and leaving it
    std::atomic<std::uint32_t> wake_pending;  // a wake-up was sent that no sleeper has seen yet
};

struct queue_core::shared {
    std::uint32_t magic;
    std::uint32_t joinable;
    std::uint64_t maxsize;

    // Each lock on a line of its own: the line above is read for every item
    // by both sides, and a lock sharing it would miss the cache on every put.
    alignas(64) sys::robust_mutex put_lock;
    alignas(64) sys::robust_mutex get_lock;

    // Producers' line.
    alignas(64) std::atomic<std::uint64_t> head;  // end word; written under put_lock
    std::uint64_t reserved_to;                    // position; pages from head to here exist (put_lock)
    std::uint64_t warm_reserved;                  // offset; the warm window's pages below it exist (put_lock)
    std::uint64_t tail_seen;                      // position; the tail as producers last read it (put_lock)

    alignas(64) std::atomic<std::uint64_t> released_to;  // position; pages behind it were given back (put_lock)

    // Consumers' line.
    alignas(64) std::atomic<std::uint64_t> tail;  // end word; moved by compare-and-swap by the consumer taking
    std::atomic<std::uint64_t> head_seen;         // end word; a head consumers read lately (only moves forward)
    std::atomic<std::uint64_t> dropped;           // items dropped because loading them failed
    // Journal of the drop owed (drop_word: the tail word with owed_bit that
    // announces it), written under get_lock before that tail word is set:
    // dropped goes from drop_base to drop_count.
    std::atomic<std::uint64_t> drop_word;
    std::atomic<std::uint64_t> drop_base;
    std::atomic<std::uint64_t> drop_count;

    alignas(64) waiting_place data;  // consumers wait here for items

    alignas(64) waiting_place space;  // producers of a bounded queue wait here for room

    alignas(64) std::atomic<std::uint64_t> done;  // joinable: task_done() calls
    waiting_place all_done;  // join() waits here
};
static_assert(sizeof(queue_core::shared) <= header_size);

struct queue_core::local {
    sys::spin_history spin;  // does spinning in get() pay off in this process?
};

namespace {

using shared = queue_core::shared;

std::uint32_t* word(std::atomic<std::uint32_t>& a) { return reinterpret_cast<std::uint32_t*>(&a); }

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
    sys::futex_wake(word(w.seq), INT_MAX);
}

// The longest one sleep lasts, whatever the sleeper's deadline. A waker sets
// wake_pending before it wakes; one killed in between (a SIGKILLed pool worker
// posting a result) leaves it set, and every later waker then skips its
// wake-up until a sleeper comes back: without this bound a sleeper would
// sleep until its deadline, or for ever (the pool soak saw a whole pool stall
// so). Trade-off: shorter recovers sooner from such a death; longer costs an
// idle sleeper fewer wake-ups.
constexpr auto lost_wake_bound = std::chrono::milliseconds(200);

// Sleeps at `w` unless `ready()` already holds. false on timeout (callers
// re-check their condition and deadline after every return).
template <class Ready>
bool sleep_until(waiting_place& w, Ready ready, std::optional<sys::clock::time_point> deadline) {
    w.sleepers.fetch_add(1, std::memory_order_seq_cst);
    // From here on a waker must wake again: it sees either this or our seq.
    w.wake_pending.store(0, std::memory_order_seq_cst);
    std::uint32_t seen = w.seq.load(std::memory_order_seq_cst);
    bool ok = true;
    auto until = sys::clock::now() + lost_wake_bound;
    if (deadline && *deadline < until) until = *deadline;
    if (!ready()) ok = sys::futex_wait(word(w.seq), seen, until) || !deadline || until < *deadline;
    w.sleepers.fetch_sub(1, std::memory_order_relaxed);
    return ok;
}

std::uint64_t items_waiting(const shared& s) {
    auto tail = end_word::from(s.tail.load(std::memory_order_acquire));  // tail first: never ahead of head
    auto head = end_word::from(s.head.load(std::memory_order_acquire));
    return count_between(tail.count, head.count);
}

std::uint64_t unfinished(const shared& s) {
    // done and dropped first: read later, head can only make the result larger,
    // so a joiner never sees zero too early.
    std::uint64_t finished = s.done.load(std::memory_order_seq_cst) + s.dropped.load(std::memory_order_seq_cst);
    auto puts = end_word::from(s.head.load(std::memory_order_seq_cst)).count;
    return count_between(finished, puts);
}

/// Settles the drop that tail word `owed` (with owed_bit) announces: counts
/// the dropped items once, then clears the bit. Any consumer may do it,
/// several at once, and again: a consumer that announced a drop and died
/// leaves it to the next. The journal cannot change while the bit is set
/// (a new drop is journaled only after it was cleared), and dropped moves
/// only by a compare-and-swap from drop_base, so it counts each drop once.
void settle_drop(shared& s, std::uint64_t owed) {
    std::uint64_t base = s.drop_base.load(std::memory_order_acquire);
    const std::uint64_t count = s.drop_count.load(std::memory_order_acquire);
    const std::uint64_t named = s.drop_word.load(std::memory_order_acquire);
    if (named != owed || s.tail.load(std::memory_order_acquire) != owed) return;  // settled meanwhile
    s.dropped.compare_exchange_strong(base, count, std::memory_order_seq_cst);
    s.tail.compare_exchange_strong(owed, owed & ~owed_bit, std::memory_order_seq_cst);
}

/// Whether the record `rec` at position `tail` lies within what producers
/// published (up to `head`) and within the ring: a record a producer wrote
/// always does; one whose bytes were overwritten may claim any size.
bool record_fits(std::uint64_t tail, std::uint64_t head, record_header rec) {
    const std::uint64_t published = forward(tail, head);
    if (published == 0 || published > capacity) return false;
    if (rec.kind == kind_wrap) return forward(tail, next_lap(tail)) <= published;
    if (rec.kind != kind_item) return false;
    const std::uint64_t need = align8(sizeof(record_header) + std::uint64_t{rec.size});
    return need <= published && physical(tail) + need <= capacity;
}

/// Makes sure the pages of [pos, pos+len) exist (under put_lock). Throws
/// mp::system_error when shared memory is full; nothing is published then.
void ensure_reserved(shared& s, int fd, std::byte* data, std::uint64_t pos, std::uint64_t len, bool map_now = true) {
    const std::uint64_t lap_start = pos - physical(pos);
    const std::uint64_t begin = physical(pos), end = begin + len;  // a record never crosses a lap's end
    if (end <= s.warm_reserved) return;
    std::uint64_t from = begin;
    if (std::uint64_t ahead = forward(pos, s.reserved_to); ahead <= capacity) {
        if (ahead >= len) return;
        from = begin + ahead;
    }
    if (from < s.warm_reserved) from = s.warm_reserved;
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
    s.reserved_to = advance(lap_start, to);
    if (from <= s.warm_reserved && to > s.warm_reserved) s.warm_reserved = std::min(to, warm_window);
}

/// Gives back the pages readers have passed (under put_lock): from
/// released_to up to the chunk the tail is in, never the warm window, never
/// a page a producer may write (from the head to its reservations, which may
/// lie one lap ahead of the pages behind the readers).
void release_passed_pages(shared& s, int fd) {
    auto tail = end_word::from(s.tail.load(std::memory_order_acquire)).pos;
    std::uint64_t to = tail & ~(release_chunk - 1);
    std::uint64_t from = s.released_to.load(std::memory_order_relaxed);
    if (forward(from, to) == 0 || forward(from, to) > 2 * capacity) return;
    auto head = end_word::from(s.head.load(std::memory_order_relaxed)).pos;
    std::uint64_t in_use = forward(head, s.reserved_to) <= capacity ? s.reserved_to : head;
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

}  // namespace

queue_core::queue_core(std::size_t maxsize, bool joinable) : local_(std::make_unique<local>()) {
    // Sparse: the region's pages are reserved piece by piece as items are written.
    fd_ = sys::memfd_sparse("mp-queue", header_size + capacity);
    sys::reserve(fd_.get(), 0, header_size, "an mp::queue");
    mapped_ = header_size + capacity;
    auto* base = static_cast<std::byte*>(sys::map_shared(fd_.get(), mapped_, 0, true));
    shared_ = new (base) shared{};
    data_ = base + header_size;
    shared_->magic = queue_magic;
    shared_->joinable = joinable ? 1 : 0;
    shared_->maxsize = maxsize;
    shared_->put_lock.init();
    shared_->get_lock.init();
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
std::size_t queue_core::size() const noexcept { return static_cast<std::size_t>(items_waiting(*shared_)); }

void throw_fd_in_queue_item() {
    throw value_error(
        "mp: this item cannot go through an mp::queue: it holds something that travels as a file descriptor "
        "(an mp::shared_memory, mp::connection or mp::queue), and a queue carries bytes only. Send it through "
        "an mp::pipe or as a process argument; send a shared_memory's name() and attach() to it; for a large "
        "array use mp::shared_array, which a queue carries");
}

[[noreturn]] void throw_wrong_item_size(std::size_t got, std::size_t element, const char* what) {
    throw serialization_error("mp: corrupt queue item: " + std::to_string(got) + " bytes is not a whole number of " +
                              std::to_string(element) + "-byte " + what +
                              "s (was the queue received as a queue of another type?)");
}

bool queue_core::put(const output_archive& item, std::optional<clock::time_point> deadline) {
    return put_bytes(
        item.size(), [](const void* ar, std::byte* dst) { static_cast<const output_archive*>(ar)->copy_to(dst); },
        &item, deadline);
}

bool queue_core::get(reader read, void* context, std::optional<clock::time_point> deadline) {
    struct archive_reader {
        reader read;
        void* context;
    } r{read, context};
    return take(
        [](void* c, std::span<const std::byte> bytes) {
            auto& r = *static_cast<archive_reader*>(c);
            input_archive ar(bytes);
            r.read(r.context, ar);
        },
        &r, deadline, true);
}

void prepare_item_buffer(void* data, std::size_t bytes) noexcept {
    if (bytes < large_item_bytes) return;
    // Huge pages where allowed, then every page mapped in one call: the copy
    // that follows takes no page faults.
    sys::advise_huge_pages(data, bytes);
    sys::prefault_for_write(data, bytes);
}

bool queue_core::put_bytes(std::size_t size, writer write, const void* context,
                           std::optional<clock::time_point> deadline) {
    return put_record(size, write, context, nullptr, deadline);
}

bool queue_core::put_span(std::span<const std::byte> bytes, std::optional<clock::time_point> deadline) {
    return put_record(
        bytes.size(),
        [](const void* src, std::byte* dst) {
            auto& b = *static_cast<const std::span<const std::byte>*>(src);
            if (!b.empty()) std::memcpy(dst, b.data(), b.size());
        },
        &bytes, bytes.data(), deadline);
}

bool queue_core::put_record(std::size_t size, writer write, const void* context, const std::byte* source,
                            std::optional<clock::time_point> deadline) {
    auto& s = *shared_;
    const std::uint64_t payload = size;
    if (payload > max_item)
        throw value_error("mp: an item of " + std::to_string(payload) + " bytes is larger than a queue can hold (" +
                          std::to_string(max_item) + "); send it through mp::shared_memory instead");
    const std::uint64_t need = align8(sizeof(record_header) + payload);
    auto has_room = [&] { return s.maxsize == 0 || items_waiting(s) < s.maxsize; };

    for (;;) {
        if (!has_room()) {  // a full bounded queue: wait without the lock
            if (deadline && clock::now() >= *deadline) return false;
            sleep_until(s.space, has_room, deadline);
            continue;
        }
        // A dead holder of put_lock published nothing: its half-written record lies beyond head.
        sys::robust_lock lock(s.put_lock, deadline);
        if (!lock.locked()) return false;
        const auto head = end_word::from(s.head.load(std::memory_order_relaxed));
        std::uint64_t pos = head.pos;
        std::uint64_t phys = physical(pos);
        // The tail is the consumers' line, written for every item taken:
        // producers read it only when they need it, and otherwise go by the
        // tail they saw last (behind the real one, so it only errs towards "full").
        std::uint64_t tail = s.tail_seen;
        auto look_at_tail = [&] {
            auto t = end_word::from(s.tail.load(std::memory_order_acquire));
            s.tail_seen = tail = t.pos;
            return t;
        };
        if (s.maxsize != 0 && count_between(look_at_tail().count, head.count) >= s.maxsize) continue;  // filled meanwhile
        // Jump back to the warm start when the queue is empty (no reader needs
        // anything), or when the record would run past the end of the region.
        // An empty queue jumps only if the item ends before the wrap record;
        // whether it is empty is asked once per page of new data.
        const bool new_page = physical(pos) % sys::page_size() + need > sys::page_size();
        const bool may_jump = phys > warm_window && need <= phys && (new_page || tail == pos);
        if ((may_jump && (tail == pos || look_at_tail().pos == pos)) || phys + need > capacity) {
            ensure_reserved(s, fd_.get(), data_, pos, sizeof(record_header));
            auto* wrap = reinterpret_cast<record_header*>(data_ + phys);
            wrap->size = 0;
            wrap->kind = kind_wrap;
            pos = next_lap(pos);
            phys = 0;
        }
        // After a jump back with the queue empty, the tail stays on the wrap
        // record in the lap behind until a reader passes it: the ring would
        // look full (a put would wait for a reader) once this lap reaches the
        // tail's offset. The producer passes it as a reader would.
        auto pass_wrap_at_tail = [&] {
            std::uint64_t tail_word = s.tail.load(std::memory_order_acquire);
            if (tail_word & owed_bit) return;
            const auto t = end_word::from(tail_word);
            const std::uint64_t lap = next_lap(t.pos);
            const auto* at_tail = reinterpret_cast<const record_header*>(data_ + physical(t.pos));
            if (forward(t.pos, head.pos) == 0 || forward(t.pos, lap) > forward(t.pos, head.pos) ||
                at_tail->kind != kind_wrap)
                return;
            s.tail.compare_exchange_strong(tail_word, end_word{lap, t.count}.word(), std::memory_order_acq_rel);
        };
        // Full only with gigabytes unread: wait for readers rather than fail.
        // Polled, so that consumers of an unbounded queue never pay for a wake-up.
        const std::uint64_t max_unread = capacity - (payload == 0 ? 8 : 0);  // see count_mask
        if (forward(tail, advance(pos, need)) > max_unread) {
            pass_wrap_at_tail();
            look_at_tail();
        }
        while (forward(tail, advance(pos, need)) > max_unread) {
            std::this_thread::sleep_for(ring_full_poll);
            pass_wrap_at_tail();
            look_at_tail();
        }
        // The tail seen last may lie behind what a consumer already gave back
        // (the distance then wraps to nearly 2^36): nothing to do then, and no
        // read of the consumers' busy line for every item.
        if (const std::uint64_t lag = forward(s.released_to.load(std::memory_order_relaxed), tail);
            lag >= producer_release_lag && lag <= 2 * capacity)
            release_passed_pages(s, fd_.get());
        const bool one_pass = need >= prefault_threshold && source != nullptr;
        ensure_reserved(s, fd_.get(), data_, pos, need, !one_pass);
        auto* rec = reinterpret_cast<record_header*>(data_ + phys);
        rec->size = static_cast<std::uint32_t>(payload);
        rec->kind = kind_item;
        if (one_pass) {
            // One pass: pages the queue reserved but no one touched yet are
            // not zero-filled first, as a first store through the mapping
            // would make the kernel do.
            sys::write_at(fd_.get(), header_size + phys + sizeof(record_header), {source, size});
        } else {
            if (need >= prefault_threshold) sys::prefault_for_write(rec, need);
            write(context, data_ + phys + sizeof(record_header));
        }
        queue_hooks::reach(queue_hooks::point::before_publish);
        // The one store that publishes the item (and a jump back before it) and counts it.
        s.head.store(end_word{advance(pos, need), head.count + 1}.word(), std::memory_order_release);
        lock.unlock();
        wake_all(s.data);
        return true;
    }
}

bool queue_core::get_bytes(bytes_reader read, void* context, std::optional<clock::time_point> deadline) {
    return take(read, context, deadline, false);
}

bool queue_core::take(bytes_reader read, void* context, std::optional<clock::time_point> deadline,
                      bool under_lock) {
    auto& s = *shared_;
    auto has_data = [&] { return s.tail.load(std::memory_order_seq_cst) != s.head.load(std::memory_order_seq_cst); };
    // After the tail moved: wake producers waiting for room, give back pages passed.
    auto after_tail_moved = [&](std::uint64_t tail_pos) {
        if (s.maxsize != 0) wake_all(s.space);
        std::uint64_t released = s.released_to.load(std::memory_order_relaxed);
        if (forward(released, tail_pos) >= release_chunk) {
            // Only if no producer is busy: one waiting for room (the ring
            // full) holds the lock until a consumer makes room. Producers give
            // pages back themselves when consumers keep finding the lock busy.
            sys::robust_lock lock(s.put_lock, std::try_to_lock);
            if (lock.locked()) release_passed_pages(s, fd_.get());
        }
    };
    // The head as far as this consumer needs it: a head read lately, if it is
    // still ahead of the tail (any head once published stays published);
    // otherwise the head itself, shared for the next consumer.
    auto published = [&](end_word tail) {
        std::uint64_t seen = s.head_seen.load(std::memory_order_acquire);
        const std::uint64_t ahead = forward(tail.pos, end_word::from(seen).pos);
        if (ahead != 0 && ahead <= capacity) return end_word::from(seen);
        const std::uint64_t head = s.head.load(std::memory_order_acquire);
        // Forward only: a consumer that read an older head must not put it back.
        while (forward(end_word::from(seen).pos, end_word::from(head).pos) - 1 < 2 * capacity &&
               !s.head_seen.compare_exchange_weak(seen, head, std::memory_order_acq_rel)) {
        }
        return end_word::from(head);
    };
    // Drops what lies from the tail word `from` up to `to` (n items) because it
    // cannot be read: the tail moves to `to` with owed_bit, announcing the
    // drop journaled just before, and the drop is settled. false when another
    // consumer moved the tail first (then nothing is dropped here).
    auto drop = [&](std::uint64_t from, std::uint64_t to, std::uint64_t n) {
        std::optional<sys::robust_lock> lock;
        if (!under_lock) lock.emplace(s.get_lock);  // one journal at a time
        if (s.tail.load(std::memory_order_acquire) != from) return false;
        const std::uint64_t base = s.dropped.load(std::memory_order_acquire);
        s.drop_word.store(to | owed_bit, std::memory_order_release);
        s.drop_base.store(base, std::memory_order_release);
        s.drop_count.store(base + n, std::memory_order_release);
        std::uint64_t expected = from;
        if (!s.tail.compare_exchange_strong(expected, to | owed_bit, std::memory_order_acq_rel)) return false;
        queue_hooks::reach(queue_hooks::point::drop_owed);
        settle_drop(s, to | owed_bit);
        lock.reset();
        wake_all(s.all_done);
        after_tail_moved(end_word::from(to).pos);
        return true;
    };
    sys::spinner spin(get_spin, &local_->spin);
    for (;;) {
        if (!has_data()) {
            if (deadline && clock::now() >= *deadline) return false;
            if (spin.step()) continue;
            sleep_until(s.data, has_data, deadline);
            continue;
        }
        // Consumers of items that are not plain bytes (their loading may act
        // on what it reads, as the pools' workers do) take them one at a time
        // under the lock; plain items are claimed by compare-and-swap alone.
        std::optional<sys::robust_lock> lock;
        if (under_lock) {
            lock.emplace(s.get_lock, deadline);
            if (!lock->locked()) return false;
        }
        std::uint64_t tail_word = s.tail.load(std::memory_order_acquire);
        if (tail_word & owed_bit) {  // a drop announced, its consumer busy or dead: finish it
            settle_drop(s, tail_word);
            continue;
        }
        const auto tail = end_word::from(tail_word);
        const auto head = published(tail);
        // Another consumer took the last item. (The same position with another
        // count is no race but a corrupt header: record_fits refuses it.)
        if (head.word() == tail_word) continue;
        const std::uint64_t phys = physical(tail.pos);
        // One copy of the header: checked, then used, however its shared bytes change.
        const record_header rec = *reinterpret_cast<const record_header*>(data_ + phys);
        // A consumer copies an item out before it claims it, so what it reads
        // may be stale (another consumer claimed it and producers wrote over
        // it): every conclusion drawn from the bytes is checked against the
        // tail first, and a claim of a stale tail fails.
        auto stale = [&] { return s.tail.load(std::memory_order_acquire) != tail_word; };
        // The record is in memory every process of the queue can write: it
        // must lie within what producers published before it is believed.
        if (!record_fits(tail.pos, head.pos, rec)) {
            if (stale()) continue;
            const std::uint64_t lost = count_between(tail.count, head.count);
            if (!drop(tail_word, head.word(), lost)) continue;
            throw serialization_error("mp: corrupt queue: the record at the front of the queue runs past what "
                                      "producers published (its memory was overwritten?); the " +
                                      std::to_string(lost) + " item(s) published so far were dropped");
        }
        if (rec.kind == kind_wrap) {
            const std::uint64_t lap = next_lap(tail.pos);
            if (!s.tail.compare_exchange_strong(tail_word, end_word{lap, tail.count}.word(),
                                                std::memory_order_acq_rel))
                continue;
            queue_hooks::reach(queue_hooks::point::after_wrap);
            lock.reset();
            after_tail_moved(lap);
            continue;
        }
        const std::uint64_t next = advance(tail.pos, align8(sizeof(record_header) + rec.size));
        const std::uint64_t taken = end_word{next, tail.count + 1}.word();
        try {
            // Maps a large item's pages in one call, not one fault per 64 KiB.
            if (rec.size >= prefault_threshold) sys::prefault_for_read(data_ + phys, sizeof(record_header) + rec.size);
            read(context, {data_ + phys + sizeof(record_header), rec.size});
        } catch (...) {
            // A poisoned item must not block the queue: drop it, and count it
            // as done for join(). Unless the bytes were stale: then retry.
            if (stale()) continue;
            if (!drop(tail_word, taken, 1)) continue;
            throw;
        }
        // The one step that takes the item (after it was read: a consumer
        // killed while reading takes nothing) and gives its slot back. It
        // fails when another consumer took it first: what was read is
        // theirs, read again.
        if (!s.tail.compare_exchange_strong(tail_word, taken, std::memory_order_acq_rel)) continue;
        queue_hooks::reach(queue_hooks::point::after_take);
        lock.reset();
        after_tail_moved(next);
        return true;
    }
}

void queue_core::task_done() {
    auto& s = *shared_;
    if (!s.joinable) throw value_error("mp: task_done() on a queue that is not a joinable_queue");
    auto done = s.done.load(std::memory_order_seq_cst);
    std::uint64_t left;
    do {
        auto puts = end_word::from(s.head.load(std::memory_order_seq_cst)).count;
        left = count_between(done + s.dropped.load(std::memory_order_seq_cst), puts);
        if (left == 0) throw value_error("mp: task_done() called more times than there were items put");
    } while (!s.done.compare_exchange_weak(done, done + 1, std::memory_order_seq_cst));
    if (left == 1) wake_all(s.all_done);
}

bool queue_core::join(std::optional<clock::time_point> deadline) {
    auto& s = *shared_;
    if (!s.joinable) throw value_error("mp: join() on a queue that is not a joinable_queue");
    auto all_done = [&] { return unfinished(s) == 0; };
    while (!all_done()) {
        sleep_until(s.all_done, all_done, deadline);
        if (deadline && clock::now() >= *deadline) return all_done();
    }
    return true;
}

}  // namespace mp::detail
