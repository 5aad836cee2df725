#!/usr/bin/env bash
# Demo part: the sharded KV service on 127.0.0.1 with state under
# DATA_DIR/shardkv/: a shard controller of 3 shardctrler-servers and replica
# groups 1 and 2 of 3 shardkv-servers each; kvctl joins both groups and writes
# keys, then a third group starts and joins (shards move to it: kvctl ctrl
# query, kvctl locate, kvctl endpoint status), group 1 leaves (its shards move
# to the others), and every key is read back. A second run on the same
# DATA_DIR finds the configurations of the first, starts every group from its
# disk and reads the keys back. The daemons keep running (PIDs in
# DATA_DIR/*.pid, stopped by `scripts/demo.sh stop`).
# Called by scripts/demo.sh with BIN_DIR DATA_DIR.
# Ports (SHARDKV_BASE_PORT, default 25000): the controller +1..+3
# (25001-25003), group G +G1..+G3 (group 1: 25011-25013, group 2:
# 25021-25023, group 3: 25031-25033).
set -euo pipefail
BIN=$1
DATA=$2
BASE=${SHARDKV_BASE_PORT:-25000}
SKV=$DATA/shardkv
mkdir -p "$SKV"

# "1=H:P,2=H:P,3=H:P" (Raft peers) or "H:P,H:P,H:P" (clients) for ports BASE+FIRST..+2.
peers() { echo "1=127.0.0.1:$(($1)),2=127.0.0.1:$(($1 + 1)),3=127.0.0.1:$(($1 + 2))"; }
addrs() { echo "127.0.0.1:$(($1)),127.0.0.1:$(($1 + 1)),127.0.0.1:$(($1 + 2))"; }
CTRL_FIRST=$((BASE + 1))
group_first() { echo $((BASE + 10 * $1 + 1)); }
KVCTL_CONTROLLERS=$(addrs "$CTRL_FIRST")
export KVCTL_CONTROLLERS
unset KVCTL_ENDPOINTS

run() {
  local shown="" a
  for a in "$@"; do
    if [[ $a == *" "* ]]; then shown+=" '$a'"; else shown+=" $a"; fi
  done
  echo "\$ kvctl$shown"
  "$BIN/kvctl" "$@"
}

start_controllers() {
  for i in 1 2 3; do
    "$BIN/shardctrler-server" --id="$i" --peers="$(peers "$CTRL_FIRST")" \
      --data-dir="$SKV/ctrl-$i" >>"$SKV/ctrl-$i.log" 2>&1 &
    echo $! >"$DATA/shardkv-ctrl-$i.pid"
    disown
  done
  echo "demo: started shardctrler-server x3 ($KVCTL_CONTROLLERS), logs in $SKV/"
}

start_group() {
  local gid=$1 first
  first=$(group_first "$gid")
  for i in 1 2 3; do
    "$BIN/shardkv-server" --gid="$gid" --id="$i" --peers="$(peers "$first")" \
      --controllers="$KVCTL_CONTROLLERS" --data-dir="$SKV/g$gid-$i" \
      >>"$SKV/g$gid-$i.log" 2>&1 &
    echo $! >"$DATA/shardkv-g$gid-$i.pid"
    disown
  done
  echo "demo: started group $gid: shardkv-server x3 ($(addrs "$first"))"
}

join_arg() { echo "$1=$(addrs "$(group_first "$1")")"; }

# The latest configuration's number.
latest() { "$BIN/kvctl" --timeout=5s -w json ctrl query | grep -o '"num":[0-9]*' | grep -o '[0-9]*'; }

