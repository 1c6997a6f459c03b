// mp/value.hpp — a value or an array in shared memory, guarded by a
// process-shared recursive lock (Python's multiprocessing.Value and Array).
//
//     mp::value<long> counter(0);
//     mp::process p(work, counter);                // shares counter
//     { std::lock_guard guard(counter.get_lock()); counter.set(counter.get() + 1); }
//
// get()/set() each take the lock, so they are atomic on their own; a
// read-modify-write needs get_lock() held around it, as in Python. Created
// with mp::no_lock there is no lock (Python's lock=False / RawValue): get()
// and set() are then plain, unsynchronised accesses.
//
// Handles are cheap to copy and share the memory (copies, fork children, and
// spawn/forkserver children that receive one as an argument or message).
// Thread-safe and fork-safe in the sense above.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "mp/synchronize.hpp"

namespace mp {

/// Tag: create an mp::value or mp::array without a lock.
struct no_lock_t {
    explicit no_lock_t() = default;
};
inline constexpr no_lock_t no_lock{};

namespace detail {

template <class T>
constexpr void check_shareable_element() {
    static_assert(std::is_trivially_copyable_v<T>,
                  "mp::value<T>/mp::array<T>: T must be trivially copyable (numbers, enums, plain structs "
                  "of them): the bytes live in shared memory and are read by other processes");
    static_assert(!std::is_pointer_v<T>,
                  "mp::value<T>/mp::array<T>: a pointer means nothing in another process; store an index");
    static_assert(alignof(T) <= 64, "mp::value<T>/mp::array<T>: T's alignment must be at most 64");
}

/// What mp::value and mp::array share: the memory block and the optional lock.
class shared_object_base {
public:
    /// The lock guarding the data. Throws mp::value_error if created with
    /// mp::no_lock. The reference is valid while this handle exists.
    [[nodiscard]] rlock& get_lock() const {
        if (!lock_)
            throw value_error("mp: get_lock() on a value/array created with mp::no_lock: it has no lock; "
                              "create it with a lock, or guard it with an mp::lock of your own");
        return *lock_;
    }
    [[nodiscard]] bool has_lock() const noexcept { return lock_ != nullptr; }

    // Copying shares the memory. There is no move: a handle is never empty.
    shared_object_base(const shared_object_base&) = default;
    shared_object_base& operator=(const shared_object_base&) = default;

protected:
    shared_object_base(sync_block::kind k, std::size_t bytes, std::size_t element_size, std::shared_ptr<rlock> lk)
        : block_(sync_block::create(k, bytes, element_size)), lock_(std::move(lk)) {}

    /// Runs f with the lock held (if there is one).
    template <class F>
    decltype(auto) guarded(F&& f) const {
        if (!lock_) return f();
        std::lock_guard guard(*lock_);
        return f();
    }

    void save_base(output_archive& ar) const {
        save_block(ar, *block_);
        bool locked = lock_ != nullptr;
        ar(locked);
        if (locked) ar(*lock_);
    }
    void load_base(input_archive& ar, sync_block::kind k, std::size_t element_size) {
        block_ = load_block(ar, k, element_size);
        bool locked = false;
        ar(locked);
        if (locked) {
            auto lk = std::make_shared<rlock>();  // replaced by the one received
            ar(*lk);
            lock_ = std::move(lk);
        } else {
            lock_.reset();
        }
    }

    std::shared_ptr<sync_block> block_;
    std::shared_ptr<rlock> lock_;  // null: created with mp::no_lock
};

}  // namespace detail

/// One T in shared memory.
template <class T>
class value : public detail::shared_object_base {
public:
    using value_type = T;

    /// A new shared T, with a new rlock. Throws mp::system_error.
    explicit value(const T& initial = T{}) : value(initial, std::make_shared<rlock>()) {}
    /// Guarded by `lk` (which may guard other objects too).
    value(const T& initial, rlock lk) : value(initial, std::make_shared<rlock>(std::move(lk))) {}
    /// Without a lock.
    value(const T& initial, no_lock_t) : value(initial, std::shared_ptr<rlock>()) {}

    /// A copy of the value, read under the lock.
    [[nodiscard]] T get() const {
        return guarded([&] {
            T out;
            std::memcpy(&out, data(), sizeof(T));
            return out;
        });
    }
    /// Stores v under the lock.
    void set(const T& v) {
        guarded([&] { std::memcpy(static_cast<void*>(data()), &v, sizeof(T)); });
    }
    /// The shared T itself, unguarded (Python's get_obj()).
    [[nodiscard]] T* data() const noexcept { return static_cast<T*>(block_->payload()); }

