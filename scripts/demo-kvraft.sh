#!/usr/bin/env bash
# Demo part: a 3-replica kvraft cluster on 127.0.0.1 with state under
# DATA_DIR/kvraft/, then kvctl put/get/append, a leader kill, the value still
# there. Called by scripts/demo.sh with BIN_DIR DATA_DIR.
# Ports: KVRAFT_BASE_PORT+1..+3 (default 23791-23793).
set -euo pipefail
BIN=$1
DATA=$2
BASE=${KVRAFT_BASE_PORT:-23790}
PEERS="1=127.0.0.1:$((BASE + 1)),2=127.0.0.1:$((BASE + 2)),3=127.0.0.1:$((BASE + 3))"
export KVCTL_ENDPOINTS="127.0.0.1:$((BASE + 1)),127.0.0.1:$((BASE + 2)),127.0.0.1:$((BASE + 3))"
mkdir -p "$DATA/kvraft"

start() {
  local i=$1
  "$BIN/kvraft-server" --id="$i" --peers="$PEERS" --data-dir="$DATA/kvraft/$i" \
    >>"$DATA/kvraft/$i.log" 2>&1 &
  echo $! >"$DATA/kvraft-$i.pid"
  disown
}

run() {
  echo "\$ kvctl $*"
  "$BIN/kvctl" "$@"
}

for i in 1 2 3; do
  # A directory from a build older than its FORMAT file cannot be replayed
  # (kvraft-server refuses it, saying so); keep it aside and start afresh.
  if [ -d "$DATA/kvraft/$i/raft" ] && [ ! -f "$DATA/kvraft/$i/FORMAT" ]; then
    echo "demo: $DATA/kvraft/$i was written by an older build; moving it to $DATA/kvraft/$i.old"
    rm -rf "$DATA/kvraft/$i.old"
    mv "$DATA/kvraft/$i" "$DATA/kvraft/$i.old"
  fi
  start "$i"
done
echo "demo: started kvraft-server x3 ($PEERS), logs in $DATA/kvraft/"
for _ in $(seq 1 50); do
  if "$BIN/kvctl" --timeout=1s put demo:ready yes >/dev/null 2>&1; then break; fi
  sleep 0.2
done

run put greeting hello
run append greeting ", world"
run get greeting
run endpoint status
leader=$("$BIN/kvctl" -w json endpoint status | grep -o '"id":[0-9]*,"role":"leader"' | grep -o '[0-9]*' | head -n1)
echo "demo: killing the leader (replica $leader) with SIGKILL"
kill -9 "$(cat "$DATA/kvraft-$leader.pid")"
run --timeout=10s get greeting
run append greeting "!"
echo "demo: restarting replica $leader; it catches up from its disk and the new leader"
start "$leader"
sleep 2
run get greeting
run endpoint status
echo "demo: try it yourself: KVCTL_ENDPOINTS=$KVCTL_ENDPOINTS $BIN/kvctl get greeting"
