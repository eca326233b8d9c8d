#!/usr/bin/env bash
# wal_crash_test.sh WRITER VERIFIER [RUNS] - kill -9 a real WAL writer at
# random moments and check that every acknowledged entry survives.
#
# RUNS times (default 30): start WRITER (wal-crash-writer) on a directory,
# SIGKILL it after a random 20-200 ms (the injected fault, not a wait for
# anything), then run VERIFIER (wal-crash-verify) on the directory and the
# writer's accumulated stdout. Every tenth run starts a fresh directory; the
# runs between reopen the same one, so recovery of a killed writer's WAL,
# and appending after it, is exercised again and again.
#
# FLOTILLA_CRASH_SEED=N replays the same kill delays. Exits non-zero on the
# first failed verification, or if no run acknowledged anything.
set -euo pipefail

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
  echo "usage: wal_crash_test.sh WRITER VERIFIER [RUNS]" >&2
  exit 2
fi
writer=$1
verifier=$2
runs=${3:-30}
seed=${FLOTILLA_CRASH_SEED:-$$}
RANDOM=$seed
work=$(mktemp -d "${TMPDIR:-/tmp}/flotilla-wal-crash.XXXXXX")
pid=

cleanup() {
  if [ -n "$pid" ]; then
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "wal-crash: FAILED at run $1 (replay with FLOTILLA_CRASH_SEED=$seed)" >&2
  echo "--- writer stderr:" >&2
  cat "$work/writer.err" >&2 || true
  exit 1
}

# Starts the writer, kills it after a random 20-200 ms, reaps it. The writer
# must still be running when the kill comes: exiting earlier means it failed.
run_and_kill() {
  local dir=$1 acklog=$2 run=$3
  "$writer" "$dir" >>"$acklog" 2>>"$work/writer.err" &
  pid=$!
  sleep "$(printf '0.%03d' $((20 + RANDOM % 181)))"
  kill -9 "$pid" 2>/dev/null || true
  local status=0
  wait "$pid" 2>/dev/null || status=$? # quiet: bash reports the kill
  pid=
  if [ "$status" -ne 137 ]; then
    echo "wal-crash: the writer exited with status $status before it was killed" >&2
    fail "$run"
  fi
}

total_acks=0
for run in $(seq 1 "$runs"); do
  if [ $(((run - 1) % 10)) -eq 0 ]; then
    dir="$work/wal-$run"
    acklog="$work/acks-$run"
    : >"$acklog"
  fi
  before=$(wc -l <"$acklog")
  run_and_kill "$dir" "$acklog" "$run"
  acks=$(($(wc -l <"$acklog") - before))
  total_acks=$((total_acks + acks))
  if ! summary=$("$verifier" "$dir" "$acklog"); then
    fail "$run"
  fi
  echo "run $run: $acks new acknowledgements; $summary"
done

if [ "$total_acks" -eq 0 ]; then
  echo "wal-crash: FAILED: no run acknowledged anything, the kills prove nothing" >&2
  exit 1
fi
echo "wal-crash: ok, $runs kills, $total_acks acknowledgements checked (seed $seed)"
