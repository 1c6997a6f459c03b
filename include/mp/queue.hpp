// mp/queue.hpp — multi-producer multi-consumer queues between processes:
// Python's multiprocessing.Queue, SimpleQueue and JoinableQueue.
//
//     mp::queue<std::string> q;        // unbounded;  mp::queue<T> q(maxsize): bounded
//     q.put("x");  q.put(v, 1s);       // a timed put on a full bounded queue throws mp::queue_full
//     T v = q.get();  q.get(1s);       // a timed get on an empty queue throws mp::queue_empty
//     std::optional<T> o = q.try_get();
//
// Promises:
// - Items live in shared memory owned by the queue, not by the producer:
//   put() on an unbounded queue never waits for a consumer, and a process
//   may exit right after putting; nothing is lost. (Python's Queue needs a
//   feeder thread and a join to get there; its "joining processes that use
//   queues" deadlock cannot happen here.)
// - Items come out in the order they went in (FIFO across all producers).
// - A consumer killed in the middle of get() loses at most the item it was
//   taking; every other item stays, and the queue stays usable. A producer
//   killed in the middle of put() loses only that item. Neither leaves a
//   bounded queue's slot or a joinable queue's unfinished count behind. (On
//   an unbounded queue, size() counts the dead producer's item until the
//   first consumer that reaches it finds its process gone and passes it;
//   every later item arrives.)
// - An item that cannot be loaded (get() throws mp::serialization_error) is
//   dropped: it does not block the queue, and join() counts it as done.
// - Memory for an item is reserved before it is written: when shared memory
//   is full, put() throws mp::system_error (ENOSPC), not a SIGBUS, and the
//   queue stays usable.
// - A queue passed as a process argument works under every start method;
//   copies of a queue are the same queue.
// - Every member is safe to call from several threads and processes at once.
// - A busy consumer does not sleep between items: get() spins briefly before
//   it sleeps, so a steady stream is handed over at memory speed.
// - An item that would travel as a file descriptor (an mp::shared_memory,
//   mp::connection or mp::queue inside it) is refused by put() with
//   mp::value_error: a queue is shared memory and carries bytes only. Send
//   those through a pipe or as process arguments; for large arrays use
//   mp::shared_array, which a queue carries.
// Capacity: an unbounded queue holds up to 8 GiB of unread data (memory is
// used for data actually waiting, plus the first 8 MiB of the queue's region
// once a stream has passed through them: kept so that a busy queue reuses
// warm pages); a single item may be up to 2 GiB.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "mp/context.hpp"
#include "mp/detail/archive.hpp"
#include "mp/serialize.hpp"
#include "mp/timeout.hpp"

namespace mp {

namespace detail {

class queue_core {
public:
    using clock = std::chrono::steady_clock;
    using reader = void (*)(void* context, input_archive& ar);
    /// Copies an item's `size` bytes to `dst`.
    using writer = void (*)(const void* context, std::byte* dst);
    /// Builds an item from its bytes (which live in the queue's memory).
    using bytes_reader = void (*)(void* context, std::span<const std::byte> bytes);
    /// Builds an item from its bytes in pieces, so that a large item is
    /// copied while its producer still writes it: begin(size) first, then
    /// piece() with the next bytes, in order, until all `size` came. Every
    /// piece but the last is a whole number of pages (of whole elements).
    struct piece_reader {
        void (*begin)(void* context, std::size_t size);
        void (*piece)(void* context, std::span<const std::byte> bytes);
    };

    /// Creates a queue; maxsize 0 means unbounded.
    explicit queue_core(std::size_t maxsize, bool joinable);
    /// Attaches to a queue received from another process.
    explicit queue_core(unique_fd fd);
    ~queue_core();
    queue_core(const queue_core&) = delete;
    queue_core& operator=(const queue_core&) = delete;

    /// false when the (bounded) queue stayed full until `deadline`.
    bool put(const output_archive& item, std::optional<clock::time_point> deadline);
    /// false when the queue stayed empty until `deadline`.
    bool get(reader read, void* context, std::optional<clock::time_point> deadline);

    /// put() of an item of `size` bytes that `write` copies in, without an archive.
    bool put_bytes(std::size_t size, writer write, const void* context, std::optional<clock::time_point> deadline);
    /// put() of an item whose bytes lie in one piece: a large one is written
    /// into the queue's memory in one pass (no zero-fill of fresh pages first).
    bool put_span(std::span<const std::byte> bytes, std::optional<clock::time_point> deadline);
    /// get() handing the item's bytes to `read`, without an archive. If read
    /// throws, the item is dropped (the queue must not stall on it). No lock
    /// is taken: `read` may be called for an item another consumer takes
    /// first, and then again for the next; it must only build a value (its
    /// last call before get_bytes returns true is the item taken).
    /// `pieces` (optional) builds the item instead of `read` when it is a
    /// large one that a producer is still writing; the same rules apply.
    bool get_bytes(bytes_reader read, void* context, std::optional<clock::time_point> deadline,
                   const piece_reader* pieces = nullptr);

