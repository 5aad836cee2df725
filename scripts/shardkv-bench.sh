#!/usr/bin/env bash
# Sharded KV benchmark (not a test): a shard controller (3 replicas) and
# replica groups of 3 shardkv-server processes on loopback, data on disk.
#
#   ./scripts/shardkv-bench.sh load      kvbench --controllers against 1 group and
#                                        against 3 groups: 64 clients, writes and 90% reads
#   ./scripts/shardkv-bench.sh migrate   moves one shard of MB megabytes from one group
#                                        to another while kvbench runs on the other
#                                        shards: the move's duration and the throughput
#                                        meanwhile (kvbench's 5 s progress lines)
# Environment: BIN (default build/release/bin), DUR (kvbench duration, default 8s),
# RUNS (per point, default 3), CLIENTS (64), CONNS (4 per replica of each group),
# GROUP_COUNTS ("1 3"), MB (migrate: 100), BASE_PORT (26000).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-load}
BIN=${BIN:-build/release/bin}
DUR=${DUR:-8s}
RUNS=${RUNS:-3}
CLIENTS=${CLIENTS:-64}
CONNS=${CONNS:-4}
GROUP_COUNTS=${GROUP_COUNTS:-"1 3"}
MB=${MB:-100}
BASE=${BASE_PORT:-26000}
if [ ! -x "$BIN/shardkv-server" ]; then
  ./scripts/setup.sh
  cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build/release --target shardctrler-server shardkv-server kvbench kvctl
fi
TMP=$(mktemp -d "${TMPDIR:-/tmp}/shardkv-bench.XXXXXX")
PIDS=()
stop() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
  PIDS=()
}
trap 'stop; rm -rf "$TMP"' EXIT
FLAGS=(--log-level=warn)
CTRL="127.0.0.1:$((BASE + 1)),127.0.0.1:$((BASE + 2)),127.0.0.1:$((BASE + 3))"
export KVCTL_CONTROLLERS=$CTRL
servers() { echo "127.0.0.1:$((BASE + $1 * 10 + 1)),127.0.0.1:$((BASE + $1 * 10 + 2)),127.0.0.1:$((BASE + $1 * 10 + 3))"; }
start_cluster() {  # start_cluster GROUPS
  rm -rf "$TMP/data"
  local peers="1=127.0.0.1:$((BASE + 1)),2=127.0.0.1:$((BASE + 2)),3=127.0.0.1:$((BASE + 3))"
  for i in 1 2 3; do
    "$BIN/shardctrler-server" --id=$i --peers="$peers" --data-dir="$TMP/data/c$i" "${FLAGS[@]}" \
      >"$TMP/c$i.log" 2>&1 &
    PIDS+=($!)
  done
  for g in $(seq 1 "$1"); do
    local gp="1=127.0.0.1:$((BASE + g * 10 + 1)),2=127.0.0.1:$((BASE + g * 10 + 2)),3=127.0.0.1:$((BASE + g * 10 + 3))"
    for i in 1 2 3; do
      "$BIN/shardkv-server" --gid=$((100 + g)) --id=$i --peers="$gp" --controllers="$CTRL" \
        --data-dir="$TMP/data/g$g-$i" "${FLAGS[@]}" >"$TMP/g$g-$i.log" 2>&1 &
      PIDS+=($!)
    done
  done
}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
cpu_sum() { local t=0; for p in "${PIDS[@]}"; do t=$((t + $(ticks "$p"))); done; echo $t; }

echo "shardkv-bench $MODE: $(nproc) cores, $(uptime | sed 's/.*load/load/'), $(date -u +%FT%TZ)"
if [ "$MODE" = load ]; then
  # Rounds alternate the points (the machine drifts over minutes): round 1
  # runs every point once, then round 2, ...; medians per point at the end.
  declare -A results
  for run in $(seq "$RUNS"); do
    for groups in $GROUP_COUNTS; do
      for ratio in 0 0.9; do
        start_cluster "$groups"
        "$BIN/kvctl" --timeout=20s ctrl join $(for g in $(seq 1 "$groups"); do echo "$((100 + g))=$(servers "$g")"; done) >/dev/null
        "$BIN/kvctl" --timeout=20s put warm up >/dev/null
        sleep 1  # every group at the configuration
        before=$(cpu_sum)
        out=$("$BIN/kvbench" --controllers="$CTRL" --clients="$CLIENTS" --conns="$CONNS" \
          --read-ratio="$ratio" --duration="$DUR" --keys=10000 --value-size=256 -w json)
        ops=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ops"])' "$out")
        us=$(( ($(cpu_sum) - before) * 10000 / (ops > 0 ? ops : 1) ))
        echo "round=$run groups=$groups $out servers_cpu_per_op=${us}us"
        results[$groups/$ratio]+="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ops_per_sec"])' "$out") "
        stop
      done
    done
  done
  for groups in $GROUP_COUNTS; do
    for ratio in 0 0.9; do
      median=$(printf '%s\n' ${results[$groups/$ratio]} | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
      echo "== groups=$groups read_ratio=$ratio: median ${median} ops/s over $RUNS runs (${results[$groups/$ratio]% })"
    done
  done
elif [ "$MODE" = migrate ]; then
  start_cluster 2
  "$BIN/kvctl" --timeout=20s ctrl join "101=$(servers 1)" >/dev/null
  # MB megabytes in keys of shard 0 (values of 512 KiB).
  value=$(head -c 524288 /dev/zero | tr '\0' 'v')
  python3 - "$MB" >"$TMP/keys" <<'EOF'
import sys
def shard(k, n=10):
    h = 14695981039346656037
    for c in k.encode():
        h = ((h ^ c) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h % n
n, i = int(sys.argv[1]) * 2, 0
while n > 0:
    k = "big-%d" % i
    i += 1
    if shard(k) == 0:
        print(k)
        n -= 1
EOF
  t0=$(date +%s.%N)
  while read -r k; do echo "put $k $value"; done <"$TMP/keys" | "$BIN/kvctl" --timeout=60s - >/dev/null
  echo "loaded $(wc -l <"$TMP/keys") keys of 512 KiB into shard 0 in $(python3 -c "import time; print(round(time.time() - $t0, 1))") s"
  "$BIN/kvctl" --timeout=20s ctrl join "102=$(servers 2)" >/dev/null
  sleep 3  # the other shards have moved; shard 0 stays with 101
  "$BIN/kvctl" ctrl query
  "$BIN/kvbench" --controllers="$CTRL" --clients=16 --conns=2 --read-ratio=0.5 --duration=40s \
    --keys=10000 --value-size=256 --skip-shard=0 >"$TMP/bench.out" 2>"$TMP/bench.err" &
  bench=$!
  sleep 10
  t0=$(date +%s.%N)
  "$BIN/kvctl" ctrl move 0 102 >/dev/null
  echo "moving shard 0 ($MB MB) from group 101 to group 102 at $(date -u +%T)"
  while :; do
    state=$("$BIN/kvctl" --endpoints="$(servers 2)" -w json endpoint status 2>/dev/null |
      python3 -c 'import json,sys
for r in json.load(sys.stdin):
    for s in r.get("shards", []):
        if s["shard"] == 0 and r.get("role") == "leader": print(s["state"], s["keys"])' || true)
    case "$state" in serving*|gc-pending*) break ;; esac
    sleep 0.2
  done
  echo "shard 0 installed at group 102 after $(python3 -c "import time; print(round(time.time() - $t0, 2))") s ($state keys)"
  wait $bench || true
  cat "$TMP/bench.err" "$TMP/bench.out"
else
  echo "usage: $0 [load|migrate]" >&2
  exit 2
fi
