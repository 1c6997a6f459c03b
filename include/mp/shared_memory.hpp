// mp/shared_memory.hpp — named POSIX shared memory blocks, like Python's
// multiprocessing.shared_memory.SharedMemory.
//
//     mp::shared_memory shm(1 << 20);              // a new block, unique name
//     std::memcpy(shm.data(), src, n);
//     mp::process p(worker, shm);                  // shares the block, or:
//     auto same = mp::shared_memory::attach(shm.name());
//
// Names: name() returns the name without its leading '/', as Python does
// ("mp-1234-5f3a9c..."); create() and attach() accept it with or without it.
//
// Lifetime: a handle is cheap to copy; copies share one mapping, unmapped by
// close() or when the last copy goes away. Neither unlinks the name: call
// unlink() once, when no process needs to attach any more. A block this
// program created is unlinked when the program ends, however it ends (even by
// SIGKILL), by mp's shared-memory tracker, unless it was created with
// `{.track = false}` or untrack() was called; attaching never makes the
// attaching program responsible for a block.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "mp/detail/archive.hpp"
#include "mp/detail/unique_fd.hpp"
#include "mp/error.hpp"

namespace mp {

/// How a shared memory block is created.
struct shared_memory_options {
    /// Unlink the block when this program ends if nobody unlinked it before.
    /// false: the block outlives the program until someone calls unlink().
    bool track = true;
};

/// A named shared memory block. Thread-safe for concurrent use of data();
/// close(), unlink() and untrack() must not race with other use of the same
/// handle. Fork-safe: a fork child shares its parent's mappings.
class shared_memory {
public:
    /// An empty handle (no block): data() is nullptr, size() is 0.
    shared_memory() noexcept = default;
    /// Creates a new block of `size` bytes (zero-filled) with a new unique
    /// name. Throws mp::value_error for size 0, mp::system_error on failure.
    explicit shared_memory(std::size_t size, shared_memory_options options = {});

    /// Creates the block `name` of `size` bytes, zero-filled. Throws
    /// mp::system_error (code() EEXIST if it exists), mp::value_error for
    /// size 0 or a malformed name.
    [[nodiscard]] static shared_memory create(std::string_view name, std::size_t size,
                                              shared_memory_options options = {});
    /// Maps the existing block `name`; its size is the block's size. Throws
    /// mp::system_error (code() ENOENT if there is no such block).
    [[nodiscard]] static shared_memory attach(std::string_view name);

    /// The mapped bytes; nullptr after close() or for an empty handle.
    [[nodiscard]] std::byte* data() const noexcept;
    [[nodiscard]] std::size_t size() const noexcept;
    /// data() and size() as a span (Python's buf).
    [[nodiscard]] std::span<std::byte> buf() const noexcept { return {data(), data() ? size() : 0}; }
    /// The name without its leading '/'.
    [[nodiscard]] std::string name() const;
    [[nodiscard]] bool closed() const noexcept;
    [[nodiscard]] explicit operator bool() const noexcept { return data() != nullptr; }

    /// Unmaps the block in this process, for every copy of this handle. The
    /// block itself stays until unlinked. Idempotent.
    void close() noexcept;
    /// Removes the name: no new attach can find it; the memory is freed once
    /// every process has unmapped it. Throws mp::system_error (ENOENT if
    /// already unlinked). Stops tracking it.
    void unlink();
    /// Gives up this program's responsibility for the block: it will not be
    /// unlinked when the program ends. Thread-safe.
    void untrack();

    /// Sends the block itself (its descriptor): the receiver maps the same
    /// memory even if the name was unlinked meanwhile. Throws mp::closed_error
    /// for a closed handle. A pipe or a process argument carries it; a queue
    /// cannot (it refuses it with mp::value_error): send name() instead.
    template <class Archive>
    void save(Archive& ar) const {
        static_assert(std::is_same_v<Archive, detail::output_archive>,
                      "mp::shared_memory can only be written with mp's own archive (as a process argument, "
                      "or through an mp::pipe): it travels as a file descriptor");
        save_to(ar);
    }
    template <class Archive>
    void load(Archive& ar) {
        static_assert(std::is_same_v<Archive, detail::input_archive>,
                      "mp::shared_memory can only be read with mp's own archive (as a process argument, "
                      "or through an mp::pipe): it travels as a file descriptor");
        load_from(ar);
    }

private:
    struct segment;
    explicit shared_memory(std::shared_ptr<segment> s) noexcept : segment_(std::move(s)) {}
    void save_to(detail::output_archive& ar) const;
    void load_from(detail::input_archive& ar);

    std::shared_ptr<segment> segment_;
};

}  // namespace mp
