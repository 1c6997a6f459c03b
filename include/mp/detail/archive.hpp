// mp/detail/archive.hpp — the binary archives every mp message is written with.
//
// They are cereal archives, so any type that works with cereal works with mp
// unchanged. Unlike cereal's stream archives they write straight into memory,
// borrow large contiguous blocks instead of copying them (the transport copies
// them once, to shared memory or a socket), carry file descriptors beside the
// bytes, and check every length they read against what is really there, so a
// corrupt or truncated message throws mp::serialization_error instead of
// allocating gigabytes or reading past the end.
#pragma once

#include <cereal/cereal.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "mp/detail/unique_fd.hpp"
#include "mp/error.hpp"

namespace mp::detail {

/// Blocks at least this large are referenced, not copied, by output_archive.
inline constexpr std::size_t borrow_threshold = 64 * 1024;

class output_archive : public cereal::OutputArchive<output_archive, cereal::AllowEmptyClassElision> {
public:
    /// A large block borrowed from the value being written; it sits in the
    /// message right after the first `offset` bytes of the buffer.
    struct borrowed {
        std::size_t offset;
        const std::byte* data;
        std::size_t size;
    };

    output_archive() : OutputArchive(this) {}
    explicit output_archive(std::vector<std::byte>&& reuse) : OutputArchive(this), buffer_(std::move(reuse)) {}

    void saveBinary(const void* data, std::size_t size) {
        if (size >= borrow_threshold) {
            borrowed_.push_back({used_, static_cast<const std::byte*>(data), size});
            borrowed_size_ += size;
            return;
        }
        if (used_ + size > buffer_.size()) grow(used_ + size);
        if (size) std::memcpy(buffer_.data() + used_, data, size);
        used_ += size;
    }

    /// A 64-bit element count, then `size` bytes: a string's encoding (the
    /// same bytes cereal writes: a size tag, then the binary data). A short
    /// one is written with one room check, as it is the common case of a
    /// map's keys; a large one is borrowed as saveBinary does.
    void save_counted(std::uint64_t count, const void* data, std::size_t size) {
        if (size >= borrow_threshold) {
            saveBinary(&count, sizeof count);
            saveBinary(data, size);
            return;
        }
        const std::size_t total = sizeof count + size;
        if (used_ + total > buffer_.size()) grow(used_ + total);
        std::memcpy(buffer_.data() + used_, &count, sizeof count);
        if (size) std::memcpy(buffer_.data() + used_ + sizeof count, data, size);
        used_ += total;
    }

    /// Attaches a file descriptor (borrowed until the message is sent);
    /// returns the index the reader passes to input_archive::take_fd.
    std::uint32_t add_fd(int fd) {
        fds_.push_back(fd);
        return static_cast<std::uint32_t>(fds_.size() - 1);
    }

    [[nodiscard]] std::size_t size() const noexcept { return used_ + borrowed_size_; }
    /// The bytes written into the archive's own buffer (borrowed blocks excluded).
    [[nodiscard]] std::span<const std::byte> buffer() const noexcept { return {buffer_.data(), used_}; }
    [[nodiscard]] std::span<std::byte> buffer() noexcept { return {buffer_.data(), used_}; }
    [[nodiscard]] const std::vector<borrowed>& borrowed_blocks() const noexcept { return borrowed_; }
    [[nodiscard]] const std::vector<int>& fds() const noexcept { return fds_; }

    /// Calls f(const std::byte*, size) for each piece of the message, in order.
    template <class F>
    void for_each_piece(F&& f) const {
        std::size_t at = 0;
        for (const auto& b : borrowed_) {
            if (b.offset > at) f(buffer_.data() + at, b.offset - at);
            f(b.data, b.size);
            at = b.offset;
        }
        if (used_ > at) f(buffer_.data() + at, used_ - at);
    }

    /// Copies the whole message to `dst` (which has size() bytes).
    void copy_to(std::byte* dst) const {
        for_each_piece([&](const std::byte* p, std::size_t n) {
            std::memcpy(dst, p, n);
            dst += n;
        });
    }