    [[nodiscard]] std::size_t size() const noexcept;
    [[nodiscard]] std::size_t maxsize() const noexcept;
    [[nodiscard]] bool joinable() const noexcept;
    void task_done();
    bool join(std::optional<clock::time_point> deadline);
    [[nodiscard]] int fd() const noexcept;

    struct shared;
    struct local;       // per-process state that is not shared
    struct record_job;  // one put's record

private:
    bool put_record(std::size_t size, writer write, const void* context, const std::byte* source,
                    std::optional<clock::time_point> deadline);
    /// Bounded and joinable queues: written under put_lock, published by the head's store.
    bool put_published(const record_job& job, std::optional<clock::time_point> deadline);
    /// Unbounded queues: claimed by compare-and-swap of the head through claim
    /// slot `own` (-1: none), without put_lock (false: needs it) ...
    bool put_claimed_fast(const record_job& job, int own);
    /// ... or with it (reserving pages, jumping back, large items).
    bool put_claimed(const record_job& job, int own, std::optional<clock::time_point> deadline);
    void pass_wrap_at_tail();
    /// Takes the oldest item: under the consumers' lock (`under_lock`), or
    /// claiming it with one compare-and-swap after reading it, in which case
    /// `read` may run more than once and only its last run counts.
    bool take(bytes_reader read, void* context, std::optional<clock::time_point> deadline, bool under_lock,
              const piece_reader* pieces = nullptr);
    /// Copies the large item whose record starts at tail word `tail_word`
    /// through `pieces` while its producer writes it; true once all of it
    /// went through and it is stamped (then it is taken as any other). false:
    /// it is not such an item, or the copy was given up (the producer went
    /// silent, the deadline passed, another consumer took it, `pieces`
    /// threw): the caller handles the record as if this was never called.
    /// `begun`: the size `pieces` began an item of already (announced as coming).
    bool read_while_written(const piece_reader& pieces, void* context, std::uint64_t tail_word,
                            std::optional<clock::time_point> deadline, std::optional<std::uint64_t> begun);

    unique_fd fd_;
    std::unique_ptr<local> local_;
    shared* shared_ = nullptr;
    std::byte* data_ = nullptr;
    std::size_t mapped_ = 0;
};

/// Items a queue copies as plain bytes, with no archive: numbers, enums and
/// fixed arrays of them, and strings and vectors of those (bool excepted: its
/// loader checks the byte is 0 or 1). A user type keeps
/// its own serialize(), which may not be a byte copy.
template <class T>
inline constexpr bool is_plain_scalar_v = (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) || std::is_enum_v<T>;
template <class T>
struct plain_bytes : std::bool_constant<is_plain_scalar_v<T>> {};
template <class T, std::size_t N>
struct plain_bytes<std::array<T, N>> : std::bool_constant<is_plain_scalar_v<T>> {};
template <class T>
inline constexpr bool is_plain_bytes_v = plain_bytes<T>::value;

template <class T>
struct plain_range : std::false_type {};
template <class C, class Tr, class A>
struct plain_range<std::basic_string<C, Tr, A>> : std::bool_constant<is_plain_scalar_v<C>> {};
template <class T, class A>
struct plain_range<std::vector<T, A>> : std::bool_constant<is_plain_scalar_v<T>> {};
template <class T>
inline constexpr bool is_plain_range_v = plain_range<T>::value;

/// A queue is shared memory: it cannot carry what travels as a file
/// descriptor (mp::shared_memory, mp::connection, mp::queue).
[[noreturn]] void throw_fd_in_queue_item();
[[noreturn]] void throw_wrong_item_size(std::size_t got, std::size_t element, const char* what);
/// Items of at least this many bytes take the large-item paths (one-pass
/// writes, prefaulted reads, huge-page buffers).
inline constexpr std::size_t large_item_bytes = std::size_t{1} << 20;

}  // namespace detail

template <class T>
class queue {
    static_assert(detail::require_transferable<T>());

public:
    using value_type = T;
    using duration = timeout_duration;

    /// A new, empty queue; maxsize 0 (the default) means unbounded.
    explicit queue(std::size_t maxsize = 0) : queue(maxsize, false) {}

