// mp/detail/chunked_job.hpp — the input side of map, imap, starmap and the
// executors' maps: a job that reads its range lazily in chunks, keeps a
// bounded number of them outstanding, and hands each chunk's results to a
// collection strategy (detail/map_jobs.hpp: all at once, in order, or as
// they arrive).
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

#include "mp/detail/result_stream.hpp"
#include "mp/detail/task.hpp"

namespace mp::detail {

/// Default chunks outstanding per lazy job. Trade-off: more keeps workers
/// busy when results come back unevenly and hides the parent's latency;
/// fewer keeps memory (input read ahead, results not yet consumed) smaller.
inline std::size_t default_window_chunks(int workers) {
    return std::max<std::size_t>(16, 4u * static_cast<std::size_t>(workers));
}

/// Results up to this size may be kept as bytes and decoded by the thread
/// that consumes them (chunked_job::decodes_in_consumer). Larger ones (a
/// worker's large results, decoded where they lie) are decoded on arrival.
inline constexpr std::size_t consumer_decode_limit = std::size_t{1} << 20;

/// Decodes a chunk's result message: its values, then the errors of the
/// items that failed. Throws what decoding throws.
template <class R>
result_block<R> decode_chunk(input_archive& in) {
    result_block<R> block;
    block.values = load_value<std::vector<R>>(in);
    auto errors = load_value<std::vector<chunk_error>>(in);
    if (!errors.empty()) {
        block.errors.resize(block.values.size());
        for (auto& e : errors)
            if (e.index < block.errors.size()) block.errors[e.index] = rebuild_exception(e.record);
    }
    return block;
}

/// The block of a chunk of `count` items whose every item failed with `e`.
template <class R>
result_block<R> failed_chunk(std::size_t count, std::exception_ptr e) {
    result_block<R> block;
    block.values.resize(count);
    block.errors.assign(count, std::move(e));
    return block;
}

/// Decodes a block that arrived as bytes (result_stream::finish). A chunk
/// that does not decode, or decodes to the wrong number of items, fails whole.
template <class R>
result_block<R> decode_encoded_chunk(const result_block<R>& encoded) noexcept {
    try {
        input_archive in(encoded.encoded);
        result_block<R> block = decode_chunk<R>(in);
        if (block.values.size() == encoded.encoded_count) return block;
        return failed_chunk<R>(encoded.encoded_count,
                               std::make_exception_ptr(serialization_error("mp: a worker returned a chunk of the wrong size")));
    } catch (...) {
        return failed_chunk<R>(encoded.encoded_count, std::current_exception());
    }
}

/// Reads a job's input range, one chunk at a time (detail/range_reader.hpp).
/// Only its job calls it, one call at a time.
class chunk_reader {
public:
    virtual ~chunk_reader() = default;
    /// Pulls up to `max_items` items from the input and writes one task for
    /// them into `out`; returns how many (0: the input is exhausted). What
    /// reading the input throws goes to `input_error`, and the items pulled
    /// before it still make a task. What `out` borrows lives until the next call.
    virtual std::size_t write_chunk(output_archive& out, std::size_t max_items, std::exception_ptr& input_error) = 0;
    /// Whether reading may run user code that blocks (any range but a contiguous one).
    [[nodiscard]] virtual bool may_block() const noexcept = 0;
};

/// A job over a range read lazily in chunks. Chunks are numbered in input
/// order. A chunk is *outstanding* from when it is read until its strategy
/// releases it (gather_job: when its results arrive; the stream jobs: when
/// the iterator takes them), and at most `window` are outstanding, so the
/// input read ahead and the results not yet consumed stay bounded.
///
/// Subclasses are the collection strategies; their hooks run with m_ held
/// and run no user code (results are decoded before m_ is taken).
template <class R>
class chunked_job : public pool_job {
public:
    using value_type = R;

    chunked_job(std::size_t chunksize, std::size_t window, std::unique_ptr<chunk_reader> reader)
        : chunksize_(std::max<std::size_t>(1, chunksize)),
          window_(std::max<std::size_t>(1, window)),
          reader_(std::move(reader)) {}

    bool may_block() const noexcept override { return reader_->may_block(); }

    step produce(output_archive& out, std::uint64_t& seq, bool unbounded) noexcept override {
        {
            std::lock_guard lock(m_);
            if (input_done_) return step::done;
            if (outstanding_ >= window_ && !unbounded) {
                waiting_for_room_ = true;
                return step::wait;
            }
        }
        // The input is read without m_: only the engine calls produce(), one
        // call at a time, so the range needs no lock, and a consumer is not
        // held up by a slow range.
        std::exception_ptr input_error;
        std::size_t n = 0;
        try {
            n = reader_->write_chunk(out, chunksize_, input_error);
        } catch (...) {  // writing the task failed
            input_error = std::current_exception();
            n = 0;
        }
        std::unique_lock lock(m_);
        if (n > 0) {
            seq = next_seq_++;
            in_flight_.emplace(seq, chunk_span{produced_items_, n});
            produced_items_ += n;
            ++outstanding_;
        }
        if ((n < chunksize_ || input_error) && !input_done_) {
            input_done_ = true;
            input_ended_locked(input_error);
            notify(lock);
        }
        return n == 0 ? step::done : step::task;
    }

    void on_exhausted() noexcept override { changed(); }

