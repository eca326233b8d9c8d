#!/usr/bin/env bash
# bench_smoke.sh FLOTILLA_BENCH [options...] - the main job (`make demo`)
# in miniature: flotilla-bench must finish, print its result table with a
# positive committed-writes figure and a half-load line, and report no
# failed node. The figures themselves are not judged here (they depend on
# the machine): README's benchmark section and `make demo` are for that.
set -euo pipefail

if [ $# -lt 1 ]; then
  echo "usage: bench_smoke.sh FLOTILLA_BENCH [options...]" >&2
  exit 2
fi
bench=$1
shift
status=0
output=$("$bench" --seconds 1 --half-load-seconds 1 --groups 8 --concurrency 16 "$@" 2>&1) || status=$?
echo "$output"
if [ $status -ne 0 ]; then
  echo "bench-smoke: flotilla-bench exited with $status" >&2
  exit 1
fi
writes=$(awk '/committed writes\/s/ {print $3; exit}' <<<"$output")
if [ -z "$writes" ] || [ "${writes%.*}" -le 0 ]; then
  echo "bench-smoke: no positive 'committed writes/s' figure in the table" >&2
  exit 1
fi
if ! grep -q "p99 at half load" <<<"$output"; then
  echo "bench-smoke: the half-load phase is missing from the table" >&2
  exit 1
fi
echo "bench-smoke: table printed, $writes committed writes/s"
