// Read-only file mappings: how mp reads a module's ELF symbol table from
// disk without the dynamic loader (whose locks a fork child must not take).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sys/sys.hpp"

namespace mp::sys {

mapped_file map_file_readonly(const char* path) {
    unique_fd fd(::open(path, O_RDONLY | O_CLOEXEC));
    if (!fd) throw_errno("open", path);
    struct stat st {};
    if (::fstat(fd.get(), &st) < 0) throw_errno("fstat", path);
    auto size = static_cast<std::size_t>(st.st_size);
    if (size == 0) return {};
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd.get(), 0);
    if (p == MAP_FAILED) throw_errno("mmap", path);
    return {p, size};
}

}  // namespace mp::sys
