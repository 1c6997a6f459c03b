// The queue: records in a byte ring in shared memory (layout, claims and the
// rules that keep it consistent when a process dies: queue/layout.hpp).
//
// Producers of an unbounded queue claim space by compare-and-swap, without a
// lock for an item that lands in pages already reserved; those of a bounded
// or joinable queue publish under put_lock (their counts must not include an
// item a dead producer never wrote). Plain items (numbers, strings and
// vectors of them) are taken without a lock: a consumer copies the item out,
// then claims it with one compare-and-swap of the tail; items with their own
// loading (which may act on what it reads) are taken under a consumers' lock,
// one at a time.
//
// Crash consistency. A process killed anywhere leaves each end word either
// before or after its change, never between: a producer of a bounded or
// joinable queue killed before its store of the head put nothing; one of an
// unbounded queue killed between its claim and its stamp leaves a claim that
// consumers turn into a hole once they see its process has ended (that item
// is lost, no other); a consumer killed before its claim took nothing (and a
// consumer whose claim fails read an item another took: it reads again). The
// one two-word change (a consumer dropping items: one it failed to load, or
// a hole) is journaled, then announced by a mark on the tail word that every
// consumer completes before it takes.
//
// Memory (queue/pages.cpp). When a producer finds the queue empty far into
// the region, it jumps back to the warm start (a wrap record), so a queue that
// keeps running empty stays in pages that are already there.
#include "mp/queue.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>

#include "queue/layout.hpp"
#include "queue_hooks.hpp"
#include "sys/memory.hpp"

namespace mp::detail {

using namespace queue_layout;

namespace {

// A consumer that found put_lock busy when it meant to give pages back tries
// again after this much more was read (not for every item).
constexpr std::uint64_t release_retry = 256 << 10;

// A consumer that finds the queue empty keeps looking this long before it
// sleeps: a producer that is in the middle of a burst hands over the next item
// without a wake-up, which costs far more than this on a loaded machine.
constexpr auto get_spin = std::chrono::microseconds(50);

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

/// Whether the record (size and kind `rec`) at position `tail` lies within
/// what producers published (up to `head`) and within the ring: a record a
/// producer wrote always does; one whose bytes were overwritten may claim any size.
bool record_fits(std::uint64_t tail, std::uint64_t head, std::uint32_t size, std::uint32_t kind) {
    const std::uint64_t published = forward(tail, head);
    if (published == 0 || published > capacity) return false;
    if (kind == kind_wrap) return forward(tail, next_lap(tail)) <= published;
    if (kind != kind_item) return false;
    const std::uint64_t need = align16(sizeof(record_header) + std::uint64_t{size});
    return need <= published && physical(tail) + need <= capacity;
}

/// The end word a hole stamp `stamp` names, if it is a hole that starts at
/// tail word `tail_word` and ends within what was claimed (up to `head`).
std::optional<std::uint64_t> hole_end(std::uint64_t stamp, std::uint64_t tail_word, end_word head) {
    if ((stamp & hole_bit) == 0) return std::nullopt;
    const auto tail = end_word::from(tail_word), to = end_word::from(stamp & ~hole_bit);
    const std::uint64_t span = forward(tail.pos, to.pos);
    // Records start 16-byte aligned: a hole ending elsewhere is corrupt (the
    // next header could straddle the end of the ring).
    if (span == 0 || to.pos % 16 != 0 || span > forward(tail.pos, head.pos) || physical(tail.pos) + span > capacity ||
        count_between(tail.count, to.count) > count_between(tail.count, head.count))
        return std::nullopt;
    return stamp & ~hole_bit;
}

}  // namespace

std::atomic<std::uint64_t> queue_core_serials{1};

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
    for (auto& slot : shared_->slots) slot.claim_from.store(no_claim, std::memory_order_relaxed);
    shared_->large_from.store(no_claim, std::memory_order_relaxed);
    shared_->large_coming.store(no_claim, std::memory_order_relaxed);
    local_->claims = maxsize == 0 && !joinable;
    if (local_->claims) {
        // Counts are only ever compared, so they may start anywhere: not at
        // the end word 0, which a claimed record's stamp would match in
        // fresh (zeroed) memory before its producer wrote it.
        const std::uint64_t start = end_word{0, 1}.word();
        shared_->head.store(start, std::memory_order_relaxed);
        shared_->tail.store(start, std::memory_order_relaxed);
        shared_->head_seen.store(start, std::memory_order_relaxed);
    }
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
    local_->claims = shared_->maxsize == 0 && shared_->joinable == 0;
}

