#!/usr/bin/env bash
# server_hostile_test.sh FLOTILLAD TOOLS_DIR - bad clients cannot hurt
# flotillad.
#
# Against one node of a 3-node cluster with small limits: malformed RESP
# (bad multibulk and bulk lengths, a bulk length above max-bulk-bytes,
# garbage, a truncated request, an inline request over max-inline-bytes,
# more arguments than max-arguments), a value over max-value-bytes, a
# client that sends a command one byte at a time, clients that connect and
# send nothing, a client that asks for large values and never reads (it
# must be disconnected at client-output-limit), and more connections than
# max-clients. After each, the node is still running and a normal client
# still gets PING, SET and GET answered. Error texts that Redis defines
# are checked byte for byte.
set -euo pipefail
source "$(dirname "$0")/common.sh"

if [ $# -ne 2 ]; then
  echo "usage: server_hostile_test.sh FLOTILLAD TOOLS_DIR" >&2
  exit 2
fi
server_test_setup server-hostile "$1" "$2"
max_clients=24

start_cluster 3 --max-clients "$max_clients" --client-output-limit 1048576 \
  --max-value-bytes 524288 --max-bulk-bytes 1048576 --max-arguments 1000
port=${ports[1]}
pid=$(node_pid 1)

# expect WHAT SEND EXPECT [raw-client options], then the node must serve.
expect() {
  local what=$1
  shift
  "$tools/raw-client" exchange "$port" "$@" || fail "$what"
  assert_serving "$port" "$pid"
}

# ---- malformed requests ------------------------------------------------------------
invalid_bulk='-ERR Protocol error: invalid bulk length\r\n'
invalid_multibulk='-ERR Protocol error: invalid multibulk length\r\n'
expect "huge bulk length" '*1\r\n$999999999999\r\n' "$invalid_bulk" --until-close
expect "bulk length above max-bulk-bytes" '*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000000\r\n' \
  "$invalid_bulk" --until-close
expect "negative bulk length" '*2\r\n$4\r\nECHO\r\n$-5\r\n' "$invalid_bulk" --until-close
expect "bulk length not a number" '*1\r\n$4x\r\nPING\r\n' "$invalid_bulk" --until-close
expect "multibulk length not a number" '*x\r\n' "$invalid_multibulk" --until-close
expect "huge multibulk length" '*99999999999999999999\r\n' "$invalid_multibulk" --until-close
expect "more arguments than max-arguments" '*5000\r\n' '-ERR Protocol error' --prefix
expect "a bulk without its \$" '*1\r\nPING\r\n' "-ERR Protocol error: expected '\$', got 'P'\r\n" \
  --until-close
expect "binary garbage" '\xff\xfe\x01garbage\x80\r\n' '-ERR unknown command' --prefix
# Redis reads an inline request up to a NUL as incomplete and waits: so may
# flotillad, as long as it stays well.
expect "garbage with a NUL byte" '\x00\x01\x02\r\n\x00' ''
expect "a truncated request, then the connection closed" '*2\r\n$4\r\nECHO\r\n$10\r\nabc' ''
long_inline=$(head -c 70000 /dev/zero | tr '\0' x)
expect "an inline request over max-inline-bytes" "$long_inline" \
  '-ERR Protocol error: too big inline request\r\n' --until-close
echo "server-hostile: malformed requests answered with protocol errors, node still serving"

# ---- a value over max-value-bytes ---------------------------------------------------
reply=$(head -c 600000 /dev/zero | tr '\0' v | redis-cli -x -p "$port" set '{h}large' 2>&1 || true)
case $reply in
ERR*) echo "server-hostile: a 600000-byte value refused: $reply" ;;
*) fail "a value above max-value-bytes was not refused: got '$reply'" ;;
esac
assert_serving "$port" "$pid"

# ---- clients that send nothing, and one that sends a byte at a time --------------
idle=()
for _ in 1 2 3 4 5; do
  exec {fd}<>"/dev/tcp/127.0.0.1/$port"
  idle+=("$fd")
done
expect "a command sent one byte at a time" \
  '*3\r\n$3\r\nSET\r\n$6\r\n{h}slo\r\n$4\r\nslow\r\n*2\r\n$3\r\nGET\r\n$6\r\n{h}slo\r\n' \
  '+OK\r\n$4\r\nslow\r\n' --trickle-ms 10
for fd in "${idle[@]}"; do
  exec {fd}>&-
done
echo "server-hostile: 5 silent clients held and a byte-by-byte client answered"

# ---- a client that never reads its replies -------------------------------------------
head -c 262144 /dev/zero | tr '\0' b | redis-cli -x -p "$port" set '{h}big' >/dev/null
flood_out=$("$tools/raw-client" flood "$port" '*2\r\n$3\r\nGET\r\n$6\r\n{h}big\r\n' 20) ||
  fail "a client that never reads was not disconnected at client-output-limit"
echo "server-hostile: $flood_out"
assert_serving "$port" "$pid"

# ---- more clients than max-clients --------------------------------------------------------
rejected=0
answered=0
opened=()
for ((i = 0; i < max_clients + 8; i++)); do
  exec {fd}<>"/dev/tcp/127.0.0.1/$port" || fail "connect $i refused by the kernel"
  opened+=("$fd")
  printf 'PING\r\n' >&"$fd" 2>/dev/null || true
  line=
  IFS= read -r -t 5 line <&"$fd" || true
  case $line in
  $'+PONG\r') answered=$((answered + 1)) ;;
  $'-ERR max number of clients reached\r') rejected=$((rejected + 1)) ;;
  *) fail "connection $i over max-clients got '${line%$'\r'}'" ;;
  esac
done
for fd in "${opened[@]}"; do
  exec {fd}>&-
done
[ "$rejected" -gt 0 ] || fail "$((max_clients + 8)) connections and none refused (max-clients $max_clients)"
[ "$answered" -ge $((max_clients - 4)) ] ||
  fail "only $answered of $max_clients allowed clients were answered"
# The closed connections' slots come back: poll until a client is served.
wait_until 10 "a client served again after the max-clients flood" \
  eval '[ "$(redis-cli -p '"$port"' ping 2>&1)" = PONG ]'
assert_serving "$port" "$pid"
echo "server-hostile: $answered clients answered, $rejected refused with Redis's error"
for id in 2 3; do
  assert_serving "${ports[id]}" "$(node_pid "$id")"
done
echo "server-hostile: ok"
