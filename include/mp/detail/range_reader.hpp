// mp/detail/range_reader.hpp — a map's input range, read lazily into chunk
// tasks, and the compile-time checks and job construction shared by every
// map of mp::pool and the process executors.
#pragma once

#include <algorithm>
#include <cstddef>
#include <exception>
#include <iterator>
#include <memory>
#include <optional>
#include <ranges>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "mp/detail/chunked_job.hpp"
#include "mp/detail/task.hpp"

namespace mp::detail {

/// Reads `View` and writes each chunk as a task of chunk_entry: F on each
/// item (or on the members of each tuple item, when Star).
template <class R, class F, class Arg, bool Star, class View>
class range_reader final : public chunk_reader {
public:
    range_reader(F f, View view) : f_(std::move(f)), view_(std::move(view)) {}

    // Reading a contiguous range is copying its elements; any other range
    // (a generator, a transform view) may run user code that blocks.
    bool may_block() const noexcept override { return !std::ranges::contiguous_range<View>; }

    std::size_t write_chunk(output_archive& out, std::size_t max_items, std::exception_ptr& input_error) override {
        if constexpr (writes_in_place) {
            return write_in_place(out, max_items);
        }
        chunk_.clear();
        try {
            if (!it_) it_.emplace(std::ranges::begin(view_));
            auto& it = *it_;
            if constexpr (std::ranges::random_access_range<View> &&
                          std::sized_sentinel_for<std::ranges::sentinel_t<View>, std::ranges::iterator_t<View>>) {
                // A whole chunk at once: for a vector of numbers, one memcpy.
                auto left = static_cast<std::size_t>(std::ranges::end(view_) - it);
                auto n = static_cast<std::ranges::range_difference_t<View>>(std::min(max_items, left));
                chunk_.assign(it, it + n);
                it += n;
            } else {
                while (chunk_.size() < max_items && it != std::ranges::end(view_)) {
                    chunk_.push_back(static_cast<Arg>(*it));
                    ++it;
                }
            }
        } catch (...) {
            input_error = std::current_exception();
        }
        if (chunk_.empty()) return 0;
        out(code_ref_of(sendable<&chunk_entry<F, R, Arg, Star>>()));
        save_callable(out, f_);
        save_value(out, chunk_);  // chunk_ lives until the next call: `out` may borrow from it
        if (!out.fds().empty()) throw_fd_argument("the items of map/imap/starmap");
        return chunk_.size();
    }

private:
    // Items of a contiguous range of class type (strings, vectors, user
    // types) are written straight from the range, in the bytes a
    // std::vector<Arg> of them would take: a 1 MiB string crosses with one
    // copy (the transport's) instead of two. Arithmetic items keep the copy
    // into chunk_, which makes the chunk one block.
    static constexpr bool writes_in_place =
        std::ranges::contiguous_range<View> && std::ranges::sized_range<View> && std::is_class_v<Arg> &&
        std::is_same_v<std::remove_cv_t<std::ranges::range_value_t<View>>, Arg>;

    std::size_t write_in_place(output_archive& out, std::size_t max_items) {
        if (!it_) it_.emplace(std::ranges::begin(view_));
        auto& it = *it_;
        const std::size_t n = std::min(max_items, static_cast<std::size_t>(std::ranges::end(view_) - it));
        if (n == 0) return 0;
        out(code_ref_of(sendable<&chunk_entry<F, R, Arg, Star>>()));
        save_callable(out, f_);
        // The items live as long as this reader (as chunk_ does), so what
        // `out` borrows from them stays alive until it is sent.
        out(cereal::make_size_tag(static_cast<cereal::size_type>(n)));
        for (std::size_t i = 0; i < n; ++i) out(it[static_cast<std::ranges::range_difference_t<View>>(i)]);
        it += static_cast<std::ranges::range_difference_t<View>>(n);
        if (!out.fds().empty()) throw_fd_argument("the items of map/imap/starmap");
        return n;
    }

    F f_;
    View view_;
    std::optional<std::ranges::iterator_t<View>> it_;  // set by the first read
    std::vector<Arg> chunk_;
};

template <class T>
using value_or_none = std::conditional_t<std::is_void_v<T>, std::monostate, T>;

/// The result type of a map item: f(arg), or f(members of arg...) for starmap.
template <class F, class Arg, bool Star>
struct map_result {
    using type = value_or_none<task_result_t<F, Arg>>;
};
template <class F, class Arg>
struct map_result<F, Arg, true> {
    template <class T>
    struct apply_result;
    template <template <class...> class Tuple, class... A>
    struct apply_result<Tuple<A...>> {
        using type = value_or_none<task_result_t<F, A...>>;
    };
    template <class A, class B>
    struct apply_result<std::pair<A, B>> {
        using type = value_or_none<task_result_t<F, A, B>>;
    };
    using type = typename apply_result<Arg>::type;
};

/// Checks a map's task at compile time and builds its job: Job is a
/// collection strategy of detail/map_jobs.hpp (gather_job, ordered_job,
/// unordered_job). Returns a shared_ptr to Job<result type>.
template <template <class> class Job, bool Star, class F, class Range>
auto make_map_job(F&& f, Range&& range, std::size_t chunksize, std::size_t window) {
    static_assert(std::ranges::input_range<Range>, "mp: map/imap/starmap need an input range of arguments");
    static_assert(require_sendable_task<F>());
    using fn = std::decay_t<F>;
    using arg = std::ranges::range_value_t<Range>;
    static_assert(require_transferable<arg>());
    using result = typename map_result<fn, arg, Star>::type;
    static_assert(require_transferable<result>());
    static_assert(std::is_default_constructible_v<result>,
                  "mp: map/imap/starmap collect results into a std::vector, so the result type must be "
                  "default-constructible");
    using view = std::views::all_t<Range>;
    auto reader = std::make_unique<range_reader<result, fn, arg, Star, view>>(
        fn(std::forward<F>(f)), std::views::all(std::forward<Range>(range)));
    return std::make_shared<Job<result>>(chunksize, window, std::move(reader));
}

/// Python's default chunksize for map: about four chunks per worker.
template <class Range>
std::size_t default_map_chunksize(const Range& range, int workers) {
    if constexpr (std::ranges::sized_range<const Range>) {
        auto n = static_cast<std::size_t>(std::ranges::size(range));
        auto per = static_cast<std::size_t>(workers) * 4;
        return std::max<std::size_t>(1, (n + per - 1) / per);
    } else {
        return 1;
    }
}

}  // namespace mp::detail
