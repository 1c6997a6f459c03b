// synchronize.cpp — the shared state behind mp's synchronisation objects.
//
// Each object lives in its own memfd: a header (what the block holds, checked
// when a block arrives from another process) followed at payload_offset by
// the object's state. Locks are mp's robust mutex (sys/robust_mutex: the
// kernel's robust-futex list reports a holder's death to the next acquirer);
// semaphores, conditions and events are atomic words with futex waits, each
// with a count of sleepers so that waking costs no system call when nobody
// sleeps.
#include "mp/synchronize.hpp"

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <limits>
#include <string>

#include "mp/serialize.hpp"
#include "sys/robust_mutex.hpp"
#include "sys/sync_sys.hpp"
#include "sys/sys.hpp"

namespace mp {

namespace detail {
namespace {

constexpr std::uint32_t block_magic = 0x6d707362;  // "mpsb"
constexpr std::size_t payload_offset = 64;

struct block_header {
    std::uint32_t magic;
    std::uint32_t kind;
    std::uint64_t payload_size;
    std::uint64_t element_size;
};
static_assert(sizeof(block_header) <= payload_offset);

/// A lock's state. owner_tid, depth and owner_died are written only by the
/// thread holding `mutex` (they describe its hold); others may read owner_tid
/// racily to ask "is it me?", which only the holder can answer yes to.
struct mutex_state {
    sys::robust_mutex mutex;
    std::uint32_t owner_tid;   // holder's thread id, 0 when free
    std::uint32_t depth;       // recursion depth of the holder
    std::uint32_t owner_died;  // the holder got it from a holder that died
};

/// Futex word for condition waits: bumped by every notify.
struct condition_state {
    std::uint32_t seq;
    std::uint32_t waiters;  // threads between reading seq and waking up
};

struct semaphore_state {
    std::uint32_t value;
    std::uint32_t waiters;  // threads that may be asleep on value
    std::uint32_t max;      // bounded: the initial value; else 0
    std::uint32_t bounded;
};

/// word: bit 0 is the flag, bits 1.. count the set() calls that raised it,
/// so a waiter can tell a set() happened even if clear() followed at once.
struct event_state {
    std::uint32_t word;
    std::uint32_t waiters;
};

/// Python's threading.Barrier state; every field but `cond` guarded by `mutex`.
struct barrier_state {
    mutex_state mutex;
    condition_state cond;
    std::uint32_t parties;
    std::uint32_t count;  // parties inside wait()
    std::int32_t state;   // filling, draining, resetting or broken
};
constexpr std::int32_t barrier_filling = 0;
constexpr std::int32_t barrier_draining = 1;
constexpr std::int32_t barrier_resetting = -1;
constexpr std::int32_t barrier_broken = -2;

std::size_t state_size(sync_block::kind k) {
    switch (k) {
        case sync_block::kind::lock:
        case sync_block::kind::rlock: return sizeof(mutex_state);
        case sync_block::kind::semaphore: return sizeof(semaphore_state);
        case sync_block::kind::condition: return sizeof(condition_state);
        case sync_block::kind::event: return sizeof(event_state);
        case sync_block::kind::barrier: return sizeof(barrier_state);
        default: return 0;
    }
}

const char* kind_name(sync_block::kind k) {
    switch (k) {
        case sync_block::kind::lock: return "mp::lock";
        case sync_block::kind::rlock: return "mp::rlock";
        case sync_block::kind::semaphore: return "mp::semaphore";
        case sync_block::kind::condition: return "mp::condition";
        case sync_block::kind::event: return "mp::event";
        case sync_block::kind::barrier: return "mp::barrier";
        case sync_block::kind::value: return "mp::value";
        case sync_block::kind::array: return "mp::array";
        case sync_block::kind::any_lock: return "mp::lock or mp::rlock";
    }
    return "unknown";
}

template <class T>
std::atomic_ref<T> atomic(T& word) noexcept {
    return std::atomic_ref<T>(word);
}

// ---- thread ids, cached per thread and refreshed after fork ----------------

struct cached_tid {
    std::uint32_t tid = 0;  // 0: not known yet
};
thread_local cached_tid my_cached_tid;

std::uint32_t my_tid() noexcept {
    static const bool hooked = [] {
        // A fork child has one thread, the one that forked: the hook runs in
        // it, so its cache is the only one to forget.
        sys::register_after_fork([] { my_cached_tid.tid = 0; });
        return true;
    }();
    static_cast<void>(hooked);
    if (my_cached_tid.tid == 0) my_cached_tid.tid = static_cast<std::uint32_t>(sys::current_tid());
    return my_cached_tid.tid;
}

// ---- mutexes -----------------------------------------------------------------

enum class acquired { yes, no, deadlock };

/// Takes m (blocking, until `deadline`, or just trying), keeping the
/// bookkeeping fields right, recovering it if its holder died.
acquired mutex_acquire(mutex_state& m, bool recursive, bool wait, sync_deadline deadline) {
    sys::lock_result r = wait ? m.mutex.lock(deadline) : m.mutex.try_lock();
    std::uint32_t me = my_tid();
    switch (r) {
        case sys::lock_result::acquired:
            if (recursive && atomic(m.owner_tid).load(std::memory_order_relaxed) == me) {
                ++m.depth;
            } else {
                atomic(m.owner_tid).store(me, std::memory_order_relaxed);
                m.depth = 1;
                m.owner_died = 0;
            }
            return acquired::yes;
        case sys::lock_result::acquired_owner_died:
            // The holder died holding it: take it over and say so.
            atomic(m.owner_tid).store(me, std::memory_order_relaxed);
            m.depth = 1;
            m.owner_died = 1;
            return acquired::yes;
        case sys::lock_result::timed_out: return acquired::no;
        case sys::lock_result::already_held: return acquired::deadlock;
        case sys::lock_result::not_recoverable:
            throw lock_error(
                "mp: the lock is permanently unusable: a process that recovered it from a dead holder "
                "released it without marking it consistent; create a new lock");
        case sys::lock_result::too_deep:
            throw lock_error("mp: rlock acquired too many times recursively (counter overflow)");
    }
    return acquired::no;
}

/// Gives m back once. false (and no change) if this thread does not hold it.
bool mutex_release(mutex_state& m) noexcept {
    if (atomic(m.owner_tid).load(std::memory_order_relaxed) != my_tid()) return false;
    if (m.depth > 1) {
        --m.depth;
    } else {
        m.depth = 0;
        atomic(m.owner_tid).store(0, std::memory_order_relaxed);
    }
    return m.mutex.unlock();
}

[[noreturn]] void throw_not_held(const char* what) {
    throw lock_error(std::string("mp: ") + what +
                     " by a thread that does not hold the lock; only the thread that acquired it may release "
                     "it (for a signal between processes use mp::semaphore or mp::event)");
}

/// Releases m completely (every recursion level); returns the depth to
/// restore. Throws lock_error if the caller does not hold it.
std::uint32_t mutex_release_all(mutex_state& m, const char* what) {
    if (atomic(m.owner_tid).load(std::memory_order_relaxed) != my_tid())
        throw lock_error(std::string("mp: ") + what +
                         " needs the condition's lock held by the calling thread: acquire it first "
                         "(std::unique_lock guard(cond);)");
    std::uint32_t depth = m.depth;
    m.depth = 0;
    atomic(m.owner_tid).store(0, std::memory_order_relaxed);
    for (std::uint32_t i = 0; i < depth; ++i) m.mutex.unlock();
    return depth;
}

/// Re-acquires m to `depth` levels after mutex_release_all.
void mutex_reacquire(mutex_state& m, bool recursive, std::uint32_t depth) {
    (void)mutex_acquire(m, recursive, true, std::nullopt);
    for (std::uint32_t i = 1; i < depth; ++i) (void)mutex_acquire(m, recursive, true, std::nullopt);
}

// ---- condition waits -----------------------------------------------------------

/// Sleeps on c with m released; m is held again (to the same depth) on
/// return. false if the deadline passed. May return spuriously.
bool condition_wait(condition_state& c, mutex_state& m, bool recursive, sync_deadline deadline,
                    const char* what) {
    // Read seq while holding the lock: a notify (made under the lock) after
    // this point changes it, so the futex wait below cannot miss it.
    std::uint32_t seq = atomic(c.seq).load();
    atomic(c.waiters).fetch_add(1);
    std::uint32_t depth;
    try {
        depth = mutex_release_all(m, what);
    } catch (...) {
        atomic(c.waiters).fetch_sub(1);
        throw;
    }
    bool in_time = sys::futex_wait(&c.seq, seq, deadline);
    atomic(c.waiters).fetch_sub(1);
    mutex_reacquire(m, recursive, depth);
    return in_time;
}

void condition_notify(condition_state& c, std::uint32_t n) noexcept {
    atomic(c.seq).fetch_add(1);
    if (atomic(c.waiters).load() > 0)
        sys::futex_wake(&c.seq, static_cast<int>(std::min<std::uint32_t>(n, INT_MAX)));
}

template <class State>
State& state_of(const sync_block& block) noexcept {
    return *static_cast<State*>(block.payload());
}

bool is_recursive(const sync_block& block) noexcept { return block.type() == sync_block::kind::rlock; }

}  // namespace

// ---- sync_block ------------------------------------------------------------------

std::shared_ptr<sync_block> sync_block::create(kind k, std::size_t payload, std::size_t element_size) {
    std::size_t state = state_size(k);
    std::size_t bytes = payload_offset + (payload > state ? payload : state);
    std::size_t page = sys::page_size();
    std::size_t map_size = (bytes + page - 1) / page * page;
    static constexpr const char* names[] = {"",          "mp-lock",    "mp-rlock", "mp-semaphore", "mp-condition",
                                            "mp-event",  "mp-barrier", "mp-value", "mp-array"};
    auto index = static_cast<std::size_t>(k);
    unique_fd fd = sys::memfd(index < std::size(names) ? names[index] : "mp-sync", map_size);
    void* base = sys::map_shared(fd.get(), map_size);
    std::shared_ptr<sync_block> block(new sync_block(std::move(fd), base, map_size));
    auto* header = static_cast<block_header*>(base);
    header->magic = block_magic;
    header->kind = static_cast<std::uint32_t>(k);
    header->payload_size = payload;
    header->element_size = element_size;
    if (k == kind::lock || k == kind::rlock) state_of<mutex_state>(*block).mutex.init(k == kind::rlock);
    if (k == kind::barrier) state_of<barrier_state>(*block).mutex.mutex.init(false);
    return block;
}

std::shared_ptr<sync_block> sync_block::attach(unique_fd fd, kind k, std::size_t element_size) {
    std::size_t size = 0;
    auto reject = [&](const std::string& why) {
        throw serialization_error(std::string("mp: received a file descriptor that should be an ") +
                                  kind_name(k) + " but " + why +
                                  ": the sender and receiver disagree on the type");
    };
    try {
        size = sys::fd_size(fd.get());
    } catch (const system_error&) {
        reject("it cannot be inspected");
    }
    if (size < payload_offset || size % sys::page_size() != 0) reject("it has the wrong size");
    void* base = sys::map_shared(fd.get(), size);
    std::shared_ptr<sync_block> block(new sync_block(std::move(fd), base, size));
    auto* header = static_cast<const block_header*>(base);
    auto got = static_cast<kind>(header->kind);
    bool kind_ok = got == k || (k == kind::any_lock && (got == kind::lock || got == kind::rlock));
    if (header->magic != block_magic) reject("it is not an mp object");
    if (!kind_ok) reject(std::string("it is an ") + kind_name(got));
    if (payload_offset + std::max<std::uint64_t>(header->payload_size, state_size(got)) > size)
        reject("its header is corrupt");
    if (element_size != 0 && header->element_size != element_size)
        reject("its elements are " + std::to_string(header->element_size) + " bytes, not " +
               std::to_string(element_size));
    return block;
}

sync_block::~sync_block() { sys::unmap(base_, map_size_); }

void* sync_block::payload() const noexcept { return static_cast<std::byte*>(base_) + payload_offset; }

std::size_t sync_block::payload_size() const noexcept {
    return static_cast<const block_header*>(base_)->payload_size;
}

sync_block::kind sync_block::type() const noexcept {
    return static_cast<kind>(static_cast<const block_header*>(base_)->kind);
}

// ---- basic_lock ----------------------------------------------------------------------

bool basic_lock::acquire_until(sync_deadline deadline, bool wait) {
    switch (mutex_acquire(state_of<mutex_state>(*block_), is_recursive(*block_), wait, deadline)) {
        case acquired::yes: return true;
        case acquired::no: return false;
        case acquired::deadlock:
            // Python would hang here forever (or until the timeout); a
            // blocking acquire is a certain deadlock, a bounded one can only fail.
            if (wait && !deadline)
                throw lock_error(
                    "mp: deadlock: this thread already holds this mp::lock, which is not recursive; "
                    "release it first, or use mp::rlock");
            return false;
    }
    return false;
}

void basic_lock::unlock() {
    if (!mutex_release(state_of<mutex_state>(*block_))) throw_not_held("lock released");
}

bool basic_lock::owner_died() const noexcept { return state_of<mutex_state>(*block_).owner_died != 0; }

bool basic_lock::is_owned() const noexcept {
    return atomic(state_of<mutex_state>(*block_).owner_tid).load(std::memory_order_relaxed) == my_tid();
}

}  // namespace detail

// ---- semaphore -----------------------------------------------------------------------

semaphore::semaphore(std::uint32_t value, bool bounded)
    : block_(detail::sync_block::create(detail::sync_block::kind::semaphore)) {
    auto& s = detail::state_of<detail::semaphore_state>(*block_);
    s.value = value;
    s.max = bounded ? value : 0;
    s.bounded = bounded ? 1 : 0;
}

bool semaphore::acquire_until(detail::sync_deadline deadline, bool block) {
    auto& s = detail::state_of<detail::semaphore_state>(*block_);
    auto value = detail::atomic(s.value);
    auto try_take = [&] {
        std::uint32_t v = value.load();
        while (v > 0)
            if (value.compare_exchange_weak(v, v - 1)) return true;
        return false;
    };
    for (;;) {
        if (try_take()) return true;
        if (!block) return false;
        // Announce the sleep before the last look at value: a release()
        // either sees us in waiters (and wakes) or happened before the look.
        detail::atomic(s.waiters).fetch_add(1);
        bool in_time = value.load() != 0 || sys::futex_wait(&s.value, 0, deadline);
        detail::atomic(s.waiters).fetch_sub(1);
        if (!in_time) return try_take();
    }
}

void semaphore::release(std::uint32_t n) {
    auto& s = detail::state_of<detail::semaphore_state>(*block_);
    auto value = detail::atomic(s.value);
    std::uint32_t v = value.load();
    for (;;) {
        std::uint64_t after = std::uint64_t{v} + n;
        if (s.bounded && after > s.max)
            throw value_error("mp: bounded_semaphore released too many times: its value would become " +
                              std::to_string(after) + ", above its initial value " + std::to_string(s.max));
        if (after > std::numeric_limits<std::uint32_t>::max())
            throw value_error("mp: semaphore released too many times: its value would overflow");
        if (value.compare_exchange_weak(v, static_cast<std::uint32_t>(after))) break;
    }
    if (detail::atomic(s.waiters).load() > 0)
        sys::futex_wake(&s.value, static_cast<int>(std::min<std::uint32_t>(n, INT_MAX)));
}

std::uint32_t semaphore::get_value() const noexcept {
    return detail::atomic(detail::state_of<detail::semaphore_state>(*block_).value).load();
}

// ---- condition -----------------------------------------------------------------------

condition::condition() : block_(detail::sync_block::create(detail::sync_block::kind::condition)) {}

condition::condition(const lock_type& lk)
    : block_(detail::sync_block::create(detail::sync_block::kind::condition)), lock_(lk) {}

condition::condition(const rlock_type& lk)
    : block_(detail::sync_block::create(detail::sync_block::kind::condition)), lock_(lk) {}

bool condition::wait_until(detail::sync_deadline deadline) {
    const auto& lb = *lock_.block();
    return detail::condition_wait(detail::state_of<detail::condition_state>(*block_),
                                  detail::state_of<detail::mutex_state>(lb), detail::is_recursive(lb), deadline,
                                  "condition.wait()");
}

void condition::notify(std::uint32_t n) {
    if (!lock_.is_owned())
        throw lock_error("mp: condition.notify() needs the condition's lock held by the calling thread");
    detail::condition_notify(detail::state_of<detail::condition_state>(*block_), n);
}

void condition::notify_all() { notify(std::numeric_limits<std::uint32_t>::max()); }

// ---- event ---------------------------------------------------------------------------

event::event() : block_(detail::sync_block::create(detail::sync_block::kind::event)) {}

void event::set() noexcept {
    auto& e = detail::state_of<detail::event_state>(*block_);
    auto word = detail::atomic(e.word);
    std::uint32_t v = word.load();
    do {
        if (v & 1u) return;
    } while (!word.compare_exchange_weak(v, (v + 2u) | 1u));
    if (detail::atomic(e.waiters).load() > 0) sys::futex_wake(&e.word, INT_MAX);
}

void event::clear() noexcept {
    detail::atomic(detail::state_of<detail::event_state>(*block_).word).fetch_and(~1u);
}

bool event::is_set() const noexcept {
    return (detail::atomic(detail::state_of<detail::event_state>(*block_).word).load() & 1u) != 0;
}

bool event::wait_until(detail::sync_deadline deadline) {
    auto& e = detail::state_of<detail::event_state>(*block_);
    auto word = detail::atomic(e.word);
    std::uint32_t start = word.load();
    if (start & 1u) return true;
    detail::atomic(e.waiters).fetch_add(1);
    bool result = false;
    for (;;) {
        // The word only changes from `start` (flag clear) by a set().
        if (word.load() != start) {
            result = true;
            break;
        }
        if (!sys::futex_wait(&e.word, start, deadline)) {
            result = word.load() != start;
            break;
        }
    }
    detail::atomic(e.waiters).fetch_sub(1);
    return result;
}

// ---- barrier -------------------------------------------------------------------------

namespace {

/// Holds a barrier's mutex; if its previous holder died mid-update, the
/// barrier's state cannot be trusted and the barrier is broken.
class barrier_guard {
public:
    explicit barrier_guard(detail::barrier_state& b) : b_(b) {
        (void)detail::mutex_acquire(b.mutex, false, true, std::nullopt);
        if (b.mutex.owner_died) break_barrier();
    }
    ~barrier_guard() { (void)detail::mutex_release(b_.mutex); }
    barrier_guard(const barrier_guard&) = delete;
    barrier_guard& operator=(const barrier_guard&) = delete;

