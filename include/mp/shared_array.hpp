// mp/shared_array.hpp — an array of plain values in shared memory that
// crosses processes without its elements being copied.
//
//     mp::shared_array<double> a(n);               // n zero-filled doubles
//     std::ranges::fill(a, 1.0);                   // data(), size(), span(), begin()/end()
//     q.put(a);  conn.send(a);  return a;          // a queue, a pipe, a task result, a process argument
//     auto b = q.get();                            // b maps the very memory a wrote
//
// What it is for: large results and messages. Sending one writes a short
// record (a name and a size), whatever the array's size; the receiver maps
// the same pages. The only copy of the data is the one its producer writes.
//
// Promises:
// - Works through every transport of mp (queue, pipe, task results and
//   arguments of pools and executors, process arguments) and under every
//   start method.
// - The sender may exit right after sending (e.g. after queue::put): the
//   memory outlives it until received.
// - Nothing leaks: the memory is freed when the last handle in the last
//   process is gone. Every send gives the memory a fresh /dev/shm name
//   ("mp-array-<pid>-<random>") that the receiver takes over; a process holding
//   a handle keeps one such name. Names are registered with mp's shared-memory
//   tracker, so a sent array never received, or one whose holder was killed,
//   is removed when the program ends, however it ends.
// - A message naming memory that is gone (received already, or cleaned up
//   because its program ended) or that is not a shared_array of this element
//   type throws mp::serialization_error saying so.
//
// Sharing, not copying: every handle (copies in this process, and handles
// received elsewhere) sees the same elements. Writing after sending is
// visible to the receiver, unsynchronised; treat a sent array as read-mostly,
// or synchronise with mp's locks and events.
//
// Receiving as std::vector<T>: the wire formats differ (a vector's elements
// travel in the message), so a shared_array sent must be received as a
// shared_array<T> of the same element type; call to_vector() for a vector
// (one copy).
//
// Thread-safety: like std::shared_ptr: distinct handles may be used from any
// thread; the elements are plain memory.
#pragma once

#include <cereal/types/string.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "mp/detail/archive.hpp"
#include "mp/error.hpp"

namespace mp {

namespace detail {

/// The memory of a shared_array, untyped: one mapping in this process,
/// shared by all copies of a handle.
class shared_array_block {
public:
    /// New zero-filled memory of `bytes` (> 0) bytes, all pages reserved:
    /// throws mp::system_error (ENOSPC) when shared memory is full.
    static std::shared_ptr<shared_array_block> create(std::size_t bytes);
    /// New memory holding a copy of `initial` (non-empty), written in one pass:
    /// its pages are never zero-filled first.
    static std::shared_ptr<shared_array_block> create_copy(std::span<const std::byte> initial);
    /// Takes over the memory sent under `name`, which must hold `bytes`
    /// bytes. Throws mp::serialization_error when it is absent or another size.
    static std::shared_ptr<shared_array_block> receive(const std::string& name, std::size_t bytes);

    /// Removes memory handed over to this process that it cannot take
    /// (the message was not what the receiver expected). Never throws.
    static void discard(const std::string& name) noexcept;

    ~shared_array_block();
    shared_array_block(const shared_array_block&) = delete;
    shared_array_block& operator=(const shared_array_block&) = delete;

    /// Gives the memory a fresh name for one receiver and returns it.
    [[nodiscard]] std::string hand_over() const;

    [[nodiscard]] std::byte* data() const noexcept { return data_; }
    [[nodiscard]] std::size_t bytes() const noexcept { return bytes_; }

private:
    shared_array_block() = default;
    static std::shared_ptr<shared_array_block> make(std::size_t bytes, const std::byte* initial);

    std::string name_;  // this process's name for the memory, with its leading '/'
    std::byte* data_ = nullptr;
    std::size_t bytes_ = 0;
    int owner_pid_ = 0;  // a fork child inherits the handle, not the name
};

/// "mpSA": the first word of a shared_array in a message.
inline constexpr std::uint32_t shared_array_magic = 0x4153706d;

[[noreturn]] void throw_bad_shared_array(const std::string& why);

}  // namespace detail

template <class T>
class shared_array {
    static_assert(std::is_trivially_copyable_v<T> && !std::is_const_v<T> && !std::is_volatile_v<T>,
                  "mp::shared_array<T> needs a trivially copyable T: its elements are shared as raw bytes");

public:
    using value_type = T;
    using size_type = std::size_t;
    using iterator = T*;
    using const_iterator = const T*;

