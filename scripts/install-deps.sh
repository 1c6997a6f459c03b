#!/usr/bin/env bash
# install-deps.sh — installs the Debian packages that building, testing,
# documenting and benchmarking mp need (Debian 12; Ubuntu has most of them).
# Does nothing, quickly, when all of them are present.
#
#   MP_SKIP_DEPS=1   skip this step entirely (you installed them yourself)
#
# On a system without apt-get/dpkg it lists the packages (Debian names) and
# carries on: CMake then says precisely what it could not find. It never
# retries a failure that retrying cannot fix (not root, no sudo, permission).
set -uo pipefail

packages=(
  g++ cmake ninja-build pkg-config            # the build
  libcereal-dev libssl-dev                    # what the library uses
  libgtest-dev libgmock-dev                   # the test suite
  clang-16                                    # the test suite builds mp with Clang too
  clang-14 libclang-rt-14-dev                 # fuzzing (libFuzzer)
  doxygen                                     # the API reference
  python3 libbenchmark-dev libboost-dev libthread-pool-dev   # benchmarks and their references
  libopenmpi-dev openmpi-bin python3-mpi4py   # the MPI executor
  ca-certificates
)

if [ "${MP_SKIP_DEPS:-0}" = 1 ]; then
  echo "install-deps: skipped (MP_SKIP_DEPS=1)"
  exit 0
fi

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-deps: this system has no apt-get/dpkg, so nothing is installed or checked here."
  echo "install-deps: with your package manager, install the equivalents of these Debian packages:"
  echo "  ${packages[*]}"
  echo "install-deps: (set MP_SKIP_DEPS=1 to skip this step); carrying on."
  exit 0
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all dependencies present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"

if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo=(sudo -n)
else
  echo "install-deps: missing packages and no permission to install them (not root, no password-less sudo)." >&2
  echo "install-deps: run as root:  apt-get install ${missing[*]}" >&2
  echo "install-deps: then re-run, or set MP_SKIP_DEPS=1 to skip this step." >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# A mirror can fail for a moment: retry that, a few times. A permission or
# lock problem, or a package the archive does not have, will not go away.
for attempt in 1 2 3; do
  if { "${sudo[@]}" apt-get update -q && "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"; } \
       </dev/null >"$log" 2>&1; then
    echo "install-deps: installed ${missing[*]}"
    exit 0
  fi
  if grep -qiE 'permission denied|are you root|could not open lock|unable to acquire|unable to locate package|has no installation candidate' "$log"; then
    tail -n 20 "$log" >&2
    echo "install-deps: apt-get failed for a reason that retrying cannot fix (see above); install ${missing[*]} yourself, or set MP_SKIP_DEPS=1." >&2
    exit 1
  fi
  tail -n 5 "$log" >&2
  echo "install-deps: apt-get failed (attempt $attempt of 3), retrying" >&2
  sleep $((attempt * 10))
done
echo "install-deps: could not install ${missing[*]}" >&2
exit 1
