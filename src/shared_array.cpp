// mp::shared_array's memory: a POSIX shared memory object with one name per
// holder.
//
// Why names and not file descriptors: the queue is shared memory and carries
// no fds, and a producer may exit right after put(), so the memory must be
// held by something that outlives the sender without an fd of the sender's.
// A name in /dev/shm does. Each process holding the memory keeps one name
// (removed when its last handle goes); each send links the same object under
// a fresh name, registered with the shared-memory tracker, that the receiver
// takes over as its own. A name never received is removed by the tracker when
// the program ends. Linking (not renaming) keeps the sender's own handle and
// lets an array be sent any number of times.
#include "mp/shared_array.hpp"

#include <cerrno>
#include <cstdio>

#include "shm_tracker.hpp"
#include "sys/memory.hpp"
#include "sys/sync_sys.hpp"
#include "sys/sys.hpp"

namespace mp::detail {
namespace {

constexpr std::string_view name_prefix = "/mp-array-";
// Larger arrays get their pages mapped in one call rather than by one fault
// per page as the producer writes them.
constexpr std::size_t prefault_threshold = 1 << 20;

std::string fresh_name() {
    char buf[64];
    std::snprintf(buf, sizeof buf, "/mp-array-%d-%016llx", sys::current_pid(),
                  static_cast<unsigned long long>(sys::random_u64()));
    return buf;
}

/// Only names of the form fresh_name() makes are opened: a corrupt message
/// must not make a receiver open (and then remove) some other object.
bool is_array_name(const std::string& name) {
    if (!name.starts_with(name_prefix)) return false;
    std::size_t i = name_prefix.size(), digits = 0;
    while (i < name.size() && name[i] >= '0' && name[i] <= '9') ++i, ++digits;
    if (digits == 0 || digits > 10 || i >= name.size() || name[i] != '-') return false;
    ++i;
    if (name.size() - i != 16) return false;
    for (; i < name.size(); ++i) {
        char c = name[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    }
    return true;
}

template <class F>
std::string with_fresh_name(F&& make) {
    for (int attempt = 0;; ++attempt) {
        std::string name = fresh_name();
        try {
            make(name);
            return name;
        } catch (const system_error& e) {
            // 64 random bits: a clash is practically impossible, but the call
            // fails rather than share an object, so retry.
            if (e.code().value() != EEXIST || attempt == 10) throw;
        }
    }
}

}  // namespace

void throw_bad_shared_array(const std::string& why) {
    throw serialization_error("mp: cannot receive an mp::shared_array: " + why);
}

std::shared_ptr<shared_array_block> shared_array_block::create(std::size_t bytes) {
    return make(bytes, nullptr);
}

std::shared_ptr<shared_array_block> shared_array_block::create_copy(std::span<const std::byte> initial) {
    return make(initial.size(), initial.data());
}

std::shared_ptr<shared_array_block> shared_array_block::make(std::size_t bytes, const std::byte* initial) {
    std::shared_ptr<shared_array_block> b(new shared_array_block);
    unique_fd fd;
    b->name_ = with_fresh_name([&](const std::string& name) {
        // Tracked before it exists: no moment where a kill would leave it behind.
        shm_tracker::register_name(name);
        try {
            fd = sys::shm_create(name, bytes);  // pages reserved: ENOSPC is an exception
        } catch (...) {
            shm_tracker::unregister_name(name);
            throw;
        }
    });
    b->owner_pid_ = sys::current_pid();
    b->bytes_ = bytes;
    if (initial) {
        // Written before it is mapped: the pages were reserved, not yet
        // touched, so the write is the only pass over them (a first store
        // through a mapping would make the kernel zero each page first).
        sys::write_at(fd.get(), 0, {initial, bytes});
        b->data_ = static_cast<std::byte*>(sys::map_shared(fd.get(), bytes));  // ~block removes the name on failure
        return b;
    }
    b->data_ = static_cast<std::byte*>(sys::map_shared(fd.get(), bytes));
    if (bytes >= prefault_threshold) sys::prefault_for_write(b->data_, bytes);
    return b;
}

std::shared_ptr<shared_array_block> shared_array_block::receive(const std::string& name, std::size_t bytes) {
    if (!is_array_name(name))
        throw_bad_shared_array("'" + name + "' is not the name of an mp::shared_array's memory (corrupt message)");
    unique_fd fd;
    try {
        fd = sys::shm_open_existing(name);
    } catch (const system_error& e) {
        if (e.code().value() == ENOENT)
            throw_bad_shared_array("its memory '" + name +
                                   "' is gone: the message was received before, or the program that sent it "
                                   "ended and its memory was cleaned up");
        throw;
    }
    std::shared_ptr<shared_array_block> b(new shared_array_block);
    // From here the name is this process's: ~block removes it, whatever fails next.
    b->name_ = name;
    b->owner_pid_ = sys::current_pid();
    std::size_t real = sys::fd_size(fd.get());
    if (real != bytes)
        throw_bad_shared_array("its memory '" + name + "' holds " + std::to_string(real) + " bytes, the message says " +
                               std::to_string(bytes) + " (corrupt message)");
    b->data_ = static_cast<std::byte*>(sys::map_shared(fd.get(), bytes));
    b->bytes_ = bytes;
    return b;
}

void shared_array_block::discard(const std::string& name) noexcept {
    if (!is_array_name(name)) return;
    sys::shm_remove_raw(name.c_str());
    try {
        shm_tracker::unregister_name(name);
    } catch (...) {
    }
}

shared_array_block::~shared_array_block() {
    sys::unmap(data_, bytes_);
    // A fork child holds copies of its parent's handles, not the name.
    if (name_.empty() || owner_pid_ != sys::current_pid()) return;
    sys::shm_remove_raw(name_.c_str());
    shm_tracker::unregister_name(name_);
}

std::string shared_array_block::hand_over() const {
    return with_fresh_name([&](const std::string& name) {
        shm_tracker::register_name(name);
        try {
            sys::shm_link(name_, name);
        } catch (...) {
            shm_tracker::unregister_name(name);
            throw;
        }
    });
}

}  // namespace mp::detail
