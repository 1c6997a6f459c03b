#include "mp/shared_memory.hpp"

#include <cereal/types/string.hpp>

#include <atomic>
#include <cstdio>
#include <mutex>

#include "shm_tracker.hpp"
#include "sys/sync_sys.hpp"
#include "sys/sys.hpp"

namespace mp {

/// One mapping of a block in this process, shared by all copies of a handle.
struct shared_memory::segment {
    std::string name;  // with the leading '/'
    std::size_t size = 0;
    detail::unique_fd fd;            // kept to send the block to other processes
    std::atomic<std::byte*> data{};  // nullptr once closed
    std::atomic<bool> tracked{false};

    ~segment() { unmap(); }
    void map() {
        // mmap cannot map 0 bytes: an empty block (attached or received) has no mapping.
        if (size > 0) data = static_cast<std::byte*>(sys::map_shared(fd.get(), size));
    }
    void unmap() noexcept {
        std::byte* p = data.exchange(nullptr);
        if (p) sys::unmap(p, size);
        fd.reset();
    }
};

namespace {

std::string full_name(std::string_view name) {
    std::string full;
    if (!name.starts_with('/')) full.push_back('/');
    full.append(name);
    if (full.size() < 2 || full.find('/', 1) != std::string::npos || full.size() > 256)
        throw value_error("mp: '" + std::string(name) +
                          "' is not a valid shared memory name: use 1 to 255 characters other than '/' "
                          "(an optional leading '/' is allowed)");
    return full;
}

std::string unique_name() {
    char buf[64];
    std::snprintf(buf, sizeof buf, "/mp-%d-%016llx", sys::current_pid(),
                  static_cast<unsigned long long>(sys::random_u64()));
    return buf;
}

}  // namespace

shared_memory::shared_memory(std::size_t size, shared_memory_options options) {
    if (size == 0) throw value_error("mp: shared_memory size must be greater than 0");
    // A random 64-bit suffix: a clash is practically impossible, and
    // shm_create fails rather than share an existing block, so retry.
    for (int attempt = 0;; ++attempt) {
        try {
            *this = create(unique_name(), size, options);
            return;
        } catch (const system_error& e) {
            if (e.code().value() != EEXIST || attempt == 10) throw;
        }
    }
}

shared_memory shared_memory::create(std::string_view name, std::size_t size, shared_memory_options options) {
    if (size == 0) throw value_error("mp: shared_memory size must be greater than 0");
    auto s = std::make_shared<segment>();
    s->name = full_name(name);
    s->size = size;
    s->fd = sys::shm_create(s->name, size);
    try {
        s->map();
        if (options.track) {
            detail::shm_tracker::register_name(s->name);
            s->tracked = true;
        }
    } catch (...) {
        try {
            sys::shm_remove(s->name);
        } catch (...) {
        }
        throw;
    }
    return shared_memory(std::move(s));
}

shared_memory shared_memory::attach(std::string_view name) {
    auto s = std::make_shared<segment>();
    s->name = full_name(name);
    s->fd = sys::shm_attach(s->name);
    s->size = sys::fd_size(s->fd.get());
    s->map();
    return shared_memory(std::move(s));
}

std::byte* shared_memory::data() const noexcept { return segment_ ? segment_->data.load() : nullptr; }

std::size_t shared_memory::size() const noexcept { return segment_ ? segment_->size : 0; }

std::string shared_memory::name() const { return segment_ ? segment_->name.substr(1) : std::string(); }

bool shared_memory::closed() const noexcept { return !segment_ || !segment_->fd; }

void shared_memory::close() noexcept {
    if (segment_) segment_->unmap();
}

void shared_memory::unlink() {
    if (!segment_) throw value_error("mp: unlink() on an empty shared_memory handle");
    sys::shm_remove(segment_->name);
    // Unregister even if this process did not create it: another process of
    // this program may have, and the name may be reused by someone else later.
    detail::shm_tracker::unregister_name(segment_->name);
    segment_->tracked = false;
}

void shared_memory::untrack() {
    if (segment_ && segment_->tracked.exchange(false)) detail::shm_tracker::unregister_name(segment_->name);
}

void shared_memory::save_to(detail::output_archive& ar) const {
    bool present = static_cast<bool>(segment_);
    ar(present);
    if (!present) return;
    if (!segment_->fd)
        throw closed_error("mp: cannot send a closed shared_memory (close() was called on it)");
    std::uint32_t index = ar.add_fd(segment_->fd.get());
    std::uint64_t size = segment_->size;
    ar(index, segment_->name, size);
}

void shared_memory::load_from(detail::input_archive& ar) {
    bool present = false;
    ar(present);
    if (!present) {
        segment_.reset();
        return;
    }
    std::uint32_t index = 0;
    auto s = std::make_shared<segment>();
    std::uint64_t size = 0;
    ar(index, s->name, size);
    s->fd = ar.take_fd(index);
    std::size_t real = sys::fd_size(s->fd.get());
    if (real < size)
        throw serialization_error("mp: received a shared_memory of " + std::to_string(size) +
                                  " bytes whose block has only " + std::to_string(real));
    if (s->name.empty() || s->name[0] != '/') s->name.insert(s->name.begin(), '/');
    s->size = static_cast<std::size_t>(size);
    s->map();
    segment_ = std::move(s);
}

}  // namespace mp