    /// Puts an item; on a full bounded queue, waits for room.
    /// Throws mp::closed_error after close().
    void put(const T& item) { put_until(item, std::nullopt); }
    /// Puts an item, waiting at most `timeout` for room; throws mp::queue_full.
    void put(const T& item, duration timeout) {
        if (!put_until(item, std::chrono::steady_clock::now() + timeout))
            throw queue_full("mp: queue.put timed out: the queue stayed full");
    }
    /// Puts an item if there is room now.
    [[nodiscard]] bool try_put(const T& item) { return put_until(item, std::chrono::steady_clock::now()); }
    /// Python's put_nowait: throws mp::queue_full instead of returning false.
    void put_nowait(const T& item) {
        if (!try_put(item)) throw queue_full("mp: queue.put_nowait: the queue is full");
    }

    /// Takes the oldest item, waiting for one.
    [[nodiscard]] T get() { return *get_until(std::nullopt); }
    /// Takes the oldest item, waiting at most `timeout`; throws mp::queue_empty.
    [[nodiscard]] T get(duration timeout) {
        auto v = get_until(std::chrono::steady_clock::now() + timeout);
        if (!v) throw queue_empty("mp: queue.get timed out: the queue stayed empty");
        return std::move(*v);
    }
    /// Takes the oldest item if there is one now.
    [[nodiscard]] std::optional<T> try_get() { return get_until(std::chrono::steady_clock::now()); }
    /// Python's get_nowait: throws mp::queue_empty instead of returning nullopt.
    [[nodiscard]] T get_nowait() {
        auto v = try_get();
        if (!v) throw queue_empty("mp: queue.get_nowait: the queue is empty");
        return std::move(*v);
    }

    /// Number of items waiting (exact at the moment it is read).
    [[nodiscard]] std::size_t size() const { return core().size(); }
    [[nodiscard]] bool empty() const { return size() == 0; }
    [[nodiscard]] bool full() const { return core().maxsize() != 0 && size() >= core().maxsize(); }
    [[nodiscard]] std::size_t maxsize() const { return core().maxsize(); }

    /// This handle will put and get no more (Python's close()); other handles
    /// and processes are unaffected, and items already put stay readable by them.
    void close() noexcept { closed_ = true; }
    [[nodiscard]] bool closed() const noexcept { return closed_; }

    template <class Archive>
    void save(Archive& ar) const {
        static_assert(std::is_same_v<Archive, detail::output_archive>,
                      "mp::queue can only be sent with mp's own archives");
        ar(ar.add_fd(core().fd()));
    }
    template <class Archive>
    void load(Archive& ar) {
        static_assert(std::is_same_v<Archive, detail::input_archive>,
                      "mp::queue can only be received with mp's own archives");
        std::uint32_t index = 0;
        ar(index);
        core_ = std::make_shared<detail::queue_core>(ar.take_fd(index));
        closed_ = false;
    }

protected:
    queue(std::size_t maxsize, bool joinable) : core_(std::make_shared<detail::queue_core>(maxsize, joinable)) {}

    [[nodiscard]] detail::queue_core& core() const { return *core_; }

private:
    bool put_until(const T& item, std::optional<std::chrono::steady_clock::time_point> deadline) {
        check_open();
        if constexpr (detail::is_plain_bytes_v<T>) {
            return core().put_bytes(
                sizeof(T), [](const void* v, std::byte* dst) { std::memcpy(dst, v, sizeof(T)); }, &item, deadline);
        } else if constexpr (detail::is_plain_range_v<T>) {
            return core().put_span(std::as_bytes(std::span(item.data(), item.size())), deadline);
        }
        detail::output_archive ar(take_scratch());
        detail::save_value(ar, item);
        if (!ar.fds().empty()) {
            give_back_scratch(ar.take_buffer());
            detail::throw_fd_in_queue_item();
        }
        bool ok = core().put(ar, deadline);
        give_back_scratch(ar.take_buffer());
        return ok;
    }

