#!/usr/bin/env bash
# server_kill_test.sh FLOTILLAD TOOLS_DIR - no acknowledged write is lost
# when a leader is killed with SIGKILL.
#
# 3 nodes. redis-benchmark loads one node with SETs while ack-client writes
# keys through all three nodes (forwarded to the leaders) and records each
# acknowledged key. The node leading the most slot ranges (CLUSTER SLOTS)
# is killed with SIGKILL; writes must go on through the other two for
# ~3 s; the node is restarted and writes must go on with it back. Then the
# writers stop, every node gets SIGTERM (and must exit 0), all three are
# started again, and every acknowledged key is read back from every node.
set -euo pipefail
source "$(dirname "$0")/common.sh"

if [ $# -ne 2 ]; then
  echo "usage: server_kill_test.sh FLOTILLAD TOOLS_DIR" >&2
  exit 2
fi
server_test_setup server-kill "$1" "$2"
acks=$work/acks
: >"$acks"

start_cluster 3

acknowledged() {
  wc -l <"$acks"
}

# wait_acks MORE WHAT: polls until MORE keys beyond now are acknowledged.
wait_acks() {
  local target=$(($(acknowledged) + $1))
  wait_until 20 "$2 ($(acknowledged) acknowledged, waiting for $target)" \
    eval '[ "$(acknowledged)" -ge '"$target"' ] && writer_running'
}

writer_running() {
  kill -0 "$writer" 2>/dev/null || fail "ack-client exited early: $(cat "$work/writer.out")"
}

# The client port that masters the most CLUSTER SLOTS ranges: a leader.
busiest_leader_port() {
  redis-cli -p "${ports[1]}" --no-raw cluster slots | awk '
    /^ *[0-9]+\) 1\) \(integer\)/ { state = 1; next }
    state == 1 && /^ +3\) 1\) "/ { state = 2; next }
    state == 2 && /^ +2\) \(integer\) [0-9]+$/ { count[$3]++; state = 0 }
    END { for (port in count) if (count[port] > best) { best = count[port]; chosen = port }
          print chosen }'
}

victim_port=$(busiest_leader_port)
victim=0
for id in 1 2 3; do
  [ "${ports[id]}" = "$victim_port" ] && victim=$id
done
[ "$victim" -ne 0 ] || fail "no leader found in CLUSTER SLOTS (got port '$victim_port')"
loaded=$((victim % 3 + 1)) # redis-benchmark loads a node that stays up
echo "server-kill: node $victim leads the most slot ranges; load on node $loaded"

redis-benchmark -p "${ports[loaded]}" -t set -n 100000000 -c 8 -r 100000 -d 16 -q \
  >/dev/null 2>&1 &
benchmark=$!
track_pid "$benchmark"
"$tools/ack-client" write --ports "${ports[1]},${ports[2]},${ports[3]}" --acks "$acks" \
  --seconds 100 --pipeline 4 >"$work/writer.out" 2>&1 &
writer=$!
track_pid "$writer"

wait_acks 300 "writes before the kill"
cluster kill-node "$victim" -d "$cluster_dir" -s KILL
killed_at=$SECONDS
echo "server-kill: node $victim killed with SIGKILL at $(acknowledged) acknowledged writes"
# The fault lasts ~3 s of writing; the writes must go on meanwhile.
wait_acks 200 "writes with node $victim down"
while [ $((SECONDS - killed_at)) -lt 3 ]; do
  writer_running
  sleep 0.1
done
cluster start-node "$victim" -d "$cluster_dir"
cluster wait -d "$cluster_dir" -t 30 || fail "the cluster was not ready again with node $victim"
wait_acks 300 "writes after node $victim came back"
echo "server-kill: node $victim restarted; $(acknowledged) acknowledged so far"

kill -TERM "$writer"
wait "$writer" || fail "ack-client failed: $(cat "$work/writer.out")"
cat "$work/writer.out"
kill -TERM "$benchmark" 2>/dev/null || true
wait "$benchmark" 2>/dev/null || true

cluster stop -d "$cluster_dir" -t 20 || fail "a node did not shut down cleanly on SIGTERM"
restart_all_and_verify "$acks" "an acknowledged write"
echo "server-kill: ok, $(acknowledged) acknowledged writes survived killing node $victim"
