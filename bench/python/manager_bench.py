"""CPython's multiprocessing.managers on the workloads of bench/manager_bench.cpp.

Prints "result <key> <value>" lines on stdout (the keys manager_bench.cpp
reads), progress on stderr. Run by bench/manager_bench (which prints both and
their ratio); --quick for a smoke test.
"""
import argparse
import multiprocessing
import statistics
import sys
import time
from multiprocessing.managers import BaseManager, SyncManager


class Adder:
    def add(self, a, b):
        return a + b


class BenchManager(SyncManager):
    pass


BenchManager.register("Adder", Adder)


def result(key, value):
    print(f"result {key} {value:.6g}", flush=True)


def progress(what):
    print(f"  {what}", file=sys.stderr, flush=True)


def dict_pairs(m, pairs):
    d = m.dict()
    t = []
    clock = time.perf_counter
    for i in range(pairs):
        t0 = clock()
        d[i] = i
        t1 = clock()
        if d.get(i) != i:
            raise RuntimeError("dict bench: wrong value")
        t2 = clock()
        t.append(t1 - t0)
        t.append(t2 - t1)
    return statistics.median(t) * 1e6


def method_calls(m, calls):
    a = m.Adder()
    t = []
    clock = time.perf_counter
    for i in range(calls):
        t0 = clock()
        if a.add(i, 1) != i + 1:
            raise RuntimeError("method bench: wrong result")
        t.append(clock() - t0)
    return statistics.median(t) * 1e6


def client(a, calls, times, go):
    a.add(0, 0)
    times.put((0.0, 0.0))
    go.wait()
    start = time.monotonic()
    for i in range(calls):
        if a.add(i, 1) != i + 1:
            raise RuntimeError("clients bench: wrong result")
    times.put((start, time.monotonic()))


def clients_throughput(m, ctx, clients, total):
    a = m.Adder()
    times = ctx.Queue()
    go = ctx.Event()
    ps = [ctx.Process(target=client, args=(a, total // clients, times, go)) for _ in range(clients)]
    for p in ps:
        p.start()
    for _ in range(clients):
        times.get()
    go.set()
    spans = [times.get() for _ in range(clients)]
    for p in ps:
        p.join()
    first = min(s for s, _ in spans)
    last = max(e for _, e in spans)
    return (total // clients) * clients / (last - first)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    reps = 1 if args.quick else args.reps
    n = 500 if args.quick else 10000
    ctx = multiprocessing.get_context("fork")
    m = BenchManager(ctx=ctx)
    m.start()
    figures = {k: [] for k in ("dict_call_us", "method_call_us", "clients_1_calls_per_s", "clients_16_calls_per_s")}
    for rep in range(reps):
        progress(f"CPython rep {rep + 1}")
        figures["dict_call_us"].append(dict_pairs(m, n))
        figures["method_call_us"].append(method_calls(m, n))
        figures["clients_1_calls_per_s"].append(clients_throughput(m, ctx, 1, n))
        figures["clients_16_calls_per_s"].append(clients_throughput(m, ctx, 16, n))
    for key, values in figures.items():
        result(key, statistics.median(values))
    m.shutdown()


if __name__ == "__main__":
    main()
