// queue/put.cpp — putting an item: claimed without a lock on an unbounded
// queue where it can be, else under put_lock (see queue/layout.hpp).
#include <algorithm>
#include <cstring>
#include <string>
#include <thread>

#include "queue/layout.hpp"
#include "queue_hooks.hpp"
#include "sys/memory.hpp"

namespace mp::detail {

using namespace queue_layout;

namespace {

// A producer that finds the ring full (8 GiB unread) looks again this often.
constexpr auto ring_full_poll = std::chrono::milliseconds(1);

}  // namespace

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

/// One put's record: what it writes and where.
struct queue_core::record_job {
    std::uint64_t payload;
    std::uint64_t need;  // bytes of the record
    queue_core::writer write;
    const void* context;
    const std::byte* source;  // the bytes in one piece, if they are
};

namespace {

/// Writes a large item's payload with write calls (pages the queue reserved
/// and no one touched are not zero-filled first, as a first store through the
/// mapping would make the kernel do), piece by piece on an unbounded queue,
/// where consumers copy each piece as soon as it is announced.
void write_in_pieces(shared& s, int fd, std::uint64_t phys, std::uint64_t start, const queue_core::record_job& job,
                     bool announce) {
    const std::uint64_t offset = header_size + phys + sizeof(record_header);
    if (!announce) {
        sys::write_at(fd, offset, {job.source, job.payload});
        return;
    }
    s.large_written.store(0, std::memory_order_relaxed);
    s.large_from.store(start, std::memory_order_release);  // the header is written: its size may be read
    wake_all(s.data);                                      // a sleeping consumer prepares its buffer meanwhile
    for (std::uint64_t done = 0; done < job.payload;) {
        const std::uint64_t n = std::min(large_piece, job.payload - done);
        sys::write_at(fd, offset + done, {job.source + done, n});
        done += n;
        s.large_written.store(done, std::memory_order_release);
        wake_all(s.data);
        if (done < job.payload) queue_hooks::reach(queue_hooks::point::large_piece_announced);
    }
}

/// Writes the record at `phys` (its space is the caller's) and stamps it with
/// `start`, the end word where it starts. A large item in one piece is written
/// with write calls (write_in_pieces; `announce`: piece by piece, for
/// consumers that copy while it is written). If the writing fails, the record
/// becomes a hole, passed by consumers, and the error propagates.
void write_record(shared& s, std::byte* data, int fd, std::uint64_t phys, std::uint64_t start, std::uint64_t end,
                  const queue_core::record_job& job, bool one_pass, bool announce = false) {
    auto* rec = reinterpret_cast<record_header*>(data + phys);
    rec->size = static_cast<std::uint32_t>(job.payload);
    rec->kind = kind_item;
    try {
        if (one_pass) {
            write_in_pieces(s, fd, phys, start, job, announce);
        } else {
            if (job.need >= prefault_threshold) sys::prefault_for_write(rec, job.need);
            job.write(job.context, data + phys + sizeof(record_header));
        }
    } catch (...) {
        rec->stamp.store(end | hole_bit, std::memory_order_release);
        throw;
    }
    queue_hooks::reach(queue_hooks::point::before_publish);
    rec->stamp.store(start, std::memory_order_release);
}

/// A claim through slot `slot`: head word `from` to `to`. The slot names it
/// first, so that consumers can find its owner until it is stamped.
bool claim(shared& s, producer_slot& slot, std::uint64_t& from, std::uint64_t to) {
    slot.claim_to.store(to, std::memory_order_release);
    slot.claim_from.store(from, std::memory_order_release);
    if (s.head.compare_exchange_strong(from, to, std::memory_order_acq_rel, std::memory_order_acquire)) return true;
    slot.claim_from.store(no_claim, std::memory_order_release);  // lost the race: names no claim
    return false;
}

}  // namespace

bool queue_core::put_record(std::size_t size, writer write, const void* context, const std::byte* source,
                            std::optional<clock::time_point> deadline) {
    auto& s = *shared_;
    const std::uint64_t payload = size;
    if (payload > max_item)
        throw value_error("mp: an item of " + std::to_string(payload) + " bytes is larger than a queue can hold (" +
                          std::to_string(max_item) + "); send it through mp::shared_memory instead");
    const record_job job{payload, align16(sizeof(record_header) + payload), write, context, source};
    if (!local_->claims) return put_published(job, deadline);
    const int own = own_slot(s, local_->serial);
    if (own >= 0 && job.need < prefault_threshold && put_claimed_fast(job, own)) return true;
    return put_claimed(job, own, deadline);
}

bool queue_core::put_claimed_fast(const record_job& job, int own) {
    auto& s = *shared_;
    auto& slot = s.slots[own];
    std::uint64_t head_word = slot.next_head.load(std::memory_order_relaxed);
    bool guessed = head_word != no_claim;  // a guess is checked against the head before it decides anything
    if (!guessed) head_word = s.head.load(std::memory_order_acquire);
    for (;;) {
        const auto head = end_word::from(head_word);
        const std::uint64_t pos = head.pos, phys = physical(pos);
        // What needs put_lock: the end of a lap, a page beyond the warm
        // window (where a producer may jump back), pages not reserved yet,
        // a ring that may be full.
        bool needs_lock = phys + job.need > capacity ||
                          (phys % local_->page + job.need > local_->page && phys + job.need > warm_window);
        if (!needs_lock && phys + job.need > s.warm_reserved.load(std::memory_order_acquire)) {
            const std::uint64_t ahead = forward(pos, s.reserved_to.load(std::memory_order_acquire));
            needs_lock = ahead < job.need || phys + ahead > capacity;
        }
        needs_lock = needs_lock || forward(s.tail_seen.load(std::memory_order_relaxed), advance(pos, job.need)) > capacity;
        // An empty queue jumps back to the warm start (under put_lock) before
        // it leaves the warm window: beyond it every page is fresh memory
        // (reserved, zero-filled by the kernel, given back behind the
        // readers). Asked for every item from jump_from on, not once per
        // page: consumers that keep up leave the queue empty for moments
        // only, and a stream that misses them runs through fresh pages.
        if (!needs_lock && phys > jump_from && job.need <= phys) {
            const std::uint64_t tail_word = s.tail.load(std::memory_order_acquire);
            if (tail_word == head_word) {
                s.tail_seen.store(pos, std::memory_order_relaxed);
                needs_lock = true;
            }
        }
        if (needs_lock) {
            if (!guessed) return false;
            guessed = false;
            head_word = s.head.load(std::memory_order_acquire);
            continue;
        }
        const std::uint64_t to = end_word{advance(pos, job.need), head.count + 1}.word();
        if (!claim(s, slot, head_word, to)) {  // head_word is the head now: try again from there
            guessed = false;
            continue;
        }
        slot.next_head.store(to, std::memory_order_relaxed);
        write_record(s, data_, fd_.get(), phys, head_word, to, job, false);
        slot.claim_from.store(no_claim, std::memory_order_release);
        wake_all(s.data);
        return true;
    }
}

bool queue_core::put_claimed(const record_job& job, int own, std::optional<clock::time_point> deadline) {
    auto& s = *shared_;
    sys::robust_lock lock(s.put_lock, deadline);
    if (!lock.locked()) return false;
    // A dead holder of put_lock may have left a claim in the locked slot.
    if (lock.owner_died()) settle_locked_slot(s, data_);
    if (own < 0) own_locked_slot(s);
    auto& slot = s.slots[own < 0 ? locked_slot : own];
    for (;;) {
        std::uint64_t head_word = s.head.load(std::memory_order_acquire);
        const auto head = end_word::from(head_word);
        std::uint64_t pos = head.pos;
        const std::uint64_t phys = physical(pos);
        std::uint64_t tail = s.tail_seen.load(std::memory_order_relaxed);
        auto look_at_tail = [&] {
            tail = end_word::from(s.tail.load(std::memory_order_acquire)).pos;
            s.tail_seen.store(tail, std::memory_order_relaxed);
        };
        // Jump back to the warm start when the queue is empty (no reader needs
        // anything), or when the record would run past the end of the region.
        // An empty queue jumps only if the item ends before the wrap record;
        // whether it is empty is asked once per page of new data.
        const bool new_page = phys % local_->page + job.need > local_->page;
        const bool may_jump = phys > jump_from && job.need <= phys && (new_page || tail == pos);
        if (may_jump && tail != pos) look_at_tail();
        if ((may_jump && tail == pos) || phys + job.need > capacity) {
            ensure_reserved(s, fd_.get(), data_, pos, sizeof(record_header));
            const std::uint64_t lap = end_word{next_lap(pos), head.count}.word();
            if (!claim(s, slot, head_word, lap)) continue;
            auto* wrap = reinterpret_cast<record_header*>(data_ + phys);
            wrap->size = 0;
            wrap->kind = kind_wrap;
            wrap->stamp.store(head_word, std::memory_order_release);
            slot.claim_from.store(no_claim, std::memory_order_release);
            continue;  // the item goes to the next lap
        }
        // Full only with gigabytes unread: wait for readers rather than fail.
        // Polled, so that consumers of an unbounded queue never pay for a wake-up.
        if (forward(tail, advance(pos, job.need)) > capacity) {
            pass_wrap_at_tail();
            look_at_tail();
            if (forward(tail, advance(pos, job.need)) > capacity) std::this_thread::sleep_for(ring_full_poll);
            continue;
        }
        if (const std::uint64_t lag = forward(s.released_to.load(std::memory_order_relaxed), tail);
            lag >= producer_release_lag && lag <= 2 * capacity)
            release_passed_pages(s, fd_.get());
        const bool one_pass = job.need >= prefault_threshold && job.source != nullptr;
        if (one_pass) {  // reserving its pages takes a while: a waiting consumer prepares meanwhile
            s.large_coming_size.store(job.payload, std::memory_order_relaxed);
            s.large_coming.store(head_word, std::memory_order_release);
            wake_all(s.data);
        }
        ensure_reserved(s, fd_.get(), data_, pos, job.need, !one_pass);
        const std::uint64_t to = end_word{advance(pos, job.need), head.count + 1}.word();
        if (!claim(s, slot, head_word, to)) continue;
        if (own >= 0) slot.next_head.store(to, std::memory_order_relaxed);
        // A large item is written with put_lock held: another one behind it
        // would only compete for the same memory bandwidth. (Its pages are
        // all reserved before the claim: when shared memory is full, nothing
        // is claimed.)
        write_record(s, data_, fd_.get(), phys, head_word, to, job, one_pass, one_pass);
        slot.claim_from.store(no_claim, std::memory_order_release);
        lock.unlock();
        wake_all(s.data);
        return true;
    }
}

bool queue_core::put_published(const record_job& job, std::optional<clock::time_point> deadline) {
    auto& s = *shared_;
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
        const std::uint64_t head_word = s.head.load(std::memory_order_relaxed);
        const auto head = end_word::from(head_word);
        std::uint64_t pos = head.pos;
        std::uint64_t phys = physical(pos);
        // The tail is the consumers' line, written for every item taken:
        // producers read it only when they need it, and otherwise go by the
        // tail they saw last (behind the real one, so it only errs towards "full").
        std::uint64_t tail = s.tail_seen.load(std::memory_order_relaxed);
        auto look_at_tail = [&] {
            auto t = end_word::from(s.tail.load(std::memory_order_acquire));
            tail = t.pos;
            s.tail_seen.store(tail, std::memory_order_relaxed);
            return t;
        };
        if (s.maxsize != 0 && count_between(look_at_tail().count, head.count) >= s.maxsize) continue;  // filled meanwhile
        // Jump back as put_claimed does; here the wrap record is published with the item.
        const bool new_page = phys % local_->page + job.need > local_->page;
        const bool may_jump = phys > warm_window && job.need <= phys && (new_page || tail == pos);
        std::uint64_t start = head_word;  // where the item's record starts
        if ((may_jump && (tail == pos || look_at_tail().pos == pos)) || phys + job.need > capacity) {
            ensure_reserved(s, fd_.get(), data_, pos, sizeof(record_header));
            auto* wrap = reinterpret_cast<record_header*>(data_ + phys);
            wrap->size = 0;
            wrap->kind = kind_wrap;
            wrap->stamp.store(head_word, std::memory_order_relaxed);  // published by the head's store
            pos = next_lap(pos);
            phys = 0;
            start = end_word{pos, head.count}.word();
        }
        if (forward(tail, advance(pos, job.need)) > capacity) {
            pass_wrap_at_tail();
            look_at_tail();
        }
        while (forward(tail, advance(pos, job.need)) > capacity) {
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
        const bool one_pass = job.need >= prefault_threshold && job.source != nullptr;
        ensure_reserved(s, fd_.get(), data_, pos, job.need, !one_pass);
        const std::uint64_t end = end_word{advance(pos, job.need), head.count + 1}.word();
        write_record(s, data_, fd_.get(), phys, start, end, job, one_pass);
        // The one store that publishes the item (and a jump back before it) and counts it.
        s.head.store(end, std::memory_order_release);
        lock.unlock();
        wake_all(s.data);
        return true;
    }
}

void queue_core::pass_wrap_at_tail() {
    // After a jump back with the queue empty, the tail stays on the wrap
    // record in the lap behind until a reader passes it: the ring would look
    // full (a put would wait for a reader) once this lap reaches the tail's
    // offset. The producer passes it as a reader would.
    auto& s = *shared_;
    std::uint64_t tail_word = s.tail.load(std::memory_order_acquire);
    if (tail_word & owed_bit) return;
    const auto t = end_word::from(tail_word);
    const auto head = end_word::from(s.head.load(std::memory_order_acquire));
    const std::uint64_t lap = next_lap(t.pos);
    const auto* at_tail = reinterpret_cast<const record_header*>(data_ + physical(t.pos));
    if (forward(t.pos, head.pos) == 0 || forward(t.pos, lap) > forward(t.pos, head.pos) ||
        at_tail->stamp.load(std::memory_order_acquire) != tail_word || at_tail->kind != kind_wrap)
        return;
    s.tail.compare_exchange_strong(tail_word, end_word{lap, t.count}.word(), std::memory_order_acq_rel);
}

}  // namespace mp::detail
