// Decoding hostile bytes: a declared element count must not make the decoder
// allocate more than the message could hold, and values with few valid bit
// patterns (bool, optional's flag, variant's index) are checked.
//
// This binary counts the bytes live on the heap (operator new is replaced
// below), so a test can say how much a decode allocated.
#include <gtest/gtest.h>
#include <malloc.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>

#include "mp/serialize.hpp"

namespace {

std::atomic<std::size_t> live_bytes{0};
std::atomic<std::size_t> peak_bytes{0};

void* counted_alloc(std::size_t n) {
    void* p = std::malloc(n ? n : 1);
    if (!p) throw std::bad_alloc();
    std::size_t now = live_bytes.fetch_add(malloc_usable_size(p)) + malloc_usable_size(p);
    std::size_t peak = peak_bytes.load();
    while (now > peak && !peak_bytes.compare_exchange_weak(peak, now)) {
    }
    return p;
}

void counted_free(void* p) noexcept {
    if (!p) return;
    live_bytes.fetch_sub(malloc_usable_size(p));
    std::free(p);
}

}  // namespace

void* operator new(std::size_t n) { return counted_alloc(n); }
void* operator new[](std::size_t n) { return counted_alloc(n); }
void operator delete(void* p) noexcept { counted_free(p); }
void operator delete[](void* p) noexcept { counted_free(p); }
void operator delete(void* p, std::size_t) noexcept { counted_free(p); }
void operator delete[](void* p, std::size_t) noexcept { counted_free(p); }

namespace {

constexpr std::size_t payload = 4 << 20;

// A message that declares `count` elements, followed by `payload` zero bytes
// (a zero byte string is a valid empty string, a zero int is 0).
std::vector<std::byte> declaring(std::uint64_t count) {
    std::vector<std::byte> bytes(8 + payload);
    std::memcpy(bytes.data(), &count, 8);
    return bytes;
}

// Decodes `bytes` as T; returns the most the heap grew meanwhile.
template <class T>
std::size_t heap_growth_decoding(const std::vector<std::byte>& bytes, bool expect_error) {
    std::size_t before = live_bytes.load();
    peak_bytes.store(before);
    {
        mp::detail::input_archive in(bytes);
        if (expect_error) {
            EXPECT_THROW((void)mp::detail::load_value<T>(in), mp::serialization_error) << mp::detail::type_name<T>();
        } else {
            EXPECT_NO_THROW((void)mp::detail::load_value<T>(in)) << mp::detail::type_name<T>();
        }
    }
    return peak_bytes.load() - before;
}

// A count the bytes left could hold at one byte per element, but not at the
// element's smallest encoding, is refused before anything is allocated for
// it. (Before the fix, vector<pair<string, string>> grew by 64 × the count.)
template <class T>
void refuses_a_count_the_bytes_cannot_hold() {
    std::size_t min_size = mp::detail::min_encoded_size_v<typename T::value_type>;
    ASSERT_GT(min_size, 1u);
    auto growth = heap_growth_decoding<T>(declaring(payload), true);
    EXPECT_LT(growth, std::size_t{64} << 10) << mp::detail::type_name<T>();
    growth = heap_growth_decoding<T>(declaring(payload / min_size + 1), true);
    EXPECT_LT(growth, std::size_t{64} << 10) << mp::detail::type_name<T>();
}

// The largest count the bytes can hold decodes, and takes memory in
// proportion to the message (a few bytes of element per byte of message).
template <class T>
void decodes_the_largest_count_the_bytes_hold() {
    std::size_t min_size = mp::detail::min_encoded_size_v<typename T::value_type>;
    auto growth = heap_growth_decoding<T>(declaring(payload / min_size), false);
    EXPECT_LT(growth, 8 * payload) << mp::detail::type_name<T>();
}

template <class T>
std::vector<std::byte> encoded(const T& value) {
    mp::detail::output_archive out;
    mp::detail::save_value(out, value);
    std::vector<std::byte> bytes(out.size());
    out.copy_to(bytes.data());
    return bytes;
}

template <class T>
void refuses(std::vector<std::byte> bytes) {
    mp::detail::input_archive in(bytes);
    EXPECT_THROW((void)mp::detail::load_value<T>(in), mp::serialization_error) << mp::detail::type_name<T>();
}

}  // namespace

