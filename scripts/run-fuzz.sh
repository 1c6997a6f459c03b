#!/usr/bin/env bash
# run-fuzz.sh — builds the libFuzzer targets (tests/fuzz, preset `fuzz`) and
# runs each for N seconds over its seed corpus, two at a time.
#
#   scripts/run-fuzz.sh [SECONDS]        default 60 per target
#   scripts/run-fuzz.sh --write-seeds    regenerate tests/fuzz/corpus/* with the targets' own encoders
#                                        (the regression-* seeds, former findings, and the found-*
#                                        inputs kept from long runs stay)
#   scripts/run-fuzz.sh --replay DIR...  run each target over its files <target>-* in DIR (e.g.
#                                        tests/fuzz/crashes), no fuzzing
#   scripts/run-fuzz.sh --long RUNS [SECONDS] [TARGET...]
#                                        the long run by hand: one target at a time (all by
#                                        default), under `nice -n 19` (a shared machine's builds
#                                        keep priority), each until RUNS executions or SECONDS
#                                        (default 86400); prints executions, exec/s, cov, ft,
#                                        time and findings per target
#
# Fails (exit 1) if any target crashes, leaks, exceeds the memory limit or
# times out on an input; the input is kept under build/fuzz/artifacts/ and
# its path printed. Prints, per target, executions, executions per second
# and coverage (libFuzzer's "cov:", edges reached). New inputs found go to
# build/fuzz/corpus-work/, never into the committed seeds.
#
# Limits, per target process:
# - -rss_limit_mb=2048 and -malloc_limit_mb=512: no input of at most
#   -max_len (4 KiB) bytes has a reason to make a decoder allocate 512 MiB
#   at once, so that is reported as a finding, not paid for in swap.
# - -timeout=25: one input that runs longer is a hang (generous: the machine
#   is shared and the targets are built with sanitizers).
set -uo pipefail
cd "$(dirname "$0")/.."

mode=fuzz
seconds=60
targets=(archive pipe_frame queue_record worker_message code_ref manager_handshake manager_request proxy mpi_message)
replay=()
case "${1:-}" in
  --write-seeds) mode=seeds ;;
  --replay) mode=replay; shift; replay=("$@") ;;
  --long)
    mode=long
    long_runs=${2:?"--long needs a number of executions"}
    long_seconds=86400
    shift 2
    if [[ "${1:-}" =~ ^[0-9]+$ ]]; then long_seconds=$1; shift; fi
    [ $# -gt 0 ] && targets=("$@")
    ;;
  "") ;;
  *) seconds=$1 ;;
esac

build=build/fuzz

echo "==== fuzz: configure and build"
if ! cmake --preset fuzz >/dev/null || ! cmake --build --preset fuzz -j 2 >/dev/null; then
  echo "run-fuzz: the fuzz preset did not build (needs clang++-14 and libclang-rt-14-dev)"
  exit 1
fi
bin=$build/tests/fuzz

# The fuzzer's own sanitizer settings, whatever the caller exported for the
# test suite (which turns off the SEGV handler that reports a crash's stack).
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

if [ "$mode" = seeds ]; then
  for t in "${targets[@]}"; do
    # Former findings and inputs kept from long runs stay: they are not the encoders' output.
    [ -d "tests/fuzz/corpus/$t" ] && find "tests/fuzz/corpus/$t" -type f ! -name 'regression-*' ! -name 'found-*' -delete
    MP_FUZZ_WRITE_SEEDS="tests/fuzz/corpus/$t" "$bin/fuzz_$t" || { echo "run-fuzz: $t did not write its seeds"; exit 1; }
    echo "$t: $(ls "tests/fuzz/corpus/$t" | wc -l) seeds"
  done
  exit 0
fi

if [ "$mode" = replay ]; then
  status=0
  for t in "${targets[@]}"; do
    files=()
    for d in "${replay[@]}"; do
      for f in "$d"/"$t"-*; do [ -f "$f" ] && files+=("$f"); done
    done
    [ ${#files[@]} -eq 0 ] && continue
    for f in "${files[@]}"; do
      if "$bin/fuzz_$t" -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=25 "$f" >"$build/replay.log" 2>&1; then
        echo "$t: $(basename "$f"): passes"
      else
        echo "$t: $(basename "$f"): FAILS ($(grep -m1 -E 'ERROR|runtime error|mp fuzz|terminate called' "$build/replay.log"))"
        status=1
      fi
    done
  done
  exit $status
fi

artifacts=$build/artifacts
mkdir -p "$artifacts"

if [ "$mode" = long ]; then
  failed=0
  for t in "${targets[@]}"; do
    work=$build/corpus-work/$t
    mkdir -p "$work"
    log=$build/long-$t.log
    start=$(date +%s)
    nice -n 19 "$bin/fuzz_$t" -runs="$long_runs" -max_total_time="$long_seconds" -rss_limit_mb=2048 \
      -malloc_limit_mb=512 -timeout=25 -print_final_stats=1 -artifact_prefix="$artifacts/$t-" \
      "$work" "tests/fuzz/corpus/$t" >"$log" 2>&1
    rc=$?
    runs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+).*/\1/p' "$log" | tail -n 1)
    speed=$(sed -nE 's/^stat::average_exec_per_sec: *([0-9]+).*/\1/p' "$log" | tail -n 1)
    covft=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -n 1)
    findings=0
    [ "$rc" = 0 ] || { findings=1; failed=$((failed + 1)); }
    echo "fuzz $t: ${runs:-?} executions, ${speed:-?}/s, ${covft:-cov ?}, $(( $(date +%s) - start )) s, findings $findings (log $log)"
  done
  [ "$failed" -eq 0 ]
  exit
fi
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

# run_one <target>: fuzz it for $seconds; its log goes to $logs/<target>.log.
run_one() {
  local t=$1 work=$build/corpus-work/$1
  mkdir -p "$work"
  "$bin/fuzz_$t" -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=25 \
    -print_final_stats=1 -artifact_prefix="$artifacts/$t-" "$work" "tests/fuzz/corpus/$t" >"$logs/$t.log" 2>&1
  echo $? >"$logs/$t.rc"
}
export -f run_one
export build bin seconds artifacts logs

echo "==== fuzz: ${#targets[@]} targets, ${seconds}s each, two at a time"
printf '%s\n' "${targets[@]}" | xargs -P 2 -I{} bash -c 'run_one {}'

failed=0
for t in "${targets[@]}"; do
  rc=$(cat "$logs/$t.rc" 2>/dev/null || echo 1)
  runs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+).*/\1/p' "$logs/$t.log" | tail -n 1)
  speed=$(sed -nE 's/^stat::average_exec_per_sec: *([0-9]+).*/\1/p' "$logs/$t.log" | tail -n 1)
  cov=$(grep -oE 'cov: [0-9]+' "$logs/$t.log" | tail -n 1 | cut -d' ' -f2)
  if [ "$rc" = 0 ]; then
    echo "fuzz $t: ok, ${runs:-?} runs, ${speed:-?}/s, cov ${cov:-?}"
  else
    failed=$((failed + 1))
    echo "fuzz $t: FAILED after ${runs:-?} runs (exit $rc):"
    grep -E 'ERROR: |runtime error|mp fuzz:|terminate called|what\(\)|SUMMARY|Test unit written' "$logs/$t.log" | head -n 8 | sed 's/^/    /'
  fi
done
echo "fuzz: $(( ${#targets[@]} - failed )) targets clean, $failed with findings"
[ "$failed" -eq 0 ]
