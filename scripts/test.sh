#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test under ctest.
#
#   scripts/test.sh [CTEST ARGS...]             the normal suite in build/ (BUILD_DIR)
#   scripts/test.sh --sanitize [CTEST ARGS...]  the sanitized suites instead:
#     build-fuzz/  clang, libFuzzer+ASan+UBSan: the protocol fuzzer, 60 s on fuzz/corpus
#     build-tsan/  ThreadSanitizer: protocol and relay unit tests, chat-threads' suites and
#                  chat-asio's and chat-coro's at --threads 2
#     build-asan/  AddressSanitizer+UndefinedBehaviorSanitizer: every server model's suites
#                  once, loadgen's on both engines, the unit and command-line tests
#
# Either way the last thing run is ctest, so the last line is its summary when all pass.
# ctest runs two tests per core, one under ThreadSanitizer (CTEST_PARALLEL overrides):
# most wait on round trips and timers half the time, and those that keep a core busy take
# two slots (PROCESSORS).
# With PASS_TIMES naming a file, each build and each ctest run appends "NAME SECONDS" to
# it (.ci/run prints them).
# Sanitizer reports are also written under <build dir>/sanitizer-logs/: a server that a
# test kills would otherwise take its report with it (the harness discards its stderr).
# If any report is found, it is printed after ctest's summary and the script fails.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

usage="usage: scripts/test.sh [--sanitize] [CTEST OPTIONS...]   (more at the top of scripts/test.sh)"
sanitize=false
if [ "${1:-}" = --sanitize ]; then
  sanitize=true
  shift
fi
# ctest runs every test when it meets an option it does not know: check them against its
# own --help before anything is built (docs/exit-status.md: 2 is a bad command line).
ctest_options=$(ctest --help | grep -oE '(^|[ ,])--?[A-Za-z][-A-Za-z0-9]*' | tr -d ' ,' | sort -u)
for arg in "$@"; do
  case $arg in
    -h|--help) echo "$usage"; exit 0 ;;
    -*) if ! grep -qxF -- "${arg%%=*}" <<<"$ctest_options" && ! grep -qxF -- "${arg:0:2}" <<<"$ctest_options"; then
          hint=""
          [ "$arg" = --sanitize ] && hint=" (--sanitize comes first)"
          echo "test.sh: '$arg' is not a ctest option$hint" >&2
          echo "$usage" >&2
          exit 2
        fi ;;
  esac
done

"$root/scripts/setup.sh"
werror=()
[ -n "${CI:-}" ] && werror=(-DCHATBENCH_WERROR=ON)

parallel=${CTEST_PARALLEL:-$((2 * $(nproc)))}
# timed NAME COMMAND...: runs COMMAND, and notes its wall time in PASS_TIMES if that is set.
timed() {
  local name=$1 start=$SECONDS status=0
  shift
  "$@" || status=$?
  if [ -n "${PASS_TIMES:-}" ]; then echo "$name $((SECONDS - start))" >>"$PASS_TIMES"; fi
  return $status
}

if ! $sanitize; then
  timed build "$root/scripts/build.sh" "${werror[@]}"
  cd "${BUILD_DIR:-$root/build}"
  timed normal ctest --output-on-failure -j "$parallel" "$@"
  exit
fi

