#!/usr/bin/env bash
# run-examples.sh — builds the library and the examples (release preset,
# nothing else) and runs each example in the order below, showing its output.
# Then builds the API reference if doxygen is installed, and says where it is.
# Fails if a build or an example fails.
set -uo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh || exit 1
cmake --preset release >/dev/null || exit 1
cmake --build --preset release --target all_examples -j 2 || exit 1

# Python's example programs first, then one short example per feature. An
# example that is built but not listed runs after these, in name order (add
# it here to fix its place); a listed example that was not built is a failure.
order=(
  custom_manager
  pool_demo
  queue_worker_farm
  queue_deadlock_fixed
  nested_executor
  pipe
  shared_counter
  shared_memory
  progress
  executor_progress
  remote_manager
  pool_crash
  pool_initargs
)

dir=build/release/examples
if [ ! -d "$dir" ]; then
  echo "run-examples: $dir does not exist (is MP_BUILD_EXAMPLES off?)" >&2
  exit 1
fi

programs=()
for name in "${order[@]}"; do
  if [ -x "$dir/$name" ]; then
    programs+=("$name")
  else
    echo "run-examples: listed example $name was not built" >&2
    missing_listed=1
  fi
done
while IFS= read -r name; do
  case " ${order[*]} " in *" $name "*) ;; *) programs+=("$name") ;; esac
done < <(find "$dir" -maxdepth 1 -type f -perm -u+x -printf '%f\n' | sort)

ok=0
bad=()
for name in "${programs[@]}"; do
  echo "==== $name"
  if timeout 300 "$dir/$name" </dev/null; then
    ok=$((ok + 1))
  else
    echo "run-examples: $name FAILED (exit status $?)" >&2
    bad+=("$name")
  fi
  echo
done

echo "examples: $ok succeeded, ${#bad[@]} failed${bad:+ (${bad[*]})}"

# The API reference, generated from the public headers.
if command -v doxygen >/dev/null 2>&1; then
  if cmake --build --preset release --target docs >/dev/null 2>&1; then
    echo "API reference: build/release/docs/html/index.html"
  else
    echo "run-examples: building the API reference failed; see: cmake --build build/release --target docs" >&2
    bad+=(docs)
  fi
else
  echo "API reference: install doxygen, then run: cmake --build build/release --target docs"
fi

[ ${#bad[@]} -eq 0 ] && [ -z "${missing_listed:-}" ]
