#!/usr/bin/env bash
# server_restart_test.sh FLOTILLAD TOOLS_DIR - graceful shutdown, restart,
# and the command line.
#
# `flotillad --help` exits 0 and names --config; configurations with an
# unknown key, a bad `nodes` string or no node-id are refused with a
# non-zero exit and a message naming the option. Then a 3-node cluster
# takes writes, a second flotillad on a running node's data directory is
# refused, every node gets SIGTERM and must exit 0 saying it shut
# down, all three start again from their data directories, and every
# acknowledged key is read back from every node.
set -euo pipefail
source "$(dirname "$0")/common.sh"

if [ $# -ne 2 ]; then
  echo "usage: server_restart_test.sh FLOTILLAD TOOLS_DIR" >&2
  exit 2
fi
server_test_setup server-restart "$1" "$2"

# ---- the command line --------------------------------------------------------------
help=$(timeout 10 "$flotillad" --help 2>&1) || fail "flotillad --help exited non-zero"
grep -q -- "--config" <<<"$help" || fail "flotillad --help does not mention --config"

# refused NAME WORD INI: flotillad must exit non-zero, naming WORD.
refused() {
  local name=$1 word=$2 status=0 output file=$work/${1// /-}.ini
  cat >"$file"
  output=$(timeout 10 "$flotillad" --config "$file" 2>&1) || status=$?
  [ "$status" -ne 0 ] || fail "a config with $name was accepted"
  [ "$status" -ne 124 ] || fail "flotillad hung on a config with $name"
  grep -q -- "$word" <<<"$output" ||
    fail "the error for $name does not name '$word': $output"
  echo "server-restart: $name refused (status $status): $(head -n 1 <<<"$output")"
}

refused "an unknown key" "no-such-option" <<EOF
[server]
node-id = 1
data-dir = $work/unknown-key
no-such-option = 5
[cluster]
nodes = 1@127.0.0.1:1:2
EOF
refused "a bad nodes string" "nodes" <<EOF
[server]
node-id = 1
data-dir = $work/bad-nodes
[cluster]
nodes = 1@127.0.0.1:notaport
EOF
refused "no node-id" "node-id" <<EOF
[server]
data-dir = $work/no-node-id
[cluster]
nodes = 1@127.0.0.1:1:2
EOF
status=0
output=$(timeout 10 "$flotillad" --no-such-flag 1 2>&1) || status=$?
[ "$status" -ne 0 ] && grep -q -- "no-such-flag" <<<"$output" ||
  fail "an unknown flag was not refused by name (status $status): $output"

# ---- SIGTERM and restart -------------------------------------------------------------
start_cluster 3
acks=$work/acks
"$tools/ack-client" write --ports "${ports[1]},${ports[2]},${ports[3]}" --acks "$acks" \
  --seconds 2 --pipeline 8 >"$work/writer.out" 2>&1 || fail "ack-client: $(cat "$work/writer.out")"
written=$(wc -l <"$acks")
[ "$written" -gt 100 ] || fail "only $written writes acknowledged in 2 s: $(cat "$work/writer.out")"
echo "server-restart: $written keys written"

# A second flotillad on a running node's data directory must not start: it
# would interleave its WAL writes with the first one's.
status=0
output=$(timeout 20 "$flotillad" --config "$cluster_dir/node-1.ini" "${test_flags[@]}" 2>&1) ||
  status=$?
[ "$status" -ne 0 ] || fail "a second flotillad on node 1's data directory started"
[ "$status" -ne 124 ] || fail "a second flotillad on node 1's data directory hung"
grep -q "in use" <<<"$output" || fail "the second flotillad did not say why it stopped: $output"
echo "server-restart: a second node on the same data directory refused: $(tail -n 1 <<<"$output")"
[ "$(redis-cli -p "${ports[1]}" ping)" = "PONG" ] || fail "node 1 was disturbed by the refused start"

cluster stop -d "$cluster_dir" -t 20 || fail "a node did not exit 0 on SIGTERM"
for id in 1 2 3; do
  grep -qi "shut" "$cluster_dir/node-$id.log" ||
    fail "node $id's log does not report the shutdown"
done
restart_all_and_verify "$acks" "a key written before the restart"
echo "server-restart: ok, $written keys readable on every node after SIGTERM and restart"
