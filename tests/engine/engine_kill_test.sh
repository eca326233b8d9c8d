#!/usr/bin/env bash
# engine_kill_test.sh NODE [ROUNDS] - three engine processes write while one
# of them is killed with SIGKILL at random moments and restarted; then all
# three are killed at once, and no acknowledged write may be missing.
#
# NODE is engine-node (engine_node.c). Each process is one node of a
# three-node cluster with GROUPS groups, every group replicated on every
# node; each writes to the groups it leads and prints "ack GROUP KEY ok"
# once a write is acknowledged (appended to acks-ID, across restarts).
#
# ROUNDS times (default 5): after a random 0.2-1.0 s, SIGKILL a random node
# (the injected fault, not a wait for anything; it must still be running,
# having exited on its own means it failed), restart it after a random
# 0.1-0.5 s, and wait (polling, with a deadline) until the cluster has
# acknowledged more writes: liveness with the node back. Finally SIGKILL
# all three at once and run `NODE verify`, which reopens the three nodes
# and reads every acknowledged key back on the leader and on every node.
#
# FLOTILLA_KILL_SEED=N replays the same choices of node and moment. Exits
# non-zero on a node that died on its own, a cluster that stopped
# acknowledging, or any acknowledged write missing.
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: engine_kill_test.sh NODE [ROUNDS]" >&2
  exit 2
fi
node=$1
rounds=${2:-5}
groups=8
seed=${FLOTILLA_KILL_SEED:-$$}
RANDOM=$seed
work=$(mktemp -d "${TMPDIR:-/tmp}/flotilla-engine-kill.XXXXXX")
declare -a pids=("" "" "" "")
started=$SECONDS
limit=$((SECONDS + 60))

cleanup() {
  for id in 1 2 3; do
    if [ -n "${pids[$id]}" ]; then
      kill -9 "${pids[$id]}" 2>/dev/null || true
      wait "${pids[$id]}" 2>/dev/null || true
    fi
  done
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "engine-kill: FAILED: $1 (replay with FLOTILLA_KILL_SEED=$seed)" >&2
  for id in 1 2 3; do
    if [ -s "$work/node-$id.err" ]; then
      echo "--- node $id stderr (last lines):" >&2
      tail -n 20 "$work/node-$id.err" >&2
    fi
  done
  exit 1
}

base=$("$node" ports 6) || fail "no free ports"

start_node() {
  local id=$1
  "$node" serve "$id" "$work" "$base" "$groups" 120 >>"$work/acks-$id" 2>>"$work/node-$id.err" &
  pids[$id]=$!
}

acks() {
  cat "$work"/acks-* 2>/dev/null | grep -c ' ok$' || true
}

# Polls until `target` acknowledgements are in, for at most 20 s, and
# never past the run's limit: the kill rounds take 60 s at most.
wait_acks() {
  local target=$1 what=$2
  local deadline=$((SECONDS + 20))
  if [ "$deadline" -gt "$limit" ]; then
    deadline=$limit
  fi
  while [ "$(acks)" -lt "$target" ]; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      fail "writes stalled $what: $(acks) acknowledged, wanted $target"
    fi
    sleep 0.05
  done
}

# SIGKILLs a node that must still be running, and reaps it.
kill_node() {
  local id=$1 status=0
  kill -9 "${pids[$id]}" 2>/dev/null || true
  wait "${pids[$id]}" 2>/dev/null || status=$? # quiet: bash reports the kill
  pids[$id]=
  if [ "$status" -ne 137 ]; then
    fail "node $id exited with status $status before it was killed"
  fi
}

for id in 1 2 3; do
  : >"$work/acks-$id"
  start_node "$id"
done
wait_acks 100 "at the start"
for round in $(seq 1 "$rounds"); do
  sleep "$(printf '0.%03d' $((200 + RANDOM % 801)))"
  victim=$((1 + RANDOM % 3))
  kill_node "$victim"
  sleep "$(printf '0.%03d' $((100 + RANDOM % 401)))"
  start_node "$victim"
  wait_acks $(($(acks) + 100)) "after node $victim restarted in round $round"
  echo "round $round: node $victim killed and restarted; $(acks) acknowledged so far"
done

# Every node at once: nothing gets flushed or closed.
kill -9 "${pids[1]}" "${pids[2]}" "${pids[3]}" 2>/dev/null || true
for id in 1 2 3; do
  status=0
  wait "${pids[$id]}" 2>/dev/null || status=$?
  pids[$id]=
  if [ "$status" -ne 137 ]; then
    fail "node $id exited with status $status before the final kill"
  fi
done

if ! summary=$("$node" verify "$work" "$base" "$groups" "$work"/acks-1 "$work"/acks-2 \
  "$work"/acks-3 2>>"$work/verify.err"); then
  cat "$work/verify.err" >&2
  fail "the verification failed"
fi
echo "engine-kill: ok, $rounds kills and one of all nodes: $summary ($((SECONDS - started)) s," \
  "seed $seed)"
