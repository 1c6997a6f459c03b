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
//   killed in the middle of put() loses only that item.
// - A queue passed as a process argument works under every start method;
//   copies of a queue are the same queue.
// - Every member is safe to call from several threads and processes at once.
// - A busy consumer does not sleep between items: get() spins briefly before
//   it sleeps, so a steady stream is handed over at memory speed.
// Capacity: an unbounded queue holds up to 8 GiB of unread data (memory is
// only used for data actually waiting); a single item may be up to 2 GiB.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <span>

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

    [[nodiscard]] std::size_t size() const noexcept;
    [[nodiscard]] std::size_t maxsize() const noexcept;
    [[nodiscard]] bool joinable() const noexcept;
    void task_done();
    bool join(std::optional<clock::time_point> deadline);
    [[nodiscard]] int fd() const noexcept;

    struct shared;
    struct local;  // per-process state that is not shared

private:
    unique_fd fd_;
    std::unique_ptr<local> local_;
    shared* shared_ = nullptr;
    std::byte* data_ = nullptr;
    std::size_t mapped_ = 0;
};

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
        detail::output_archive ar(take_scratch());
        detail::save_value(ar, item);
        bool ok = core().put(ar, deadline);
        give_back_scratch(ar.take_buffer());
        return ok;
    }

    std::optional<T> get_until(std::optional<std::chrono::steady_clock::time_point> deadline) {
        check_open();
        std::optional<T> out;
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
