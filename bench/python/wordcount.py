"""wordcount.py -- the CPython counterpart of bench/wordcount_bench.cpp.

Counts the words of a text file (one chunk per line, written by
wordcount_bench) with multiprocessing.Pool(2).imap_unordered, merging the
per-chunk Counters as they arrive. Prints "result wordcount_mib_per_s <median>".

    python3 wordcount.py [--reps N] TEXT_FILE
"""
import argparse
import collections
import multiprocessing
import statistics
import time


def count_words(chunk):
    return collections.Counter(chunk.split())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("path")
    args = parser.parse_args()
    with open(args.path, "r", encoding="ascii") as f:
        chunks = f.read().split("\n")
    chunks = [c for c in chunks if c]
    mib = sum(len(c) for c in chunks) / (1 << 20)
    times = []
    with multiprocessing.Pool(2) as pool:
        pool.map(count_words, ["warm up"] * 4)
        for _ in range(args.reps):
            t0 = time.perf_counter()
            total = collections.Counter()
            for part in pool.imap_unordered(count_words, chunks):
                total.update(part)
            times.append(time.perf_counter() - t0)
    print("result wordcount_mib_per_s %.6g" % (mib / statistics.median(times)), flush=True)


if __name__ == "__main__":
    main()
