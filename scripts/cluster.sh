#!/usr/bin/env bash
# cluster.sh - a local flotillad cluster on loopback, for trying it out, the
# integration tests and bench/compare.sh.
#
#   cluster.sh start [-n NODES] [-d DIR] [-p BASE_CLIENT_PORT] [-P BASE_PEER_PORT]
#                    [-S PEER_STRIDE] [-b BUILD_DIR] [-x FLOTILLAD] [-t SECONDS]
#                    [-- extra flotillad flags]
#       writes DIR/node-ID.ini for nodes 1..NODES (default 3), starts them in
#       the background (output in DIR/node-ID.log, pid in DIR/node-ID.pid,
#       exit status in DIR/node-ID.exit once it ends) and waits until every
#       node answers PING and reports cluster_state:ok.
#   cluster.sh stop [-d DIR] [-t SECONDS]
#       SIGTERM to every running node, then waits; a node still running at
#       the deadline gets SIGKILL (and the command says so and fails). Fails
#       too when a node exited with a status other than 0.
#   cluster.sh status [-d DIR]
#       one line per node: pid, running or exit status, PING, cluster_state.
#   cluster.sh start-node ID [-d DIR]     starts node ID again (same config)
#   cluster.sh kill-node ID [-s SIGNAL] [-d DIR] [-t SECONDS]
#       sends SIGNAL (default KILL) to node ID and waits until it is gone.
#   cluster.sh wait [-d DIR] [-t SECONDS]  waits for the readiness above.
#
# Node i (1-based) listens for clients on BASE_CLIENT_PORT + i - 1 (default
# base 7001) and for peers on BASE_PEER_PORT + (i - 1) * PEER_STRIDE (default
# base 17001, stride 100): each shard s of a node takes its peer port + s, so
# the stride bounds the shards per node. Extra flags after `--` go to every
# flotillad as given (e.g. `-- --shards 2 --groups 16`).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
dir=/tmp/flotilla-cluster
nodes=3
client_base=7001
peer_base=
peer_stride=100
build_dir=$repo/build
binary=
deadline_seconds=30
signal=KILL
extra=()

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

die() {
  echo "cluster: $*" >&2
  exit 1
}

log_tail() {
  local id=$1
  if [ -s "$dir/node-$id.log" ]; then
    echo "--- $dir/node-$id.log (last lines):" >&2
    tail -n 20 "$dir/node-$id.log" >&2
  fi
}

# ---- options --------------------------------------------------------------

parse_options() {
  local option
  OPTIND=1
  while getopts "n:d:p:P:S:b:x:t:s:h" option; do
    case $option in
    n) nodes=$OPTARG ;;
    d) dir=$OPTARG ;;
    p) client_base=$OPTARG ;;
    P) peer_base=$OPTARG ;;
    S) peer_stride=$OPTARG ;;
    b) build_dir=$OPTARG ;;
    x) binary=$OPTARG ;;
    t) deadline_seconds=$OPTARG ;;
    s) signal=$OPTARG ;;
    h)
      usage
      exit 0
      ;;
    *) die "bad option (cluster.sh -h for help)" ;;
    esac
  done
  shift $((OPTIND - 1))
  if [ $# -gt 0 ] && [ "$1" = "--" ]; then
    shift
  fi
  extra=("$@")
  [[ $nodes =~ ^[1-9][0-9]?$ ]] || die "-n wants a node count from 1 to 99, got '$nodes'"
  [[ $client_base =~ ^[0-9]+$ ]] || die "-p wants a port, got '$client_base'"
  [[ $deadline_seconds =~ ^[0-9]+$ ]] || die "-t wants whole seconds, got '$deadline_seconds'"
  if [ -z "$peer_base" ]; then
    peer_base=$((client_base + 10000))
  fi
}

# The cluster's shape is recorded at start so that the other commands need
# only -d.
load_shape() {
  [ -f "$dir/cluster.env" ] || die "no cluster in $dir (no $dir/cluster.env): start one first"
  # shellcheck source=/dev/null
  source "$dir/cluster.env"
}

