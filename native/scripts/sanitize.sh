#!/usr/bin/env bash
# The addon under AddressSanitizer and UndefinedBehaviorSanitizer: built from the same
# sources into build-sanitize/ (the production build in build/ is left alone), then the
# native, attest and build-guard suites and the fuzz harness run against it
# (MOAT_NATIVE_PATH), with libasan preloaded into Node. Any sanitizer report fails the run:
# a report aborts the process that makes it, and reports are also written to files that are
# checked at the end, so one made in a child process whose exit a test expected still counts.
#
#   bash native/scripts/sanitize.sh            # build, suites, fuzz (MOAT_FUZZ_CASES per target)
#   bash native/scripts/sanitize.sh --fuzz     # build and fuzz only (MOAT_FUZZ_CASES=1000000 for a long run)
set -euo pipefail
cd "$(dirname "$0")/.."
NATIVE=$(pwd)
ROOT=$(cd .. && pwd)
FUZZ_ONLY=0
[ "${1:-}" = "--fuzz" ] && FUZZ_ONLY=1

HEADERS=$(node scripts/node-headers.mjs) || { echo "sanitize: no Node headers found" >&2; exit 1; }
LIBASAN=$(gcc -print-file-name=libasan.so)
[ -f "$LIBASAN" ] || { echo "sanitize: gcc has no libasan ($LIBASAN)" >&2; exit 1; }
[ -f src/generated/key.h ] || node scripts/gen-key.mjs

OUT="$NATIVE/build-sanitize"
mkdir -p "$OUT"
started=$(date +%s)
# The sources and libraries of binding.gyp; -O1 keeps it quick, frame pointers keep stacks whole.
SOURCES=$(node -e "console.log(JSON.parse(require('fs').readFileSync('binding.gyp','utf8').replace(/#.*$/gm,'')).targets[0].sources.join(' '))")
# shellcheck disable=SC2086
gcc -std=c99 -shared -fPIC -O1 -g -fno-omit-frame-pointer -Wall -Wextra \
  -fsanitize=address,undefined -fno-sanitize-recover=all \
  -DNAPI_VERSION=8 -D_GNU_SOURCE -DBUILDING_NODE_EXTENSION \
  -Isrc -Isrc/generated -I"$HEADERS/include/node" \
  $SOURCES -o "$OUT/moat_native.node" -lpthread -ldl
echo "sanitize: built $OUT/moat_native.node in $(($(date +%s) - started)) s"

REPORTS="$OUT/reports"
rm -rf "$REPORTS"
mkdir -p "$REPORTS"
export MOAT_NATIVE_PATH="$OUT/moat_native.node"
export LD_PRELOAD="$LIBASAN${LD_PRELOAD:+:$LD_PRELOAD}"
# Node's own SIGSEGV handler must not hide a report; leaks are not checked (V8's heap is not ours).
export ASAN_OPTIONS="detect_leaks=0:handle_segv=1:allow_user_segv_handler=0:log_path=$REPORTS/asan"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$REPORTS/ubsan"

status=0
# run DIR COMMAND…: one step, timed; a failure marks the run failed and the next step still runs.
# Its output is kept too: a report printed by a child process a test spawned shows up there.
run() {
  local dir=$1 t0
  shift
  t0=$(date +%s)
  echo "sanitize: ($dir) $*"
  (cd "$dir" && "$@") 2>&1 | tee -a "$OUT/output.log" || status=1
  echo "sanitize: ($dir) took $(($(date +%s) - t0)) s"
}
: >"$OUT/output.log"
# The fuzz harness: MOAT_FUZZ_CASES cases per target (10000 here: 52,000 calls).
MOAT_FUZZ_CASES="${MOAT_FUZZ_CASES:-10000}" run "$NATIVE" node test/fuzz.ts
# Instrumented code runs two to three times slower (more on a busy machine): longer timeouts here.
SLOW=(--testTimeout=300000 --hookTimeout=300000)
if [ "$FUZZ_ONLY" = 0 ]; then
  # prebuild.test.ts builds and packs a prebuild: packaging, not memory, and slow under ASan.
  run "$NATIVE" pnpm exec vitest run "${SLOW[@]}" --exclude test/prebuild.test.ts
  run "$ROOT/packages/attest" pnpm exec vitest run "${SLOW[@]}"
  # The scanner's suites: the ones that call the addon (the rest of build-guard never does).
  run "$ROOT/packages/build-guard" pnpm exec vitest run "${SLOW[@]}" src/scan
fi

if grep -qE "ERROR: AddressSanitizer|runtime error:|SUMMARY: (Address|UndefinedBehavior)Sanitizer" "$OUT/output.log"; then
  echo "sanitize: a sanitizer report in the output:" >&2
  grep -E -A30 "ERROR: AddressSanitizer|runtime error:" "$OUT/output.log" | head -80 >&2
  status=1
fi
if compgen -G "$REPORTS/*" >/dev/null; then
  echo "sanitize: sanitizer reports:" >&2
  for f in "$REPORTS"/*; do
    echo "== $f" >&2
    head -60 "$f" >&2
  done
  status=1
fi
echo "sanitize: $([ $status = 0 ] && echo clean || echo FAILED) after $(($(date +%s) - started)) s"
exit $status
