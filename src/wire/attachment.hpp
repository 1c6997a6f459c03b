// wire/attachment.hpp — a message body carried in its own memfd, so large
// data is copied once into shared memory and once out, never pushed through a
// socket buffer.
#pragma once

#include <cstddef>
#include <span>
#include <utility>

#include "mp/detail/archive.hpp"
#include "mp/detail/unique_fd.hpp"

namespace mp::detail {

class attachment {
public:
    attachment() = default;
    attachment(attachment&& o) noexcept
        : fd_(std::move(o.fd_)), data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
    attachment& operator=(attachment&& o) noexcept {
        if (this != &o) {
            release();
            fd_ = std::move(o.fd_);
            data_ = std::exchange(o.data_, nullptr);
            size_ = std::exchange(o.size_, 0);
        }
        return *this;
    }
    ~attachment() { release(); }

    /// Writes the whole message into a new memfd.
    static attachment create(const output_archive& body);
    /// Maps a received memfd of `size` bytes for reading.
    static attachment open(unique_fd fd, std::size_t size);

    [[nodiscard]] int fd() const noexcept { return fd_.get(); }
    [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return {data_, size_}; }
    explicit operator bool() const noexcept { return static_cast<bool>(fd_); }

private:
    void release() noexcept;

    unique_fd fd_;
    std::byte* data_ = nullptr;
    std::size_t size_ = 0;
};

}  // namespace mp::detail
