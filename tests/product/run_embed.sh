#!/usr/bin/env bash
# run_embed.sh EMBED - runs examples/embed (built against libflotilla.so) on
# a fresh data directory, then again on the same one: the second run finds
# its group recovered from the WAL (fl_group_create says FL_E_EXISTS) and
# must still elect itself, write and read.
set -euo pipefail
source "$(dirname "$0")/common.sh"

if [ $# -ne 1 ]; then
  echo "usage: run_embed.sh EMBED" >&2
  exit 2
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/flotilla-embed.XXXXXX")
trap 'rm -rf "$work"' EXIT

run_embed product-embed "$1" "$work/data"
run_embed product-embed "$1" "$work/data"
echo "product-embed: fresh start and restart passed"