# Waits (up to 30 s) until every replica of every group in the latest
# configuration has applied it and no shard is still moving.
wait_settled() {
  local num status
  for _ in $(seq 1 150); do
    num=$(latest || true)
    if [ -n "$num" ] && status=$("$BIN/kvctl" --timeout=2s endpoint status 2>/dev/null) &&
      ! grep -qv " config=$num " <<<"$status" &&
      ! grep -qE "pulling|handing-off|gc-pending" <<<"$status"; then
      echo "demo: every group is at configuration $num, no shard moving"
      return 0
    fi
    sleep 0.2
  done
  echo "demo: the groups did not settle at configuration $num within 30 s:" >&2
  "$BIN/kvctl" endpoint status >&2 || true
  return 1
}

KEYS=(alice bob carol dave erin frank grace heidi ivan judy mallory oscar)
# Keys whose shards move differently: alice (shard 8: group 2, then 3), bob
# (1: group 1, then 2 when group 1 leaves), ivan (4: 1, then 3), grace (2: 1,
# then 3 when group 1 leaves), heidi (5: group 2 throughout).
SHOW=(alice bob ivan grace heidi)

# Reads every key back; fails unless each holds what the demo wrote.
read_back() {
  local bad=0 got
  for k in "${KEYS[@]}"; do
    got=$("$BIN/kvctl" --timeout=10s get "user:$k")
    printf '  user:%-8s = %s\n' "$k" "$got"
    [ "$got" = "hello $k!" ] || bad=1
  done
  if [ $bad -ne 0 ]; then
    echo "demo: some keys do not hold what was written" >&2
    return 1
  fi
  echo "demo: all ${#KEYS[@]} keys read back"
}

start_controllers
for _ in $(seq 1 50); do
  if "$BIN/kvctl" --timeout=1s ctrl query >/dev/null 2>&1; then break; fi
  sleep 0.2
done

num=$(latest) || {
  echo "demo: the shard controller does not answer; see $SKV/ctrl-*.log" >&2
  exit 1
}
if [ "$num" != "0" ]; then
  echo "demo: the controller already has configurations (an earlier demo); starting every group"
  for g in 1 2 3; do start_group "$g"; done
  run ctrl query
  wait_settled
  for k in "${SHOW[@]}"; do run locate "user:$k"; done
  echo "demo: reading every key back (the groups restarted from their disks)"
  read_back
  echo "demo: try it yourself: KVCTL_CONTROLLERS=$KVCTL_CONTROLLERS $BIN/kvctl get user:alice"
  exit 0
fi

start_group 1
start_group 2
run ctrl join "$(join_arg 1)" "$(join_arg 2)"
run --timeout=10s put user:alice "hello alice"
run append user:alice "!"
echo "demo: writing the other keys (one kvctl session, commands on stdin)"
for k in "${KEYS[@]:1}"; do echo "put user:$k hello $k!"; done | "$BIN/kvctl" --timeout=10s >/dev/null
run ctrl query
for k in "${SHOW[@]}"; do run locate "user:$k"; done

echo
echo "demo: a third group joins; the controller gives it shards, which it pulls from their owners"
start_group 3
run ctrl join "$(join_arg 3)"
wait_settled
run ctrl query
for k in "${SHOW[@]}"; do run locate "user:$k"; done
run endpoint status

echo
echo "demo: group 1 leaves; its shards move to groups 2 and 3 (its servers keep running)"
run ctrl leave 1
wait_settled
run ctrl query
for k in "${SHOW[@]}"; do run -w json locate "user:$k"; done
echo "demo: group 1 owns no shard now (shards=-) and deleted its copies once the new owners"
echo "demo: had installed them (garbage collection); its own status:"
run --endpoints="$(addrs "$(group_first 1)")" endpoint status
held=$("$BIN/kvctl" --endpoints="$(addrs "$(group_first 1)")" -w json endpoint status |
  grep -o '"keys":[0-9]*' | awk -F: '{ s += $2 } END { print s + 0 }')
echo "demo: keys group 1 still holds, over its 3 replicas: $held"
echo "demo: reading every key back"
read_back
echo "demo: try it yourself: KVCTL_CONTROLLERS=$KVCTL_CONTROLLERS $BIN/kvctl locate user:alice"
