#!/usr/bin/env bash
# check_exports.sh LIBRARY HEADER - the shared library exports exactly the
# functions HEADER declares FL_API: nothing else (an internal symbol in the
# dynamic table is ABI an embedder could bind to, and a clash waiting in
# their program), and nothing of the API missing.
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: check_exports.sh LIBRARY HEADER" >&2
  exit 2
fi
library=$1
header=$2

# Defined dynamic symbols: functions, data, anything the loader could bind.
exported=$(nm -D --defined-only "$library" | awk '{print $NF}' | sort -u)
# The name before the parameter list of every FL_API declaration.
declared=$(sed -n 's/^FL_API .*[ *]\([A-Za-z_][A-Za-z0-9_]*\)(.*/\1/p' "$header" | sort -u)

if [ -z "$declared" ]; then
  echo "product-exports: no FL_API declaration found in $header" >&2
  exit 1
fi

status=0
extra=$(comm -23 <(echo "$exported") <(echo "$declared"))
missing=$(comm -13 <(echo "$exported") <(echo "$declared"))
if [ -n "$extra" ]; then
  echo "product-exports: exported but not FL_API in $(basename "$header"):" >&2
  echo "  ${extra//$'\n'/$'\n'  }" >&2
  status=1
fi
if [ -n "$missing" ]; then
  echo "product-exports: FL_API but not exported:" >&2
  echo "  ${missing//$'\n'/$'\n'  }" >&2
  status=1
fi
if echo "$exported" | grep -qv '^fl_'; then
  echo "product-exports: symbols without the fl_ prefix are exported" >&2
  status=1
fi
if [ $status -eq 0 ]; then
  echo "product-exports: $(echo "$exported" | wc -l) symbols, all FL_API"
fi
exit $status
