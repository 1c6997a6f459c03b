// bench_util.hpp — timing and reporting shared by the bench programs.
//
// Each program prints one line per figure on stdout, "result <key> <value>",
// which bench/run.py collects; progress goes to stderr.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

namespace bench {

using clock = std::chrono::steady_clock;

/// Seconds since the steady clock's epoch (CLOCK_MONOTONIC on Linux, the same
/// clock as Python's time.monotonic(), and the same in every process).
inline double now_seconds() {
    return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

/// Wall time of f(), in seconds.
template <class F>
double seconds_of(F&& f) {
    auto t0 = clock::now();
    f();
    return std::chrono::duration<double>(clock::now() - t0).count();
}

inline double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    if (v.empty()) return 0;
    auto n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

inline double best_low(const std::vector<double>& v) { return v.empty() ? 0 : *std::min_element(v.begin(), v.end()); }
inline double best_high(const std::vector<double>& v) { return v.empty() ? 0 : *std::max_element(v.begin(), v.end()); }

inline void result(const char* key, double value) {
    std::printf("result %s %.6g\n", key, value);
    std::fflush(stdout);
}

inline void progress(const std::string& what) {
    std::fprintf(stderr, "  %s\n", what.c_str());
}

/// Each repetition's figure, in order, on stderr (the spread behind a median).
inline void progress_figures(const char* key, const std::vector<double>& figures) {
    std::string line = std::string("    ") + key + " each run:";
    for (double f : figures) {
        char buf[32];
        std::snprintf(buf, sizeof buf, " %.4g", f);
        line += buf;
    }
    std::fprintf(stderr, "%s\n", line.c_str());
}

/// Runs `command` (a reference: a Python script, another bench process) and
/// adds the "result <key> <value>" lines it prints to `into`.
inline void collect_results(const std::string& command, std::map<std::string, double>& into) {
    FILE* p = ::popen(command.c_str(), "r");
    if (!p) return;
    char line[512];
    while (std::fgets(line, sizeof line, p)) {
        char key[256];
        double value = 0;
        if (std::sscanf(line, "result %255s %lf", key, &value) == 2) into[key] = value;
    }
    ::pclose(p);
}

/// Command-line options every bench program takes.
struct options {
    bool quick = false;  // tiny sizes, one repetition: a smoke test, not a measurement
    int reps = 5;
    std::vector<std::string> only;  // workloads to run; empty = all

    static options parse(int argc, char** argv) {
        options o;
        for (int i = 1; i < argc; ++i) {
            if (std::strcmp(argv[i], "--quick") == 0) {
                o.quick = true;
                o.reps = 1;
            } else if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
                o.reps = std::max(1, std::atoi(argv[++i]));
            } else if (std::strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
                o.only.emplace_back(argv[++i]);
            }
        }
        return o;
    }

    [[nodiscard]] bool wants(const char* workload) const {
        return only.empty() || std::find(only.begin(), only.end(), workload) != only.end();
    }
};

constexpr double gigabyte = 1e9;

}  // namespace bench
