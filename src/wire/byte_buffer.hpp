// wire/byte_buffer.hpp — growable storage for bytes received from a socket,
// never zero-filled (std::vector<std::byte>::resize writes zeros over every
// byte it adds, which a receive then overwrites: for a connection's buffer
// that was a page fault and a memset per page of every connection, whether
// it ever received a large message or not).
//
// Its owner decides how large it grows: mp::connection grows it only as
// bytes actually arrive, never by a size a peer merely declared.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <memory>
#include <utility>

namespace mp::detail {

class byte_buffer {
public:
    byte_buffer() = default;
    byte_buffer(byte_buffer&& o) noexcept : data_(std::move(o.data_)), capacity_(std::exchange(o.capacity_, 0)) {}
    byte_buffer& operator=(byte_buffer&& o) noexcept {
        data_ = std::move(o.data_);
        capacity_ = std::exchange(o.capacity_, 0);
        return *this;
    }

    [[nodiscard]] std::byte* data() noexcept { return data_.get(); }
    [[nodiscard]] const std::byte* data() const noexcept { return data_.get(); }
    [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }

    /// Makes room for at least `n` bytes, keeping the first `keep` (at most
    /// the current capacity); the bytes past `keep` are unspecified.
    void reserve(std::size_t n, std::size_t keep) {
        if (n <= capacity_) return;
        auto grown = std::make_unique_for_overwrite<std::byte[]>(n);
        keep = std::min(keep, capacity_);
        if (keep > 0) std::memcpy(grown.get(), data_.get(), keep);
        data_ = std::move(grown);
        capacity_ = n;
    }

    /// Gives the memory back (the next reserve allocates afresh).
    void release() noexcept {
        data_.reset();
        capacity_ = 0;
    }

private:
    std::unique_ptr<std::byte[]> data_;
    std::size_t capacity_ = 0;
};

}  // namespace mp::detail
