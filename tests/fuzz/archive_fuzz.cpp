// fuzz_archive — input_archive over arbitrary bytes, as every type SPEC §2
// lets cross a process boundary, and the exception record.
//
// Input: [u8 which type][the message body]. A value that decodes must also
// survive the encoder: encode(v) decodes again, and (for types whose
// encoding does not depend on hash order) re-encodes to the same bytes.
#include <array>
#include <chrono>
#include <complex>
#include <deque>
#include <list>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include "fuzz_support.hpp"
#include "mp/function.hpp"
#include "mp/manager.hpp"

namespace {

enum class colour : std::uint8_t { red, green, blue };
enum plain_enum : std::int32_t { plain_a = 1, plain_b = 7 };

// A user type following cereal's conventions, nesting standard ones.
struct user_record {
    std::string name;
    std::vector<std::pair<std::int32_t, double>> points;
    std::optional<std::map<std::string, std::vector<std::string>>> tags;
    colour c = colour::red;

    template <class Archive>
    void serialize(Archive& ar) {
        ar(name, points, tags, c);
    }
};

// Round-trip through bytes is checked unless the encoding depends on hash
// order (unordered containers), holds padding (long double: 10 bytes of value
// in 16, the other 6 are whatever the register spill left), or the value is
// a code address (mp::function: see code_ref_fuzz.cpp).
template <class T>
inline constexpr bool stable_encoding = true;
template <class K, class V>
inline constexpr bool stable_encoding<std::unordered_map<K, V>> = false;
template <class K>
inline constexpr bool stable_encoding<std::unordered_set<K>> = false;
template <class S>
inline constexpr bool stable_encoding<mp::function<S>> = false;
template <>
inline constexpr bool stable_encoding<long double> = false;

template <class T>
void check(std::span<const std::byte> body) {
    T value;
    bool ok = mp_fuzz::decoded([&] {
        mp::detail::input_archive in(body);
        value = mp::detail::load_value<T>(in);
    });
    if (!ok || !stable_encoding<T>) return;
    auto first = mp_fuzz::encode(value);
    T again;
    if (!mp_fuzz::decoded([&] {
            mp::detail::input_archive in(first);
            again = mp::detail::load_value<T>(in);
        }))
        mp_fuzz::fail("a value that decoded does not decode again after being encoded");
    if (mp_fuzz::encode(again) != first) mp_fuzz::fail("re-encoding a decoded value gave other bytes");
}

// The exception record: decoded, then rebuilt into an exception and thrown,
// as a pool does with a failed task's result.
void check_exception(std::span<const std::byte> body) {
    mp::detail::exception_record record;
    if (!mp_fuzz::decoded([&] {
            mp::detail::input_archive in(body);
            record = mp::detail::load_value<mp::detail::exception_record>(in);
        }))
        return;
    auto e = mp::detail::rebuild_exception(record);
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& caught) {
        volatile auto first = caught.what()[0];
        (void)first;
    }
}

using types = std::tuple<
    bool, char, signed char, unsigned char, std::int16_t, std::uint16_t, std::int32_t, std::uint32_t, std::int64_t,
    std::uint64_t, float, double, long double, colour, plain_enum, std::string, std::vector<std::int32_t>,
    std::vector<double>, std::vector<bool>, std::vector<std::string>, std::vector<std::vector<std::uint8_t>>,
    std::array<std::int64_t, 3>, std::array<std::string, 2>, std::deque<std::string>, std::list<std::int16_t>,
    std::map<std::string, std::int32_t>, std::map<std::int32_t, std::vector<std::string>>,
    std::unordered_map<std::string, double>, std::set<std::int32_t>, std::set<std::string>,
    std::unordered_set<std::uint64_t>, std::pair<std::int32_t, std::string>,
    std::tuple<std::int32_t, double, std::string, bool>, std::tuple<>, std::optional<std::string>,
    std::optional<std::vector<double>>, std::variant<std::int32_t, std::string, std::vector<double>>,
    std::variant<std::monostate, bool, std::map<std::string, std::string>>, std::complex<double>,
    std::complex<float>, std::chrono::milliseconds, std::chrono::duration<double>, std::chrono::nanoseconds,
    mp::function<int(int)>, mp::function<std::string(const std::string&, double)>, user_record,
    std::vector<user_record>, mp::address, mp::detail::code_ref>;

