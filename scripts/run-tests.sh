#!/usr/bin/env bash
# run-tests.sh — the whole test suite, in the optimised build and in the
# AddressSanitizer + UndefinedBehaviorSanitizer build; the thread-heavy tests
# under ThreadSanitizer; the fuzz targets for a short while.
#
# Installs missing dependencies (MP_SKIP_DEPS=1: don't), builds the `release`
# and `asan` presets, runs `ctest --preset release` (which also builds
# consumers of mp with GCC and Clang, and the API reference) then
# `ctest --preset asan`, and ends with one line
# "N passed, N failed". Exits non-zero if a build or a test failed.
set -uo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh || exit 1

jobs=2
# Sanitizer settings for a suite whose tests start, crash and kill processes:
# - detect_leaks: LeakSanitizer checks each process that exits normally.
# - abort_on_error=0: a report ends the process with exit code 1, not SIGABRT,
#   so a parent sees an ordinary failure and no core is dumped.
# - handle_segv/sigbus/sigfpe=0: tests crash workers on purpose and check that
#   the parent sees "killed by signal 11"; with ASan's handlers the worker
#   would exit with code 1 instead. A real crash still fails its test.
# - intercept_tls_get_addr=0: GCC 12's runtime takes a dynamic TLS block
#   (a dlopen'ed library's thread_local: OpenMPI's plugins) whose address
#   happens to lie 16 bytes into a page for glibc 2.19's layout, reads a
#   bogus range before it, and LeakSanitizer's tracer dies scanning it
#   ("Tracer caught signal 11" in ScanRangeForPointers) after every test
#   passed: an MPI rank's exit failed 2 entries of one CI run, and passed in
#   the next runs of the same binary. Such blocks then go unscanned (memory
#   only they point to would be reported as leaked); mp's own thread_locals
#   are static TLS, in the executable or libmp.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:handle_segv=0:handle_sigbus=0:handle_sigfpe=0:intercept_tls_get_addr=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
# LeakSanitizer needs ptrace; some containers forbid it, and then every process
# would fail at exit. Probe once with a trivial program and turn leak
# detection off (saying so) if it cannot work here.
work_dir=$(mktemp -d)
trap 'rm -rf "$work_dir"' EXIT
if echo 'int main() { return 0; }' | g++ -x c++ -fsanitize=address - -o "$work_dir/probe" 2>/dev/null &&
   "$work_dir/probe" 2>&1 | grep -q 'LeakSanitizer has encountered a fatal error'; then
  echo "run-tests: LeakSanitizer cannot run on this machine (ptrace denied?); running with detect_leaks=0"
  ASAN_OPTIONS="${ASAN_OPTIONS/detect_leaks=1/detect_leaks=0}"
fi

passed=0
failed=0

# run_preset <preset> [ctest args...]: configure, build, test; adds to the counts.
run_preset() {
  local preset=$1
  shift
  echo "==== $preset: configure and build"
  if ! cmake --preset "$preset" >/dev/null; then
    echo "run-tests: $preset configure FAILED"
    failed=$((failed + 1))
    return
  fi
  # -k 0: build every target that can be built, so one broken test binary
  # does not hide the results of the others.
  if ! cmake --build --preset "$preset" -j "$jobs" -- -k 0; then
    echo "run-tests: $preset build FAILED (tests that built still run)"
    failed=$((failed + 1))
  fi
  echo "==== $preset: ctest"
  local log="$work_dir/ctest-$preset.log"
  ctest --preset "$preset" "$@" 2>&1 | tee "$log"
  # "95% tests passed, 2 tests failed out of 40"
  local line total nfail
  line=$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1)
  if [ -n "$line" ]; then
    nfail=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
    total=$(sed -E 's/.* failed out of ([0-9]+).*/\1/' <<<"$line")
    passed=$((passed + total - nfail))
    failed=$((failed + nfail))
  elif grep -q 'No tests were found' "$log"; then
    echo "run-tests: $preset has no tests"
  else
    echo "run-tests: $preset ctest did not report a result"
    failed=$((failed + 1))
  fi
}

run_preset release
# The consumer tests and the API reference need to run once, not per build.
run_preset asan --label-exclude '^(install|docs)$'

# ---- ThreadSanitizer and fuzzing ----------------------------------------------
# The tsan presets build and run the thread-heavy tests only: future_test,
# thread_pool_executor_test, thread_pool_shutdown_test, manager_test, pool_test (about 3 minutes).
# die_after_fork=0: by default TSan ends a child forked from a threaded
# parent as soon as the child starts a thread, because its own state may be
# inconsistent there. Forking from a threaded parent is what mp's fork start
# method does (a pool or an executor in a forked child is tested), and mp
# resets its own locks after fork; TSan's reports in such a child are still
# printed and still fail the test (the child exits non-zero).
export TSAN_OPTIONS="${TSAN_OPTIONS:-die_after_fork=0}"
run_preset tsan
# Every libFuzzer target for 60 s, two at a time (about 6 minutes with the
# build); a crash, leak, out-of-memory or timeout fails the run.
echo "==== fuzz"
if bash scripts/run-fuzz.sh 60; then
  passed=$((passed + 1))
else
  failed=$((failed + 1))
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