    void on_value(std::uint64_t seq, input_archive& in) override {
        if (decodes_in_consumer() && in.remaining() <= consumer_decode_limit && !in.carries_fds()) {
            // Kept as bytes: the consumer decodes them right before it uses
            // the values, in its own thread (the memory it frees is its own,
            // and still in its cache), and the thread receiving results
            // moves on to the next at the cost of one copy.
            auto bytes = in.take(in.remaining());
            std::vector<std::byte> encoded(bytes.begin(), bytes.end());
            std::unique_lock lock(m_);
            auto span = take_in_flight_locked(seq);
            if (!span) return;
            arrived_encoded_locked(seq, span->first, span->count, std::move(encoded));
            notify(lock);
            return;
        }
        // Decoded before m_ is taken: a result's type may run user code.
        result_block<R> block = decode_chunk<R>(in);
        std::unique_lock lock(m_);
        auto span = take_in_flight_locked(seq);
        if (!span) return;
        if (block.values.size() != span->count)
            failed_locked(seq, span->first, span->count,
                          std::make_exception_ptr(serialization_error("mp: a worker returned a chunk of the wrong size")));
        else
            arrived_locked(seq, span->first, std::move(block));
        notify(lock);
    }

    void on_error(std::uint64_t seq, std::exception_ptr e) noexcept override {
        std::unique_lock lock(m_);
        auto span = take_in_flight_locked(seq);
        if (!span) return;
        failed_locked(seq, span->first, span->count, std::move(e));
        notify(lock);
    }

    void on_abandoned(std::exception_ptr why, bool) noexcept override {
        std::unique_lock lock(m_);
        if (input_done_) return;
        input_done_ = true;
        input_ended_locked(std::move(why));
        notify(lock);
    }

protected:
    /// Chunk `seq`, whose items start at `first` in the input, came back.
    virtual void arrived_locked(std::uint64_t seq, std::size_t first, result_block<R>&& block) = 0;
    /// Whether the strategy takes chunks as bytes (arrived_encoded_locked),
    /// for its consumer to decode with decode_encoded_chunk.
    [[nodiscard]] virtual bool decodes_in_consumer() const noexcept { return false; }
    /// Chunk `seq` (`count` items from `first`) came back as `encoded`, its
    /// result message's bytes. Only called if decodes_in_consumer().
    virtual void arrived_encoded_locked(std::uint64_t, std::size_t, std::size_t, std::vector<std::byte>&&) {}
    /// Chunk `seq` (`count` items from `first`) failed whole: its worker
    /// died, its deadline passed, it was cancelled before a worker took it.
    virtual void failed_locked(std::uint64_t seq, std::size_t first, std::size_t count, std::exception_ptr e) = 0;
    /// The input ended: `error` is what reading it threw, or why the engine
    /// abandoned the job; null at a normal end.
    virtual void input_ended_locked(std::exception_ptr error) = 0;
    /// After a change, without m_ (map_async completes its future here).
    virtual void changed() noexcept {}
    /// Whether the consumers waiting on cv_ can use what just changed. Under m_.
    virtual bool consumers_waiting_for_this_locked() const noexcept { return true; }

    /// The strategy is done with one outstanding chunk: the window has room
    /// for one more. Under m_.
    void release_locked() noexcept {
        --outstanding_;
        if (std::exchange(waiting_for_room_, false)) wake_producer_ = true;
    }

    /// Unlocks, wakes the consumers, tells the engine if the window has room
    /// again, then runs changed().
    void notify(std::unique_lock<std::mutex>& lock) noexcept {
        bool wake = std::exchange(wake_producer_, false);
        const bool wake_consumers = consumers_waiting_for_this_locked();
        if (wake_consumers) consumer_can_go_.store(true, std::memory_order_release);
        lock.unlock();
        if (wake_consumers) cv_.notify_all();
        if (wake) room_available();
        changed();
    }

    /// Every chunk read so far; with input_done_, all there will be.
    [[nodiscard]] std::uint64_t chunks_read_locked() const noexcept { return next_seq_; }
    /// No result is still to come.
    [[nodiscard]] bool finished_locked() const noexcept { return input_done_ && in_flight_.empty(); }

    std::mutex m_;
    std::condition_variable cv_;  // consumers wait here for results
    // Set when a consumer waiting on cv_ can use what changed: a consumer
    // receiving results itself (help_receive) stops then.
    std::atomic<bool> consumer_can_go_{false};
    bool input_done_ = false;     // guarded by m_: nothing more will be read

private:
    struct chunk_span {
        std::size_t first = 0;  // index of its first item in the input
        std::size_t count = 0;
    };
    /// The span of chunk `seq`, which now has its outcome; empty if it had one already.
    std::optional<chunk_span> take_in_flight_locked(std::uint64_t seq) {
        auto it = in_flight_.find(seq);
        if (it == in_flight_.end()) return std::nullopt;
        chunk_span span = it->second;
        in_flight_.erase(it);
        return span;
    }

    const std::size_t chunksize_;
    const std::size_t window_;
    const std::unique_ptr<chunk_reader> reader_;     // engine-only (produce)

    std::uint64_t next_seq_ = 0;                                  // guarded by m_
    std::size_t produced_items_ = 0;                              // guarded by m_
    std::size_t outstanding_ = 0;                                 // guarded by m_: read, not released
    std::unordered_map<std::uint64_t, chunk_span> in_flight_;     // guarded by m_: sent, no outcome yet
    bool waiting_for_room_ = false;                               // guarded by m_: produce() said wait
    bool wake_producer_ = false;                                  // guarded by m_: tell the engine on unlock
};

}  // namespace mp::detail
