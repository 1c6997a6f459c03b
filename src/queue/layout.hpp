// queue/layout.hpp — the shared memory of an mp::queue: one header page, then
// a byte ring of `capacity` bytes in a sparse memfd. Internal to the queue's
// sources (queue.cpp, queue/*.cpp).
//
// A record is [u32 size][u32 kind][u64 stamp][payload], 16-byte aligned. Its
// stamp is the end word (below) of the record's own start once the record is
// complete: a consumer believes a record only when the stamp names the
// position and count it stands at, so bytes left from an earlier lap are
// never taken for a record (the same position and count recur only after 2^36
// bytes and 2^30 items at once). A wrap record sends readers to the start of
// the next lap; a hole stands for the put of a producer that died (below).
//
// Ends of the queue. `head` and `tail` are one 64-bit word each, changed in
// one step: a position and the number of items ever put (head) or taken
// (tail). Counts that bounded and joinable queues need are derived from them
// and cannot leak.
//
// A large item. A producer of an unbounded queue writes an item of one piece
// of at least large_item_bytes under put_lock, in pieces: it names the
// record (large_from, its start word) once it claimed it and wrote its
// header, and counts the payload bytes written (large_written) after each
// piece. A consumer that finds that record unstamped at the tail copies the
// pieces already written while the producer writes the rest, and takes the
// item only once its stamp is there, as always: what it copied of a record
// that ends up a hole (the producer died) is thrown away. Before it reserves
// the item's pages, the producer says a large item is coming (large_coming:
// the head word it will most likely be claimed at, and its size): a consumer
// that waits on the empty queue there prepares its buffer meanwhile. Only a
// hint: nothing is taken on its word.
//
// Producers. On a bounded or joinable queue a producer writes its record
// under put_lock, stamps it, then stores the head: one killed before that
// store put nothing. On an unbounded queue producers claim space by a
// compare-and-swap of the head, without a lock for an item that lands in
// pages already reserved (put_lock for the rest: reserving pages, jumping
// back, large items), then write and stamp it. Consumers wait for a claimed
// record's stamp. To tell a slow producer from a dead one, each producer
// thread owns a slot of the header (process id and start time) where it
// writes its claim before the compare-and-swap: a consumer that finds a
// claim unstamped for long looks for its owner, and when every slot that
// names that claim belongs to a process that has ended, it turns the claim
// into a hole (one compare-and-swap of the stamp) and passes it as a dropped
// item. The dead producer's item is the only one lost.
#pragma once

#include <atomic>
#include <chrono>
#include <climits>
#include <cstdint>
#include <optional>

#include "mp/queue.hpp"
#include "sys/robust_mutex.hpp"
#include "sys/sys.hpp"

namespace mp::detail::queue_layout {

constexpr std::uint32_t queue_magic = 0x75717034;  // "4pqu": the fourth layout (a large item read while written)
constexpr std::size_t header_size = 4096;
constexpr std::uint64_t capacity = std::uint64_t{8} << 30;
constexpr std::uint64_t max_item = capacity / 4;
// Pages below this offset stay allocated: a queue that keeps running empty
// reuses them and never page-faults. Above it, pages are given back in
// chunks as readers pass them. Trade-off: a busy queue keeps up to this much
// shared memory for good; a smaller window sends a stream whose producer
// runs ahead of its consumer into fresh pages sooner (measured: 64-byte
// items at 6-8 M/s with 2 MiB, 14 M/s with 8 MiB, most of the difference
// being the kernel's reserving, zeroing and giving back pages).
constexpr std::uint64_t warm_window = 8 << 20;
constexpr std::uint64_t release_chunk = 2 << 20;
// A producer of an unbounded queue that finds the queue empty past this
// offset jumps back to the start: a stream whose consumer keeps up stays in
// the warm window's pages (past the window, every page is reserved, zeroed
// by the kernel and given back again). Trade-off: lower jumps back sooner
// (more wrap records, more reads of the consumers' tail per put); at the
// window's end, a stream that is empty only now and then runs into fresh pages.
constexpr std::uint64_t jump_from = warm_window / 2;
// Consumers give pages back when they find the producers' lock free; past
// this much passed and not given back, the next producer does it.
constexpr std::uint64_t producer_release_lag = 4 * release_chunk;
// Items this large get their pages mapped in one call before the copy (one
// system call saves hundreds of page faults); smaller ones mostly land in
// pages that are already mapped.
constexpr std::uint64_t prefault_threshold = large_item_bytes;
// A large item in one piece on an unbounded queue is written in pieces of
// this size, each announced (shared::large_written) as it is done, so that
// a consumer copies one piece while the producer writes the next.
// Trade-off: smaller pieces overlap more of the two copies (the consumer's
// last piece is what it adds after the producer's stamp) at the price of
// more system calls and wake-ups per item.
constexpr std::uint64_t large_piece = 4 << 20;

constexpr std::uint32_t kind_item = 0;
constexpr std::uint32_t kind_wrap = 1;

// Records start 16-byte aligned: a wrap record's header always fits where a lap ends.
constexpr std::uint64_t align16(std::uint64_t n) { return (n + 15) & ~std::uint64_t{15}; }

// ---- positions and end words ---------------------------------------------------
// Positions count bytes modulo 2^36 (eight laps of the region): the distance
// between any two positions the queue compares is at most two laps, so modular
// differences are exact. An end word packs a position (in 8-byte units, 33
// bits) with an item count modulo 2^30 (fewer than 2^30 items wait: a lap
// holds at most 2^29 records of 16 bytes). The tail's top bit says a drop is
// owed; a stamp's top bit says the record is a hole, and the rest of the
// stamp is where the hole ends.
constexpr unsigned unit_bits = 33;
constexpr std::uint64_t position_mask = (std::uint64_t{1} << (unit_bits + 3)) - 1;
constexpr std::uint64_t count_mask = (std::uint64_t{1} << 30) - 1;
constexpr std::uint64_t owed_bit = std::uint64_t{1} << 63;
constexpr std::uint64_t hole_bit = std::uint64_t{1} << 63;
constexpr std::uint64_t no_claim = ~std::uint64_t{0};

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
    std::atomic<std::uint64_t> stamp;  // the end word at the record's start, stored last (release)
};
static_assert(sizeof(record_header) == 16);

