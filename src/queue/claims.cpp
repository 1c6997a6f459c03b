// queue/claims.cpp — who owns a claim on an unbounded queue, and what a
// consumer does about the claim of a producer that died (see layout.hpp).
#include <mutex>
#include <thread>
#include <vector>

#include "queue/layout.hpp"
#include "queue_hooks.hpp"
#include "sys/after_fork.hpp"
#include "sys/process.hpp"
#include "sys/sync_sys.hpp"

namespace mp::detail::queue_layout {
namespace {

// A fork child is another process: it must not use its parent's slots. Every
// fork bumps this (in the child), which invalidates every cached slot.
std::atomic<std::uint64_t> fork_generation{1};
void count_fork() { fork_generation.fetch_add(1, std::memory_order_relaxed); }

struct process_identity {
    std::uint64_t pid = 0;
    std::uint64_t start = 0;
};

// The slots this process registered: (handle, thread) → slot. Guarded by
// registry_mutex; emptied in a fork child (its threads are not the parent's).
struct registration {
    std::uint64_t serial;
    std::thread::id thread;
    int slot;
};
sys::fork_guarded_mutex registry_mutex;
std::vector<registration> registrations;
std::uint64_t registrations_generation = 0;
process_identity me;  // of the generation above

// The calling thread's last answer, so that a put asks the registry once.
struct cached_slot {
    std::uint64_t serial = 0;
    std::uint64_t generation = 0;
    int slot = -1;
};
thread_local cached_slot cache;

/// Registers the fork counter, once per process (before registry_mutex is taken:
/// the after-fork registry has a lock of its own).
void count_forks() {
    static std::once_flag registered;
    std::call_once(registered, [] { sys::register_after_fork(count_fork); });
}

/// Under registry_mutex: forgets the parent's registrations in a fork child.
void refresh_process(std::uint64_t generation) {
    if (registrations_generation == generation) return;
    registrations.clear();
    registrations_generation = generation;
    me.pid = static_cast<std::uint64_t>(sys::current_pid());
    me.start = sys::process_start_time(sys::current_pid());
}

bool alive(const producer_slot& slot) {
    const std::uint64_t pid = slot.owner.load(std::memory_order_acquire);
    if (pid == 0) return false;
    const std::uint64_t start = slot.owner_start.load(std::memory_order_acquire);
    if (start == 0) return true;  // being registered this moment
    return sys::process_start_time(static_cast<int>(pid)) == start;
}

record_header& record_at(std::byte* data, std::uint64_t word) {
    return *reinterpret_cast<record_header*>(data + physical(end_word::from(word).pos));
}

/// Whether `word` lies in [tail, head] of what producers claimed.
bool within(std::uint64_t tail_word, std::uint64_t head_word, std::uint64_t word, bool head_included) {
    const auto tail = end_word::from(tail_word & ~owed_bit), head = end_word::from(head_word),
               at = end_word::from(word);
    const std::uint64_t span = forward(tail.pos, head.pos), to = forward(tail.pos, at.pos);
    if (span > capacity || to > span || (to == span && !head_included)) return false;
    return count_between(tail.count, at.count) <= count_between(tail.count, head.count);
}

/// Whether `stamp`, read at the claim `at`, says the claim is settled: its
/// record stamped, or made a hole. A hole stamp is this claim's only if it
/// ends within what was claimed: stale bytes of an earlier lap's hole lie
/// where a claim is not stamped yet, and taking them for this claim's hole
/// would let a dead producer's slot be reused with its claim still open.
bool settled(shared& s, std::uint64_t stamp, std::uint64_t at) {
    if (stamp == at) return true;
    const std::uint64_t hole_to = stamp & ~hole_bit;
    return (stamp & hole_bit) != 0 && hole_to != at && within(at, s.head.load(std::memory_order_acquire), hole_to, true);
}

/// Whether a claim ending at `to` is one that happened: the head stands
/// there, or a record starts there (stamped, a hole, or claimed by a slot).
bool claim_end_confirmed(shared& s, std::byte* data, std::uint64_t to) {
    if (s.head.load(std::memory_order_acquire) == to) return true;
    const std::uint64_t stamp = record_at(data, to).stamp.load(std::memory_order_acquire);
    if (stamp == to) return true;
    for (auto& slot : s.slots)
        if (slot.claim_from.load(std::memory_order_acquire) == to) return true;
    return false;
}

/// Settles the unstamped record at `at` (a claimed position in [tail, head)).
claim_state settle_at(shared& s, std::byte* data, std::uint64_t at) {
    auto& rec = record_at(data, at);
    queue_hooks::reach(queue_hooks::point::before_settle);
    const std::uint64_t observed = rec.stamp.load(std::memory_order_acquire);
    // Stamped, or made a hole, since the caller found it unstamped: its
    // producer cleared its slot (or a process that took over a dead
    // producer's slot did), so no slot naming it is no sign of corruption.
    // The caller reads the record again.
    if (settled(s, observed, at)) return claim_state::in_progress;
    // Every slot that names the claim: its winner, and perhaps losers of the
    // same compare-and-swap that have not written their next claim yet.
    std::uint64_t ends[slot_count];
    unsigned found = 0;
    bool some_alive = false;
    for (auto& slot : s.slots) {
        if (slot.claim_from.load(std::memory_order_acquire) != at) continue;
        const std::uint64_t to = slot.claim_to.load(std::memory_order_acquire);
        if (slot.claim_from.load(std::memory_order_acquire) != at) continue;  // moved on meanwhile
        if (alive(slot)) some_alive = true;
        ends[found++] = to;
    }
    // A winner clears its slot after its stamp: read the stamp again.
    if (rec.stamp.load(std::memory_order_acquire) != observed) return claim_state::in_progress;
    if (found == 0) return claim_state::unowned;
    if (some_alive) return claim_state::in_progress;
    // All dead. Where did the claim end? Losers may name other ends; the
    // true one is confirmed by what came after it.
    std::uint64_t end = ends[0];
    bool agreed = true;
    for (unsigned i = 1; i < found; ++i) agreed = agreed && ends[i] == end;
    if (!agreed) {
        unsigned confirmed = 0;
        for (unsigned i = 0; i < found; ++i)
            if (claim_end_confirmed(s, data, ends[i])) {
                end = ends[i];
                ++confirmed;
            }
        if (confirmed == 0) return claim_state::in_progress;  // decided once what follows is stamped
    }
    if (!within(at, s.head.load(std::memory_order_acquire), end, true) || end == at) return claim_state::unowned;
    // Still unpassed (consumers cannot pass an unstamped record, but another
    // settler may have made the hole and a consumer passed it meanwhile).
    if (!within(s.tail.load(std::memory_order_acquire), s.head.load(std::memory_order_acquire), at, false))
        return claim_state::in_progress;
    std::uint64_t expected = observed;
    if (!rec.stamp.compare_exchange_strong(expected, end | hole_bit, std::memory_order_acq_rel))
        return claim_state::in_progress;  // settled by another
    return claim_state::hole_made;
}

/// A slot's claim that is not stamped and not passed yet, or no_claim.
std::uint64_t open_claim(shared& s, std::byte* data, const producer_slot& slot) {
    const std::uint64_t from = slot.claim_from.load(std::memory_order_acquire);
    if (from == no_claim) return no_claim;
    const std::uint64_t tail = s.tail.load(std::memory_order_acquire), head = s.head.load(std::memory_order_acquire);
    if (!within(tail, head, from, false)) return no_claim;  // passed, or never won
    if (settled(s, record_at(data, from).stamp.load(std::memory_order_acquire), from)) return no_claim;
    return from;
}

/// Makes the open claim of dead slot `slot` a hole; false if that is not
/// decided yet (then the slot must not be reused).
bool settle_dead_claim(shared& s, std::byte* data, const producer_slot& slot) {
    const std::uint64_t from = open_claim(s, data, slot);
    return from == no_claim || settle_at(s, data, from) != claim_state::in_progress ||
           open_claim(s, data, slot) == no_claim;
}

/// Takes slot `slot` for this process if it is free, or if its owner died
/// and that owner's last claim is settled. Only the process that wins the
/// slot writes its claim_from: a loser that cleared it could erase the live
/// claim the winner has made meanwhile, and a claim that no slot names is
/// taken for corruption once it stays unstamped.
bool take_slot(shared& s, std::byte* data, producer_slot& slot) {
    std::uint64_t owner = slot.owner.load(std::memory_order_acquire);
    if (owner == 0) {
        // A free slot is "being registered" (owner set, start 0) once won.
        if (!slot.owner.compare_exchange_strong(owner, me.pid, std::memory_order_acq_rel)) return false;
    } else {
        const std::uint64_t start = slot.owner_start.load(std::memory_order_acquire);
        if (start == 0 || alive(slot) || !settle_dead_claim(s, data, slot)) return false;
        // Start 0 marks the slot as being registered, so every other
        // process leaves it alone from here on.
        std::uint64_t expected = start;
        if (!slot.owner_start.compare_exchange_strong(expected, 0, std::memory_order_acq_rel)) return false;
        // A live owner started in the same clock tick as the dead one would
        // also match `start`: then the slot is not ours; give its start back.
        if (!slot.owner.compare_exchange_strong(owner, me.pid, std::memory_order_acq_rel)) {
            slot.owner_start.store(start, std::memory_order_release);
            return false;
        }
    }
    slot.claim_from.store(no_claim, std::memory_order_release);
    slot.next_head.store(no_claim, std::memory_order_relaxed);
    slot.owner_start.store(me.start, std::memory_order_release);
    return true;
}

}  // namespace

int own_slot(shared& s, std::uint64_t serial) {
    const std::uint64_t generation = fork_generation.load(std::memory_order_relaxed);
    if (cache.serial == serial && cache.generation == generation) return cache.slot;
    count_forks();
    std::lock_guard guard(registry_mutex);
    refresh_process(generation);
    const auto thread = std::this_thread::get_id();
    int found = -1;
    for (const auto& r : registrations)
        if (r.serial == serial && r.thread == thread) found = r.slot;
    if (found < 0) {
        auto* data = reinterpret_cast<std::byte*>(&s) + header_size;
        for (unsigned k = 1; k < slot_count && found < 0; ++k)
            if (take_slot(s, data, s.slots[k])) found = static_cast<int>(k);
        registrations.push_back({serial, thread, found});
    }
    cache = {serial, generation, found};
    return found;
}

void free_own_slots(shared& s, std::uint64_t serial) noexcept {
    std::lock_guard guard(registry_mutex);
    if (registrations_generation != fork_generation.load(std::memory_order_relaxed)) return;  // the parent's
    std::erase_if(registrations, [&](const registration& r) {
        if (r.serial != serial) return false;
        if (r.slot > 0) {
            auto& slot = s.slots[r.slot];
            slot.claim_from.store(no_claim, std::memory_order_release);
            slot.owner_start.store(0, std::memory_order_release);
            slot.owner.store(0, std::memory_order_release);
        }
        return true;
    });
    if (cache.serial == serial) cache = {};
}

void own_locked_slot(shared& s) {
    std::uint64_t pid, start;
    count_forks();
    {
        std::lock_guard guard(registry_mutex);
        refresh_process(fork_generation.load(std::memory_order_relaxed));
        pid = me.pid;
        start = me.start;
    }
    auto& slot = s.slots[locked_slot];
    if (slot.owner.load(std::memory_order_relaxed) == pid && slot.owner_start.load(std::memory_order_relaxed) == start)
        return;
    slot.claim_from.store(no_claim, std::memory_order_release);
    slot.owner_start.store(0, std::memory_order_release);  // "being registered" while the pid changes
    slot.owner.store(pid, std::memory_order_release);
    slot.owner_start.store(start, std::memory_order_release);
}

void settle_locked_slot(shared& s, std::byte* data) {
    auto& slot = s.slots[locked_slot];
    // The dead holder's claim must not lose its owner's record before it is
    // settled: rarely undecided for a moment (a live loser of the same race).
    while (!settle_dead_claim(s, data, slot)) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    slot.claim_from.store(no_claim, std::memory_order_release);  // the slot is the lock holder's
}

claim_state settle_unstamped(shared& s, std::byte* data, std::uint64_t tail_word, std::uint64_t) {
    return settle_at(s, data, tail_word);
}

}  // namespace mp::detail::queue_layout
