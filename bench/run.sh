#!/usr/bin/env bash
# run.sh — builds the release preset and runs every benchmark workload in mp
# and in CPython's multiprocessing, printing both figures, their ratio and the
# targets in one table. Takes a few minutes. Arguments go to bench/run.py
# (--reps N, --quick).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release -j 2 --target baselines foundation_bench wordcount_bench
# thread_pool_bench exists when libthread-pool-dev is installed.
cmake --build --preset release -j 2 --target thread_pool_bench || true
# Managers: mp and CPython in one command, their table on stderr.
cmake --build --preset release -j 2 --target manager_bench
build/release/bench/manager_bench "$@" >/dev/null
# Pool and executor: mp and CPython in one command, their table on stdout.
cmake --build --preset release -j 2 --target pool_bench
build/release/bench/pool_bench "$@"
exec python3 bench/run.py --build-dir build/release "$@"
