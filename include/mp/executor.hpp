// mp/executor.hpp — what mp's executors and mp::pool share: the options of
// one task and of a map, and the iterator of a map's results.
//
//     auto f = ex.submit_with({.timeout = 2s}, fn, args...);      // also pool.submit_with
//     for (int x : ex.map(fn, xs, {.timeout = 10s, .chunksize = 64})) ...;
//     auto it = pool.imap_unordered(fn, xs);                       // an mp::imap_iterator too
//     std::optional<int> x = it.next(1s);
//
// Promises (SPEC §7, §7a): a task is running only once a worker has taken
// it; until then future.cancel() succeeds and the task never runs. A map's
// iterator that passes its timeout, or is destroyed early, cancels the items
// no worker has taken (as Python's Executor.map).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>

#include "mp/detail/deadline.hpp"
#include "mp/detail/result_stream.hpp"
#include "mp/error.hpp"
#include "mp/timeout.hpp"

namespace mp {

/// Options of one task (pool.submit_with, process_pool_executor.submit_with).
struct submit_options {
    /// Deadline counted from when a worker starts the task; past it the
    /// worker is stopped and replaced and the future fails with mp::timeout_error.
    std::optional<timeout_duration> timeout{};
};

/// Options of executor.map (process and thread executors).
struct map_options {
    /// Overall limit, counted from the map call: iteration throws
    /// mp::timeout_error past it, and the items no worker has taken are cancelled.
    std::optional<timeout_duration> timeout{};
    /// Items per task handed to a worker.
    std::size_t chunksize = 1;
};

/// The results of pool.imap, pool.imap_unordered and a process executor's
/// map, map_unordered and starmap, as they come: Python's IMapIterator and
/// Executor.map's iterator in one.
///
/// - next() returns the next result, nullopt after the last. An item whose
///   task threw rethrows that exception at its place; the next call goes on
///   after it. What reading the input threw comes after the last result.
/// - next(timeout) waits at most `timeout`: mp::timeout_error, and the
///   iterator can be asked again (Python's IMapIterator.next(timeout)).
/// - A map's overall timeout ({.timeout} of executor.map), once passed,
///   throws mp::timeout_error, cancels the items no worker has taken and
///   ends the iteration (as Python's Executor.map).
/// - Destroying the iterator before its end stops reading the input and
///   cancels the items no worker has taken.
/// - Also a range: `for (R x : ex.map(f, xs))`.
/// Results arrive a chunk at a time and are handed out from the iterator's
/// own buffer, so an item costs a move, not a lock. A chunk's results are
/// decoded by the thread that takes them from the iterator, with no lock held.
/// Move-only. next() may be called from several threads at once (each
/// result goes to one of them); a range-for loop belongs to one thread.
template <class R>
class imap_iterator {
public:
    class iterator {
    public:
        using value_type = R;
        using difference_type = std::ptrdiff_t;
        using iterator_concept = std::input_iterator_tag;
        iterator() = default;
        R& operator*() const { return *owner_->current_; }
        R* operator->() const { return &*owner_->current_; }
        iterator& operator++() {
            owner_->advance();
            return *this;
        }
        void operator++(int) { ++*this; }
        bool operator==(std::default_sentinel_t) const { return !owner_->current_; }

    private:
        friend class imap_iterator;
        explicit iterator(imap_iterator* owner) : owner_(owner) {}
        imap_iterator* owner_ = nullptr;
    };

    imap_iterator(imap_iterator&&) noexcept = default;
    imap_iterator& operator=(imap_iterator&& other) noexcept {
        if (this != &other) {
            abandon();
            stream_ = std::move(other.stream_);
            deadline_ = other.deadline_;
            block_ = std::move(other.block_);
            pos_ = std::exchange(other.pos_, 0);
            current_ = std::move(other.current_);
            started_ = other.started_;
            ended_ = other.ended_;
            next_gate_ = std::move(other.next_gate_);
        }
        return *this;
    }
    /// Cancels the items no worker has taken, if the end was not reached.
    ~imap_iterator() { abandon(); }

