#!/usr/bin/env bash
# install-deps.sh — installs what building, testing and benchmarking mp needs
# on Debian 12 (or Ubuntu). Does nothing, quickly, when all of it is present.
set -euo pipefail

packages=(g++ cmake ninja-build libcereal-dev libgtest-dev libgmock-dev
          libbenchmark-dev libboost-dev libssl-dev python3 ca-certificates
          clang-14 libclang-rt-14-dev  # the fuzz preset: clang and libFuzzer
          libopenmpi-dev openmpi-bin python3-mpi4py)  # MPI: mp::mpi, its tests and bench

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
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo -n)
else
  echo "install-deps: missing packages (${missing[*]}) and not root, no sudo: install them and re-run" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# The mirrors can fail for a moment; try a few times before giving up.
for attempt in 1 2 3; do
  if "${sudo[@]}" apt-get update -q </dev/null &&
     "${sudo[@]}" apt-get install -y -q --no-install-recommends "${packages[@]}" </dev/null; then
    exit 0
  fi
  echo "install-deps: apt-get failed (attempt $attempt), retrying" >&2
  sleep $((attempt * 10))
done
echo "install-deps: could not install ${missing[*]}" >&2
exit 1
