#!/usr/bin/env bash
# server_compat_test.sh FLOTILLAD TOOLS_DIR - flotillad answers like Redis.
#
# compat_commands.txt (one redis-cli command line each: every supported
# command with its edge cases, keys with the hash tag {t} so multi-key
# commands stay in one slot) goes through redis-cli, non-cluster, to a real
# redis-server and to every node of a 3-node flotillad cluster (a node that
# does not lead {t}'s group forwards): the outputs must be identical, in
# redis-cli's typed form (--no-raw) and in raw form. Then exact reply bytes
# for inline and multibulk requests, pipelines and protocol errors, from
# both servers.
set -euo pipefail
source "$(dirname "$0")/common.sh"

if [ $# -ne 2 ]; then
  echo "usage: server_compat_test.sh FLOTILLAD TOOLS_DIR" >&2
  exit 2
fi
server_test_setup server-compat "$1" "$2"
commands=$(dirname "$0")/compat_commands.txt
failures=0

start_redis
start_cluster 3

# Shows the first command whose reply differs, replaying the file one
# command per connection up to it: the diff of whole streams says where,
# this says which command.
locate_difference() {
  local port=$1 line expected got number=0
  while IFS= read -r line; do
    number=$((number + 1))
    [ -n "$line" ] || continue
    expected=$(redis-cli -p "$redis_port" --no-raw <<<"$line" 2>&1 || true)
    got=$(redis-cli -p "$port" --no-raw <<<"$line" 2>&1 || true)
    if [ "$expected" != "$got" ]; then
      echo "  first difference at line $number: $line" >&2
      echo "    redis-server: $expected" >&2
      echo "    flotillad:    $got" >&2
      return
    fi
  done <"$commands"
}

compare_streams() {
  local port=$1 mode=$2
  redis-cli -p "$redis_port" "$mode" <"$commands" >"$work/redis$mode" 2>&1 || true
  redis-cli -p "$port" "$mode" <"$commands" >"$work/flotilla$mode" 2>&1 || true
  if ! diff -u --label "redis-server $mode" --label "flotillad:$port $mode" \
    "$work/redis$mode" "$work/flotilla$mode" >"$work/diff" 2>&1; then
    echo "server-compat: replies differ from Redis (redis-cli $mode, node port $port):" >&2
    head -n 60 "$work/diff" >&2
    locate_difference "$port"
    failures=$((failures + 1))
  fi
}

for id in 1 2 3; do
  compare_streams "${ports[id]}" --no-raw
done
compare_streams "${ports[1]}" --raw

# exact SEND EXPECT [raw-client options]: the same bytes from both servers.
exchanges=0
exact() {
  local port
  exchanges=$((exchanges + 1))
  for port in "$redis_port" "${ports[2]}"; do
    if ! "$tools/raw-client" exchange "$port" "$@"; then
      [ "$port" = "$redis_port" ] && fail "redis-server itself disagrees: fix the expectation"
      failures=$((failures + 1))
    fi
  done
}

exact 'PING\r\n' '+PONG\r\n'
exact '*1\r\n$4\r\nPING\r\n' '+PONG\r\n'
exact '\r\n\r\nPING\r\n' '+PONG\r\n'
exact '*0\r\n*-1\r\nPING\r\n' '+PONG\r\n'
exact '*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nping\r\n' '+PONG\r\n+PONG\r\n'
exact '*2\r\n$4\r\nECHO\r\n$3\r\n\x00\xff\n\r\n' '$3\r\n\x00\xff\n\r\n'
exact '*2\r\n$4\r\nPING\r\n$0\r\n\r\n' '$0\r\n\r\n'
exact '*3\r\n$3\r\nSET\r\n$4\r\n{t}r\r\n$1\r\n1\r\n*2\r\n$3\r\nGET\r\n$4\r\n{t}r\r\n*2\r\n$4\r\nINCR\r\n$4\r\n{t}r\r\n' \
  '+OK\r\n$1\r\n1\r\n:2\r\n'
exact '*3\r\n$4\r\nMGET\r\n$4\r\n{t}r\r\n$4\r\n{t}q\r\n' '*2\r\n$1\r\n2\r\n$-1\r\n'
exact '*2\r\n$3\r\nGET\r\n$9\r\n{t}absent\r\n' '$-1\r\n'
exact 'set {t}inline "a b\\x41"\r\nget {t}inline\r\n' '+OK\r\n$4\r\na bA\r\n'
exact "set {t}q 'it''s'\r\nget {t}q\r\n" '-ERR Protocol error: unbalanced quotes in request\r\n' \
  --until-close
exact '*3\r\n$3\r\nDEL\r\n$4\r\n{t}r\r\n$9\r\n{t}inline\r\n' ':2\r\n'
exact '*1\r\n$3\r\nGET\r\n' "-ERR wrong number of arguments for 'get' command\r\n"
exact '*2\r\n$3\r\nFOO\r\n$3\r\nbar\r\n' \
  "-ERR unknown command 'FOO', with args beginning with: 'bar' \r\n"
exact '*1\r\n$999999999999\r\n' '-ERR Protocol error: invalid bulk length\r\n' --until-close
exact '*1\r\n$-1\r\n' '-ERR Protocol error: invalid bulk length\r\n' --until-close
exact '*abc\r\n' '-ERR Protocol error: invalid multibulk length\r\n' --until-close
exact '*1\r\nfoo\r\n' "-ERR Protocol error: expected '\$', got 'f'\r\n" --until-close
exact 'PING\r\n*1\r\n$x\r\n' '+PONG\r\n-ERR Protocol error: invalid bulk length\r\n' --until-close

if [ "$failures" -ne 0 ]; then
  fail "$failures comparison(s) with redis-server differ"
fi
echo "server-compat: $(grep -c . "$commands") command lines and $exchanges exact exchanges match redis-server"