    template <class Archive>
    void save(Archive& ar) const {
        detail::require_mp_output_archive<Archive>();
        save_base(ar);
    }
    template <class Archive>
    void load(Archive& ar) {
        detail::require_mp_input_archive<Archive>();
        load_base(ar, detail::sync_block::kind::value, sizeof(T));
    }

private:
    value(const T& initial, std::shared_ptr<rlock> lk)
        : shared_object_base((detail::check_shareable_element<T>(), detail::sync_block::kind::value), sizeof(T),
                             sizeof(T), std::move(lk)) {
        std::memcpy(static_cast<void*>(data()), &initial, sizeof(T));
    }
};

/// A fixed-size array of T in shared memory.
template <class T>
class array : public detail::shared_object_base {
public:
    using value_type = T;
    using iterator = T*;

    /// n value-initialised (zeroed) elements, with a new rlock.
    explicit array(std::size_t n = 0) : array(n, std::make_shared<rlock>()) {}
    array(std::size_t n, rlock lk) : array(n, std::make_shared<rlock>(std::move(lk))) {}
    array(std::size_t n, no_lock_t) : array(n, std::shared_ptr<rlock>()) {}
    /// A copy of `init`.
    array(std::initializer_list<T> init) : array(std::span<const T>(init.begin(), init.size())) {}
    explicit array(std::span<const T> init) : array(init.size(), std::make_shared<rlock>()) {
        assign(init);
    }
    array(std::span<const T> init, no_lock_t) : array(init.size(), std::shared_ptr<rlock>()) { assign(init); }
    array(std::span<const T> init, rlock lk) : array(init.size(), std::make_shared<rlock>(std::move(lk))) {
        assign(init);
    }

    [[nodiscard]] std::size_t size() const noexcept { return block_->payload_size() / sizeof(T); }
    [[nodiscard]] bool empty() const noexcept { return size() == 0; }
    /// The elements, unguarded.
    [[nodiscard]] T* data() const noexcept { return static_cast<T*>(block_->payload()); }
    /// Element i, unguarded: hold get_lock() around read-modify-writes.
    T& operator[](std::size_t i) const noexcept { return data()[i]; }
    /// Element i, unguarded; throws std::out_of_range.
    T& at(std::size_t i) const {
        if (i >= size())
            throw std::out_of_range("mp::array: index " + std::to_string(i) + " out of range (size " +
                                    std::to_string(size()) + ")");
        return data()[i];
    }
    [[nodiscard]] T* begin() const noexcept { return data(); }
    [[nodiscard]] T* end() const noexcept { return data() + size(); }
    [[nodiscard]] std::span<T> span() const noexcept { return {data(), size()}; }

    /// Element i read under the lock; throws std::out_of_range.
    [[nodiscard]] T get(std::size_t i) const {
        return guarded([&] { return at(i); });
    }
    /// Stores v at i under the lock; throws std::out_of_range.
    void set(std::size_t i, const T& v) {
        guarded([&] { at(i) = v; });
    }
    /// A copy of every element, taken under the lock.
    [[nodiscard]] std::vector<T> to_vector() const {
        return guarded([&] { return std::vector<T>(begin(), end()); });
    }
    /// Copies `values` (exactly size() of them) in under the lock; throws
    /// mp::value_error on a size mismatch.
    void assign(std::span<const T> values) {
        if (values.size() != size())
            throw value_error("mp::array::assign: got " + std::to_string(values.size()) +
                              " elements for an array of " + std::to_string(size()));
        guarded([&] { std::copy(values.begin(), values.end(), begin()); });
    }

    template <class Archive>
    void save(Archive& ar) const {
        detail::require_mp_output_archive<Archive>();
        save_base(ar);
    }
    template <class Archive>
    void load(Archive& ar) {
        detail::require_mp_input_archive<Archive>();
        load_base(ar, detail::sync_block::kind::array, sizeof(T));
    }

private:
    static std::size_t checked_bytes(std::size_t n) {
        if (n > (std::size_t(1) << 48) / sizeof(T))
            throw value_error("mp::array: " + std::to_string(n) + " elements is too many");
        return n * sizeof(T);
    }
    array(std::size_t n, std::shared_ptr<rlock> lk)
        : shared_object_base((detail::check_shareable_element<T>(), detail::sync_block::kind::array),
                             checked_bytes(n), sizeof(T), std::move(lk)) {
        std::uninitialized_value_construct_n(data(), n);
    }
};

}  // namespace mp
