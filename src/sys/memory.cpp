#include "sys/memory.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "sys/sys.hpp"

namespace mp::sys {
namespace {

std::string human_size(std::uint64_t bytes) {
    const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
    double v = static_cast<double>(bytes);
    int unit = 0;
    while (v >= 1024 && unit < 4) {
        v /= 1024;
        ++unit;
    }
    char buf[32];
    std::snprintf(buf, sizeof buf, unit == 0 ? "%.0f %s" : "%.1f %s", v, units[unit]);
    return buf;
}

[[noreturn]] void throw_full(int err, std::size_t len, std::string_view what) {
    std::string message = "mp: shared memory is full: could not reserve " + human_size(len) + " for " +
                          std::string(what) + " (" + std::strerror(err) + "). ";
    struct statvfs st {};
    if (::statvfs("/dev/shm", &st) == 0) {
        message += "/dev/shm is " + human_size(std::uint64_t{st.f_blocks} * st.f_frsize) + " with " +
                   human_size(std::uint64_t{st.f_bavail} * st.f_frsize) + " free; ";
    }
    message +=
        "make /dev/shm larger (in Docker: --shm-size, e.g. --shm-size=1g), free memory, or keep less data "
        "in shared memory at once";
    throw system_error(err, message);
}

unique_fd create_memfd(const char* name, std::size_t size) {
    int fd = ::memfd_create(name, MFD_CLOEXEC);
    if (fd < 0) throw_errno("memfd_create", name);
    unique_fd owned(fd);
    if (::ftruncate(fd, static_cast<off_t>(size)) < 0) throw_errno("ftruncate", name);
    return owned;
}

}  // namespace

unique_fd memfd(const char* name, std::size_t size) {
    unique_fd fd = create_memfd(name, size);
    reserve(fd.get(), 0, size, name);
    return fd;
}

unique_fd memfd_sparse(const char* name, std::size_t size) { return create_memfd(name, size); }

void reserve(int fd, std::size_t offset, std::size_t len, std::string_view what) {
    if (len == 0) return;
    if (len > test_hooks::fail_reservations_over.load(std::memory_order_relaxed)) throw_full(ENOSPC, len, what);
    for (;;) {
        // Mode 0 within the file's size: allocate, never grow the file.
        if (::fallocate(fd, 0, static_cast<off_t>(offset), static_cast<off_t>(len)) == 0) return;
        int err = errno;
        if (err == EINTR) continue;
        // A filesystem without fallocate cannot reserve: its pages come on first write, as before.
        if (err == EOPNOTSUPP) return;
        if (err == ENOSPC || err == ENOMEM || err == EDQUOT) throw_full(err, len, what);
        throw_errno(err, "fallocate", what);
    }
}

void* map_shared(int fd, std::size_t size, std::size_t offset, bool noreserve) {
    int flags = MAP_SHARED | (noreserve ? MAP_NORESERVE : 0);
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, flags, fd, static_cast<off_t>(offset));
    if (p == MAP_FAILED) throw_errno("mmap");
    return p;
}

void unmap(void* addr, std::size_t size) noexcept {
    if (addr) ::munmap(addr, size);
}

void* map_populated(int fd, std::size_t size, bool writable) {
    int prot = PROT_READ | (writable ? PROT_WRITE : 0);
    void* p = ::mmap(nullptr, size, prot, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (p == MAP_FAILED) throw_errno("mmap");
    return p;
}

std::size_t file_size(int fd) {
    struct stat st {};
    if (::fstat(fd, &st) < 0) throw_errno("fstat");
    return static_cast<std::size_t>(st.st_size);
}

void punch_hole(int fd, std::size_t offset, std::size_t len) noexcept {
    if (len == 0) return;
    ::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                static_cast<off_t>(len));
}

void prefault_for_write(void* addr, std::size_t len) noexcept {
#ifndef MADV_POPULATE_WRITE
    constexpr int MADV_POPULATE_WRITE = 23;
#endif
    auto start = reinterpret_cast<std::uintptr_t>(addr) & ~(page_size() - 1);
    auto end = reinterpret_cast<std::uintptr_t>(addr) + len;
    ::madvise(reinterpret_cast<void*>(start), end - start, MADV_POPULATE_WRITE);
}

void prefault_for_read(const void* addr, std::size_t len) noexcept {
#ifndef MADV_POPULATE_READ
    constexpr int MADV_POPULATE_READ = 22;
#endif
    auto start = reinterpret_cast<std::uintptr_t>(addr) & ~(page_size() - 1);
    auto end = reinterpret_cast<std::uintptr_t>(addr) + len;
    ::madvise(reinterpret_cast<void*>(start), end - start, MADV_POPULATE_READ);
}

void write_at(int fd, std::size_t offset, std::span<const std::byte> bytes) {
    while (!bytes.empty()) {
        ssize_t n = ::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(offset));
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno("pwrite");
        }
        bytes = bytes.subspan(static_cast<std::size_t>(n));
        offset += static_cast<std::size_t>(n);
    }
}

void advise_huge_pages(void* addr, std::size_t len) noexcept {
    const std::uintptr_t page = page_size();
    auto start = (reinterpret_cast<std::uintptr_t>(addr) + page - 1) & ~(page - 1);
    auto end = (reinterpret_cast<std::uintptr_t>(addr) + len) & ~(page - 1);
    if (end > start) ::madvise(reinterpret_cast<void*>(start), end - start, MADV_HUGEPAGE);
}

namespace {
// glibc's shm_open places every object in /dev/shm under its name.
std::string shm_path(const std::string& name) { return "/dev/shm" + name; }
}  // namespace

void shm_link(const std::string& existing, const std::string& fresh) {
    if (::link(shm_path(existing).c_str(), shm_path(fresh).c_str()) < 0) throw_errno("link", fresh);
}

unique_fd shm_open_existing(const std::string& name) {
    int fd = ::open(shm_path(name).c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) throw_errno("open", name);
    return unique_fd(fd);
}

std::size_t page_size() noexcept {
    static const std::size_t size = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    return size;
}

}  // namespace mp::sys