    /// Gives the buffer back for reuse by the next message.
    std::vector<std::byte> take_buffer() noexcept {
        used_ = 0;
        return std::move(buffer_);
    }

private:
    void grow(std::size_t needed) {
        // The vector's size is its usable capacity (used_ says how much is
        // written): growing never zero-fills bytes that are written anyway
        // more than once per doubling.
        buffer_.resize(std::max<std::size_t>({needed, 2 * buffer_.size(), 256}));
    }

    std::vector<std::byte> buffer_;
    std::size_t used_ = 0;
    std::vector<borrowed> borrowed_;
    std::size_t borrowed_size_ = 0;
    std::vector<int> fds_;
};

/// Values of at least this many bytes that are decoded into fresh memory
/// (vectors, a large task's arguments, a queue's large items) get that memory
/// prepared by prepare_item_buffer before the one copy into it.
inline constexpr std::size_t large_decode_bytes = std::size_t{1} << 20;
/// Prepares freshly allocated, untouched memory of `bytes` that a value is
/// about to be copied into: from large_decode_bytes on, huge pages where the
/// system allows and every page mapped in one call, so the copy takes no
/// page faults. Best effort: never fails.
void prepare_item_buffer(void* data, std::size_t bytes) noexcept;

class input_archive : public cereal::InputArchive<input_archive, cereal::AllowEmptyClassElision> {
public:
    explicit input_archive(std::span<const std::byte> data, std::vector<unique_fd>* fds = nullptr)
        : InputArchive(this), data_(data), fds_(fds) {}

    void loadBinary(void* out, std::size_t size) {
        if (size > remaining()) throw_truncated(size);
        if (size) std::memcpy(out, data_.data() + at_, size);
        at_ += size;
    }

    /// A view of the next `size` bytes, consumed without copying.
    std::span<const std::byte> take(std::size_t size) {
        if (size > remaining()) throw_truncated(size);
        auto s = data_.subspan(at_, size);
        at_ += size;
        return s;
    }

    /// A 64-bit element count followed by that many elements of
    /// `element_size` bytes (a string's encoding): the elements' bytes,
    /// consumed without copying, after checking that they are all there.
    std::span<const std::byte> take_counted(std::size_t element_size) {
        std::uint64_t count = 0;
        loadBinary(&count, sizeof count);
        if (count > remaining() / element_size) check_count(count, element_size);  // throws
        return take(static_cast<std::size_t>(count) * element_size);
    }

    /// A length read from the message is only believed if that many bytes
    /// could follow: protects against corrupt sizes causing huge allocations.
    void check_length(std::uint64_t count) const { check_count(count, 1); }

    /// The same for `count` elements of which each takes at least
    /// `min_element_size` bytes in the message (0: elements that take none,
    /// which are still bounded by one per byte left).
    void check_count(std::uint64_t count, std::size_t min_element_size) const {
        std::size_t per = min_element_size ? min_element_size : 1;
        if (count > remaining() / per)
            throw serialization_error("mp: corrupt message: it declares " + std::to_string(count) +
                                      " elements of at least " + std::to_string(per) + " bytes but only " +
                                      std::to_string(remaining()) + " bytes follow");
    }

    /// A bool is one byte that must be 0 or 1: any other value would be
    /// undefined behaviour once loaded as a bool.
    bool load_bool() {
        unsigned char byte = 0;
        loadBinary(&byte, 1);
        if (byte > 1) throw_bad_bool(byte);
        return byte == 1;
    }
    void check_bools(const void* data, std::size_t count) const {
        const auto* bytes = static_cast<const unsigned char*>(data);
        for (std::size_t i = 0; i < count; ++i)
            if (bytes[i] > 1) throw_bad_bool(bytes[i]);
    }

    /// Data only: decoding a code reference (a function) throws
    /// mp::serialization_error. For peers that may be another program, such
    /// as a manager's clients and server (SPEC §8).
    void set_data_only() noexcept { data_only_ = true; }
    [[nodiscard]] bool data_only() const noexcept { return data_only_; }

