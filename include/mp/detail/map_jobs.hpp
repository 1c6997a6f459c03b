// mp/detail/map_jobs.hpp — the three ways a chunked job collects results:
//
//   gather_job       all at once, by index: pool.map, starmap, map_async
//   ordered_job      a stream of blocks in input order: pool.imap, executor
//                    map and starmap
//   unordered_job    a stream of blocks in arrival order: imap_unordered,
//                    executor map_unordered
//
// The input side (chunks, window, in-flight bookkeeping) is chunked_job's;
// each strategy only says where a chunk's results go and when a chunk stops
// counting against the window.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "mp/detail/chunked_job.hpp"
#include "mp/detail/result_stream.hpp"
#include "mp/error.hpp"
#include "mp/future.hpp"

namespace mp::detail {

/// All at once: every result into one vector at its index. The first
/// failure (a task's exception, a lost chunk, the input's error) is the
/// outcome, as soon as it happens (Python's map). A chunk is released when
/// its results arrive: only the input read ahead is bounded.
template <class R>
class gather_job final : public chunked_job<R> {
    using base = chunked_job<R>;

public:
    using base::base;

    void reserve(std::size_t n) {
        std::lock_guard lock(this->m_);
        values_.reserve(n);
    }

    /// map(): waits for every result and returns them in order, or rethrows
    /// the first failure.
    std::vector<R> take_all() {
        std::unique_lock lock(this->m_);
        this->cv_.wait(lock, [&] { return failure_ || this->finished_locked(); });
        if (failure_) std::rethrow_exception(failure_);
        return std::move(values_);
    }

    /// map_async(): a future of all results.
    future<std::vector<R>> get_future() {
        std::lock_guard lock(this->m_);
        has_promise_ = true;
        return promise_.get_future();
    }

protected:
    void arrived_locked(std::uint64_t, std::size_t first, result_block<R>&& block) override {
        auto& values = block.values;
        if (first == values_.size()) {  // the usual case, in input order: no default-construction first
            values_.insert(values_.end(), std::make_move_iterator(values.begin()), std::make_move_iterator(values.end()));
        } else {
            if (values_.size() < first + values.size()) values_.resize(first + values.size());
            std::move(values.begin(), values.end(), values_.begin() + static_cast<std::ptrdiff_t>(first));
        }
        for (auto& e : block.errors)
            if (e && !failure_) failure_ = e;
        this->release_locked();
    }
    void failed_locked(std::uint64_t, std::size_t, std::size_t, std::exception_ptr e) override {
        if (!failure_) failure_ = std::move(e);
        this->release_locked();
    }
    // take_all() waits for the last chunk or a failure only: waking it for
    // every chunk costs a context switch per task of map(chunksize=1).
    bool consumers_waiting_for_this_locked() const noexcept override { return failure_ || this->finished_locked(); }
    void input_ended_locked(std::exception_ptr error) override {
        if (error && !failure_) failure_ = std::move(error);
    }

    // map_async: completes the future once everything is in, or at the first failure.
    void changed() noexcept override {
        std::unique_lock lock(this->m_);
        if (!has_promise_ || promise_done_) return;
        if (!failure_ && !this->finished_locked()) return;
        promise_done_ = true;
        if (failure_) {
            auto e = failure_;
            lock.unlock();
            promise_.set_exception(std::move(e));
            return;
        }
        auto values = std::move(values_);
        lock.unlock();
        try {
            promise_.set_result(std::move(values));
        } catch (...) {
            promise_.set_exception(std::current_exception());
        }
    }

private:
    std::vector<R> values_;       // guarded by m_
    std::exception_ptr failure_;  // guarded by m_: the first failure
    promise<std::vector<R>> promise_;
    bool has_promise_ = false;    // guarded by m_
    bool promise_done_ = false;   // guarded by m_
};

/// A stream of result blocks for an iterator: a block is released when the
/// iterator takes it, so the results not yet consumed are bounded too. The
/// order is the subclass's (Order).
template <class R, class Order>
class stream_job final : public chunked_job<R>, public result_stream<R> {
    using base = chunked_job<R>;

public:
    using base::base;

