// Sealed memfds: shared memory whose size and contents its creator can no
// longer change, so a receiver may map and read it without fearing SIGBUS
// (a shrink under its feet) or bytes changing between a check and a use.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>

#include "sys/memory.hpp"
#include "sys/sys.hpp"

namespace mp::sys {

namespace {
constexpr int frozen_seals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;
}

unique_fd sealable_memfd(const char* name, std::size_t size) {
    int fd = ::memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) throw_errno("memfd_create", name);
    unique_fd owned(fd);
    if (::ftruncate(fd, static_cast<off_t>(size)) < 0) throw_errno("ftruncate", name);
    reserve(fd, 0, size, name);
    return owned;
}

void freeze(int fd) {
    // F_SEAL_WRITE needs every writable mapping gone; F_SEAL_SEAL stops
    // anyone from adding seals later (the creator cannot remove any).
    if (::fcntl(fd, F_ADD_SEALS, frozen_seals | F_SEAL_SEAL) < 0) throw_errno("fcntl(F_ADD_SEALS)");
}

bool is_frozen(int fd) {
    int seals = ::fcntl(fd, F_GET_SEALS);
    if (seals < 0) {
        if (errno == EINVAL) return false;  // not a memfd, or one made without MFD_ALLOW_SEALING
        throw_errno("fcntl(F_GET_SEALS)");
    }
    return (seals & frozen_seals) == frozen_seals;
}

}  // namespace mp::sys