    unique_fd take_fd(std::uint32_t index) {
        if (!fds_ || index >= fds_->size() || !(*fds_)[index])
            throw serialization_error("mp: corrupt message: it refers to a file descriptor that did not arrive with it");
        return std::move((*fds_)[index]);
    }

    [[nodiscard]] std::size_t remaining() const noexcept { return data_.size() - at_; }
    [[nodiscard]] std::size_t position() const noexcept { return at_; }
    /// File descriptors came with the message (its bytes alone cannot be decoded later).
    [[nodiscard]] bool carries_fds() const noexcept { return fds_ && !fds_->empty(); }

private:
    [[noreturn]] static void throw_bad_bool(unsigned char byte) {
        throw serialization_error("mp: corrupt message: a bool holds " + std::to_string(byte) +
                                  " (only 0 and 1 are bools)");
    }
    [[noreturn]] void throw_truncated(std::size_t wanted) const {
        throw serialization_error("mp: truncated message: needed " + std::to_string(wanted) +
                                  " more bytes but only " + std::to_string(remaining()) + " remain");
    }

    std::span<const std::byte> data_;
    std::size_t at_ = 0;
    std::vector<unique_fd>* fds_;
    bool data_only_ = false;
};

/// A random-access iterator over the elements of type V stored at any
/// alignment in a message's bytes (read with memcpy: no misaligned access).
template <class V>
class unaligned_elements {
public:
    using iterator_category = std::random_access_iterator_tag;
    using value_type = V;
    using difference_type = std::ptrdiff_t;
    using pointer = const V*;
    using reference = V;

    unaligned_elements() = default;
    explicit unaligned_elements(const std::byte* at) noexcept : at_(at) {}

    V operator*() const noexcept {
        V v;
        std::memcpy(&v, at_, sizeof(V));
        return v;
    }
    V operator[](difference_type i) const noexcept { return *(*this + i); }
    unaligned_elements& operator++() noexcept { at_ += sizeof(V); return *this; }
    unaligned_elements operator++(int) noexcept { auto old = *this; ++*this; return old; }
    unaligned_elements& operator--() noexcept { at_ -= sizeof(V); return *this; }
    unaligned_elements operator--(int) noexcept { auto old = *this; --*this; return old; }
    unaligned_elements& operator+=(difference_type i) noexcept { at_ += i * static_cast<difference_type>(sizeof(V)); return *this; }
    unaligned_elements& operator-=(difference_type i) noexcept { return *this += -i; }
    friend unaligned_elements operator+(unaligned_elements it, difference_type i) noexcept { return it += i; }
    friend unaligned_elements operator+(difference_type i, unaligned_elements it) noexcept { return it += i; }
    friend unaligned_elements operator-(unaligned_elements it, difference_type i) noexcept { return it -= i; }
    friend difference_type operator-(unaligned_elements a, unaligned_elements b) noexcept {
        return (a.at_ - b.at_) / static_cast<difference_type>(sizeof(V));
    }
    friend auto operator<=>(const unaligned_elements&, const unaligned_elements&) = default;

private:
    const std::byte* at_ = nullptr;
};

}  // namespace mp::detail