# The sanitized trees are built without -Werror: GCC 12 warns falsely under
# -fsanitize=address (-Wmaybe-uninitialized inside libstdc++'s <regex>), and the
# normal build already holds the same code to -Werror.
werror=()
# ThreadSanitizer's and AddressSanitizer's trees at -O1, as both sanitizers' documentation
# suggests for reasonable speed: about a third less compile time than -O2 (chat-asio under
# ASan+UBSan: 26 s of CPU instead of 41).
sanitized_build=(-DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g -DNDEBUG")

# Runs ctest in build dir $1 with $3 slots and sanitizer reports logged to files in
# $1/sanitizer-logs/$2 (one directory per pass, so none overwrites another); fails if a
# report was written even though every test passed. A report ends with a "SUMMARY:"
# line; other lines there are warnings (e.g. ASan's note on fiber stack switches).
run_sanitized() {
  local build=$1 logs=$1/sanitizer-logs/$2 slots=$3
  shift 3
  rm -rf "$logs" && mkdir -p "$logs"
  local rc=0
  (cd "$build" &&
    ASAN_OPTIONS="log_path=$logs/asan:${asan_options:-}" \
    UBSAN_OPTIONS="log_path=$logs/ubsan:print_stacktrace=1:halt_on_error=1" \
    CHATBENCH_SANITIZED=1 \
    TSAN_OPTIONS="log_path=$logs/tsan:halt_on_error=1:second_deadlock_stack=1" \
    ctest --output-on-failure -j "$slots" "$@") || rc=$?
  local reports
  reports=$(grep -l 'SUMMARY: ' "$logs"/* 2>/dev/null || true)
  if [ -n "$reports" ]; then
    echo "test.sh: sanitizer reports:" >&2
    for f in $reports; do echo "== $f" >&2; cat "$f" >&2; done
    return 1
  fi
  return $rc
}

# Why each option:
# - detect_leaks=1: servers that stop on SIGTERM must free what they took.
# - detect_stack_use_after_return=0: chat-fibers switches stacks with Boost.Context,
#   which Debian builds without sanitizer fiber annotations; the fake stacks this option
#   adds cannot follow those switches. (It is also the default; stated so nobody turns
#   it on for the fiber variant without annotated Boost.)
asan_base="detect_leaks=1:detect_stack_use_after_return=0:halt_on_error=1"
# Tests judged by the server's RSS. ASan keeps freed memory in quarantine (256 MB by
# default) so that a use after free is caught, and never gives its own bookkeeping back;
# RSS bounds read both as growth. Measured under ASan: churn 90 -> 316 MiB (threads),
# still 66 -> 99 MiB without quarantine; soak 24 -> 29.5 MiB with zero lines lost.
# - rss_tests run in a second pass without quarantine, where they pass: every other
#   check of ASan, LSan and UBSan still applies to them.
# - The churn and soak tests see CHATBENCH_SANITIZED=1 and leave out their RSS verdict
#   (LSan judges leaks); their other checks (descriptors back, no line lost) still run.
rss_tests='\.(Conformance\.ReceiverOverMaxPendingIsDisconnected|SlowConsumer\.|Flood\.HundredMegabyteLine|Flood\.StoppedThreadHolds)'

# libFuzzer with clang; only the fuzz target is built in this tree.
fuzz=$root/build-fuzz
CC=clang CXX=clang++ cmake -S "$root" -B "$fuzz" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCHATBENCH_FUZZ=ON -DCHATBENCH_SKIP="bench;loadgen" >/dev/null
# Every suite runs even if one before it failed; the exit status says if any did.
failed=0
timed fuzz-build cmake --build "$fuzz" -j "$(nproc)" --target protocol_fuzz
asan_options=$asan_base timed fuzz run_sanitized "$fuzz" fuzz "$parallel" -R '^fuzz\.' "$@" || failed=1

# ThreadSanitizer: the variants whose threads share state (chat-threads, and chat-asio and
# chat-coro on two threads: asio-t2.*, coro-t2.*; conformance and faults but the soak)
# and the module they share it through. chat-threads' storms, descriptor exhaustion and
# thousand-offender linger stay out: they start thousands of threads, which under
# ThreadSanitizer's cost per thread outlast the tests' deadlines (measured: 2 768 of
# 5 000 connects admitted in 30 s beside another sanitized test). chat-fibers on several threads is not here:
# ThreadSanitizer cannot follow Boost.Context's assembly stack switches
# (docs/reliability.md); ASan+UBSan cover it below. One test per core: the servers' own
# work costs several times more under ThreadSanitizer (chat-threads' /stats behind 200
# connects took over 5 s with two tests per core).
tsan=$root/build-tsan
cmake -S "$root" -B "$tsan" "${sanitized_build[@]}" -DCHATBENCH_SANITIZE=thread \
  -DCHATBENCH_SKIP="bench;fibers;uring;asio-uring;coro-uring;go;eventlet;seed" >/dev/null
timed tsan-build cmake --build "$tsan" -j "$(nproc)" \
  --target protocol_unit_test relay_unit_test conformance faults chat-threads chat-asio chat-coro
timed tsan run_sanitized "$tsan" tsan "${CTEST_PARALLEL:-$(nproc)}" -R '^(unit|threads|asio-t2|coro-t2)\.' \
  -E '\.Soak\.|^threads\.(Storm|Exhaustion)\.|^threads\.LingeringClose\.Thousand' "$@" || failed=1

# AddressSanitizer + UndefinedBehaviorSanitizer; any undefined behaviour stops the
# process (-fno-sanitize-recover), so it fails the test instead of scrolling by.
# (UBSan's vptr check is off: see CHATBENCH_SANITIZE in CMakeLists.txt.)
# Every server model once, with both suites: threads, fibers, asio (callbacks), coro,
# uring (and uring-starved), asio-uring (Asio's io_uring backend), and fibers-t2 (the one
# sanitizer over fibers on several threads; its relay is asio-t2's and coro-t2's, which
# ThreadSanitizer runs); loadgen's tests on both engines; the unit, harness and fiber
# tests, and the command-line cases of the executables. Left to the normal pass:
# coro-uring (coro's code on asio-uring's backend), asio-t2 and coro-t2, run_all.*, broker.matrix and
# distributed.* (Python and shell driving the same executables), the scripts' command
# lines, and what is not C++ (eventlet, seed, docs.markdown; go has its race detector, go-race.*).
asan=$root/build-asan
cmake -S "$root" -B "$asan" "${sanitized_build[@]}" \
  -DCHATBENCH_SANITIZE=address,undefined -DCMAKE_CXX_FLAGS=-fno-sanitize-recover=all \
  -DCHATBENCH_SKIP="bench;coro-uring;go;eventlet;seed" >/dev/null
timed asan-build cmake --build "$asan" -j "$(nproc)"
normal_only='^(asio|coro)-t2\.|^run_all\.|^docs\.|^broker\.matrix$|^distributed\.|^cli\.[^.]*\.(sh|py)\.'
asan_options=$asan_base timed asan run_sanitized "$asan" asan "$parallel" -E "$normal_only|$rss_tests" "$@" || failed=1
asan_options="$asan_base:quarantine_size_mb=0" \
  timed asan-rss run_sanitized "$asan" asan-rss "$parallel" -R "$rss_tests" -E "$normal_only" "$@" || failed=1
exit $failed