/// Where processes sleep until a condition on the queue holds (a futex word).
struct waiting_place {
    std::atomic<std::uint32_t> seq;           // bumped by a wake-up
    std::atomic<std::uint32_t> sleepers;      // processes between announcing a sleep and leaving it
    std::atomic<std::uint32_t> wake_pending;  // a wake-up was sent that no sleeper has seen yet
};

/// A producer thread's claim slot (unbounded queues). owner and owner_start
/// name the process (0: the slot is free); claim_from and claim_to are the
/// head words of the claim in flight (no_claim: none), written before the
/// claim's compare-and-swap and cleared after its stamp.
struct alignas(64) producer_slot {
    std::atomic<std::uint64_t> owner;
    std::atomic<std::uint64_t> owner_start;
    std::atomic<std::uint64_t> claim_from;
    std::atomic<std::uint64_t> claim_to;
    // The head after the owner's last claim (no_claim: none), its guess of the
    // head for the next one: right while it puts alone, and then its claim
    // takes the head's line once instead of reading it, then taking it.
    // Written and read by the owner only.
    std::atomic<std::uint64_t> next_head;
};
// Slot 0 is for holders of put_lock that found no slot of their own.
constexpr unsigned slot_count = 40;
constexpr unsigned locked_slot = 0;

}  // namespace mp::detail::queue_layout

namespace mp::detail {

struct queue_core::shared {
    std::uint32_t magic;
    std::uint32_t joinable;
    std::uint64_t maxsize;

    // Each lock on a line of its own: the line above is read for every item
    // by both sides, and a lock sharing it would miss the cache on every put.
    alignas(64) sys::robust_mutex put_lock;
    alignas(64) sys::robust_mutex get_lock;

    // Producers' line.
    alignas(64) std::atomic<std::uint64_t> head;  // end word; claimed (unbounded) or published up to here

    // Producers' state, read by every put, changed rarely (under put_lock).
    alignas(64) std::atomic<std::uint64_t> reserved_to;  // position; pages from head to here exist
    std::atomic<std::uint64_t> warm_reserved;             // offset; the warm window's pages below it exist
    std::atomic<std::uint64_t> tail_seen;                 // position; the tail as producers last read it
    std::atomic<std::uint64_t> released_to;               // position; pages behind it were given back

    // Consumers' line.
    alignas(64) std::atomic<std::uint64_t> tail;  // end word; moved by compare-and-swap by the consumer taking
    std::atomic<std::uint64_t> head_seen;         // end word; a head consumers read lately (only moves forward)
    std::atomic<std::uint64_t> dropped;           // items dropped (loading failed, or their producer died)
    // Journal of the drop owed (drop_word: the tail word with owed_bit that
    // announces it), written under get_lock before that tail word is set:
    // dropped goes from drop_base to drop_count.
    std::atomic<std::uint64_t> drop_word;
    std::atomic<std::uint64_t> drop_base;
    std::atomic<std::uint64_t> drop_count;

    // The large item being written under put_lock (unbounded queues): the
    // head word where its record starts (no_claim: none yet), and how many of
    // its payload bytes are written. large_written is reset before
    // large_from names a new record.
    alignas(64) std::atomic<std::uint64_t> large_from;
    std::atomic<std::uint64_t> large_written;
    // A large item about to be claimed, before its pages are reserved: the
    // head word where it will most likely start, and its size (a hint for a
    // consumer waiting on an empty queue to prepare its buffer meanwhile).
    std::atomic<std::uint64_t> large_coming;
    std::atomic<std::uint64_t> large_coming_size;

    alignas(64) queue_layout::waiting_place data;   // consumers wait here for items
    alignas(64) queue_layout::waiting_place space;  // producers of a bounded queue wait here for room

