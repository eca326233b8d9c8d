#!/usr/bin/env bash
# server_admin_test.sh FLOTILLAD TOOLS_DIR - membership admin commands and
# the cluster map kept in the meta group.
#
# Four nodes, three replicas of eight groups. Keys are written; group 1
# (first placed on nodes 1, 2, 3) moves from node 1 to node 4 and every
# node's map shows it; node 2, an original member still in the group, is
# killed with SIGKILL and the group's keys stay readable and writable.
# Node 2 comes back, node 3 is removed: it holds no replica afterwards and
# every key is still served. Then every node restarts and the map (moves,
# the removed node) must come back from the meta group.
set -euo pipefail
source "$(dirname "$0")/common.sh"

if [ $# -ne 2 ]; then
  echo "usage: server_admin_test.sh FLOTILLAD TOOLS_DIR" >&2
  exit 2
fi
server_test_setup server-admin "$1" "$2"
test_flags=(--shards 1 --groups 8 --replicas 3 --log-level info)
keys=200

cli() {
  local port=$1
  shift
  timeout 20 redis-cli -p "$port" "$@" 2>&1
}

# The members of GROUP in the map of the node on PORT, sorted: "2,3,4".
members_of() {
  cli "$1" --json flotilla groups |
    sed -n "s/.*\[$2,\"[0-9-]*\",[0-9]*,\[\([0-9,]*\)\]\].*/\1/p" | tr ',' '\n' | sort -n |
    paste -sd, -
}

# Every group's sorted members, one group a line.
all_members() {
  local group
  for group in 1 2 3 4 5 6 7 8; do
    echo "$group:$(members_of "$1" "$group")"
  done
}

members_are() {
  [ "$(members_of "$1" "$2")" = "$3" ]
}

node_state_is() {
  cli "$1" --json flotilla nodes | grep -qF "[$2,\"$3\",$4]"
}

holds_no_replica() {
  cli "$1" info raft | grep -q "^shard0:groups=0,"
}

# Every key reads back its expected value through the node on PORT.
keys_served() {
  local port=$1 got
  got=$(for ((i = 1; i <= keys; i++)); do echo "GET key:$i"; done | timeout 30 redis-cli -p "$port")
  [ "$got" = "$(for ((i = 1; i <= keys; i++)); do echo "${expected[i]}"; done)" ]
}

start_cluster 4

# ---- keys -----------------------------------------------------------------------------
expected=()
for ((i = 1; i <= keys; i++)); do
  expected[i]="value:$i"
done
written=$(for ((i = 1; i <= keys; i++)); do echo "SET key:$i ${expected[i]}"; done |
  timeout 30 redis-cli -p "${ports[1]}" | grep -c '^OK$' || true)
[ "$written" -eq "$keys" ] || fail "only $written of $keys SETs answered OK"
# The keys of group 1 (slots 0-2047 of 8 groups).
group_one_keys=()
slots=$(for ((i = 1; i <= keys; i++)); do echo "CLUSTER KEYSLOT key:$i"; done |
  timeout 30 redis-cli -p "${ports[1]}")
i=0
while read -r slot; do
  i=$((i + 1))
  [ "$slot" -lt 2048 ] && group_one_keys+=("$i")
done <<<"$slots"
[ "${#group_one_keys[@]}" -gt 0 ] || fail "no key of group 1 among $keys keys"
echo "server-admin: $keys keys written, ${#group_one_keys[@]} in group 1"

# ---- argument errors -------------------------------------------------------------------
cli "${ports[1]}" flotilla move-replica 99 1 4 | grep -q "^ERR expected FLOTILLA MOVE-REPLICA" ||
  fail "MOVE-REPLICA of an unknown group was not refused"
cli "${ports[1]}" flotilla remove-replica 1 4 | grep -q "^ERR node 4 holds no replica" ||
  fail "REMOVE-REPLICA of a non-member was not refused"

# ---- MOVE-REPLICA, then SIGKILL of an original member ---------------------------------
members_are "${ports[1]}" 1 "1,2,3" || fail "group 1 is not first placed on 1,2,3"
reply=$(cli "${ports[2]}" flotilla move-replica 1 1 4)
[ "$reply" = "OK" ] || fail "MOVE-REPLICA 1 1 4: $reply"
for id in 1 2 3 4; do
  wait_until 10 "node $id's map showing group 1 on 2,3,4" members_are "${ports[id]}" 1 "2,3,4"
done
cli "${ports[1]}" flotilla status 1 | grep -q "no replica" ||
  fail "node 1 still holds a replica of group 1"
cluster kill-node 2 -d "$cluster_dir"
wait_until 20 "every key served through node 1 with node 2 down" keys_served "${ports[1]}"
for i in "${group_one_keys[@]}"; do
  expected[i]="updated:$i"
  reply=$(cli "${ports[1]}" set "key:$i" "${expected[i]}")
  [ "$reply" = "OK" ] || fail "SET key:$i in group 1 with node 2 down: $reply"
done
keys_served "${ports[4]}" || fail "node 4 does not serve every key with node 2 down"
echo "server-admin: group 1 moved to node 4 and served with node 2 killed"

# ---- REMOVE-NODE ------------------------------------------------------------------------
cluster start-node 2 -d "$cluster_dir"
cluster wait -d "$cluster_dir" -t 30 || fail "node 2 did not come back"
reply=$(cli "${ports[1]}" flotilla remove-node 3)
[ "$reply" = "OK" ] || fail "REMOVE-NODE 3: $reply"
for id in 1 2 3 4; do
  wait_until 10 "node $id's map showing node 3 removed" node_state_is "${ports[id]}" 3 removed 0
done
holds_no_replica "${ports[3]}" || fail "node 3 still holds replicas: $(cli "${ports[3]}" info raft)"
for id in 1 2 4; do
  # 3 replicas of 8 groups and of the meta group on 3 nodes: all 9 on each.
  node_state_is "${ports[id]}" "$id" active 9 || fail "node $id does not hold 9 replicas"
done
keys_served "${ports[3]}" || fail "node 3 does not serve every key after its removal"
keys_served "${ports[2]}" || fail "node 2 does not serve every key after node 3's removal"
map_before=$(all_members "${ports[1]}")
echo "server-admin: node 3 removed; map: $(tr '\n' ' ' <<<"$map_before")"

# ---- restart: the map comes from the meta group -------------------------------------------
cluster stop -d "$cluster_dir" -t 20 || fail "a node did not exit 0 on SIGTERM"
for id in 1 2 3 4; do
  cluster start-node "$id" -d "$cluster_dir"
done
cluster wait -d "$cluster_dir" -t 30 || fail "the restarted cluster was not ready"
map_matches() {
  [ "$(all_members "$1")" = "$map_before" ] && node_state_is "$1" 3 removed 0
}
for id in 1 2 3 4; do
  wait_until 10 "node $id's map after the restart" map_matches "${ports[id]}"
done
holds_no_replica "${ports[3]}" || fail "node 3 holds replicas after the restart"
wait_until 20 "every key served through node 3 after the restart" keys_served "${ports[3]}"
echo "server-admin: the map survived a restart of every node"
echo "server-admin: passed"
