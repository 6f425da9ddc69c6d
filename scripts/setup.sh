#!/usr/bin/env bash
# Installs, from Debian's archive, whatever chatbench needs and this machine lacks.
# Idempotent: a machine that has everything is left alone (no apt-get update, no root).
# --peers [LIST] also installs the reference servers of run_all.sh --peers (nginx,
# mosquitto, redis, nats; default all) with their system services kept from starting.
set -euo pipefail

# The peers and their Debian packages: the registry's (scripts/chatbench/variants.py, PEERS),
# written out here because this runs before Python may be installed
# (tests/run_all/check_registry.py checks that they agree).
peer_names=(nginx mosquitto redis nats)
declare -A peer_package=([nginx]=nginx [mosquitto]=mosquitto [redis]=redis-server [nats]=nats-server)
all_peers=$(IFS=,; echo "${peer_names[*]}")

usage="usage: scripts/setup.sh [--peers [$all_peers|all]]"
peers=""
while [ $# -gt 0 ]; do
  case $1 in
    -h|--help) echo "$usage"; exit 0 ;;
    --peers)
      if [ $# -gt 1 ] && [ "${2#-}" = "$2" ]; then peers=$2; shift; else peers=all; fi ;;
    --peers=*) peers=${1#--peers=} ;;
    *) echo "setup.sh: unknown argument '$1'" >&2; echo "$usage" >&2; exit 2 ;;
  esac
  shift
done

packages=(
  build-essential cmake
  libboost1.81-all-dev libboost-json1.81-dev   # Asio, Fiber, Context, JSON
  libcli11-dev
  libgtest-dev googletest libbenchmark-dev
  python3-matplotlib python3-eventlet
  clang libclang-rt-14-dev                     # sanitizer and fuzzer runtimes
  liburing-dev                                 # loadgen's io_uring engine
  golang-go                                    # chat-go (servers/go)
  procps util-linux                            # ps, taskset
  parallel rsync openssh-client openssh-server # scripts/run_distributed.sh, tests/distributed/ (sshd per namespace)
  iproute2                                     # tests/distributed/: namespaces, veths, a bridge
)

peer_packages=()
if [ -n "$peers" ]; then
  [ "$peers" = all ] && peers=$all_peers
  IFS=, read -ra wanted <<<"$peers"
  for peer in "${wanted[@]}"; do
    [ -n "${peer_package[$peer]:-}" ] || { echo "setup.sh: unknown peer '$peer' (${all_peers//,/, })" >&2; exit 2; }
    peer_packages+=("${peer_package[$peer]}")
  done
  packages+=("${peer_packages[@]}")
fi

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
# Packages whose install would start a system service: the peers, and openssh-server
# (tests/distributed/ starts its own sshd per namespace; a system one would listen on every
# address of the machine).
services=("${peer_packages[@]}")
for p in "${missing[@]}"; do [ "$p" = openssh-server ] && services+=("$p"); done
# The peers are measured as processes run_matrix.py starts itself; their packages would
# start system services at install (on other ports, but running beside the benchmark). A
# policy-rc.d that answers 101 ("action forbidden") keeps invoke-rc.d from starting any
# service during this install; it is removed afterwards, and one that was already there
# is left alone.
policy=/usr/sbin/policy-rc.d
if [ ${#services[@]} -gt 0 ] && [ ! -e $policy ]; then
  printf '#!/bin/sh\n# scripts/setup.sh: no service starts during its install\nexit 101\n' \
    | "${sudo[@]}" tee $policy >/dev/null
  "${sudo[@]}" chmod 755 $policy
  trap '"${sudo[@]}" rm -f $policy' EXIT
  echo "setup: the system services of ${services[*]} are kept from starting ($policy exits 101 during the install)"
elif [ ${#services[@]} -gt 0 ]; then
  echo "setup: $policy already present (left as it is): it decides whether the services of ${services[*]} start"
fi
if ! "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
  still=()
  for p in "${missing[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || still+=("$p")
  done
  echo "setup: could not install: ${still[*]}" >&2
  exit 1
fi
echo "setup: done"
