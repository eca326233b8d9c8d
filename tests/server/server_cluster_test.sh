#!/usr/bin/env bash
# server_cluster_test.sh FLOTILLAD TOOLS_DIR - flotillad as a Redis Cluster.
#
# On a 3-node cluster: keys in many slots written with `redis-cli -c`
# through one node read back through another (MOVED followed); every
# node's CLUSTER SLOTS and CLUSTER NODES cover the 16384 slots exactly
# once; redis-benchmark in cluster mode, and in plain mode against one
# node (forwarded), unpipelined and with -P 16, completes with nonzero
# rates.
set -euo pipefail
source "$(dirname "$0")/common.sh"

if [ $# -ne 2 ]; then
  echo "usage: server_cluster_test.sh FLOTILLAD TOOLS_DIR" >&2
  exit 2
fi
server_test_setup server-cluster "$1" "$2"
keys=300

start_cluster 3

# ---- SET through one node, GET through another --------------------------------
for id in 1 2 3; do
  for ((n = id; n <= keys; n += 3)); do
    echo "SET cluster:$n value-$n"
  done >"$work/set-$id"
  for ((n = id; n <= keys; n += 3)); do
    echo "GET cluster:$n"
  done >"$work/get-$id"
  for ((n = id; n <= keys; n += 3)); do
    echo "value-$n"
  done >"$work/expected-$id"
done
for id in 1 2 3; do
  redis-cli -c -p "${ports[id]}" <"$work/set-$id" >"$work/set-$id.out" 2>&1 || true
  if [ "$(grep -cx OK "$work/set-$id.out")" -ne "$(wc -l <"$work/set-$id")" ]; then
    grep -vx OK "$work/set-$id.out" | head -n 5 >&2
    fail "redis-cli -c SETs through node $id were not all OK"
  fi
done
for id in 1 2 3; do
  reader=$((id % 3 + 1))
  redis-cli -c -p "${ports[reader]}" <"$work/get-$id" >"$work/get-$id.out" 2>&1 || true
  if ! diff -q "$work/expected-$id" "$work/get-$id.out" >/dev/null; then
    diff "$work/expected-$id" "$work/get-$id.out" | head -n 10 >&2
    fail "keys written through node $id read back wrong through node $reader"
  fi
done
echo "server-cluster: $keys keys in many slots written and read back across nodes"

# ---- the slot map ------------------------------------------------------------
# "FIRST LAST" per range, sorted: must tile 0..16383 with no gap or overlap.
check_tiling() {
  local what=$1 file=$2
  sort -n "$file" | awk -v what="$what" 'BEGIN { next_slot = 0 }
    { if ($1 != next_slot) { printf "%s: range %s-%s after slot %d\n", what, $1, $2, next_slot - 1; bad = 1 }
      next_slot = $2 + 1 }
    END { if (next_slot != 16384) { printf "%s: covered up to %d, not 16383\n", what, next_slot - 1; bad = 1 }
          exit bad }' >&2 || fail "$what does not cover the 16384 slots exactly once"
}

# CLUSTER SLOTS as redis-cli prints it: "N) 1) (integer) FIRST" then
# "   2) (integer) LAST", then the master "   3) 1) "HOST"" / "2) (integer) PORT".
slots_ranges() {
  redis-cli -p "$1" --no-raw cluster slots | awk '
    /^ *[0-9]+\) 1\) \(integer\) [0-9]+$/ { first = $4; state = 1; next }
    state == 1 && /^ +2\) \(integer\) [0-9]+$/ { print first, $3; state = 0 }'
}

nodes_ranges() {
  redis-cli -p "$1" cluster nodes | tr -d '\r' | awk '
    $3 ~ /master/ { for (i = 9; i <= NF; i++) {
      if ($i ~ /^\[/) continue
      n = split($i, r, "-"); print r[1], (n == 2 ? r[2] : r[1]) } }'
}

for id in 1 2 3; do
  slots_ranges "${ports[id]}" >"$work/slots-$id"
  check_tiling "CLUSTER SLOTS on node $id" "$work/slots-$id"
  nodes_ranges "${ports[id]}" >"$work/nodes-$id"
  check_tiling "CLUSTER NODES on node $id" "$work/nodes-$id"
  listed=$(redis-cli -p "${ports[id]}" cluster nodes | grep -c .)
  [ "$listed" -eq 3 ] || fail "CLUSTER NODES on node $id lists $listed nodes, not 3"
  [ "$(redis-cli -p "${ports[id]}" cluster nodes | grep -c myself)" -eq 1 ] ||
    fail "CLUSTER NODES on node $id has no single 'myself' line"
done
echo "server-cluster: CLUSTER SLOTS and CLUSTER NODES cover 16384 slots on every node"

# ---- redis-benchmark -------------------------------------------------------------
# benchmark WHAT ARGS...: each test's closing "NAME: RATE requests per second"
# line must be there with a rate above zero.
benchmark() {
  local what=$1 output line rate
  shift
  if ! output=$(timeout 50 redis-benchmark "$@" 2>&1); then
    echo "$output" | tr '\r' '\n' | tail -n 5 >&2
    fail "redis-benchmark $what failed"
  fi
  for test in SET GET; do
    line=$(echo "$output" | tr '\r' '\n' | grep "^$test: .* requests per second" | tail -n 1)
    rate=$(echo "$line" | sed -n 's/^[A-Z]*: \([0-9.]*\) requests per second.*/\1/p')
    if [ -z "$rate" ] || ! awk -v r="$rate" 'BEGIN { exit !(r > 0) }'; then
      echo "$output" | tr '\r' '\n' | tail -n 5 >&2
      fail "redis-benchmark $what: no nonzero $test rate"
    fi
    echo "server-cluster: redis-benchmark $what: $line"
  done
}

benchmark "--cluster" --cluster -p "${ports[1]}" -t set,get -n 20000 -q
benchmark "plain, node 2" -p "${ports[2]}" -t set,get -n 10000 -c 20 -r 100000 -q
benchmark "plain -P 16, node 3" -p "${ports[3]}" -t set,get -n 20000 -c 20 -r 100000 -P 16 -q
assert_serving "${ports[1]}" "$(node_pid 1)"
echo "server-cluster: ok"
