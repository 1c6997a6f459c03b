#!/usr/bin/env python3
"""Runs every benchmark workload in mp and in CPython's multiprocessing, plus
the machine's raw limits, in one run, and prints the figures, their ratios and
the performance targets in one table.

    bench/run.py [--build-dir build/release] [--reps 3] [--quick] [--only GROUP ...]

GROUP (repeatable; default: all) is one of queue, pipe, start, big,
thread_pool, wordcount: e.g. `--only queue --reps 9` runs the queue rows
alone (mp, CPython, the raw ring and Boost message_queue), and the machine's
raw limits they are compared with.

bench/run.sh builds the release preset and calls this.
"""
import argparse
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def collect(cmd):
    """Runs cmd (progress on our stderr) and returns its "result key value" lines as a dict."""
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    figures = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "result":
            figures[parts[1]] = float(parts[2])
        else:
            print(line, file=sys.stderr)
    if proc.returncode != 0:
        print(f"bench: {cmd[0]} exited with status {proc.returncode}", file=sys.stderr)
    return figures, proc.returncode


def fmt(value, unit):
    if value is None:
        return "n/a"
    if unit == "msg/s":
        for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if value >= scale:
                return f"{value / scale:.3g} {prefix}msg/s"
        return f"{value:.3g} msg/s"
    return f"{value:.3g} {unit}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build-dir", default=os.path.join(HERE, "..", "build", "release"))
    parser.add_argument("--reps", type=int, default=3, help="repetitions per workload (medians are printed)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repetition: a smoke test")
    groups = ("queue", "pipe", "start", "big", "thread_pool", "wordcount")
    parser.add_argument("--only", action="append", choices=groups, default=[],
                        help="run only this group of workloads (repeatable)")
    args = parser.parse_args()
    wanted = lambda group: not args.only or group in args.only

    common = ["--quick"] if args.quick else ["--reps", str(args.reps)]
    bench_dir = os.path.join(args.build_dir, "bench")
    only = lambda names: sum((["--only", n] for n in names), [])
    # The raw limit each group is compared with, and its workloads in foundation_bench.
    raw_of = {"start": "fork", "pipe": "socketpair", "queue": "ring", "big": "memcpy"}
    mp_groups = [g for g in ("start", "queue", "pipe", "big") if wanted(g)]
    raw, rc1 = ({}, 0) if not mp_groups else collect(
        [os.path.join(bench_dir, "baselines")] + common + only([raw_of[g] for g in mp_groups]))
    mp, rc2 = ({}, 0) if not mp_groups else collect(
        [os.path.join(bench_dir, "foundation_bench")] + common + only(mp_groups))
    # mp::queue of fixed 64-byte messages against Boost.Interprocess
    # message_queue (the same workload): one repetition of each in turn, so
    # that both meet the same load on a shared machine; medians and spreads.
    pair = {"boost_mq_msgs_per_s": [], "queue_fixed_msgs_per_s": []}
    for _ in range(0 if not wanted("queue") else 1 if args.quick else args.reps):
        for prog, name in (("baselines", "boost_mq"), ("foundation_bench", "queue_fixed")):
            figures, rc = collect([os.path.join(bench_dir, prog), "--reps", "1"] +
                                  (["--quick"] if args.quick else []) + only([name]))
            rc1 = rc1 or rc
            for k, v in figures.items():
                pair.setdefault(k, []).append(v)
    for key, into in (("boost_mq_msgs_per_s", raw), ("queue_fixed_msgs_per_s", mp)):
        if pair[key]:
            into[key] = statistics.median(pair[key])
    py, rc3 = ({}, 0) if not mp_groups else collect(
        [sys.executable, os.path.join(HERE, "python", "foundation.py")] + common + only(mp_groups))
    # Thread pool against libthread-pool-dev, word count against 2 threads and
    # CPython: each program runs mp and its references in the same run.
    extra_rc = 0
    tp, wc = {}, {}
    for name, into in (("thread_pool_bench", tp), ("wordcount_bench", wc)):
        if not wanted(name.removesuffix("_bench")):
            continue
        path = os.path.join(bench_dir, name)
        if os.path.exists(path):
            figures, rc = collect([path] + common)
            into.update(figures)
            extra_rc = extra_rc or rc
        else:
            print(f"bench: {path} not built (thread_pool_bench needs libthread-pool-dev)", file=sys.stderr)

    # (workload, unit, mp key, reference label, reference value, ratio, ratio meaning, target, met)
    rows = []

    group = None  # the group of the rows added next

    def add(workload, unit, mp_value, ref_label, ref_value, ref_unit, ratio, meaning, target=None, ok=None):
        if not wanted(group):
            return
        rows.append((workload, fmt(mp_value, unit), ref_label, fmt(ref_value, ref_unit),
                     "n/a" if ratio is None else f"{ratio:.3g}", meaning,
                     target or "", "" if ok is None or ratio is None else ("yes" if ok(ratio) else "NO")))

    def div(a, b):
        return a / b if a is not None and b else None

    g = lambda d, k: d.get(k)
    version = f"CPython {sys.version_info.major}.{sys.version_info.minor}"

    group = "queue"
    q = g(mp, "queue_msgs_per_s")
    add("queue, 64 B messages", "msg/s", q, version, g(py, "queue_msgs_per_s"), "msg/s",
        div(q, g(py, "queue_msgs_per_s")), "mp/CPython", ">= 30", lambda r: r >= 30)
    add("", "msg/s", q, "raw shm ring", g(raw, "raw_ring_msgs_per_s"), "msg/s",
        div(q, g(raw, "raw_ring_msgs_per_s")), "mp/raw", ">= 0.25", lambda r: r >= 0.25)

    qf = g(mp, "queue_fixed_msgs_per_s")
    add("queue, fixed 64 B (array)", "msg/s", qf, "Boost message_queue", g(raw, "boost_mq_msgs_per_s"), "msg/s",
        div(qf, g(raw, "boost_mq_msgs_per_s")), "mp/Boost", ">= 1.5", lambda r: r >= 1.5)
    add("", "msg/s", qf, "raw shm ring", g(raw, "raw_ring_msgs_per_s"), "msg/s",
        div(qf, g(raw, "raw_ring_msgs_per_s")), "mp/raw", ">= 0.5", lambda r: r >= 0.5)

    group = "pipe"
    p = g(mp, "pipe_rtt_us")
    add("pipe round trip", "us", p, version, g(py, "pipe_rtt_us"), "us",
        div(g(py, "pipe_rtt_us"), p), "speed-up")
    add("", "us", p, "raw socketpair", g(raw, "raw_socketpair_rtt_us_median"), "us",
        div(p, g(raw, "raw_socketpair_rtt_us_median")), "mp/raw time", "<= 1.3", lambda r: r <= 1.3)

    group = "start"
    f = g(mp, "start_fork_ms")
    add("start+join, fork", "ms", f, version, g(py, "start_fork_ms"), "ms", div(g(py, "start_fork_ms"), f), "speed-up")
    add("", "ms", f, "bare fork", g(raw, "bare_fork_ms"), "ms", div(f, g(raw, "bare_fork_ms")), "mp/raw time",
        "<= 2", lambda r: r <= 2)
    for method in ("forkserver", "spawn"):
        k = f"start_{method}_ms"
        add(f"start+join, {method}", "ms", g(mp, k), version, g(py, k), "ms", div(g(py, k), g(mp, k)),
            "speed-up", ">= 20", lambda r: r >= 20)

    group = "big"
    b = g(mp, "big_result_gbps")
    add("256 MiB result", "GB/s", b, version + " Pool", g(py, "big_result_gbps"), "GB/s",
        div(b, g(py, "big_result_gbps")), "mp/CPython", ">= 5", lambda r: r >= 5)
    add("", "GB/s", b, "memcpy, fresh pages", g(raw, "memcpy_fresh_gbps"), "GB/s",
        div(b, g(raw, "memcpy_fresh_gbps")), "mp/raw", ">= 0.5", lambda r: r >= 0.5)

    a = g(mp, "big_array_gbps")
    add("256 MiB shared_array", "GB/s", a, "memcpy, fresh pages", g(raw, "memcpy_fresh_gbps"), "GB/s",
        div(a, g(raw, "memcpy_fresh_gbps")), "mp/raw", ">= 0.9", lambda r: r >= 0.9)

    group = "thread_pool"
    t = g(tp, "tiny_tasks_per_s")
    add("thread pool, 200k tiny tasks", "tasks/s", t, "libthread-pool-dev", g(tp, "tiny_tasks_ref_per_s"), "tasks/s",
        div(t, g(tp, "tiny_tasks_ref_per_s")), "mp/ref", ">= 1.5", lambda r: r >= 1.5)
    t = g(tp, "submit_rtt_us")
    add("thread pool submit().get()", "us", t, "libthread-pool-dev", g(tp, "submit_rtt_ref_us"), "us",
        div(g(tp, "submit_rtt_ref_us"), t), "speed-up", ">= 2", lambda r: r >= 2)

    group = "wordcount"
    w = g(wc, "wordcount_mib_per_s")
    add("word count, 64 x 1 MiB", "MiB/s", w, "2 std::threads", g(wc, "wordcount_threads_mib_per_s"), "MiB/s",
        div(w, g(wc, "wordcount_threads_mib_per_s")), "mp/threads", ">= 0.95", lambda r: r >= 0.95)
    add("", "MiB/s", w, version + " Pool", g(wc, "wordcount_cpython_mib_per_s"), "MiB/s",
        div(w, g(wc, "wordcount_cpython_mib_per_s")), "mp/CPython")

    header = ("workload", "mp", "compared with", "its figure", "ratio", "ratio is", "target", "met")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
    print()
    print(f"mp vs {version} multiprocessing (median of {1 if args.quick else args.reps} runs"
          f"{', QUICK: sizes too small to mean anything' if args.quick else ''})")
    print(line(header))
    print(line(["-" * w for w in widths]))
    for r in rows:
        print(line(r))

    if wanted("queue"):
        print()
        print("mp fixed 64 B vs Boost message_queue, runs taken in turn (msg/s, each run's figure):")
        for key in ("queue_fixed_msgs_per_s", "boost_mq_msgs_per_s"):
            print(f"  {key:<26} " + " ".join(fmt(v, "msg/s") for v in pair[key]))
    print()
    print("raw limits of this machine (same run)")
    for key, label, unit, group in (
            ("raw_socketpair_rtt_us_median", "socketpair ping-pong, median", "us", "pipe"),
            ("raw_socketpair_rtt_us_best", "socketpair ping-pong, best", "us", "pipe"),
            ("raw_ring_msgs_per_s", "shm SPSC ring, 64 B", "msg/s", "queue"),
            ("boost_mq_msgs_per_s", "Boost message_queue, 64 B", "msg/s", "queue"),
            ("memcpy_warm_gbps", "memcpy 256 MiB, warm", "GB/s", "big"),
            ("memcpy_fresh_gbps", "memcpy 256 MiB, fresh pages", "GB/s", "big"),
            ("bare_fork_ms", "fork + _exit + waitpid", "ms", "start")):
        if wanted(group):
            print(f"  {label:<32} {fmt(raw.get(key), unit)}")

    failed = [r for r in rows if r[7] == "NO"]
    print()
    print(f"{sum(1 for r in rows if r[7] == 'yes')} targets met, {len(failed)} missed"
          f"{', ' + str(sum(1 for r in rows if r[6] and r[4] == 'n/a')) + ' not measured' if any(r[6] and r[4] == 'n/a' for r in rows) else ''}")
    return 1 if (rc1 or rc2 or rc3 or extra_rc) else 0


if __name__ == "__main__":
    sys.exit(main())
