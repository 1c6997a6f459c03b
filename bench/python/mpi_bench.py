"""mpi4py.futures against which bench/mpi_bench.cpp measures mp::mpi_pool_executor.

Static mode, one worker rank, as mp's bench:
    mpiexec -n 2 /usr/bin/python3 -m mpi4py.futures bench/python/mpi_bench.py [--quick]
Prints "result <key> <value>" lines with the same keys as mpi_bench.
"""
import statistics
import sys
import time

from mpi4py.futures import MPIPoolExecutor


def inc(x):
    return x + 1


def echo(b):
    return b


def result(key, value):
    print(f"result {key} {value:.6g}", flush=True)


def main():
    quick = "--quick" in sys.argv
    reps = 1 if quick else 5
    rtt_calls = 200 if quick else 2000
    chunk1_items = 500 if quick else 5000
    chunk1000_items = 10_000 if quick else 1_000_000
    big = (1 << 20) if quick else (256 << 20)
    with MPIPoolExecutor(max_workers=1) as ex:
        ex.submit(inc, 1).result()
        rtts = []
        for _ in range(reps):
            t = time.perf_counter()
            for i in range(rtt_calls):
                ex.submit(inc, i).result()
            rtts.append((time.perf_counter() - t) / rtt_calls * 1e6)
        result("submit_rtt_us", statistics.median(rtts))
        rates = []
        for _ in range(reps):
            t = time.perf_counter()
            for _ in ex.map(inc, range(chunk1_items), chunksize=1):
                pass
            rates.append(chunk1_items / (time.perf_counter() - t))
        result("map_chunk1_per_s", statistics.median(rates))
        rates = []
        for _ in range(reps):
            t = time.perf_counter()
            for _ in ex.map(inc, range(chunk1000_items), chunksize=1000):
                pass
            rates.append(chunk1000_items / (time.perf_counter() - t))
        result("map_chunk1000_per_s", statistics.median(rates))
        payload = bytearray(big)
        rates = []
        for _ in range(max(1, reps // 2)):
            t = time.perf_counter()
            back = ex.submit(echo, payload).result()
            rates.append(2 * len(back) / (time.perf_counter() - t) / 1e9)
        result("big_roundtrip_gb_s", statistics.median(rates))


if __name__ == "__main__":
    main()
