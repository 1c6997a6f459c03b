// What crosses a process boundary, and how: values, functions, exceptions,
// and the errors a corrupt message gets.
#include "mp/serialize.hpp"

#include <gtest/gtest.h>

#include <cereal/archives/binary.hpp>

#include <chrono>
#include <complex>
#include <cstring>
#include <map>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <unordered_map>

#include "mp/function.hpp"

namespace {

struct user_type {
    int id = 0;
    std::string name;
    std::vector<double> weights;
    template <class Archive>
    void serialize(Archive& ar) {
        ar(id, name, weights);
    }
    bool operator==(const user_type&) const = default;
};

struct no_serialize {
    int x;
};

class my_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};
class unregistered_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

}  // namespace

// External linkage: a function pointer's name comes from the dynamic symbol
// table (mp::fn<&f> knows its name at compile time, whatever the linkage).
int mul(int a, int b) { return a * b; }
namespace inner {
int plus(int a, int b) { return a + b; }
}  // namespace inner

namespace {

template <class T>
T round_trip(const T& value) {
    mp::detail::output_archive out;
    mp::detail::save_value(out, value);
    std::vector<std::byte> bytes(out.size());
    out.copy_to(bytes.data());
    mp::detail::input_archive in(bytes);
    return mp::detail::load_value<T>(in);
}

template <class E>
std::exception_ptr cross(E e) {
    auto record = mp::detail::capture_exception(std::make_exception_ptr(e));
    return mp::detail::rebuild_exception(round_trip(record));
}

}  // namespace

static_assert(mp::transferable<int>);
static_assert(mp::transferable<std::vector<std::map<std::string, std::tuple<int, double>>>>);
static_assert(mp::transferable<user_type>);
static_assert(mp::transferable<mp::function<int(int, int)>>);
static_assert(!mp::transferable<int*>);
static_assert(!mp::transferable<std::mutex>);
static_assert(!mp::transferable<std::vector<std::mutex>>);
static_assert(!mp::transferable<std::pair<int, std::function<void()>>>);
static_assert(!mp::transferable<no_serialize>);

TEST(serialize, standard_types_round_trip) {
    EXPECT_EQ(round_trip(42), 42);
    EXPECT_EQ(round_trip(std::string("héllo")), "héllo");
    EXPECT_EQ(round_trip(std::vector<int>{1, 2, 3}), (std::vector<int>{1, 2, 3}));
    EXPECT_EQ(round_trip(std::map<std::string, int>{{"a", 1}}), (std::map<std::string, int>{{"a", 1}}));
    EXPECT_EQ(round_trip(std::unordered_map<int, std::string>{{1, "x"}}),
              (std::unordered_map<int, std::string>{{1, "x"}}));
    EXPECT_EQ(round_trip(std::set<int>{3, 1}), (std::set<int>{1, 3}));
    EXPECT_EQ(round_trip(std::optional<int>{}), std::nullopt);
    EXPECT_EQ(round_trip(std::optional<int>{5}), 5);
    EXPECT_EQ(round_trip(std::variant<int, std::string>{"v"}), (std::variant<int, std::string>{"v"}));
    EXPECT_EQ(round_trip(std::tuple<int, char, double>{1, 'c', 2.5}), (std::tuple<int, char, double>{1, 'c', 2.5}));
    EXPECT_EQ(round_trip(std::complex<double>{1, 2}), (std::complex<double>{1, 2}));
    EXPECT_EQ(round_trip(std::chrono::milliseconds(1500)), std::chrono::milliseconds(1500));
    EXPECT_EQ(round_trip(std::array<int, 3>{4, 5, 6}), (std::array<int, 3>{4, 5, 6}));
    EXPECT_EQ(round_trip(std::deque<int>{7, 8}), (std::deque<int>{7, 8}));
    EXPECT_EQ(round_trip(std::list<int>{9}), (std::list<int>{9}));
    EXPECT_EQ(round_trip(std::pair<int, std::string>{1, "p"}), (std::pair<int, std::string>{1, "p"}));
    user_type u{7, "seven", {1.5, 2.5}};
    EXPECT_EQ(round_trip(u), u);
}

TEST(serialize, large_blocks_are_borrowed_not_copied) {
    std::vector<double> big(1 << 20, 1.0);
    mp::detail::output_archive out;
    mp::detail::save_value(out, big);
    ASSERT_EQ(out.borrowed_blocks().size(), 1u);
    EXPECT_EQ(out.borrowed_blocks()[0].data, reinterpret_cast<const std::byte*>(big.data()));
    EXPECT_LT(out.buffer().size(), 64u);
    EXPECT_EQ(round_trip(big), big);
}

