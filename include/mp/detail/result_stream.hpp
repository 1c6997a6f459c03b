// mp/detail/result_stream.hpp — what a map iterator (mp::imap_iterator)
// reads: results by the block, as the workers sent them.
//
// A block is one chunk's results. Handing a whole block to the iterator
// under one lock, and the items out of it with none, is what keeps the cost
// of one item of ex.map / pool.imap at a move, not a lock and a wake-up.
#pragma once

#include <cstddef>
#include <exception>
#include <vector>

#include "mp/detail/deadline.hpp"

namespace mp::detail {

/// The results of one chunk, in the chunk's order: each item a value, or
/// (when `errors` is not empty) an exception in place of its value. A block
/// may come undecoded: its result message's bytes in `encoded` (for
/// `encoded_count` items), which the stream's finish() decodes.
template <class R>
struct result_block {
    std::vector<R> values;
    std::vector<std::exception_ptr> errors;  // empty (every item succeeded) or one per value
    std::vector<std::byte> encoded;
    std::size_t encoded_count = 0;
};

/// A source of result blocks, in the order its iterator hands them out
/// (input order, or arrival order). Thread-safe.
template <class R>
class result_stream {
public:
    virtual ~result_stream() = default;
    /// Moves the next block into `out` (which the caller has emptied), waiting
    /// until `deadline`: mp::timeout_error past it. False when every block
    /// has been taken; then, once, rethrows what reading the input threw
    /// (Python's imap raises it after the last result).
    virtual bool take(result_block<R>& out, steady_deadline deadline) = 0;
    /// Decodes a block that take() handed out undecoded (a chunk that does
    /// not decode fails whole, at its items). Runs user code (the result
    /// type's load): called with no lock held, by the thread that will use
    /// the values, so that what they allocate is that thread's and warm in
    /// its cache.
    virtual void finish(result_block<R>& block) noexcept { (void)block; }
    /// The consumer is gone: read no more input, cancel the tasks no worker
    /// has taken, drop results still to come. Idempotent.
    virtual void abandon() noexcept = 0;
};

}  // namespace mp::detail
