// mp/progress.hpp — a progress bar over any input range of results.
//
//     for (int r : mp::progress(pool.imap(f, xs), xs.size())) ...;
//     for (auto& f : mp::progress(mp::as_completed(fs), fs.size())) ...;
//     for (auto x : mp::progress(ex.map(f, xs), {.total = n, .desc = "squares"})) ...;
//
// Yields the same elements as the range it wraps, in the same order, and
// meanwhile draws "desc: done/total [####----] pct% rate/s ETA m:ss" on
// stderr, redrawn at most 10 times a second and once more at the end. With
// no total (and a range that does not know its size) it draws
// "done, rate/s, elapsed". It draws only when stderr is a terminal: in a
// pipe, a file or a CI log it writes nothing at all.
//
// Promises: the wrapped range's exceptions pass through unchanged (the bar
// ends its line first); an element counts as done when iteration moves past
// it. A progress range is iterated by one thread; drawing never throws.
#pragma once

#include <chrono>
#include <cstddef>
#include <iterator>
#include <memory>
#include <optional>
#include <ranges>
#include <string>
#include <type_traits>
#include <utility>

namespace mp {

/// How mp::progress draws.
struct progress_options {
    /// How many elements to expect; none: the range's size if it knows it,
    /// otherwise no percentage and no ETA.
    std::optional<std::size_t> total{};
    /// Printed before the counts.
    std::string desc{};
    /// Where to draw (2: stderr). Drawn only if it is a terminal.
    int fd = 2;
};

namespace detail {

/// The bar itself; does nothing unless its fd is a terminal. Not thread-safe.
class progress_bar {
public:
    explicit progress_bar(progress_options options);
    progress_bar(const progress_bar&) = delete;
    progress_bar& operator=(const progress_bar&) = delete;
    /// finish(). Never throws.
    ~progress_bar();

    /// Whether it draws at all (its fd is a terminal).
    [[nodiscard]] bool drawing() const noexcept { return s_ != nullptr; }
    /// Draws 0/total, once.
    void start() noexcept;
    /// One more element done; redraws if the last draw is 100 ms old.
    void advance() noexcept {
        ++done_;
        if (s_) maybe_draw();
    }
    /// Draws the final state and ends the line, once.
    void finish() noexcept;

    struct state;

private:
    void maybe_draw() noexcept;

    std::size_t done_ = 0;
    std::unique_ptr<state> s_;  // null when not drawing
};

}  // namespace detail

/// What mp::progress returns: the wrapped range's elements, with a bar.
/// Range is a reference type for a borrowed range and a value type for one
/// moved in.
template <class Range>
class progress_range {
    using inner_iterator = decltype(std::ranges::begin(std::declval<std::remove_reference_t<Range>&>()));
    using inner_sentinel = decltype(std::ranges::end(std::declval<std::remove_reference_t<Range>&>()));

public:
    class iterator {
    public:
        using value_type = std::iter_value_t<inner_iterator>;
        using difference_type = std::ptrdiff_t;
        using iterator_concept = std::input_iterator_tag;

        iterator() = default;
        decltype(auto) operator*() const { return **it_; }
        iterator& operator++() {
            owner_->step();
            return *this;
        }
        void operator++(int) { ++*this; }
        friend bool operator==(const iterator& it, std::default_sentinel_t) { return it.at_end(); }

    private:
        friend class progress_range;
        explicit iterator(progress_range* owner) : owner_(owner), it_(&*owner->it_) {}
        [[nodiscard]] bool at_end() const { return owner_->at_end_; }
        progress_range* owner_ = nullptr;
        inner_iterator* it_ = nullptr;
    };

    progress_range(Range&& range, progress_options options)
        : range_(std::forward<Range>(range)), bar_(with_total(std::move(options))) {}
    progress_range(progress_range&&) = delete;  // iterators point into it; returned by elision only

    /// Starts iterating the wrapped range (which may wait, or throw) and
    /// draws the empty bar.
    iterator begin() {
        if (!it_) {
            bar_.start();
            try {
                it_.emplace(std::ranges::begin(range_));
                end_.emplace(std::ranges::end(range_));
                check_end();
            } catch (...) {
                bar_.finish();
                throw;
            }
        }
        return iterator(this);
    }
    std::default_sentinel_t end() const noexcept { return {}; }

    /// How many elements iteration has moved past.
    [[nodiscard]] std::size_t done() const noexcept { return done_; }

private:
    progress_options with_total(progress_options o) {
        if constexpr (std::ranges::sized_range<std::remove_reference_t<Range>>)
            if (!o.total) o.total = static_cast<std::size_t>(std::ranges::size(range_));
        return o;
    }
    void step() {
        ++done_;
        bar_.advance();
        try {
            ++*it_;
            check_end();
        } catch (...) {
            bar_.finish();
            throw;
        }
    }
    void check_end() {
        at_end_ = *it_ == *end_;
        if (at_end_) bar_.finish();
    }

    Range range_;
    detail::progress_bar bar_;
    std::optional<inner_iterator> it_;
    std::optional<inner_sentinel> end_;
    std::size_t done_ = 0;
    bool at_end_ = false;
};

/// Wraps `range` (borrowed if an lvalue, moved in if an rvalue) with a
/// progress bar on stderr; total: the range's size if it has one.
template <class Range>
[[nodiscard]] progress_range<Range> progress(Range&& range, progress_options options = {}) {
    return progress_range<Range>(std::forward<Range>(range), std::move(options));
}

/// As above, expecting `total` elements.
template <class Range>
[[nodiscard]] progress_range<Range> progress(Range&& range, std::size_t total) {
    return progress_range<Range>(std::forward<Range>(range), progress_options{.total = total});
}

}  // namespace mp
