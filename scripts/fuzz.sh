#!/usr/bin/env bash
# Longer fuzzing of the protocol module than ctest's 60 s (fuzz/protocol_fuzz.cpp).
#
#   scripts/fuzz.sh [SECONDS] [LIBFUZZER OPTIONS...]     default 600 s
#
# Builds the fuzzer with clang in build-fuzz/ and runs it on the committed seed corpus
# (fuzz/corpus, only read) plus a working corpus outside the repository
# (FUZZ_CORPUS, default ~/.cache/chatbench/fuzz-corpus) that keeps what it learns from
# run to run. A failing input is written to FUZZ_ARTIFACTS (default the working corpus'
# parent) and reproduced with: build-fuzz/bin/protocol_fuzz FILE
# Worth committing to fuzz/corpus: a reproducer of a fixed bug, minimised (-minimize_crash=1).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
usage="usage: scripts/fuzz.sh [SECONDS] [-LIBFUZZER_FLAG=VALUE...]   (more at the top of scripts/fuzz.sh)"
bad() {
  echo "fuzz.sh: $1" >&2
  echo "$usage" >&2
  exit 2
}
case ${1-} in -h|--help) echo "$usage"; exit 0 ;; esac
seconds=${1:-600}
shift || true
case $seconds in '' | *[!0-9]* | 0) bad "SECONDS must be a whole number above 0, not '$seconds'" ;; esac
# libFuzzer takes a word without a dash for a corpus directory, and only warns about a flag
# it does not know: at least the form is checked here.
for arg in "$@"; do
  [[ $arg =~ ^-[a-z_]+=.+$ ]] || bad "'$arg' is not a libFuzzer flag of the form -name=value"
done
corpus=${FUZZ_CORPUS:-$HOME/.cache/chatbench/fuzz-corpus}
artifacts=${FUZZ_ARTIFACTS:-$(dirname "$corpus")}
mkdir -p "$corpus" "$artifacts"

"$root/scripts/setup.sh"
build=$root/build-fuzz
CC=clang CXX=clang++ cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCHATBENCH_FUZZ=ON -DCHATBENCH_SKIP="bench;loadgen" >/dev/null
cmake --build "$build" -j 2 --target protocol_fuzz

# One process: the machine has two cores shared with others (-jobs/-workers for more).
exec "$build/bin/protocol_fuzz" -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
  -artifact_prefix="$artifacts/" "$@" "$corpus" "$root/fuzz/corpus"