namespace cereal {

template <class T>
inline std::enable_if_t<std::is_arithmetic_v<T>> CEREAL_SAVE_FUNCTION_NAME(mp::detail::output_archive& ar,
                                                                            const T& t) {
    ar.saveBinary(std::addressof(t), sizeof(t));
}
template <class T>
inline std::enable_if_t<std::is_arithmetic_v<T>> CEREAL_LOAD_FUNCTION_NAME(mp::detail::input_archive& ar, T& t) {
    if constexpr (std::is_same_v<T, bool>)
        t = ar.load_bool();
    else
        ar.loadBinary(std::addressof(t), sizeof(t));
}
template <class T>
inline void CEREAL_SAVE_FUNCTION_NAME(mp::detail::output_archive& ar, const NameValuePair<T>& t) {
    ar(t.value);
}
template <class T>
inline void CEREAL_LOAD_FUNCTION_NAME(mp::detail::input_archive& ar, NameValuePair<T>& t) {
    ar(t.value);
}
template <class T>
inline void CEREAL_SAVE_FUNCTION_NAME(mp::detail::output_archive& ar, const SizeTag<T>& t) {
    ar(t.size);
}
template <class T>
inline void CEREAL_LOAD_FUNCTION_NAME(mp::detail::input_archive& ar, SizeTag<T>& t) {
    ar(t.size);
    ar.check_length(static_cast<std::uint64_t>(t.size));
}
template <class T>
inline void CEREAL_SAVE_FUNCTION_NAME(mp::detail::output_archive& ar, const BinaryData<T>& bd) {
    ar.saveBinary(bd.data, static_cast<std::size_t>(bd.size));
}
template <class T>
inline void CEREAL_LOAD_FUNCTION_NAME(mp::detail::input_archive& ar, BinaryData<T>& bd) {
    // cereal loads arrays of bool (std::array<bool, N>, bool[N]) as raw bytes.
    auto bytes = ar.take(static_cast<std::size_t>(bd.size));
    if constexpr (std::is_same_v<std::remove_cv_t<std::remove_pointer_t<T>>, bool>)
        ar.check_bools(bytes.data(), bytes.size());
    if (!bytes.empty()) std::memcpy(bd.data, bytes.data(), bytes.size());
}

// Strings and vectors of numbers are built straight from the message bytes:
// cereal's generic loads resize first (zero-filling every byte) and copy
// after, which for a 256 MiB vector means touching it twice. A string is
// written and read in one step (its length, then its bytes), not through
// cereal's size tag and binary-data wrappers: a map of short words is
// mostly strings, so their per-string overhead is most of its cost.
template <class C, class T, class A>
inline void CEREAL_SAVE_FUNCTION_NAME(mp::detail::output_archive& ar, const std::basic_string<C, T, A>& str) {
    ar.save_counted(static_cast<std::uint64_t>(str.size()), str.data(), str.size() * sizeof(C));
}
template <class C, class T, class A>
inline void CEREAL_LOAD_FUNCTION_NAME(mp::detail::input_archive& ar, std::basic_string<C, T, A>& str) {
    auto bytes = ar.take_counted(sizeof(C));
    const auto* first = reinterpret_cast<const C*>(bytes.data());
    str.assign(first, bytes.size() / sizeof(C));
}
//
// A vector is built in one pass into its fresh pages, whatever the
// alignment of its bytes in the message (a message may sit at any
// alignment: then the elements are read one by one with memcpy, which
// compiles to plain unaligned loads). A large one that needs new memory gets
// it prepared first (huge pages where allowed, every page mapped in one
// call), so the copy takes no page faults.
template <class V, class A>
inline std::enable_if_t<std::is_arithmetic_v<V> && !std::is_same_v<V, bool>>
CEREAL_LOAD_FUNCTION_NAME(mp::detail::input_archive& ar, std::vector<V, A>& vec) {
    size_type size = 0;
    ar(make_size_tag(size));
    auto bytes = ar.take(static_cast<std::size_t>(size) * sizeof(V));
    std::size_t n = static_cast<std::size_t>(size);
    if (vec.capacity() < n) {
        vec = std::vector<V, A>(vec.get_allocator());
        vec.reserve(n);
        // Only std::allocator's memory is known to be fresh and ours alone.
        if constexpr (std::is_same_v<A, std::allocator<V>>)
            mp::detail::prepare_item_buffer(vec.data(), bytes.size());
    }
    if (reinterpret_cast<std::uintptr_t>(bytes.data()) % alignof(V) == 0) {
        const auto* first = reinterpret_cast<const V*>(bytes.data());
        vec.assign(first, first + n);
    } else {
        mp::detail::unaligned_elements<V> first(bytes.data());
        vec.assign(first, first + static_cast<std::ptrdiff_t>(n));
    }
}

}  // namespace cereal

CEREAL_REGISTER_ARCHIVE(mp::detail::output_archive)
CEREAL_REGISTER_ARCHIVE(mp::detail::input_archive)
CEREAL_SETUP_ARCHIVE_TRAITS(mp::detail::input_archive, mp::detail::output_archive)
