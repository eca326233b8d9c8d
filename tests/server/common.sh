# shellcheck shell=bash
# common.sh - what the flotillad integration tests share (sourced, not run).
#
# A test calls `server_test_setup NAME FLOTILLAD TOOLS_DIR` first: it makes
# a temporary directory ($work), and an EXIT trap that kills every process
# the test started (cluster nodes, redis-server, anything recorded with
# `track_pid`) and removes $work. TOOLS_DIR holds free-ports, raw-client
# and ack-client (the build's tests/server directory).

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cluster_sh=$repo/scripts/cluster.sh
# Small clusters for a 2-core machine: one shard per node, 16 groups.
test_flags=(--shards 1 --groups 16 --log-level info)
tracked_pids=()

server_test_setup() {
  test_name=$1
  flotillad=$2
  tools=$3
  for tool in free-ports raw-client ack-client; do
    [ -x "$tools/$tool" ] || { echo "$test_name: no $tools/$tool" >&2; exit 2; }
  done
  [ -x "$flotillad" ] || { echo "$test_name: no flotillad at $flotillad" >&2; exit 2; }
  command -v redis-cli >/dev/null || { echo "$test_name: redis-cli missing" >&2; exit 2; }
  work=$(mktemp -d "${TMPDIR:-/tmp}/flotilla-$test_name.XXXXXX")
  cluster_dir=$work/cluster
  trap server_test_cleanup EXIT
}

track_pid() {
  tracked_pids+=("$1")
}

server_test_cleanup() {
  local pid file
  for pid in ${tracked_pids[@]+"${tracked_pids[@]}"}; do
    # Reaped at once, so that bash does not report the kill.
    { kill -9 "$pid" && wait "$pid"; } 2>/dev/null || true
  done
  for file in "$cluster_dir"/node-*.pid; do
    if [ -f "$file" ]; then
      kill -9 "$(cat "$file")" 2>/dev/null || true
    fi
  done
  # The nodes' wrapper shells record the exit status, then end.
  for file in "$cluster_dir"/node-*.pid; do
    [ -f "$file" ] || continue
    pid=$(cat "$file")
    while kill -0 "$pid" 2>/dev/null; do
      sleep 0.01
    done
  done
  wait 2>/dev/null || true
  rm -rf "$work"
}

fail() {
  local file
  echo "$test_name: FAILED: $*" >&2
  for file in "$cluster_dir"/node-*.log; do
    [ -s "$file" ] || continue
    echo "--- $(basename "$file") (last lines):" >&2
    tail -n 15 "$file" >&2
  done
  exit 1
}

# Ports: the nodes' client ports, then their peer ports, from one search
# so that the two ranges cannot overlap.
peer_stride=4
pick_cluster_ports() {
  local nodes=$1 base
  base=$("$tools/free-ports" $((nodes + nodes * peer_stride))) || fail "no free ports"
  client_base=$base
  peer_base=$((base + nodes))
}

# start_cluster NODES [extra flotillad flags]: starts and waits for
# cluster_state:ok on every node; sets ports[1..NODES].
start_cluster() {
  local nodes=$1 id
  shift
  pick_cluster_ports "$nodes"
  bash "$cluster_sh" start -n "$nodes" -d "$cluster_dir" -x "$flotillad" -p "$client_base" \
    -P "$peer_base" -S "$peer_stride" -t 30 -- "${test_flags[@]}" "$@" \
    >"$work/cluster-start.out" 2>&1 || {
    cat "$work/cluster-start.out" >&2
    fail "the cluster did not start"
  }
  ports=()
  for ((id = 1; id <= nodes; id++)); do
    ports[id]=$((client_base + id - 1))
  done
}

cluster() {
  bash "$cluster_sh" "$@"
}

node_pid() {
  cat "$cluster_dir/node-$1.pid"
}

# A redis-server without persistence on a free port: sets redis_port.
start_redis() {
  command -v redis-server >/dev/null || fail "redis-server missing (scripts/deps.sh installs it)"
  redis_port=$("$tools/free-ports" 1) || fail "no free port"
  mkdir -p "$work/redis"
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$work/redis" "$@" >"$work/redis/log" 2>&1 &
  track_pid $!
  wait_until 10 "redis-server answering PING" redis_answers "$redis_port"
}

redis_answers() {
  [ "$(timeout 5 redis-cli -p "$1" ping 2>/dev/null)" = "PONG" ]
}

# wait_until SECONDS WHAT COMMAND...: polls COMMAND until it succeeds.
wait_until() {
  local seconds=$1 what=$2 deadline
  shift 2
  deadline=$((SECONDS + seconds))
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || fail "not within $seconds s: $what"
    sleep 0.05
  done
}

# The node on `port` is alive and serves a write and a read.
assert_serving() {
  local port=$1 pid=${2:-} value
  if [ -n "$pid" ]; then
    kill -0 "$pid" 2>/dev/null || fail "flotillad (pid $pid) is gone"
  fi
  [ "$(timeout 10 redis-cli -p "$port" ping 2>&1)" = "PONG" ] ||
    fail "PING on port $port failed (or took over 10 s)"
  value="alive-$RANDOM"
  [ "$(timeout 10 redis-cli -p "$port" set "{probe}k" "$value" 2>&1)" = "OK" ] ||
    fail "SET on port $port failed (or took over 10 s)"
  [ "$(timeout 10 redis-cli -p "$port" get "{probe}k" 2>&1)" = "$value" ] ||
    fail "GET on port $port failed (or took over 10 s)"
}

# restart_all_and_verify ACKS WHAT: starts nodes 1..3 of the stopped
# cluster again, waits until it is ready, and checks that every key listed
# in ACKS reads back with its value on every node; WHAT names the keys in
# the failure message.
restart_all_and_verify() {
  local acks=$1 what=$2 id
  for id in 1 2 3; do
    cluster start-node "$id" -d "$cluster_dir"
  done
  cluster wait -d "$cluster_dir" -t 30 || fail "the restarted cluster was not ready"
  for id in 1 2 3; do
    "$tools/ack-client" verify --port "${ports[id]}" --acks "$acks" --seconds 20 ||
      fail "$what is missing on node $id"
  done
}