    /// An empty array (no memory).
    shared_array() noexcept = default;
    /// `count` value-initialised (zero) elements in new shared memory.
    /// Throws mp::system_error when shared memory is full.
    explicit shared_array(std::size_t count) : count_(count) {
        if (count == 0) return;
        if (count > SIZE_MAX / sizeof(T)) throw value_error("mp: shared_array of " + std::to_string(count) +
                                                            " elements is larger than memory can be");
        block_ = detail::shared_array_block::create(count * sizeof(T));
    }
    /// A new array holding a copy of `values`.
    /// One pass over the memory: cheaper than shared_array(n) and a copy,
    /// whose pages the system zero-fills before they are written.
    [[nodiscard]] static shared_array copy_of(std::span<const T> values) {
        shared_array a;
        if (values.empty()) return a;
        a.block_ = detail::shared_array_block::create_copy(std::as_bytes(values));
        a.count_ = values.size();
        return a;
    }

    [[nodiscard]] T* data() noexcept { return block_ ? reinterpret_cast<T*>(block_->data()) : nullptr; }
    [[nodiscard]] const T* data() const noexcept {
        return block_ ? reinterpret_cast<const T*>(block_->data()) : nullptr;
    }
    [[nodiscard]] std::size_t size() const noexcept { return count_; }
    [[nodiscard]] bool empty() const noexcept { return count_ == 0; }
    [[nodiscard]] std::span<T> span() noexcept { return {data(), count_}; }
    [[nodiscard]] std::span<const T> span() const noexcept { return {data(), count_}; }
    [[nodiscard]] T* begin() noexcept { return data(); }
    [[nodiscard]] T* end() noexcept { return data() + count_; }
    [[nodiscard]] const T* begin() const noexcept { return data(); }
    [[nodiscard]] const T* end() const noexcept { return data() + count_; }
    [[nodiscard]] T& operator[](std::size_t i) noexcept { return data()[i]; }
    [[nodiscard]] const T& operator[](std::size_t i) const noexcept { return data()[i]; }
    /// The elements copied into a vector.
    [[nodiscard]] std::vector<T> to_vector() const { return std::vector<T>(begin(), end()); }

    template <class Archive>
    void save(Archive& ar) const {
        static_assert(std::is_same_v<Archive, detail::output_archive>,
                      "mp::shared_array can only be written with mp's own archive (through an mp::queue, "
                      "mp::pipe, task or process argument): it travels as the name of its memory");
        std::uint32_t magic = detail::shared_array_magic;
        std::uint32_t element = sizeof(T);
        std::uint64_t count = count_;
        ar(magic, element, count);
        if (count_ != 0) ar(block_->hand_over());
    }
    template <class Archive>
    void load(Archive& ar) {
        static_assert(std::is_same_v<Archive, detail::input_archive>,
                      "mp::shared_array can only be read with mp's own archive");
        std::uint32_t magic = 0, element = 0;
        std::uint64_t count = 0;
        ar(magic, element, count);
        if (magic != detail::shared_array_magic)
            detail::throw_bad_shared_array("the message does not hold a shared_array here (was it sent as another "
                                           "type, e.g. a std::vector? send and receive the same type)");
        std::string name;
        if (count != 0) ar(name);
        if (element != sizeof(T) || count > SIZE_MAX / sizeof(T)) {
            detail::shared_array_block::discard(name);  // it was handed over to this process: remove it
            if (element != sizeof(T))
                detail::throw_bad_shared_array("it was sent with " + std::to_string(element) +
                                               "-byte elements, received as " + std::to_string(sizeof(T)) +
                                               "-byte elements: send and receive the same element type");
            detail::throw_bad_shared_array("its size is corrupt");
        }
        block_ = count == 0 ? nullptr
                            : detail::shared_array_block::receive(name, static_cast<std::size_t>(count) * sizeof(T));
        count_ = static_cast<std::size_t>(count);
    }

private:
    std::shared_ptr<detail::shared_array_block> block_;
    std::size_t count_ = 0;
};

}  // namespace mp
