#!/usr/bin/env bash
# Demo part: a 3-replica shard controller on 127.0.0.1 with state under
# DATA_DIR/shardctrler/, then kvctl ctrl join/query/move/leave. The group
# addresses are placeholders: the controller only records them (the sharded
# KV servers that would serve them come with shardkv). Called by
# scripts/demo.sh with BIN_DIR DATA_DIR.
# Ports: SHARDCTRLER_BASE_PORT+1..+3 (default 24001-24003).
set -euo pipefail
BIN=$1
DATA=$2
BASE=${SHARDCTRLER_BASE_PORT:-24000}
PEERS="1=127.0.0.1:$((BASE + 1)),2=127.0.0.1:$((BASE + 2)),3=127.0.0.1:$((BASE + 3))"
export KVCTL_CONTROLLERS="127.0.0.1:$((BASE + 1)),127.0.0.1:$((BASE + 2)),127.0.0.1:$((BASE + 3))"
mkdir -p "$DATA/shardctrler"

for i in 1 2 3; do
  "$BIN/shardctrler-server" --id="$i" --peers="$PEERS" --data-dir="$DATA/shardctrler/$i" \
    >>"$DATA/shardctrler/$i.log" 2>&1 &
  echo $! >"$DATA/shardctrler-$i.pid"
  disown
done
echo "demo: started shardctrler-server x3 ($PEERS), logs in $DATA/shardctrler/"
for _ in $(seq 1 50); do
  if "$BIN/kvctl" --timeout=1s ctrl query >/dev/null 2>&1; then break; fi
  sleep 0.2
done

run() {
  echo "\$ kvctl $*"
  "$BIN/kvctl" "$@"
}

latest=$("$BIN/kvctl" -w json ctrl query | grep -o '"num":[0-9]*' | grep -o '[0-9]*')
if [ "$latest" = "0" ]; then
  run ctrl join 100=127.0.0.1:25101,127.0.0.1:25102,127.0.0.1:25103
  run ctrl join 101=127.0.0.1:25201,127.0.0.1:25202,127.0.0.1:25203 \
                102=127.0.0.1:25301,127.0.0.1:25302,127.0.0.1:25303
  run ctrl query
  run ctrl move 0 102
  run ctrl leave 101
else
  echo "demo: the controller already has configurations (an earlier demo); showing them"
fi
run ctrl query
run -w json ctrl query 1
echo "demo: try it yourself: KVCTL_CONTROLLERS=$KVCTL_CONTROLLERS $BIN/kvctl ctrl query"