    void break_barrier() noexcept {
        b_.state = detail::barrier_broken;
        detail::condition_notify(b_.cond, std::numeric_limits<std::uint32_t>::max());
    }
    bool wait(detail::sync_deadline deadline) {
        return detail::condition_wait(b_.cond, b_.mutex, false, deadline, "barrier.wait()");
    }
    void notify_all() noexcept { detail::condition_notify(b_.cond, std::numeric_limits<std::uint32_t>::max()); }

private:
    detail::barrier_state& b_;
};

[[noreturn]] void throw_broken(const char* why) {
    throw broken_barrier_error(std::string("mp: the barrier is broken (") + why +
                               "); call reset() before using it again");
}

}  // namespace

barrier::barrier(std::uint32_t parties, function<void()> action, std::optional<timeout_type> timeout)
    : block_(detail::sync_block::create(detail::sync_block::kind::barrier)),
      action_(std::move(action)),
      timeout_(timeout) {
    if (parties == 0) throw value_error("mp: a barrier needs at least 1 party");
    detail::state_of<detail::barrier_state>(*block_).parties = parties;
}

std::uint32_t barrier::wait_until(detail::sync_deadline deadline) {
    auto& b = detail::state_of<detail::barrier_state>(*block_);
    barrier_guard guard(b);
    // Wait while the previous round drains or a reset completes.
    while (b.state == detail::barrier_draining || b.state == detail::barrier_resetting) (void)guard.wait(std::nullopt);
    if (b.state < 0) throw_broken("aborted, reset, timed out, or its action failed");
    std::uint32_t index = b.count++;
    auto leave = [&] {
        // The last party out of a drained or reset barrier re-opens it.
        if (--b.count == 0 && (b.state == detail::barrier_draining || b.state == detail::barrier_resetting)) {
            b.state = detail::barrier_filling;
            guard.notify_all();
        }
    };
    try {
        if (index + 1 == b.parties) {
            try {
                if (action_) action_();
            } catch (...) {
                guard.break_barrier();
                throw;
            }
            b.state = detail::barrier_draining;
            guard.notify_all();
        } else {
            while (b.state == detail::barrier_filling) {
                if (!guard.wait(deadline) && b.state == detail::barrier_filling) {
                    guard.break_barrier();
                    throw_broken("a wait timed out");
                }
            }
            if (b.state < 0) throw_broken("aborted, reset, timed out, or its action failed");
        }
    } catch (...) {
        leave();
        throw;
    }
    leave();
    return index;
}

void barrier::reset() {
    auto& b = detail::state_of<detail::barrier_state>(*block_);
    barrier_guard guard(b);
    if (b.count > 0) {
        if (b.state == detail::barrier_filling || b.state == detail::barrier_broken)
            b.state = detail::barrier_resetting;
    } else {
        b.state = detail::barrier_filling;
    }
    guard.notify_all();
}

void barrier::abort() {
    auto& b = detail::state_of<detail::barrier_state>(*block_);
    barrier_guard guard(b);
    guard.break_barrier();
}

std::uint32_t barrier::parties() const noexcept { return detail::state_of<detail::barrier_state>(*block_).parties; }

std::uint32_t barrier::n_waiting() const {
    auto& b = detail::state_of<detail::barrier_state>(*block_);
    barrier_guard guard(b);
    return b.state == detail::barrier_filling ? b.count : 0;
}

bool barrier::broken() const {
    auto& b = detail::state_of<detail::barrier_state>(*block_);
    barrier_guard guard(b);
    return b.state == detail::barrier_broken;
}


}  // namespace mp
