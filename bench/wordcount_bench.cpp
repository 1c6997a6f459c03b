// wordcount_bench — a real workload: count the words of 64 MiB of generated
// text, in 64 chunks of 1 MiB, merging the per-chunk counts, three ways in
// the same run:
//
//   mp         mp::pool(2).imap_unordered(count_words, chunks), merged as
//              results arrive
//   threads    the same count_words on 2 std::threads taking chunks in turn,
//              each result merged under a mutex (what a C++ programmer would
//              write without processes)
//   CPython    multiprocessing.Pool(2).imap_unordered with Counter
//              (bench/python/wordcount.py, on the same text)
//
// The text: words drawn from a fixed vocabulary of 20,000 made-up words with
// a Zipf-like frequency (as in natural text), chunks cut at a space. Prints
// "result <key> <value>" lines (MiB/s, medians; for bench/run.py), then the
// table with ratios. --quick: 4 MiB; --reps N; --no-python.
#include <mp/pool.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include <unistd.h>

#include "bench_util.hpp"

#ifndef MP_BENCH_PYTHON_DIR
#define MP_BENCH_PYTHON_DIR "bench/python"
#endif

namespace {

using counts = std::unordered_map<std::string, int>;

counts count_words(const std::string& text) {
    counts c;
    std::string_view rest(text);
    while (!rest.empty()) {
        auto start = rest.find_first_not_of(" \n");
        if (start == std::string_view::npos) break;
        rest.remove_prefix(start);
        auto end = rest.find_first_of(" \n");
        if (end == std::string_view::npos) end = rest.size();
        ++c[std::string(rest.substr(0, end))];
        rest.remove_prefix(end);
    }
    return c;
}

void merge(counts& total, const counts& part) {
    for (const auto& [word, n] : part) total[word] += n;
}

// xorshift64*: the same text on every run.
struct rng {
    std::uint64_t s = 0x9E3779B97F4A7C15ull;
    std::uint64_t next() {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        return s * 2685821657736338717ull;
    }
    double unit() { return static_cast<double>(next() >> 11) / 9007199254740992.0; }
};

std::vector<std::string> make_chunks(std::size_t total_bytes, std::size_t chunk_bytes) {
    rng r;
    std::vector<std::string> vocabulary(20'000);
    for (auto& w : vocabulary) {
        std::size_t len = 2 + r.next() % 9;
        for (std::size_t i = 0; i < len; ++i) w.push_back(static_cast<char>('a' + r.next() % 26));
    }
    // Zipf-like: the k-th word about 1/k as frequent, by inverting a
    // continuous approximation of the harmonic CDF.
    const double n = static_cast<double>(vocabulary.size());
    auto pick = [&]() -> const std::string& {
        double k = std::exp(r.unit() * std::log(n + 1.0)) - 1.0;
        return vocabulary[std::min(vocabulary.size() - 1, static_cast<std::size_t>(k))];
    };
    std::vector<std::string> chunks;
    std::string chunk;
    chunk.reserve(chunk_bytes + 16);
    std::size_t produced = 0;
    while (produced < total_bytes) {
        const std::string& w = pick();
        chunk += w;
        chunk += ' ';
        if (chunk.size() >= chunk_bytes) {
            produced += chunk.size();
            chunks.push_back(std::move(chunk));
            chunk = std::string();
            chunk.reserve(chunk_bytes + 16);
        }
    }
    return chunks;
}

long total_words(const counts& c) {
    long n = 0;
    for (const auto& [w, k] : c) n += k;
    return n;
}

double run_mp(mp::pool& pool, const std::vector<std::string>& chunks, long expected_words) {
    counts total;
    double t = bench::seconds_of([&] {
        for (const counts& part : pool.imap_unordered(count_words, chunks)) merge(total, part);
    });
    if (total_words(total) != expected_words) std::abort();
    return t;
}

double run_threads(const std::vector<std::string>& chunks, long expected_words) {
    counts total;
    double t = bench::seconds_of([&] {
        std::atomic<std::size_t> next{0};
        std::mutex m;
        auto work = [&] {
            for (std::size_t i; (i = next.fetch_add(1)) < chunks.size();) {
                counts part = count_words(chunks[i]);
                std::lock_guard lock(m);
                merge(total, part);
            }
        };
        std::thread a(work), b(work);
        a.join();
        b.join();
    });
    if (total_words(total) != expected_words) std::abort();
    return t;
}

std::map<std::string, double> run_python(const bench::options& o, const std::string& text_path) {
    std::map<std::string, double> r;
    std::string cmd = "python3 " MP_BENCH_PYTHON_DIR "/wordcount.py --reps " + std::to_string(o.reps) + " " + text_path;
    bench::collect_results(cmd, r);
    return r;
}

// --breakdown: what one chunk costs, step by step, in this thread: counting
// it, and what carrying its result to another process adds (serializing the
// map, loading it back), beside merging it.
void print_breakdown(const std::vector<std::string>& chunks) {
    double count_s = 0, save_s = 0, load_s = 0, merge_s = 0, bytes = 0;
    counts total;
    for (const auto& chunk : chunks) {
        counts part;
        count_s += bench::seconds_of([&] { part = count_words(chunk); });
        mp::detail::output_archive out;
        save_s += bench::seconds_of([&] { mp::detail::save_value(out, part); });
        std::vector<std::byte> flat(out.size());
        out.copy_to(flat.data());
        bytes += static_cast<double>(flat.size());
        counts back;
        load_s += bench::seconds_of([&] {
            mp::detail::input_archive in(flat);
            back = mp::detail::load_value<counts>(in);
        });
        merge_s += bench::seconds_of([&] { merge(total, back); });
    }
    const double n = static_cast<double>(chunks.size());
    std::printf("per chunk: count %.2f ms, merge %.2f ms, serialize result %.2f ms, load result %.2f ms (%.0f KiB, %zu words in the vocabulary seen)\n",
                count_s / n * 1e3, merge_s / n * 1e3, save_s / n * 1e3, load_s / n * 1e3, bytes / n / 1024, total.size());
}

}  // namespace

int main(int argc, char** argv) {
    mp::init(argc, argv);
    auto o = bench::options::parse(argc, argv);
    bool python = true;
    for (int i = 1; i < argc; ++i)
        if (std::strcmp(argv[i], "--no-python") == 0) python = false;
    const std::size_t chunk_bytes = 1 << 20;
    const std::size_t total_bytes = (o.quick ? 4 : 64) * chunk_bytes;
    auto chunks = make_chunks(total_bytes, chunk_bytes);
    std::size_t bytes = 0;
    for (auto& c : chunks) bytes += c.size();
    const double mib = static_cast<double>(bytes) / (1 << 20);
    long expected = 0;
    {
        counts all;
        for (auto& c : chunks) merge(all, count_words(c));
        expected = total_words(all);
    }

    for (int i = 1; i < argc; ++i)
        if (std::strcmp(argv[i], "--breakdown") == 0) print_breakdown(chunks);

    mp::pool pool(2);
    (void)pool.map(count_words, std::vector<std::string>(4, "warm up"));
    std::vector<double> mp_t, thr_t;
    for (int rep = 0; rep < o.reps; ++rep) {  // interleaved: both see the same machine
        if (o.wants("mp")) mp_t.push_back(run_mp(pool, chunks, expected));
        if (o.wants("threads")) thr_t.push_back(run_threads(chunks, expected));
    }
    pool.close();
    pool.join();
    double mp_rate = mib / bench::median(mp_t), thr_rate = mib / bench::median(thr_t);
    bench::result("wordcount_mib_per_s", mp_rate);
    bench::result("wordcount_threads_mib_per_s", thr_rate);

    double py_rate = 0;
    if (python) {
        // The same text for CPython: one chunk per line.
        std::string path = "/tmp/mp-wordcount-" + std::to_string(::getpid()) + ".txt";
        {
            std::ofstream out(path, std::ios::binary);
            for (auto& c : chunks) out << c << '\n';
        }
        auto py = run_python(o, path);
        std::remove(path.c_str());
        if (auto it = py.find("wordcount_mib_per_s"); it != py.end()) py_rate = it->second;
        if (py_rate > 0) bench::result("wordcount_cpython_mib_per_s", py_rate);
    }
    std::printf("\n%-40s %10s %10s %10s %12s %12s\n", "word count, 2 workers (MiB/s, medians)", "mp", "2 threads",
                "CPython", "mp/threads", "mp/CPython");
    std::string label = std::to_string(chunks.size()) + " chunks of 1 MiB, imap_unordered";
    std::printf("%-40s %10.1f %10.1f %10.1f %11.2fx %11.1fx\n", label.c_str(), mp_rate, thr_rate, py_rate,
                mp_rate / thr_rate, py_rate > 0 ? mp_rate / py_rate : 0.0);
    std::printf("target: mp >= 0.95x the 2-thread version\n");
    return 0;
}
