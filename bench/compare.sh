#!/usr/bin/env bash
# compare.sh - flotillad against redis-server (and etcd, when installed) on
# this machine, with redis-benchmark.
#
#   bench/compare.sh [--quick] [-n REQUESTS] [--seconds S] [-c CLIENTS]
#                    [-b BUILD_DIR] [--shards N] [--etcd | --no-etcd]
#                    [--etcd-load s|m|l|xl]
#
# One system at a time, so that they do not share the cores:
#   1. a 3-node flotillad cluster (scripts/cluster.sh, default settings:
#      fsync on, writes acknowledged after a majority persisted them;
#      --shards N engine shards per node (0: one per core), default 1: the
#      three nodes share this machine's cores, so one shard per node, each
#      batching more requests per fsync and per wake-up, beats one shard per
#      core);
#      redis-benchmark SET and GET with 16-byte values, CLIENTS connections
#      (default 50), unpipelined and with -P 32, in plain mode against one
#      node (it forwards to the leaders) and in --cluster mode (the client
#      goes to the leaders itself);
#   2. redis-server with appendonly yes and appendfsync always (every write
#      on disk before the reply, as flotillad does), the same runs;
#   3. when etcd and etcdctl are installed: a 3-member etcd cluster and
#      `etcdctl check perf --load=LOAD` (default l: 500 clients aiming at
#      8000 writes/s; the check runs 60 s). Its throughput never exceeds
#      the load's target rate (s 150, m 1000, l 8000, xl 15000 writes/s),
#      so a load below what etcd sustains understates etcd.
# Prints requests/s and p50/p99 latency of every run, and the ratios
# flotillad/redis-server (target >= 1.0 for SET) and flotillad/etcd
# (target >= 50).
#
# -n REQUESTS per run (default 200000); --seconds S instead sizes each run
# to last about S seconds (from a short calibration run); --quick is
# -n 20000 and no etcd unless --etcd is given.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
build=$repo/build
requests=200000
seconds=
clients=50
use_etcd=auto
etcd_load=l
quick=false
shards=1

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
  case $1 in
  --quick)
    quick=true
    requests=20000
    ;;
  -n)
    requests=$2
    shift
    ;;
  --seconds)
    seconds=$2
    shift
    ;;
  -c)
    clients=$2
    shift
    ;;
  -b)
    build=$2
    shift
    ;;
  --shards)
    shards=$2
    shift
    ;;
  --etcd) use_etcd=yes ;;
  --no-etcd) use_etcd=no ;;
  --etcd-load)
    etcd_load=$2
    shift
    ;;
  -h | --help)
    usage
    exit 0
    ;;
  *)
    echo "compare: unknown option '$1' (--help)" >&2
    exit 2
    ;;
  esac
  shift
done
if [ "$use_etcd" = auto ]; then
  use_etcd=$([ "$quick" = true ] && echo no || echo yes)
fi

die() {
  echo "compare: $*" >&2
  exit 1
}

[[ $shards =~ ^[0-9]{1,2}$ ]] || die "--shards wants a count from 0 (one per core) to 99, got '$shards'"
for tool in redis-server redis-benchmark redis-cli; do
  command -v "$tool" >/dev/null || die "$tool is missing (scripts/deps.sh installs it)"
done
[ -x "$build/server/flotillad" ] || die "no $build/server/flotillad: build first, or give -b BUILD_DIR"
free_ports=$build/tests/server/free-ports
[ -x "$free_ports" ] || die "no $free_ports: build the tests too"