// A vector's bytes sit at whatever offset its message puts them (a pool
// result's header is 14 bytes): every alignment loads the same values, large
// ones (prepared fresh memory) and small, into empty and reused vectors.
TEST(serialize, vectors_load_at_any_alignment) {
    for (std::size_t count : {std::size_t{0}, std::size_t{3}, std::size_t{1} << 18}) {
        std::vector<double> values(count);
        for (std::size_t i = 0; i < count; ++i) values[i] = static_cast<double>(i) * 1.25 - 7;
        mp::detail::output_archive out;
        mp::detail::save_value(out, values);
        for (std::size_t shift = 0; shift < 8; ++shift) {
            std::vector<std::byte> bytes(out.size() + shift + 8);
            out.copy_to(bytes.data() + shift);
            mp::detail::input_archive in(std::span<const std::byte>(bytes.data() + shift, out.size()));
            std::vector<double> loaded;
            in(loaded);
            EXPECT_EQ(loaded, values) << count << " doubles at offset " << shift;
            mp::detail::input_archive again(std::span<const std::byte>(bytes.data() + shift, out.size()));
            std::vector<double> reused(count + 5, 99.0);  // capacity enough: no new memory
            again(reused);
            EXPECT_EQ(reused, values) << count << " doubles into a used vector at offset " << shift;
        }
    }
}

TEST(serialize, a_truncated_message_throws) {
    mp::detail::output_archive out;
    mp::detail::save_value(out, std::string(100, 'x'));
    std::vector<std::byte> bytes(out.size());
    out.copy_to(bytes.data());
    bytes.resize(50);
    mp::detail::input_archive in(bytes);
    EXPECT_THROW((void)mp::detail::load_value<std::string>(in), mp::serialization_error);
}

TEST(serialize, a_corrupt_length_throws_before_allocating) {
    std::vector<std::byte> bytes(8);
    std::uint64_t huge = ~std::uint64_t{0} >> 2;
    std::memcpy(bytes.data(), &huge, 8);
    mp::detail::input_archive in(bytes);
    EXPECT_THROW((void)mp::detail::load_value<std::vector<double>>(in), mp::serialization_error);
}

// mp writes strings and reads string-keyed maps by its own short paths;
// the bytes stay those of cereal's binary archive (a 64-bit length, then the
// characters), so a peer using cereal's archives reads them unchanged.
template <class T>
std::vector<std::byte> cereal_bytes(const T& value) {
    std::ostringstream os;
    {
        cereal::BinaryOutputArchive ar(os);
        ar(value);
    }
    auto text = os.str();
    std::vector<std::byte> out(text.size());
    std::memcpy(out.data(), text.data(), text.size());
    return out;
}
template <class T>
std::vector<std::byte> mp_bytes(const T& value) {
    mp::detail::output_archive out;
    mp::detail::save_value(out, value);
    std::vector<std::byte> bytes(out.size());
    out.copy_to(bytes.data());
    return bytes;
}

