// tests/soak/soak_support.hpp — what the soaks share: their length and seed,
// read from the environment, and a small deterministic hash.
//
//   MP_SOAK_SECONDS  length of each soak in seconds (default: the CI length
//                    the test passes in, about 20–25 s)
//   MP_SOAK_SEED     seed of the random choices (default: from the clock);
//                    every soak prints the seed it used, so a failure can be
//                    replayed: MP_SOAK_SEED=<seed> ./pool_soak_test
// Kills land at times the scheduler decides, so a replay repeats the choices
// (which items fail, which sizes, which victim), not the exact interleaving.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace soak {

inline std::chrono::seconds seconds_from_env(int ci_default) {
    const char* s = std::getenv("MP_SOAK_SECONDS");
    int n = s ? std::atoi(s) : 0;
    return std::chrono::seconds(n > 0 ? n : ci_default);
}

inline std::uint64_t seed_from_env() {
    if (const char* s = std::getenv("MP_SOAK_SEED")) return std::strtoull(s, nullptr, 10);
    return static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
}

/// splitmix64: a good 64-bit mix, the same in every process.
constexpr std::uint64_t mix(std::uint64_t x) noexcept {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/// The figures of a run, printed so that CI logs and long runs by hand show them.
inline void report(const std::string& line) { std::fprintf(stderr, "[soak] %s\n", line.c_str()); }

}  // namespace soak
