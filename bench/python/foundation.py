"""CPython's multiprocessing on the workloads of bench/foundation_bench.cpp.

Prints "result <key> <value>" lines on stdout (the same keys as the C++
program), progress on stderr. Run by bench/run.py; --quick for a smoke test.
"""
import argparse
import array
import multiprocessing
import statistics
import sys
import time

MESSAGE = b"x" * 64


def result(key, value):
    print(f"result {key} {value:.6g}", flush=True)


def progress(what):
    print(f"  {what}", file=sys.stderr, flush=True)


def produce(q, count):
    for _ in range(count):
        q.put(MESSAGE)


def echo(conn, round_trips):
    for _ in range(round_trips):
        conn.send(conn.recv() + 1)


def noop():
    pass


def return_big(doubles):
    data = array.array("d", bytes(doubles * 8))
    data[-1] = 1.0
    data[0] = time.monotonic()  # the clock starts when the data is ready
    return data


def queue_throughput(reps, count):
    ctx = multiprocessing.get_context("fork")
    rates = []
    for _ in range(reps):
        q = ctx.Queue()
        producer = ctx.Process(target=produce, args=(q, count))
        t0 = time.perf_counter()
        producer.start()
        get = q.get
        for _ in range(count):
            if len(get()) != 64:
                raise RuntimeError("queue bench: wrong message")
        s = time.perf_counter() - t0
        producer.join()
        rates.append(count / s)
    result("queue_msgs_per_s", statistics.median(rates))


def pipe_round_trip(reps, round_trips):
    ctx = multiprocessing.get_context("fork")
    per_rep_us = []
    for _ in range(reps):
        a, b = ctx.Pipe()
        child = ctx.Process(target=echo, args=(b, round_trips))
        child.start()
        a.send(-1)
        if a.recv() != 0:
            raise RuntimeError("pipe bench: wrong echo")
        send, recv = a.send, a.recv
        t0 = time.perf_counter()
        for i in range(1, round_trips):
            send(i)
            if recv() != i + 1:
                raise RuntimeError("pipe bench: wrong echo")
        s = time.perf_counter() - t0
        child.join()
        a.close()
        b.close()
        per_rep_us.append(s / (round_trips - 1) * 1e6)
    result("pipe_rtt_us", statistics.median(per_rep_us))


def process_start(reps, method, starts):
    ctx = multiprocessing.get_context(method)
    warm = ctx.Process(target=noop)  # a forkserver starts on first use
    warm.start()
    warm.join()
    per_rep_ms = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(starts):
            p = ctx.Process(target=noop)
            p.start()
            p.join()
            if p.exitcode != 0:
                raise RuntimeError("start bench: child failed")
        per_rep_ms.append((time.perf_counter() - t0) / starts * 1e3)
    result(f"start_{method}_ms", statistics.median(per_rep_ms))


def big_result(reps, nbytes):
    doubles = nbytes // 8
    gbps = []
    with multiprocessing.get_context("fork").Pool(1) as pool:
        for _ in range(reps):
            data = pool.apply(return_big, (doubles,))
            elapsed = time.monotonic() - data[0]
            if len(data) != doubles or data[-1] != 1.0:
                raise RuntimeError("big result bench: wrong data")
            del data
            gbps.append(nbytes / elapsed / 1e9)
    result("big_result_gbps", statistics.median(gbps))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--only", action="append", default=[])
    args = parser.parse_args()
    reps = 1 if args.quick else max(1, args.reps)
    quick = args.quick

    def wants(w):
        return not args.only or w in args.only

    if wants("start"):
        for method, starts in (("fork", 5 if quick else 100), ("forkserver", 5 if quick else 50),
                               ("spawn", 3 if quick else 20)):
            progress(f"CPython: process start + join, {method}")
            process_start(reps, method, starts)
    if wants("queue"):
        progress("CPython: queue throughput, 64-byte bytes")
        queue_throughput(reps, 10_000 if quick else 1_000_000)
    if wants("pipe"):
        progress("CPython: pipe round trip")
        pipe_round_trip(reps, 1_000 if quick else 100_000)
    if wants("big"):
        progress("CPython: 256 MiB result from a Pool worker")
        big_result(reps, (8 << 20) if quick else (256 << 20))


if __name__ == "__main__":
    main()
