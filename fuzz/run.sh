#!/usr/bin/env bash
# run.sh BUILD_DIR [SECONDS] - runs every libFuzzer target for SECONDS each
# (default 30), starting from a copy of its seed corpus so the repository is
# never modified. FUZZ_SEED=N fixes libFuzzer's random seed, so a run can be
# repeated (make test uses a fixed seed: CI checks the same inputs every
# time); without it every run explores new inputs. Prints one summary line per target and exits non-zero if
# any target crashed, timed out or ran out of memory; the input that did it
# is kept and the line says how to replay it.
#
#   make build-fuzz && bash fuzz/run.sh build-fuzz 300
set -uo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: fuzz/run.sh BUILD_DIR [SECONDS]" >&2
  exit 2
fi
build=$1
seconds=${2:-30}
here=$(cd "$(dirname "$0")" && pwd)
targets=(fuzz-raft-cluster fuzz-raft-messages fuzz-wal-recovery fuzz-wire fuzz-resp)

work=$(mktemp -d "${TMPDIR:-/tmp}/flotilla-fuzz.XXXXXX")
failed=0

# Corpus copies go away; a failing target's artifacts and log stay.
cleanup() {
  for target in "${targets[@]}"; do
    rm -rf "$work/$target/corpus"
  done
  if [ "$failed" -eq 0 ]; then
    rm -rf "$work"
  fi
}
trap cleanup EXIT

run_target() {
  local target=$1
  local binary="$build/fuzz/$target"
  local dir="$work/$target"
  mkdir -p "$dir/corpus" "$dir/artifacts"
  if [ ! -x "$binary" ]; then
    echo "$target: FAILED: $binary not found (build with: make build-fuzz)"
    return 1
  fi
  if [ -d "$here/corpus/$target" ]; then
    cp "$here/corpus/$target"/* "$dir/corpus/" 2>/dev/null || true
  fi
  # -len_control=10: inputs may grow to max_len quickly; the cluster target
  # needs long inputs to reach elections, commits and membership changes.
  local seed_flag=()
  if [ -n "${FUZZ_SEED:-}" ]; then
    seed_flag=(-seed="$FUZZ_SEED")
  fi
  "$binary" "${seed_flag[@]}" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len=4096 \
    -len_control=10 -print_final_stats=1 -artifact_prefix="$dir/artifacts/" "$dir/corpus" \
    >"$dir/log" 2>&1
  local status=$?
  local artifact
  artifact=$(find "$dir/artifacts" -type f | head -n 1)
  local runs
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log" | tail -n 1)
  local coverage
  coverage=$(grep -o 'cov: [0-9]*' "$dir/log" | tail -n 1 | sed 's/cov: //')
  if [ "$status" -ne 0 ] || [ -n "$artifact" ]; then
    echo "$target: FAILED (exit $status) after ${runs:-?} runs"
    grep -m 3 -E 'violation|ERROR|runtime error' "$dir/log" | sed 's/^/    /'
    echo "    log:       $dir/log"
    if [ -n "$artifact" ]; then
      echo "    input:     $artifact"
      echo "    replay:    FLOTILLA_FUZZ_TRACE=1 $binary $artifact"
    fi
    return 1
  fi
  echo "$target: ok, ${runs:-?} runs in ${seconds} s, coverage ${coverage:-?} edges"
  return 0
}

for target in "${targets[@]}"; do
  if ! run_target "$target"; then
    failed=1
  fi
done
if [ "$failed" -ne 0 ]; then
  echo "fuzz: FAILED (artifacts and logs kept in $work)"
  exit 1
fi
echo "fuzz: all targets passed"