save_shape() {
  {
    printf 'nodes=%q\nclient_base=%q\npeer_base=%q\npeer_stride=%q\nbinary=%q\n' \
      "$nodes" "$client_base" "$peer_base" "$peer_stride" "$binary"
    printf 'extra=('
    if [ ${#extra[@]} -gt 0 ]; then
      printf '%q ' "${extra[@]}"
    fi
    printf ')\n'
  } >"$dir/cluster.env"
}

client_port() {
  echo $((client_base + $1 - 1))
}

# ---- processes ------------------------------------------------------------

node_pid() {
  cat "$dir/node-$1.pid" 2>/dev/null || true
}

# Running means: started, and its wrapper has not recorded an exit status.
node_running() {
  local pid
  pid=$(node_pid "$1")
  [ -n "$pid" ] && [ ! -f "$dir/node-$1.exit" ] && kill -0 "$pid" 2>/dev/null
}

write_config() {
  local id=$1 members="" i
  for ((i = 1; i <= nodes; i++)); do
    members+="${members:+,}$i@127.0.0.1:$(client_port "$i"):$((peer_base + (i - 1) * peer_stride))"
  done
  mkdir -p "$dir/node-$id"
  cat >"$dir/node-$id.ini" <<EOF
# Written by scripts/cluster.sh: node $id of $nodes.
[server]
node-id = $id
data-dir = $dir/node-$id
bind = 127.0.0.1

[cluster]
nodes = $members
replicas = $((nodes < 3 ? nodes : 3))

[log]
log-level = info
EOF
}

# A subshell stays behind as the node's parent to record its exit status,
# which a later `stop` reports (0 is a graceful shutdown).
start_node() {
  local id=$1
  node_running "$id" && die "node $id is already running (pid $(node_pid "$id"))"
  rm -f "$dir/node-$id.exit" "$dir/node-$id.pid"
  (
    status=0
    "$binary" --config "$dir/node-$id.ini" ${extra[@]+"${extra[@]}"} \
      </dev/null >>"$dir/node-$id.log" 2>&1 &
    echo $! >"$dir/node-$id.pid.tmp"
    mv "$dir/node-$id.pid.tmp" "$dir/node-$id.pid"
    wait $! || status=$?
    echo "$status" >"$dir/node-$id.exit"
  ) </dev/null >/dev/null 2>&1 &
  local deadline=$((SECONDS + 5))
  until [ -f "$dir/node-$id.pid" ]; do
    [ "$SECONDS" -lt "$deadline" ] || die "node $id did not start"
    sleep 0.01
  done
}

# Waits until node `id` is gone; true if it went before the deadline.
await_exit() {
  local id=$1 deadline=$2
  while node_running "$id"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.02
  done
  # The wrapper records the status right after the process is reaped.
  while [ ! -f "$dir/node-$id.exit" ] && [ "$SECONDS" -lt "$deadline" ]; do
    sleep 0.01
  done
}

cluster_state() {
  timeout 5 redis-cli -p "$(client_port "$1")" cluster info 2>/dev/null |
    tr -d '\r' | sed -n 's/^cluster_state://p'
}

node_ready() {
  [ "$(timeout 5 redis-cli -p "$(client_port "$1")" ping 2>/dev/null)" = "PONG" ] &&
    [ "$(cluster_state "$1")" = "ok" ]
}

await_ready() {
  local deadline=$((SECONDS + deadline_seconds)) id
  for ((id = 1; id <= nodes; id++)); do
    until node_ready "$id"; do
      if ! node_running "$id"; then
        log_tail "$id"
        die "node $id exited (status $(cat "$dir/node-$id.exit" 2>/dev/null || echo '?'))" \
          "before the cluster was ready"
      fi
      if [ "$SECONDS" -ge "$deadline" ]; then
        log_tail "$id"
        die "node $id not ready within ${deadline_seconds} s (PING and cluster_state:ok," \
          "port $(client_port "$id"))"
      fi
      sleep 0.05
    done
  done
}

# ---- commands ---------------------------------------------------------------

find_binary() {
  if [ -z "$binary" ]; then
    binary=$build_dir/server/flotillad
  fi
  [ -x "$binary" ] || die "no flotillad at $binary (build it, or give -b BUILD_DIR or -x PATH)"
  binary=$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")
}

command_start() {
  local id
  find_binary
  command -v redis-cli >/dev/null || die "redis-cli is needed (Debian package redis-tools)"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ -f "$dir/cluster.env" ]; then
    local previous=$nodes
    nodes=$(source "$dir/cluster.env" && echo "$nodes")
    for ((id = 1; id <= nodes; id++)); do
      node_running "$id" && die "a cluster is running in $dir: cluster.sh stop -d $dir first"
    done
    nodes=$previous
  fi
  save_shape
  for ((id = 1; id <= nodes; id++)); do
    write_config "$id"
    start_node "$id"
  done
  await_ready
  echo "cluster: $nodes nodes ready in $dir, client ports $(client_port 1)..$(client_port "$nodes")"
  echo "cluster: connect with: redis-cli -c -p $(client_port 1)"
}

command_stop() {
  local id deadline status=0 code
  load_shape
  for ((id = 1; id <= nodes; id++)); do
    if node_running "$id"; then
      kill -TERM "$(node_pid "$id")" 2>/dev/null || true
    fi
  done
  deadline=$((SECONDS + deadline_seconds))
  for ((id = 1; id <= nodes; id++)); do
    [ -f "$dir/node-$id.pid" ] || continue
    if ! await_exit "$id" "$deadline"; then
      echo "cluster: node $id still running ${deadline_seconds} s after SIGTERM: sent SIGKILL" >&2
      kill -KILL "$(node_pid "$id")" 2>/dev/null || true
      await_exit "$id" $((SECONDS + 5)) || true
      log_tail "$id"
      status=1
      continue
    fi
    code=$(cat "$dir/node-$id.exit" 2>/dev/null || echo '?')
    if [ "$code" != "0" ]; then
      echo "cluster: node $id exited with status $code" >&2
      log_tail "$id"
      status=1
    fi
  done
  echo "cluster: stopped $nodes nodes in $dir"
  return $status
}

command_status() {
  local id state pong
  load_shape
  for ((id = 1; id <= nodes; id++)); do
    if node_running "$id"; then
      pong=$(timeout 5 redis-cli -p "$(client_port "$id")" ping 2>/dev/null || true)
      state=$(cluster_state "$id")
      echo "node $id: pid $(node_pid "$id"), port $(client_port "$id"), running," \
        "PING ${pong:-no answer}, cluster_state ${state:-unknown}"
    elif [ -f "$dir/node-$id.exit" ]; then
      echo "node $id: exited with status $(cat "$dir/node-$id.exit")"
    else
      echo "node $id: not running"
    fi
  done
}

command_kill_node() {
  local id=$1
  load_shape
  node_running "$id" || die "node $id is not running"
  kill -"$signal" "$(node_pid "$id")"
  await_exit "$id" $((SECONDS + deadline_seconds)) ||
    die "node $id still running ${deadline_seconds} s after SIG$signal"
}

main() {
  [ $# -ge 1 ] || {
    usage >&2
    exit 2
  }
  local command=$1 id=
  shift
  case $command in
  start-node | kill-node)
    [ $# -ge 1 ] || die "$command needs a node id"
    id=$1
    shift
    ;;
  esac
  parse_options "$@"
  case $command in
  start) command_start ;;
  stop) command_stop ;;
  status) command_status ;;
  wait)
    load_shape
    await_ready
    ;;
  start-node)
    load_shape
    start_node "$id"
    ;;
  kill-node) command_kill_node "$id" ;;
  -h | --help | help) usage ;;
  *) die "unknown command '$command' (start, stop, status, start-node, kill-node, wait)" ;;
  esac
}

main "$@"