TEST(decode_bounds, counts_are_bounded_by_the_smallest_element_encoding) {
    refuses_a_count_the_bytes_cannot_hold<std::vector<std::pair<std::string, std::string>>>();
    refuses_a_count_the_bytes_cannot_hold<std::vector<std::string>>();
    refuses_a_count_the_bytes_cannot_hold<std::vector<std::vector<int>>>();
    refuses_a_count_the_bytes_cannot_hold<std::vector<std::tuple<int, double>>>();
    refuses_a_count_the_bytes_cannot_hold<std::deque<std::string>>();
    refuses_a_count_the_bytes_cannot_hold<std::list<std::string>>();
    refuses_a_count_the_bytes_cannot_hold<std::set<std::string>>();
    refuses_a_count_the_bytes_cannot_hold<std::unordered_set<std::string>>();
    refuses_a_count_the_bytes_cannot_hold<std::map<std::string, std::string>>();
    refuses_a_count_the_bytes_cannot_hold<std::unordered_map<std::string, std::string>>();
    refuses_a_count_the_bytes_cannot_hold<std::vector<std::array<int, 4>>>();
    refuses_a_count_the_bytes_cannot_hold<std::vector<std::complex<double>>>();
    refuses_a_count_the_bytes_cannot_hold<std::vector<std::chrono::milliseconds>>();
    refuses_a_count_the_bytes_cannot_hold<std::vector<std::variant<int, std::string>>>();
}

TEST(decode_bounds, the_largest_count_that_fits_still_decodes) {
    decodes_the_largest_count_the_bytes_hold<std::vector<std::pair<std::string, std::string>>>();
    decodes_the_largest_count_the_bytes_hold<std::vector<std::string>>();
    decodes_the_largest_count_the_bytes_hold<std::deque<std::string>>();
    decodes_the_largest_count_the_bytes_hold<std::vector<std::vector<int>>>();
    decodes_the_largest_count_the_bytes_hold<std::vector<int>>();
}

TEST(decode_bounds, a_bool_is_zero_or_one) {
    for (int v : {0, 1}) {
        auto bytes = encoded(static_cast<std::uint8_t>(v));
        mp::detail::input_archive in(bytes);
        EXPECT_EQ(mp::detail::load_value<bool>(in), v == 1);
    }
    refuses<bool>(encoded(std::uint8_t{2}));
    refuses<bool>(encoded(std::uint8_t{255}));
    // a vector<bool>, an array of bools and optional's "empty" flag
    auto v = encoded(std::vector<bool>{true, false, true});
    v.back() = std::byte{7};
    refuses<std::vector<bool>>(v);
    auto a = encoded(std::array<bool, 3>{true, false, true});
    a[1] = std::byte{2};
    refuses<std::array<bool, 3>>(a);
    auto o = encoded(std::optional<int>{});
    o[0] = std::byte{2};
    refuses<std::optional<int>>(o);
    auto good = encoded(std::vector<bool>{true, false});
    mp::detail::input_archive in(good);
    EXPECT_EQ(mp::detail::load_value<std::vector<bool>>(in), (std::vector<bool>{true, false}));
}

TEST(decode_bounds, a_variant_index_out_of_range_is_a_serialization_error) {
    using variant = std::variant<int, std::string>;
    for (std::int32_t index : {-1, 2, 1000, INT32_MIN}) {
        auto bytes = encoded(variant{5});
        std::memcpy(bytes.data(), &index, sizeof index);
        refuses<variant>(bytes);
    }
    auto good = encoded(variant{std::string("s")});
    mp::detail::input_archive in(good);
    EXPECT_EQ(mp::detail::load_value<variant>(in), variant{std::string("s")});
}