    std::optional<T> get_until(std::optional<std::chrono::steady_clock::time_point> deadline) {
        check_open();
        std::optional<T> out;
        if constexpr (detail::is_plain_bytes_v<T>) {
            const bool got = core().get_bytes(
                [](void* context, std::span<const std::byte> bytes) {
                    if (bytes.size() != sizeof(T)) detail::throw_wrong_item_size(bytes.size(), sizeof(T), "value");
                    T v;  // default-initialised: not zero-filled before the copy
                    std::memcpy(&v, bytes.data(), sizeof(T));
                    static_cast<std::optional<T>*>(context)->emplace(v);
                },
                &out, deadline);
            if (!got) return std::nullopt;  // out may hold an item another consumer took
            return out;
        } else if constexpr (detail::is_plain_range_v<T>) {
            using element = typename T::value_type;
            // A large item is built piece by piece while its producer writes it.
            static constexpr detail::queue_core::piece_reader pieces{
                [](void* context, std::size_t size) {
                    if (size % sizeof(element) != 0) detail::throw_wrong_item_size(size, sizeof(element), "element");
                    auto& o = static_cast<std::optional<T>*>(context)->emplace();
                    o.reserve(size / sizeof(element));  // untouched memory: prepared before the copies into it
                    detail::prepare_item_buffer(o.data(), size);
                },
                [](void* context, std::span<const std::byte> bytes) {
                    const auto* first = reinterpret_cast<const element*>(bytes.data());
                    auto& o = **static_cast<std::optional<T>*>(context);
                    o.insert(o.end(), first, first + bytes.size() / sizeof(element));
                }};
            const bool got = core().get_bytes(
                [](void* context, std::span<const std::byte> bytes) {
                    if (bytes.size() % sizeof(element) != 0)
                        detail::throw_wrong_item_size(bytes.size(), sizeof(element), "element");
                    auto& out = *static_cast<std::optional<T>*>(context);
                    const std::size_t n = bytes.size() / sizeof(element);
                    if constexpr (alignof(element) <= 8) {  // items are 8-byte aligned: construct from them, once
                        const auto* first = reinterpret_cast<const element*>(bytes.data());
                        if (bytes.size() < detail::large_item_bytes) {
                            out.emplace(first, first + n);  // one allocation (none for a short string), one copy
                            return;
                        }
                        auto& o = out.emplace();
                        o.reserve(n);  // untouched memory: prepared before the one copy into it
                        detail::prepare_item_buffer(o.data(), bytes.size());
                        o.assign(first, first + n);
                    } else {
                        auto& o = out.emplace();
                        o.resize(n);
                        if (n) std::memcpy(o.data(), bytes.data(), bytes.size());
                    }
                },
                &out, deadline, alignof(element) <= 8 ? &pieces : nullptr);
            if (!got) return std::nullopt;  // out may hold an item another consumer took
            return out;
        }
        core().get([](void* context, detail::input_archive& ar) {
                       static_cast<std::optional<T>*>(context)->emplace(detail::load_value<T>(ar));
                   },
                   &out, deadline);
        return out;
    }

    void check_open() const {
        if (closed_) throw closed_error("mp: this queue handle was closed");
    }

    // One serialization buffer per thread, reused: a put does not allocate.
    static std::vector<std::byte>& scratch() {
        thread_local std::vector<std::byte> buffer;
        return buffer;
    }
    static std::vector<std::byte> take_scratch() { return std::move(scratch()); }
    static void give_back_scratch(std::vector<std::byte>&& b) {
        if (b.capacity() <= 1 << 20) scratch() = std::move(b);
    }

    std::shared_ptr<detail::queue_core> core_;
    bool closed_ = false;
};

/// Python's SimpleQueue: put, get, empty, close.
template <class T>
class simple_queue : private queue<T> {
public:
    simple_queue() : queue<T>(0) {}
    using queue<T>::put;
    using queue<T>::get;
    using queue<T>::empty;
    using queue<T>::close;
    using queue<T>::save;
    using queue<T>::load;
};

/// Python's JoinableQueue: a queue whose consumers call task_done() for each
/// item they finished, so that join() can wait until all items are processed.
template <class T>
class joinable_queue : public queue<T> {
public:
    explicit joinable_queue(std::size_t maxsize = 0) : queue<T>(maxsize, true) {}

    /// One item taken with get() is fully processed. Throws mp::value_error
    /// if called more times than items were put.
    void task_done() { this->core().task_done(); }
    /// Waits until every item put so far has been marked task_done().
    void join() { this->core().join(std::nullopt); }
    /// As join(), at most `timeout`; false on timeout.
    [[nodiscard]] bool join(timeout_duration timeout) {
        return this->core().join(std::chrono::steady_clock::now() + timeout);
    }
};

template <class T>
mp::queue<T> context::queue(std::size_t maxsize) const {
    return mp::queue<T>(maxsize);
}
template <class T>
mp::simple_queue<T> context::simple_queue() const {
    return mp::simple_queue<T>();
}
template <class T>
mp::joinable_queue<T> context::joinable_queue(std::size_t maxsize) const {
    return mp::joinable_queue<T>(maxsize);
}

}  // namespace mp