    bool take(result_block<R>& out, steady_deadline deadline) override {
        std::unique_lock lock(this->m_);
        bool helped = false;
        for (;;) {
            if (abandoned_) return false;
            if (order_.ready()) {
                out = order_.pop();  // decoded by finish(), in the taker's thread
                ++taken_;
                this->release_locked();
                this->notify(lock);
                return true;
            }
            if (this->input_done_ && taken_ == this->chunks_read_locked()) {
                if (input_error_) std::rethrow_exception(std::exchange(input_error_, nullptr));
                return false;
            }
            if (!helped) {
                // Receives results itself for a moment rather than being
                // woken for each (a map of tiny tasks), then waits as usual.
                helped = true;
                this->consumer_can_go_.store(false, std::memory_order_relaxed);
                lock.unlock();
                this->help_receive(this->consumer_can_go_, deadline);
                lock.lock();
                continue;
            }
            if (!deadline) {
                this->cv_.wait(lock);
            } else if (this->cv_.wait_until(lock, *deadline) == std::cv_status::timeout && !order_.ready() &&
                       !(this->input_done_ && taken_ == this->chunks_read_locked())) {
                throw timeout_error("mp: no result arrived before the timeout; the tasks go on running, "
                                    "call next() again to keep waiting");
            }
        }
    }

    void finish(result_block<R>& block) noexcept override {
        if (!block.encoded.empty()) block = decode_encoded_chunk(block);
    }

    // As Python's Executor.map when its iterator is closed: the items no
    // worker has taken are cancelled (drop() has the engine withdraw them).
    void abandon() noexcept override {
        {
            std::lock_guard lock(this->m_);
            if (abandoned_) return;
            abandoned_ = true;
            this->input_done_ = true;
            order_.clear();
        }
        this->cv_.notify_all();
        this->drop();
    }

protected:
    // The iterator is woken only by what it can use: the block it waits
    // for, the end, or its abandonment. A chunk that arrives ahead of an
    // earlier one (two workers finish out of order about half the time)
    // wakes no one: a wake-up that finds nothing to take costs a context
    // switch per chunk on a 2-core machine.
    bool consumers_waiting_for_this_locked() const noexcept override {
        return abandoned_ || order_.ready() || (this->input_done_ && taken_ == this->chunks_read_locked());
    }
    void arrived_locked(std::uint64_t seq, std::size_t, result_block<R>&& block) override {
        if (!abandoned_) order_.put(seq, std::move(block));
    }
    // The iterator's thread decodes each block as it takes it.
    bool decodes_in_consumer() const noexcept override { return true; }
    void arrived_encoded_locked(std::uint64_t seq, std::size_t, std::size_t count,
                                std::vector<std::byte>&& encoded) override {
        if (!abandoned_) order_.put(seq, result_block<R>{{}, {}, std::move(encoded), count});
    }
    void failed_locked(std::uint64_t seq, std::size_t, std::size_t count, std::exception_ptr e) override {
        if (abandoned_) return;
        // Each item of the chunk fails at its own place.
        order_.put(seq, failed_chunk<R>(count, std::move(e)));
    }
    void input_ended_locked(std::exception_ptr error) override { input_error_ = std::move(error); }

private:
    Order order_;                     // guarded by m_: blocks not yet taken
    std::uint64_t taken_ = 0;         // guarded by m_: blocks taken by the iterator
    std::exception_ptr input_error_;  // guarded by m_: thrown after the last item
    bool abandoned_ = false;          // guarded by m_: the iterator is gone
};

/// Blocks in input order: block `seq` is handed out after every earlier one.
template <class R>
class in_input_order {
public:
    void put(std::uint64_t seq, result_block<R>&& block) {
        // Blocks before next_ were taken, so had arrived.
        auto at = static_cast<std::size_t>(seq - next_);
        if (blocks_.size() <= at) blocks_.resize(at + 1);
        blocks_[at].emplace(std::move(block));
    }
    [[nodiscard]] bool ready() const noexcept { return !blocks_.empty() && blocks_.front(); }
    result_block<R> pop() {
        result_block<R> b = std::move(*blocks_.front());
        blocks_.pop_front();
        ++next_;
        return b;
    }
    void clear() noexcept { blocks_.clear(); }

private:
    std::deque<std::optional<result_block<R>>> blocks_;  // from block next_ on
    std::uint64_t next_ = 0;
};

/// Blocks in the order they arrive.
template <class R>
class in_arrival_order {
public:
    void put(std::uint64_t, result_block<R>&& block) { blocks_.push_back(std::move(block)); }
    [[nodiscard]] bool ready() const noexcept { return !blocks_.empty(); }
    result_block<R> pop() {
        result_block<R> b = std::move(blocks_.front());
        blocks_.pop_front();
        return b;
    }
    void clear() noexcept { blocks_.clear(); }

private:
    std::deque<result_block<R>> blocks_;
};

template <class R>
using ordered_job = stream_job<R, in_input_order<R>>;
template <class R>
using unordered_job = stream_job<R, in_arrival_order<R>>;

}  // namespace mp::detail