queue_core::~queue_core() {
    if (local_->claims) free_own_slots(*shared_, local_->serial);
    sys::unmap(shared_, mapped_);
}

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

bool queue_core::get_bytes(bytes_reader read, void* context, std::optional<clock::time_point> deadline,
                           const piece_reader* pieces) {
    return take(read, context, deadline, false, pieces);
}

bool queue_core::take(bytes_reader read, void* context, std::optional<clock::time_point> deadline,
                      bool under_lock, const piece_reader* pieces) {
    auto& s = *shared_;
    // Whether there is something to take. The head is the producers' line,
    // taken by every claim: it is read only when the head consumers saw last
    // (head_seen) is not ahead of the tail. As a sleeper's condition, it reads
    // the head itself whenever it would answer "no".
    auto has_data = [&] {
        const std::uint64_t tail_word = s.tail.load(std::memory_order_seq_cst);
        const std::uint64_t seen = s.head_seen.load(std::memory_order_acquire);
        const std::uint64_t ahead = forward(end_word::from(tail_word).pos, end_word::from(seen).pos);
        if (ahead != 0 && ahead <= capacity) return true;
        return tail_word != s.head.load(std::memory_order_seq_cst);
    };
    // After the tail moved: wake producers waiting for room, give back pages passed.
    auto after_tail_moved = [&](std::uint64_t tail_pos) {
        if (s.maxsize != 0) wake_all(s.space);
        std::uint64_t released = s.released_to.load(std::memory_order_relaxed);
        if (forward(released, tail_pos) >= release_chunk &&
            forward(local_->release_failed_at.load(std::memory_order_relaxed), tail_pos) >= release_retry) {
            // Only if no producer is busy: one waiting for room (the ring
            // full) holds the lock until a consumer makes room. Producers give
            // pages back themselves when consumers keep finding the lock busy.
            sys::robust_lock lock(s.put_lock, std::try_to_lock);
            if (lock.locked())
                release_passed_pages(s, fd_.get());
            else  // not again for every item while a producer works under the lock
                local_->release_failed_at.store(tail_pos, std::memory_order_relaxed);
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
    // Made when the queue is first found empty: a get that finds an item
    // waiting (a steady stream) pays nothing for it.
    std::optional<sys::spinner> spin;
    std::optional<sys::spinner> stamp_spin;  // its own budget: a stamp is due any moment
    std::uint64_t slept_on = no_claim;        // the unstamped claim this get() slept on last
    std::uint64_t not_in_pieces = no_claim;   // a large item whose copy while written was given up
    // `pieces` began an item of prepared_size bytes, announced as coming at
    // tail word prepared_for (no_claim: nothing prepared, or used since).
    std::uint64_t prepared_for = no_claim;
    std::uint64_t prepared_size = 0;
    auto prepare_for_coming = [&] {
        const std::uint64_t tail_word = s.tail.load(std::memory_order_acquire);
        if (tail_word == prepared_for || s.large_coming.load(std::memory_order_acquire) != tail_word) return false;
        const std::uint64_t size = s.large_coming_size.load(std::memory_order_acquire);
        if (s.large_coming.load(std::memory_order_acquire) != tail_word || size > max_item) return false;
        prepared_for = tail_word;
        prepared_size = size;
        try {
            pieces->begin(context, size);
        } catch (...) {
            prepared_for = no_claim;  // it fails again on the item itself, where it counts
        }
        return true;
    };
    for (;;) {
        if (!has_data()) {
            if (deadline && clock::now() >= *deadline) return false;
            if (pieces != nullptr && prepare_for_coming()) continue;
            if (!spin) spin.emplace(get_spin, &local_->spin);
            if (spin->step()) continue;
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
        auto* at_tail = reinterpret_cast<record_header*>(data_ + phys);
        // A consumer copies an item out before it claims it, so what it reads
        // may be stale (another consumer claimed it and producers wrote over
        // it): every conclusion drawn from the bytes is checked against the
        // tail first, and a claim of a stale tail fails.
        auto stale = [&] { return s.tail.load(std::memory_order_acquire) != tail_word; };
        // The record is in memory every process of the queue can write: it
        // must lie within what producers published before it is believed.
        auto corrupt = [&](const char* what) -> bool {
            const std::uint64_t lost = count_between(tail.count, head.count);
            if (!drop(tail_word, head.word(), lost)) return false;
            throw serialization_error(std::string("mp: corrupt queue: ") + what +
                                      " (its memory was overwritten?); the " + std::to_string(lost) +
                                      " item(s) published so far were dropped");
        };
        const std::uint64_t stamp = at_tail->stamp.load(std::memory_order_acquire);
        bool read_already = false;  // built through `pieces` while it was written
        // Copied in pieces: a large item still being written (its header is
        // there once large_from names it), or one this get prepared for.
        if (pieces != nullptr && not_in_pieces != tail_word &&
            (stamp == tail_word ? prepared_for == tail_word
                                : s.large_from.load(std::memory_order_acquire) == tail_word)) {
            const bool prepared = prepared_for == tail_word;
            prepared_for = no_claim;
            read_already = read_while_written(*pieces, context, tail_word, deadline,
                                              prepared ? std::optional(prepared_size) : std::nullopt);
            if (!read_already) {
                not_in_pieces = tail_word;  // waited for as any other record from now on
                continue;
            }
        }
        if (stamp != tail_word && !read_already) {
            if (stale()) continue;
            if (auto end = hole_end(stamp, tail_word, head)) {  // a dead producer's claim: pass it
                const std::uint64_t lost = count_between(tail.count, end_word::from(*end).count);
                if (lost != 0) {
                    drop(tail_word, *end, lost);
                } else if (s.tail.compare_exchange_strong(tail_word, *end, std::memory_order_acq_rel)) {
                    lock.reset();
                    after_tail_moved(end_word::from(*end).pos);
                }
                continue;
            }
            const std::uint64_t claimed = forward(tail.pos, head.pos);
            if (claimed == 0 || claimed > capacity) {
                corrupt("the ends of the queue do not agree");
                continue;
            }
            // Claimed, not stamped yet: its producer is writing it (the
            // usual case: wait a moment, then sleep until its stamp wakes us),
            // or died. Its owner is looked for (a read of /proc per process
            // named) only when it stayed unstamped through one sleep.
            if (!stamp_spin) stamp_spin.emplace(get_spin, &local_->stamp_spin);
            if (stamp_spin->step()) continue;
            if (slept_on == tail_word) {
                switch (settle_unstamped(s, data_, tail_word, head.word())) {
                    case claim_state::hole_made: continue;
                    case claim_state::unowned:
                        if (!stale()) corrupt("the record at the front of the queue was claimed by no producer");
                        continue;
                    case claim_state::in_progress: break;
                }
            }
            if (deadline && clock::now() >= *deadline) return false;
            slept_on = tail_word;
            lock.reset();
            sleep_until(
                s.data,
                [&] {
                    return at_tail->stamp.load(std::memory_order_seq_cst) != stamp ||
                           s.tail.load(std::memory_order_seq_cst) != tail_word;
                },
                deadline);
            continue;
        }
        // One copy of the header: checked, then used, however its shared bytes change.
        const std::uint32_t rec_size = at_tail->size, rec_kind = at_tail->kind;
        if (!record_fits(tail.pos, head.pos, rec_size, rec_kind)) {
            if (!stale()) corrupt("the record at the front of the queue runs past what producers published");
            continue;
        }
        if (rec_kind == kind_wrap) {
            const std::uint64_t lap = next_lap(tail.pos);
            if (!s.tail.compare_exchange_strong(tail_word, end_word{lap, tail.count}.word(),
                                                std::memory_order_acq_rel))
                continue;
            queue_hooks::reach(queue_hooks::point::after_wrap);
            lock.reset();
            after_tail_moved(lap);
            continue;
        }
        const std::uint64_t next = advance(tail.pos, align16(sizeof(record_header) + rec_size));
        const std::uint64_t taken = end_word{next, tail.count + 1}.word();
        try {
            // Maps a large item's pages in one call, not one fault per 64 KiB.
            if (!read_already && rec_size >= prefault_threshold)
                sys::prefault_for_read(data_ + phys, sizeof(record_header) + rec_size);
            if (!read_already) {
                prepared_for = no_claim;
                read(context, {data_ + phys + sizeof(record_header), rec_size});
            }
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

bool queue_core::read_while_written(const piece_reader& pieces, void* context, std::uint64_t tail_word,
                                    std::optional<clock::time_point> deadline, std::optional<std::uint64_t> begun) {
    auto& s = *shared_;
    const auto tail = end_word::from(tail_word);
    auto* rec = reinterpret_cast<record_header*>(data_ + physical(tail.pos));
    // The header was written before large_from named the record (or before
    // its stamp): believed only within what producers claimed (a header that
    // is not is the caller's to report).
    const std::uint64_t unstamped = rec->stamp.load(std::memory_order_acquire);
    const std::uint32_t size = rec->size, kind = rec->kind;
    const auto head = end_word::from(s.head.load(std::memory_order_acquire));
    if (kind != kind_item || !record_fits(tail.pos, head.pos, size, kind)) return false;
    // How much of the payload is written: large_from first, then the count,
    // then large_from again (the count may already be the next item's).
    auto written = [&]() -> std::optional<std::uint64_t> {
        if (s.large_from.load(std::memory_order_acquire) != tail_word) return std::nullopt;
        const std::uint64_t n = s.large_written.load(std::memory_order_acquire);
        if (s.large_from.load(std::memory_order_acquire) != tail_word) return std::nullopt;
        return n;
    };
    try {
        if (begun != size) pieces.begin(context, size);
        const std::byte* payload = data_ + physical(tail.pos) + sizeof(record_header);
        const std::uint64_t page = local_->page;
        std::uint64_t copied = 0;
        auto last_news = clock::now();
        for (;;) {
            const std::uint64_t stamp = rec->stamp.load(std::memory_order_acquire);
            if (stamp != tail_word && stamp != unstamped) return false;  // a hole now: its producer died
            // Whole pages of what is written (whole elements), all of it once stamped.
            std::uint64_t ready = copied;
            if (stamp == tail_word) {
                ready = size;
            } else if (auto n = written()) {
                ready = *n >= size ? size : std::max(copied, *n & ~(page - 1));
            }
            if (ready > copied) {
                sys::prefault_for_read(payload + copied, ready - copied);
                pieces.piece(context, {payload + copied, ready - copied});
                copied = ready;
                if (stamp != tail_word) queue_hooks::reach(queue_hooks::point::large_piece_read);
                last_news = clock::now();
                continue;
            }
            if (stamp == tail_word) return true;
            if (s.tail.load(std::memory_order_acquire) != tail_word) return false;  // another consumer took it
            if (deadline && clock::now() >= *deadline) return false;
            // A piece takes milliseconds: sleep until the producer announces
            // the next (or its stamp). One that stays silent this long may
            // have died: the caller looks for it.
            if (clock::now() - last_news >= lost_wake_bound) return false;
            const auto seen = written();
            sleep_until(
                s.data,
                [&] {
                    return rec->stamp.load(std::memory_order_seq_cst) != unstamped || written() != seen ||
                           s.tail.load(std::memory_order_seq_cst) != tail_word;
                },
                deadline);
            if (written() != seen) last_news = clock::now();
        }
    } catch (...) {
        return false;  // read again whole once stamped: an error then drops the item as usual
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