    /// The next result; nullopt after the last. Rethrows a task's exception
    /// at its item; throws mp::timeout_error past the map's overall timeout.
    [[nodiscard]] std::optional<R> next() { return next_until(deadline_); }
    /// As next(), waiting at most `timeout`; throws mp::timeout_error.
    template <class Rep, class Period>
    [[nodiscard]] std::optional<R> next(std::chrono::duration<Rep, Period> timeout) {
        auto d = detail::deadline_after(timeout);
        if (deadline_ && (!d || *deadline_ < *d)) d = deadline_;
        return next_until(d);
    }

    /// Fetches the first result (range-for). Throws as next() does.
    iterator begin() {
        if (!started_) {
            started_ = true;
            advance();
        }
        return iterator(this);
    }
    std::default_sentinel_t end() const noexcept { return {}; }

    /// For mp's pools and executors: reads `stream`; `deadline` is a map's
    /// overall timeout.
    explicit imap_iterator(std::shared_ptr<detail::result_stream<R>> stream,
                           detail::steady_deadline deadline = std::nullopt)
        : stream_(std::move(stream)), deadline_(deadline) {}

private:
    std::optional<R> next_until(detail::steady_deadline d) {
        if (!next_gate_) return std::nullopt;  // moved from
        std::unique_lock lock(next_gate_->m);
        next_gate_->cv.wait(lock, [&] { return !next_gate_->decoding; });
        held_ = &lock;
        struct release_held {
            std::unique_lock<std::mutex>*& held;
            ~release_held() { held = nullptr; }
        } release{held_};
        if (!take(d)) return std::nullopt;
        std::optional<R> out(std::move(current_));
        current_.reset();
        return out;
    }

    void advance() {
        current_.reset();
        (void)take(deadline_);
    }

    // The next item into current_; false at the end. The lock-free path of
    // every item but the first of a block.
    bool take(detail::steady_deadline d) {
        if (pos_ == block_.values.size() && !refill(d)) return false;
        std::size_t i = pos_++;
        if (!block_.errors.empty() && block_.errors[i]) std::rethrow_exception(std::exchange(block_.errors[i], nullptr));
        current_.emplace(std::move(block_.values[i]));
        return true;
    }

    bool refill(detail::steady_deadline d) {
        block_.values.clear();
        block_.errors.clear();
        pos_ = 0;
        if (ended_ || !stream_) return false;
        try {
            if (stream_->take(block_, d)) {
                decode_taken();
                return true;
            }
        } catch (const timeout_error&) {
            if (!(deadline_ && d == deadline_)) throw;  // next(timeout): ask again later
            // The map's overall timeout: as Python's Executor.map, the items
            // no worker has taken are cancelled and the iteration is over.
            ended_ = true;
            abandon();
            throw timeout_error(
                "mp: the map's results were not all ready within its timeout; the items no worker had taken "
                "were cancelled. Give a longer timeout, or none");
        }
        ended_ = true;
        return false;
    }

    void abandon() noexcept {
        if (stream_) stream_->abandon();
    }

    // A block taken undecoded is decoded here: a result type's load is user
    // code, so next() releases its lock meanwhile (the other callers wait
    // for the block, in order); a range-for has the iterator to itself.
    void decode_taken() {
        if (block_.encoded.empty()) return;
        if (!held_) {
            stream_->finish(block_);
            return;
        }
        detail::result_block<R> block = std::move(block_);
        block_ = {};
        next_gate_->decoding = true;
        held_->unlock();
        stream_->finish(block);
        held_->lock();
        next_gate_->decoding = false;
        next_gate_->cv.notify_all();
        block_ = std::move(block);
    }

    std::shared_ptr<detail::result_stream<R>> stream_;
    detail::steady_deadline deadline_;  // a map's overall timeout
    detail::result_block<R> block_;     // the block being handed out
    std::size_t pos_ = 0;               // next item of block_
    std::optional<R> current_;          // the range-for's current item
    bool started_ = false;
    bool ended_ = false;
    struct next_gate {
        std::mutex m;  // serializes next()
        std::condition_variable cv;
        bool decoding = false;  // guarded by m: a next() decodes a block with m released
    };
    std::unique_ptr<next_gate> next_gate_ = std::make_unique<next_gate>();
    std::unique_lock<std::mutex>* held_ = nullptr;  // next()'s lock while it takes
};

}  // namespace mp
