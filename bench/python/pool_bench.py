"""CPython's multiprocessing.Pool and ProcessPoolExecutor on the workloads of
bench/pool_bench.cpp (same keys, same sizes, 2 workers).

Prints "result <key> <value>" lines on stdout, progress on stderr.
"""
import argparse
import concurrent.futures
import multiprocessing
import sys
import time


def result(key, value):
    print(f"result {key} {value:.6g}", flush=True)


def inc(x):
    return x + 1


def cpu_task(n):
    a, b, c = 1.0, 1.000000001, 1e-9
    for _ in range(n):
        a = a * b + c
    return a


def seconds_of(f):
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", action="append", default=[])
    a = ap.parse_args()
    reps = 1 if a.quick else max(1, min(a.reps, 3))
    wants = lambda w: not a.only or w in a.only
    if a.quick:
        map_items, chunk1, rtt, exmap, cpu_n, cpu_tasks = 20_000, 2_000, 200, 20_000, 20_000, 4
    else:
        # CPython is slow on these: smaller sizes keep the run short; rates
        # do not depend on the size.
        map_items, chunk1, rtt, exmap, cpu_n, cpu_tasks = 1_000_000, 100_000, 2_000, 1_000_000, 2_000_000, 8
    items = list(range(map_items))
    with multiprocessing.Pool(2) as pool:
        pool.map(inc, [1] * 1000)
        if wants("map_default"):
            rates = [map_items / seconds_of(lambda: pool.map(inc, items)) for _ in range(reps)]
            result("map_default_items_per_s", max(rates))
        if wants("map_chunk1"):
            few = items[:chunk1]
            rates = [chunk1 / seconds_of(lambda: pool.map(inc, few, 1)) for _ in range(reps)]
            result("map_chunk1_tasks_per_s", max(rates))
        if wants("apply_rtt"):
            def loop():
                for k in range(rtt):
                    pool.apply_async(inc, (k,)).get()
            us = [seconds_of(loop) / rtt * 1e6 for _ in range(reps)]
            result("apply_rtt_us", min(us))
        if wants("cpu_speedup"):
            ns = [cpu_n] * cpu_tasks
            seq = seconds_of(lambda: [cpu_task(n) for n in ns])
            par = min(seconds_of(lambda: pool.map(cpu_task, ns, 1)) for _ in range(1))
            result("cpu_speedup", seq / par)
    with concurrent.futures.ProcessPoolExecutor(2) as ex:
        ex.submit(inc, 1).result()
        if wants("submit_rtt"):
            def loop():
                for k in range(rtt):
                    ex.submit(inc, k).result()
            us = [seconds_of(loop) / rtt * 1e6 for _ in range(reps)]
            result("submit_rtt_us", min(us))
        if wants("exmap_chunk1000"):
            xs = items[:exmap]
            rates = [exmap / seconds_of(lambda: list(ex.map(inc, xs, chunksize=1000))) for _ in range(reps)]
            result("exmap_chunk1000_items_per_s", max(rates))


if __name__ == "__main__":
    multiprocessing.freeze_support()
    main()