template <std::size_t... I>
void dispatch(std::size_t which, std::span<const std::byte> body, std::index_sequence<I...>) {
    ((which == I ? check<std::tuple_element_t<I, types>>(body) : void()), ...);
}

int twice(int x) { return 2 * x; }
std::string describe(const std::string& s, double d) { return s + std::to_string(d); }

// A value of T with some content, for the seeds.
template <class T>
T sample() {
    T v{};
    if constexpr (std::is_same_v<T, std::string>) v = "hello, mp";
    else if constexpr (std::is_same_v<T, std::vector<std::int32_t>>) v = {1, -2, 3, 1 << 30};
    else if constexpr (std::is_same_v<T, std::vector<double>>) v = {0.5, -1e300, 3};
    else if constexpr (std::is_same_v<T, std::vector<bool>>) v = {true, false, true};
    else if constexpr (std::is_same_v<T, std::vector<std::string>>) v = {"a", "", "ccc"};
    else if constexpr (std::is_same_v<T, std::map<std::string, std::int32_t>>) v = {{"one", 1}, {"two", 2}};
    else if constexpr (std::is_same_v<T, std::map<std::int32_t, std::vector<std::string>>>) v = {{1, {"x", "y"}}};
    else if constexpr (std::is_same_v<T, std::unordered_map<std::string, double>>) v = {{"pi", 3.14}};
    else if constexpr (std::is_same_v<T, std::set<std::string>>) v = {"b", "a"};
    else if constexpr (std::is_same_v<T, std::pair<std::int32_t, std::string>>) v = {7, "seven"};
    else if constexpr (std::is_same_v<T, std::tuple<std::int32_t, double, std::string, bool>>) v = {1, 2.5, "t", true};
    else if constexpr (std::is_same_v<T, std::optional<std::string>>) v = "present";
    else if constexpr (std::is_same_v<T, std::variant<std::int32_t, std::string, std::vector<double>>>) v = std::vector<double>{1, 2};
    else if constexpr (std::is_same_v<T, std::variant<std::monostate, bool, std::map<std::string, std::string>>>) v = std::map<std::string, std::string>{{"k", "v"}};
    else if constexpr (std::is_same_v<T, mp::function<int(int)>>) v = &twice;
    else if constexpr (std::is_same_v<T, mp::function<std::string(const std::string&, double)>>) v = &describe;
    else if constexpr (std::is_same_v<T, user_record>) v = {"rec", {{1, 0.5}, {2, 1.5}}, std::map<std::string, std::vector<std::string>>{{"t", {"u"}}}, colour::blue};
    else if constexpr (std::is_same_v<T, std::vector<user_record>>) v = {sample<user_record>(), {}};
    else if constexpr (std::is_same_v<T, mp::address>) v = mp::tcp_address{"127.0.0.1", 50000};
    else if constexpr (std::is_same_v<T, mp::detail::code_ref>) v = mp::detail::code_ref_of(&twice);
    return v;
}

template <std::size_t... I>
void write_type_seeds(std::index_sequence<I...>) {
    (mp_fuzz::write_seed("type-" + std::to_string(I),
                         mp_fuzz::prefixed({static_cast<std::uint8_t>(I)},
                                           mp_fuzz::encode(sample<std::tuple_element_t<I, types>>()))),
     ...);
    mp::detail::exception_record record{"std::invalid_argument", "bad argument", "#0 main", 0};
    mp_fuzz::write_seed("exception", mp_fuzz::prefixed({std::tuple_size_v<types>}, mp_fuzz::encode(record)));
    record = {"mp::system_error", "open failed", "", 2};
    mp_fuzz::write_seed("exception-system", mp_fuzz::prefixed({std::tuple_size_v<types>}, mp_fuzz::encode(record)));
}

}  // namespace

namespace mp_fuzz {

void write_seeds() { write_type_seeds(std::make_index_sequence<std::tuple_size_v<types>>{}); }

}  // namespace mp_fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    constexpr std::size_t n = std::tuple_size_v<types>;
    std::size_t which = data[0] % (n + 1);
    auto body = mp_fuzz::as_bytes(data + 1, size - 1);
    if (which == n)
        check_exception(body);
    else
        dispatch(which, body, std::make_index_sequence<n>{});
    return 0;
}
