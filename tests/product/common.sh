# shellcheck shell=bash
# common.sh - helpers of the product tests (sourced, not run).

# Prints a loopback TCP port no socket uses now, below the kernel's
# ephemeral range (32768 and up) so that no outgoing connection takes it
# between this check and the engine's bind.
pick_port() {
  local port tries
  for ((tries = 0; tries < 200; tries++)); do
    port=$((20000 + RANDOM % 12000))
    if command -v ss >/dev/null 2>&1; then
      if [ -z "$(ss -Htan "sport = :$port" 2>/dev/null)" ]; then
        echo "$port"
        return 0
      fi
    elif ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port" # nothing accepts a connection there
      return 0
    fi
  done
  echo "no free port found" >&2
  return 1
}

# run_embed NAME PROGRAM DATA_DIR: one run of examples/embed with a fresh
# port; fails unless it exits 0 having read back what it wrote.
run_embed() {
  local name=$1 program=$2 directory=$3 port output
  port=$(pick_port)
  if ! output=$(timeout 30 "$program" "$directory" "$port" 2>&1); then
    echo "$name: $program $directory $port failed:" >&2
    echo "$output" >&2
    return 1
  fi
  if [ "$output" != "greeting = hello" ]; then
    echo "$name: unexpected output from $program:" >&2
    echo "$output" >&2
    return 1
  fi
}
