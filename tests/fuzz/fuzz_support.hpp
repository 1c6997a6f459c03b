// fuzz_support.hpp — what every fuzz target shares.
//
// A decoder meets bytes it did not write, so for any input it must either
// produce a value or refuse with mp::serialization_error (SPEC §4: "a corrupt
// or truncated message is an mp::serialization_error ... never a crash or a
// hang"). A target therefore lets that one exception go and lets everything
// else escape: an uncaught exception aborts, and libFuzzer keeps the input
// as a crash, like a sanitizer report or a timeout.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <vector>

#include "mp/detail/archive.hpp"
#include "mp/error.hpp"
#include "mp/serialize.hpp"

namespace mp_fuzz {

inline std::span<const std::byte> as_bytes(const std::uint8_t* data, std::size_t size) {
    return {reinterpret_cast<const std::byte*>(data), size};
}

/// Runs `decode`; true if it produced a value, false if it refused the
/// input with mp::serialization_error. Anything else propagates.
template <class F>
bool decoded(F&& decode) {
    try {
        decode();
        return true;
    } catch (const mp::serialization_error&) {
        return false;
    }
}

/// The whole message `ar` as one flat buffer (borrowed blocks included).
inline std::vector<std::byte> flatten(const mp::detail::output_archive& ar) {
    std::vector<std::byte> out(ar.size());
    ar.copy_to(out.data());
    return out;
}

template <class T>
std::vector<std::byte> encode(const T& value) {
    mp::detail::output_archive ar;
    mp::detail::save_value(ar, value);
    return flatten(ar);
}

/// A broken promise of the code under test that is not a crash: say what,
/// then abort so that libFuzzer records the input.
[[noreturn]] inline void fail(const char* what) {
    std::fprintf(stderr, "mp fuzz: %s\n", what);
    std::abort();
}

}  // namespace mp_fuzz

#include <filesystem>
#include <fstream>
#include <string>

namespace mp_fuzz {

/// The seed corpora in tests/fuzz/corpus/<target>/ are written by the
/// targets themselves, with mp's own encoders: run a target with
/// MP_FUZZ_WRITE_SEEDS=<dir> and it writes its seeds there and exits
/// (scripts/run-fuzz.sh --write-seeds does this for every target).
inline const char* seed_dir() { return std::getenv("MP_FUZZ_WRITE_SEEDS"); }

inline void write_seed(const std::string& name, std::span<const std::byte> bytes) {
    std::filesystem::path dir = seed_dir();
    std::filesystem::create_directories(dir);
    std::ofstream out(dir / name, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    if (!out) fail("cannot write a seed file");
}

/// [prefix...][bytes]
inline std::vector<std::byte> prefixed(std::initializer_list<std::uint8_t> prefix, std::span<const std::byte> bytes) {
    std::vector<std::byte> out;
    for (auto b : prefix) out.push_back(static_cast<std::byte>(b));
    out.insert(out.end(), bytes.begin(), bytes.end());
    return out;
}

/// Defined by each target: writes its seed corpus with mp's own encoders
/// (write_seed), then the process exits without fuzzing.
void write_seeds();

/// What every input of a target shares, made once before the first input (a
/// server, a mapped ring, a connection), so that an input pays only for its
/// own work. Optional: a target that needs it defines it (declared weak, as
/// libFuzzer declares LLVMFuzzerInitialize, so that it is null otherwise).
[[gnu::weak]] void set_up();

}  // namespace mp_fuzz

// Every target's libFuzzer initialisation: seeds when asked, else set-up.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
    if (mp_fuzz::seed_dir()) {
        mp_fuzz::write_seeds();
        std::exit(0);
    }
    if (mp_fuzz::set_up) mp_fuzz::set_up();
    return 0;
}
