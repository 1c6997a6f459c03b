#include "wire/attachment.hpp"

#include "sys/sys.hpp"

namespace mp::detail {

attachment attachment::create(const output_archive& body) {
    attachment a;
    a.size_ = body.size();
    a.fd_ = sys::sealable_memfd("mp-message", a.size_);
    if (a.size_ > 0) {
        void* p = sys::map_populated(a.fd_.get(), a.size_, true);
        body.copy_to(static_cast<std::byte*>(p));
        // The writer's mapping is not needed once written; the receiver maps its own.
        sys::unmap(p, a.size_);
    }
    // Frozen before it leaves: the receiver refuses any attachment whose
    // size or bytes could still change while it decodes.
    sys::freeze(a.fd_.get());
    return a;
}

attachment attachment::open(unique_fd fd, std::size_t size) {
    // Unsealed, its sender could shrink it while we read (SIGBUS) or change
    // bytes we already checked; sealed, the size checked here stays.
    if (!sys::is_frozen(fd.get()))
        throw serialization_error("mp: refused a message: its shared-memory attachment is not sealed against "
                                  "changes (F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE), so its sender could "
                                  "change or shrink it while it is read; only mp's own sender writes these");
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