TEST(serialize, strings_and_string_keyed_maps_keep_cereals_encoding) {
    std::string big(100'000, 'b');
    big[70'000] = 'c';
    std::unordered_map<std::string, int> counts{{"the", 3}, {"", 1}, {std::string(300, 'w'), 2}};
    std::map<std::u16string, std::vector<std::string>> wide{{u"k\u00e9y", {"a", big}}, {u"", {}}};
    EXPECT_EQ(mp_bytes(std::string("héllo")), cereal_bytes(std::string("héllo")));
    EXPECT_EQ(mp_bytes(std::string()), cereal_bytes(std::string()));
    EXPECT_EQ(mp_bytes(big), cereal_bytes(big));  // borrowed, not copied, but the same bytes
    EXPECT_EQ(mp_bytes(std::u32string(U"\U0001F600z")), cereal_bytes(std::u32string(U"\U0001F600z")));
    EXPECT_EQ(mp_bytes(counts), cereal_bytes(counts));
    EXPECT_EQ(mp_bytes(wide), cereal_bytes(wide));

    EXPECT_EQ(round_trip(big), big);
    EXPECT_EQ(round_trip(std::u32string(U"\U0001F600z")), std::u32string(U"\U0001F600z"));
    EXPECT_EQ(round_trip(counts), counts);
    EXPECT_EQ(round_trip(wide), wide);
    auto multi = std::unordered_multimap<std::string, int>{{"a", 1}, {"a", 2}, {"b", 3}};
    EXPECT_EQ(round_trip(multi).count("a"), 2u);
}

TEST(serialize, a_corrupt_key_length_in_a_map_throws) {
    using counts = std::unordered_map<std::string, int>;
    auto bytes = mp_bytes(std::unordered_map<std::string, int>{{"key", 1}});
    // count (8 bytes), then the key's length: claim more than follows.
    std::uint64_t huge = 1'000'000;
    std::memcpy(bytes.data() + 8, &huge, 8);
    mp::detail::input_archive in(bytes);
    EXPECT_THROW((void)mp::detail::load_value<counts>(in), mp::serialization_error);
    bytes.resize(8 + 8 + 2);  // truncated inside the key
    std::uint64_t three = 3;
    std::memcpy(bytes.data() + 8, &three, 8);
    mp::detail::input_archive cut(bytes);
    EXPECT_THROW((void)mp::detail::load_value<counts>(cut), mp::serialization_error);
}

TEST(serialize, functions_travel_with_their_names) {
    constexpr auto f = mp::fn<&mul>;
    EXPECT_EQ(f.name(), "mul");
    EXPECT_EQ(mp::fn<&inner::plus>.name(), "plus");
    EXPECT_EQ(f(6, 7), 42);

    mp::function<int(int, int)> from_fn = mp::fn<&mul>;
    EXPECT_EQ(from_fn.name(), "mul");
    auto back = round_trip(from_fn);
    EXPECT_EQ(back.name(), "mul");
    EXPECT_EQ(back(3, 7), 21);

    mp::function<int(int, int)> from_pointer = &inner::plus;
    EXPECT_EQ(from_pointer.name(), "plus");
    EXPECT_EQ(round_trip(from_pointer)(2, 3), 5);

    mp::function<int(int, int)> from_lambda = [](int a, int b) { return a - b; };
    EXPECT_EQ(round_trip(from_lambda)(9, 4), 5);

    mp::function<int(int, int)> empty;
    EXPECT_FALSE(round_trip(empty));
    EXPECT_THROW(empty(1, 2), mp::error);
}

TEST(serialize, standard_exceptions_keep_their_type) {
    EXPECT_THROW(std::rethrow_exception(cross(std::runtime_error("r"))), std::runtime_error);
    EXPECT_THROW(std::rethrow_exception(cross(std::invalid_argument("i"))), std::invalid_argument);
    EXPECT_THROW(std::rethrow_exception(cross(std::out_of_range("o"))), std::out_of_range);
    EXPECT_THROW(std::rethrow_exception(cross(std::domain_error("d"))), std::domain_error);
    EXPECT_THROW(std::rethrow_exception(cross(std::length_error("l"))), std::length_error);
    EXPECT_THROW(std::rethrow_exception(cross(std::overflow_error("o"))), std::overflow_error);
    EXPECT_THROW(std::rethrow_exception(cross(std::underflow_error("u"))), std::underflow_error);
    EXPECT_THROW(std::rethrow_exception(cross(std::range_error("r"))), std::range_error);
    EXPECT_THROW(std::rethrow_exception(cross(std::logic_error("l"))), std::logic_error);
    EXPECT_THROW(std::rethrow_exception(cross(std::bad_alloc())), std::bad_alloc);
    EXPECT_THROW(std::rethrow_exception(cross(mp::queue_empty("q"))), mp::queue_empty);
    EXPECT_THROW(std::rethrow_exception(cross(mp::worker_crashed("w"))), mp::worker_crashed);
    try {
        std::rethrow_exception(cross(std::invalid_argument("bad value")));
    } catch (const std::invalid_argument& e) {
        EXPECT_STREQ(e.what(), "bad value");
    }
    try {
        std::rethrow_exception(cross(mp::system_error(2, "open failed")));
    } catch (const mp::system_error& e) {
        EXPECT_EQ(e.code().value(), 2);
    }
}

// External linkage and never inlined: a frame of its own, named in traces
// (the test executables are linked with -rdynamic).
[[gnu::noinline]] std::string trace_of_a_failure_here() {
    auto trace = mp::detail::capture_exception(std::make_exception_ptr(std::runtime_error("here"))).trace;
    asm volatile("" ::: "memory");  // not a tail call: this frame stays on the stack
    return trace;
}

TEST(serialize, a_trace_names_its_frames_and_is_the_same_for_each_failure_at_one_place) {
    // Symbols are looked up once per address and then reused: the second
    // trace from the same place must read exactly as the first.
    std::string traces[3];
    for (auto& t : traces) t = trace_of_a_failure_here();
    EXPECT_NE(traces[0].find("trace_of_a_failure_here"), std::string::npos) << traces[0];
    EXPECT_EQ(traces[0].rfind("  ", 0), 0u) << traces[0];
    EXPECT_NE(traces[0].find(") [0x"), std::string::npos) << traces[0];
    EXPECT_EQ(traces[1], traces[0]);
    EXPECT_EQ(traces[2], traces[0]);
}

TEST(serialize, registered_exceptions_keep_their_type_others_become_remote_error) {
    EXPECT_TRUE(mp::register_exception<my_error>());
    EXPECT_THROW(std::rethrow_exception(cross(my_error("mine"))), my_error);
    try {
        std::rethrow_exception(cross(unregistered_error("who knows")));
        FAIL() << "expected mp::remote_error";
    } catch (const mp::remote_error& e) {
        EXPECT_NE(e.type_name().find("unregistered_error"), std::string::npos) << e.type_name();
        EXPECT_EQ(e.message(), "who knows");
        EXPECT_FALSE(e.remote_trace().empty());
    }
    auto record = mp::detail::capture_exception(std::make_exception_ptr(42));
    EXPECT_EQ(record.type_name, "int");
}
