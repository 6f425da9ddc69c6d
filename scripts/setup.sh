#!/usr/bin/env bash
# Installs, from Debian's archive, whatever chatbench needs and this machine lacks.
# Idempotent: a machine that has everything is left alone (no apt-get update, no root).
set -euo pipefail

usage="usage: scripts/setup.sh   (no arguments; installs with apt-get what is missing)"
if [ $# -gt 0 ]; then
  case $1 in -h|--help) echo "$usage"; exit 0 ;; esac
  echo "setup.sh: takes no arguments, got '$*'" >&2
  echo "$usage" >&2
  exit 2
fi

packages=(
  build-essential cmake
  libboost1.81-all-dev libboost-json1.81-dev   # Asio, Fiber, Context, JSON
  libcli11-dev
  libgtest-dev googletest libbenchmark-dev
  python3-matplotlib python3-eventlet
  clang libclang-rt-14-dev                     # sanitizer and fuzzer runtimes
  liburing-dev                                 # loadgen's io_uring engine
  procps util-linux                            # ps, taskset
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all dependencies present"
  exit 0
fi

echo "setup: installing ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
else
  echo "setup: not root and no sudo; install these by hand: ${missing[*]}" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
if ! "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
  still=()
  for p in "${missing[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || still+=("$p")
  done
  echo "setup: could not install: ${still[*]}" >&2
  exit 1
fi
echo "setup: done"
