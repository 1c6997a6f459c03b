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

#include <cstddef>
#include <cstring>
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
    explicit output_archive(std::vector<std::byte>&& reuse) : OutputArchive(this), buffer_(std::move(reuse)) {
        buffer_.clear();
    }

    void saveBinary(const void* data, std::size_t size) {
        if (size >= borrow_threshold) {
            borrowed_.push_back({buffer_.size(), static_cast<const std::byte*>(data), size});
            borrowed_size_ += size;
            return;
        }
        auto old = buffer_.size();
        buffer_.resize(old + size);
        if (size) std::memcpy(buffer_.data() + old, data, size);
    }

    /// Attaches a file descriptor (borrowed until the message is sent);
    /// returns the index the reader passes to input_archive::take_fd.
    std::uint32_t add_fd(int fd) {
        fds_.push_back(fd);
        return static_cast<std::uint32_t>(fds_.size() - 1);
    }

    [[nodiscard]] std::size_t size() const noexcept { return buffer_.size() + borrowed_size_; }
    [[nodiscard]] const std::vector<std::byte>& buffer() const noexcept { return buffer_; }
    [[nodiscard]] std::vector<std::byte>& buffer() noexcept { return buffer_; }
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
        if (buffer_.size() > at) f(buffer_.data() + at, buffer_.size() - at);
    }

    /// Copies the whole message to `dst` (which has size() bytes).
    void copy_to(std::byte* dst) const {
        for_each_piece([&](const std::byte* p, std::size_t n) {
            std::memcpy(dst, p, n);
            dst += n;
        });
    }

    /// Gives the buffer back for reuse by the next message.
    std::vector<std::byte> take_buffer() noexcept { return std::move(buffer_); }

private:
    std::vector<std::byte> buffer_;
    std::vector<borrowed> borrowed_;
    std::size_t borrowed_size_ = 0;
    std::vector<int> fds_;
};

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

    /// A length read from the message is only believed if that many bytes
    /// could follow: protects against corrupt sizes causing huge allocations.
    void check_length(std::uint64_t count) const {
        if (count > remaining())
            throw serialization_error("mp: corrupt message: it declares " + std::to_string(count) +
                                      " elements but only " + std::to_string(remaining()) +
                                      " bytes follow");
    }

    unique_fd take_fd(std::uint32_t index) {
        if (!fds_ || index >= fds_->size() || !(*fds_)[index])
            throw serialization_error("mp: corrupt message: it refers to a file descriptor that did not arrive with it");
        return std::move((*fds_)[index]);
    }

    [[nodiscard]] std::size_t remaining() const noexcept { return data_.size() - at_; }
    [[nodiscard]] std::size_t position() const noexcept { return at_; }

private:
    [[noreturn]] void throw_truncated(std::size_t wanted) const {
        throw serialization_error("mp: truncated message: needed " + std::to_string(wanted) +
                                  " more bytes but only " + std::to_string(remaining()) + " remain");
    }

    std::span<const std::byte> data_;
    std::size_t at_ = 0;
    std::vector<unique_fd>* fds_;
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
    ar.loadBinary(bd.data, static_cast<std::size_t>(bd.size));
}

}  // namespace cereal

CEREAL_REGISTER_ARCHIVE(mp::detail::output_archive)
CEREAL_REGISTER_ARCHIVE(mp::detail::input_archive)
CEREAL_SETUP_ARCHIVE_TRAITS(mp::detail::input_archive, mp::detail::output_archive)
