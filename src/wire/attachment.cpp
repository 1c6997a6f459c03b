#include "wire/attachment.hpp"

#include "sys/sys.hpp"

namespace mp::detail {

attachment attachment::create(const output_archive& body) {
    attachment a;
    a.size_ = body.size();
    a.fd_ = sys::memfd("mp-message", a.size_);
    if (a.size_ == 0) return a;
    void* p = sys::map_populated(a.fd_.get(), a.size_, true);
    body.copy_to(static_cast<std::byte*>(p));
    // The writer's mapping is not needed once written; the receiver maps its own.
    sys::unmap(p, a.size_);
    return a;
}

attachment attachment::open(unique_fd fd, std::size_t size) {
    if (sys::file_size(fd.get()) < size)
        throw serialization_error("mp: corrupt message: its shared-memory attachment is smaller than declared");
    attachment a;
    a.fd_ = std::move(fd);
    a.size_ = size;
    if (size == 0) return a;
    a.data_ = static_cast<std::byte*>(sys::map_populated(a.fd_.get(), size, false));
    return a;
}

void attachment::release() noexcept {
    if (data_) sys::unmap(data_, size_);
    data_ = nullptr;
}

}  // namespace mp::detail
