// sys/memory.hpp — shared memory files (memfd), their mappings, and the
// reservation of their pages. Part of the platform layer.
//
// A file on tmpfs (a memfd, or a name in /dev/shm) sized with ftruncate alone
// has no pages: they are allocated when first written, and when the
// filesystem is full that write kills the process with SIGBUS. Everything mp
// writes into shared memory is therefore reserved first (fallocate), which
// fails with an exception instead.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "mp/detail/unique_fd.hpp"

namespace mp::sys {

using detail::unique_fd;

/// A memory file of `size` bytes whose pages are all reserved. Throws
/// mp::system_error (ENOSPC, with a hint) when shared memory is full.
unique_fd memfd(const char* name, std::size_t size);
/// A memory file of `size` bytes with no pages yet: reserve() each range
/// before writing it.
unique_fd memfd_sparse(const char* name, std::size_t size);
/// Allocates the pages of [offset, offset+len) of a tmpfs file or memfd.
/// Throws mp::system_error (ENOSPC or ENOMEM) naming `what`, the size asked
/// for and the size of /dev/shm; nothing stays allocated by a failed call.
void reserve(int fd, std::size_t offset, std::size_t len, std::string_view what);

/// Maps `size` bytes of `fd` shared read/write; throws on failure.
void* map_shared(int fd, std::size_t size, std::size_t offset = 0, bool noreserve = false);
void unmap(void* addr, std::size_t size) noexcept;
/// Maps a whole file, faulting its pages in at once (one call instead of one
/// page fault per 4 KiB).
void* map_populated(int fd, std::size_t size, bool writable);
std::size_t file_size(int fd);
/// Gives the pages of [offset, offset+len) of a memfd back to the system.
void punch_hole(int fd, std::size_t offset, std::size_t len) noexcept;
std::size_t page_size() noexcept;

/// Gives the POSIX shared memory object `existing` a second name `fresh`
/// (both with their leading '/'): either name then reaches the same pages,
/// and the pages live until the last name is removed and the last mapping
/// and fd are gone. Throws mp::system_error (EEXIST if `fresh` is taken).
void shm_link(const std::string& existing, const std::string& fresh);
/// Opens the existing shared memory object `name` read/write, refusing a
/// symbolic link. Throws mp::system_error (ENOENT when there is none).
unique_fd shm_open_existing(const std::string& name);
/// Maps the pages of [addr, addr+len) for writing in one call (of a shared
/// mapping: reserved pages; of private memory: fresh zero pages), instead of
/// one page fault per 4 KiB during the copy that follows.
/// Best effort: kernels without MADV_POPULATE_WRITE (before 5.14) fault as usual.
void prefault_for_write(void* addr, std::size_t len) noexcept;
/// Maps the (written) pages of [addr, addr+len) of a shared mapping for
/// reading in one call. Best effort, like prefault_for_write.
void prefault_for_read(const void* addr, std::size_t len) noexcept;
/// Copies `bytes` into the file `fd` at `offset` with write calls instead of
/// through a mapping. Into reserved (fallocated) pages of a tmpfs file or
/// memfd that no one has written yet, this is the only pass over the memory:
/// a first write through a mapping makes the kernel zero each page first.
/// Throws mp::system_error.
void write_at(int fd, std::size_t offset, std::span<const std::byte> bytes);
/// Asks for transparent huge pages on the whole pages inside [addr,
/// addr+len) of private memory this process owns and has not touched yet:
/// one page fault per 2 MiB instead of per 4 KiB. A hint; ignored where the
/// system does not allow it.
void advise_huge_pages(void* addr, std::size_t len) noexcept;

/// A whole file mapped read-only, unmapped on destruction (src/sys/file_map.cpp).
class mapped_file {
public:
    mapped_file() = default;
    mapped_file(const void* data, std::size_t size) noexcept : data_(data), size_(size) {}
    mapped_file(mapped_file&& o) noexcept : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
    mapped_file& operator=(mapped_file&&) = delete;
    ~mapped_file() { unmap(const_cast<void*>(data_), size_); }
    [[nodiscard]] const std::byte* data() const noexcept { return static_cast<const std::byte*>(data_); }
    [[nodiscard]] std::size_t size() const noexcept { return size_; }

private:
    const void* data_ = nullptr;
    std::size_t size_ = 0;
};
/// Maps the file at `path` for reading; throws mp::system_error.
[[nodiscard]] mapped_file map_file_readonly(const char* path);

/// A memfd of `size` reserved bytes that can be frozen once written.
unique_fd sealable_memfd(const char* name, std::size_t size);
/// Seals a memfd against shrinking, growing and writing, for good. Throws if
/// a writable mapping of it still exists.
void freeze(int fd);
/// Whether `fd` is a memfd whose size and contents can no longer change.
[[nodiscard]] bool is_frozen(int fd);

namespace test_hooks {
/// Tests only: reserve() of more bytes than this fails as if shared memory
/// were full (a memfd cannot be given a small filesystem of its own).
inline std::atomic<std::size_t> fail_reservations_over{std::numeric_limits<std::size_t>::max()};
}  // namespace test_hooks

}  // namespace mp::sys