work=$(mktemp -d "${TMPDIR:-/tmp}/flotilla-compare.XXXXXX")
started_pids=()
cleanup() {
  bash "$repo/scripts/cluster.sh" stop -d "$work/cluster" -t 10 >/dev/null 2>&1 || true
  for pid in ${started_pids[@]+"${started_pids[@]}"}; do
    kill "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Results: one line per run, "SYSTEM|MODE|TEST|RPS|P50|P99".
results=$work/results

wait_for() {
  local seconds=$1 what=$2 deadline=$((SECONDS + $1))
  shift 2
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || die "not within $seconds s: $what"
    sleep 0.1
  done
}

# The request count for one run: -n, or sized by a calibration run.
run_size() {
  local calibration rate
  if [ -z "$seconds" ]; then
    echo "$requests"
    return
  fi
  calibration=$(redis-benchmark "$@" -n 10000 --csv 2>/dev/null | grep -E '^"(SET|GET)",' |
    head -n 1 | tr -d '"' | cut -d, -f2)
  rate=${calibration%.*}
  echo $((rate * seconds > 10000 ? rate * seconds : 10000))
}

# bench SYSTEM MODE redis-benchmark-arguments...: SET and GET, 16 bytes.
bench() {
  local system=$1 mode=$2 count line test rps p50 p99
  shift 2
  local arguments=("$@" -t "set,get" -d 16 -c "$clients" -r 1000000)
  count=$(run_size "${arguments[@]}")
  echo "compare: $system, $mode: redis-benchmark ${arguments[*]} -n $count" >&2
  redis-benchmark "${arguments[@]}" -n "$count" --csv >"$work/run.csv" 2>"$work/run.err" ||
    die "redis-benchmark failed against $system ($mode): $(tail -n 3 "$work/run.err")"
  # "test","rps","avg","min","p50","p95","p99","max"; --cluster prints the
  # masters it found first.
  grep -E '^"(SET|GET)",' "$work/run.csv" | tr -d '"' >"$work/run.rows" || true
  [ "$(wc -l <"$work/run.rows")" -eq 2 ] ||
    die "no SET and GET results from redis-benchmark against $system ($mode)"
  while IFS=, read -r test rps _ _ p50 _ p99 _; do
    echo "$system|$mode|$test|$rps|$p50|$p99" >>"$results"
  done <"$work/run.rows"
}

bench_four() {
  local system=$1 port=$2 cluster_mode=$3
  bench "$system" "plain" -p "$port"
  bench "$system" "plain -P 32" -p "$port" -P 32
  if [ "$cluster_mode" = yes ]; then
    bench "$system" "--cluster" --cluster -p "$port"
    bench "$system" "--cluster -P 32" --cluster -p "$port" -P 32
  fi
}

# ---- flotillad --------------------------------------------------------------
base=$("$free_ports" 303) || die "no free ports"
bash "$repo/scripts/cluster.sh" start -n 3 -d "$work/cluster" -b "$build" -p "$base" \
  -P $((base + 3)) -S 100 -t 60 -- --shards "$shards" >&2
bench_four flotillad "$base" yes
bash "$repo/scripts/cluster.sh" stop -d "$work/cluster" -t 20 >&2

# ---- redis-server, every write fsynced ------------------------------------------
redis_port=$("$free_ports" 1) || die "no free port"
mkdir -p "$work/redis"
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$work/redis" --save '' \
  --appendonly yes --appendfsync always >"$work/redis/log" 2>&1 &
redis_pid=$!
started_pids+=("$redis_pid")
wait_for 10 "redis-server answering" redis-cli -p "$redis_port" ping
bench_four redis "$redis_port" no
kill "$redis_pid"
wait "$redis_pid" 2>/dev/null || true

# ---- etcd --------------------------------------------------------------------------
etcd_rate=
etcd_note="not installed (Debian packages etcd-server, etcd-client)"
run_etcd() {
  local ports endpoints="" initial="" i
  ports=$("$free_ports" 6) || die "no free ports"
  for i in 0 1 2; do
    endpoints+="${endpoints:+,}http://127.0.0.1:$((ports + i))"
    initial+="${initial:+,}e$i=http://127.0.0.1:$((ports + 3 + i))"
  done
  for i in 0 1 2; do
    etcd --name "e$i" --data-dir "$work/etcd/e$i" \
      --listen-client-urls "http://127.0.0.1:$((ports + i))" \
      --advertise-client-urls "http://127.0.0.1:$((ports + i))" \
      --listen-peer-urls "http://127.0.0.1:$((ports + 3 + i))" \
      --initial-advertise-peer-urls "http://127.0.0.1:$((ports + 3 + i))" \
      --initial-cluster "$initial" --initial-cluster-state new \
      --initial-cluster-token flotilla-compare >"$work/etcd-$i.log" 2>&1 &
    started_pids+=("$!")
  done
  export ETCDCTL_API=3
  wait_for 30 "etcd healthy" etcdctl --endpoints="$endpoints" endpoint health
  echo "compare: etcd: etcdctl check perf --load=$etcd_load (60 s)" >&2
  etcdctl --endpoints="$endpoints" check perf --load="$etcd_load" >"$work/etcd-perf.out" 2>&1 ||
    true
  # "PASS: Throughput is N writes/s" or "FAIL: Throughput too low: N writes/s"
  etcd_rate=$(tr '\r' '\n' <"$work/etcd-perf.out" |
    sed -n 's/.*Throughput[^0-9]*\([0-9][0-9.]*\) writes\/s.*/\1/p' | tail -n 1)
  etcd_note="etcdctl check perf --load=$etcd_load, 3 members: $(grep -E '^(PASS|FAIL)' \
    "$work/etcd-perf.out" | tr '\n' ' ')"
  [ -n "$etcd_rate" ] || etcd_note="check perf gave no throughput: $(tail -n 3 "$work/etcd-perf.out")"
}
if [ "$use_etcd" = yes ]; then
  if command -v etcd >/dev/null && command -v etcdctl >/dev/null; then
    run_etcd
  fi
else
  etcd_note="skipped (--quick; --etcd runs it, 60 s)"
fi

# ---- the table ---------------------------------------------------------------------
value_of() { # SYSTEM MODE TEST FIELD(4 rps, 5 p50, 6 p99)
  awk -F'|' -v s="$1" -v m="$2" -v t="$3" -v f="$4" '$1 == s && $2 == m && $3 == t { print $f }' \
    "$results"
}

ratio() {
  awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%.2f", a / b }'
}

echo
echo "flotillad vs redis-server (appendfsync always): 16-byte values, $clients clients," \
  "$(nproc) cores"
printf '%-10s %-16s %-4s %12s %8s %8s %10s\n' system mode test "requests/s" "p50 ms" "p99 ms" \
  "vs redis"
while IFS='|' read -r system mode test rps p50 p99; do
  redis_mode=${mode/--cluster/plain}
  printf '%-10s %-16s %-4s %12.0f %8s %8s %10s\n' "$system" "$mode" "$test" "$rps" "$p50" "$p99" \
    "$(ratio "$rps" "$(value_of redis "$redis_mode" "$test" 4)")"
done <"$results"
echo
flotilla_set=$(value_of flotillad plain SET 4)
echo "flotillad/redis SET, unpipelined: $(ratio "$flotilla_set" "$(value_of redis plain SET 4)")" \
  "(target >= 1.0)"
echo "flotillad/redis SET, -P 32:       $(ratio "$(value_of flotillad 'plain -P 32' SET 4)" \
  "$(value_of redis 'plain -P 32' SET 4)") (target >= 1.0)"
if [ -n "$etcd_rate" ]; then
  echo "etcd: $etcd_rate writes/s ($etcd_note)"
  echo "flotillad/etcd writes, unpipelined: $(ratio "$flotilla_set" "$etcd_rate") (target >= 50)"
  # etcd's check keeps hundreds of writes in flight over its clients'
  # multiplexed connections: -P 32 from 50 clients is the closer match.
  echo "flotillad/etcd writes, -P 32:       $(ratio "$(value_of flotillad 'plain -P 32' SET 4)" \
    "$etcd_rate") (target >= 50)"
else
  echo "etcd: $etcd_note"
fi