    alignas(64) std::atomic<std::uint64_t> done;  // joinable: task_done() calls
    queue_layout::waiting_place all_done;         // join() waits here

    queue_layout::producer_slot slots[queue_layout::slot_count];
};
static_assert(sizeof(queue_core::shared) <= queue_layout::header_size);

}  // namespace mp::detail

namespace mp::detail {

/// Numbers the handles of this process: a thread's claim slot is cached per handle.
extern std::atomic<std::uint64_t> queue_core_serials;

struct queue_core::local {
    sys::spin_history spin;        // does spinning in get() for an item pay off in this process?
    sys::spin_history stamp_spin;  // and for the stamp of a claimed one?
    std::uint64_t serial = queue_core_serials.fetch_add(1, std::memory_order_relaxed);
    bool claims = false;  // unbounded and not joinable: producers claim by compare-and-swap
    std::uint64_t page = sys::page_size();
    std::atomic<std::uint64_t> release_failed_at{0};  // tail position when put_lock was last found busy
};

}  // namespace mp::detail

namespace mp::detail::queue_layout {

using shared = queue_core::shared;

/// Items put and not taken (claimed ones included on an unbounded queue).
inline std::uint64_t items_waiting(const shared& s) {
    auto tail = end_word::from(s.tail.load(std::memory_order_acquire));  // tail first: never ahead of head
    auto head = end_word::from(s.head.load(std::memory_order_acquire));
    return count_between(tail.count, head.count);
}

// ---- waiting (queue/waiting.cpp) -------------------------------------------------

/// Wakes every sleeper at `w`, if any. Call after the change they wait for.
void wake_all(waiting_place& w);

// The longest one sleep lasts, whatever the sleeper's deadline. A waker sets
// wake_pending before it wakes; one killed in between (a SIGKILLed pool worker
// posting a result) leaves it set, and every later waker then skips its
// wake-up until a sleeper comes back: without this bound a sleeper would
// sleep until its deadline, or for ever (the pool soak saw a whole pool stall
// so). A sleeper waiting for a claimed record's stamp also looks again this
// often whether its producer died. Trade-off: shorter recovers sooner from
// such a death; longer costs an idle sleeper fewer wake-ups.
constexpr auto lost_wake_bound = std::chrono::milliseconds(200);

inline std::uint32_t* futex_word(std::atomic<std::uint32_t>& a) { return reinterpret_cast<std::uint32_t*>(&a); }

/// Sleeps at `w` unless `ready()` already holds, at most until `deadline` and
/// at most lost_wake_bound. false on timeout (callers re-check their condition
/// and deadline after every return).
template <class Ready>
bool sleep_until(waiting_place& w, Ready ready, std::optional<sys::clock::time_point> deadline) {
    w.sleepers.fetch_add(1, std::memory_order_seq_cst);
    // From here on a waker must wake again: it sees either this or our seq.
    w.wake_pending.store(0, std::memory_order_seq_cst);
    std::uint32_t seen = w.seq.load(std::memory_order_seq_cst);
    bool ok = true;
    auto until = sys::clock::now() + lost_wake_bound;
    if (deadline && *deadline < until) until = *deadline;
    if (!ready()) ok = sys::futex_wait(futex_word(w.seq), seen, until) || !deadline || until < *deadline;
    w.sleepers.fetch_sub(1, std::memory_order_relaxed);
    return ok;
}

// ---- pages (queue/pages.cpp) ------------------------------------------------------

/// Makes sure the pages of [pos, pos+len) exist (under put_lock). Throws
/// mp::system_error when shared memory is full; nothing is claimed then.
/// map_now: map them for writing at once (not for an item written with write calls).
void ensure_reserved(shared& s, int fd, std::byte* data, std::uint64_t pos, std::uint64_t len, bool map_now = true);
/// Gives back the pages readers have passed (under put_lock).
void release_passed_pages(shared& s, int fd);

// ---- claims of unbounded queues (queue/claims.cpp) ---------------------------------

/// The claim slot of the calling thread for this queue (`serial` names the
/// process-local handle), registering one if needed; -1 when all are taken.
int own_slot(shared& s, std::uint64_t serial);
/// Frees the slots the calling process registered through handle `serial`.
void free_own_slots(shared& s, std::uint64_t serial) noexcept;
/// Names the calling process as the owner of slot `k` (the slot for holders of
/// put_lock, before each use).
void own_locked_slot(shared& s);
/// What a consumer does about the claimed, unstamped record at tail word
/// `tail_word` (head word `head_word` claimed so far).
enum class claim_state {
    in_progress,  // a live producer owns it: wait for its stamp
    hole_made,    // its producer died: it is a hole now, stamped so
    unowned,      // no slot names it and it is still unstamped: corrupt memory
};
claim_state settle_unstamped(shared& s, std::byte* data, std::uint64_t tail_word, std::uint64_t head_word);
/// Before a holder of put_lock that got it from a dead holder reuses the
/// locked slot: turns that holder's claim into a hole if it is still open.
void settle_locked_slot(shared& s, std::byte* data);

}  // namespace mp::detail::queue_layout
