#!/usr/bin/env bash
# KV-Raft benchmark (not a test): starts 3 kvraft-server replicas on loopback
# with data on disk, runs kvbench for each load point RUNS times on a fresh
# cluster, and prints one JSON line per run plus the median ops/s per point.
#
#   ./scripts/kv-bench.sh                 Release build in build/release
#   BIN=dir RUNS=3 DUR=8s ./scripts/kv-bench.sh
#   POINTS="64 64 0;64 64 1" ./scripts/kv-bench.sh   clients conns read-ratio
#   SERVER_FLAGS="--snapshot-threshold-bytes=0" ./scripts/kv-bench.sh   extra kvraft-server flags
#
# Also prints the CPU time each process spent per operation (from
# /proc/PID/stat and the client's getrusage), which is stable on a noisy VM
# where throughput is not.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-build/release/bin}
RUNS=${RUNS:-3}
DUR=${DUR:-8s}
POINTS=${POINTS:-"1 1 0;16 16 0;64 64 0;1000 100 0;64 64 1;64 64 0.9"}
BASE_PORT=${BASE_PORT:-24001}
if [ ! -x "$BIN/kvraft-server" ]; then
  ./scripts/setup.sh
  cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build/release --target kvraft-server kvbench kvctl
fi
TMP=$(mktemp -d "${TMPDIR:-/tmp}/kv-bench.XXXXXX")
PIDS=()
stop() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
  PIDS=()
}
trap 'stop; rm -rf "$TMP"' EXIT
PEERS="1=127.0.0.1:$BASE_PORT,2=127.0.0.1:$((BASE_PORT + 1)),3=127.0.0.1:$((BASE_PORT + 2))"
ENDPOINTS="127.0.0.1:$BASE_PORT,127.0.0.1:$((BASE_PORT + 1)),127.0.0.1:$((BASE_PORT + 2))"
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
echo "kv-bench: $(nproc) cores, $(uptime | sed 's/.*load/load/'), $(date -u +%FT%TZ)"
IFS=";" read -ra LIST <<<"$POINTS"
for point in "${LIST[@]}"; do
  read -r clients conns ratio <<<"$point"
  results=()
  for run in $(seq "$RUNS"); do
    rm -rf "$TMP/data"
    for i in 1 2 3; do
      "$BIN/kvraft-server" --id=$i --peers="$PEERS" --data-dir="$TMP/data/$i" --log-level=warn ${SERVER_FLAGS:-} \
        >"$TMP/server$i.log" 2>&1 &
      PIDS+=($!)
    done
    "$BIN/kvctl" --endpoints="$ENDPOINTS" --timeout=20s put warm up >/dev/null
    before=()
    for p in "${PIDS[@]}"; do before+=("$(ticks "$p")"); done
    timer=()
    [ -x /usr/bin/time ] && timer=(/usr/bin/time -f "%U %S" -o "$TMP/time")  # Debian package "time"
    echo "0 0" >"$TMP/time"
    out=$("${timer[@]}" "$BIN/kvbench" --endpoints="$ENDPOINTS" \
      --clients="$clients" --conns="$conns" --read-ratio="$ratio" --duration="$DUR" \
      --keys=10000 --value-size=256 -w json)
    cpu=""
    ops=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ops"])' "$out")
    for k in 0 1 2; do
      us=$(( ($(ticks "${PIDS[$k]}") - ${before[$k]}) * 10000 / (ops > 0 ? ops : 1) ))
      cpu+="server$((k + 1))=${us}us "
    done
    cpu+="client=$(awk -v ops="$ops" '{printf "%d", ($1 + $2) * 1e6 / (ops > 0 ? ops : 1)}' "$TMP/time")us"
    echo "$out cpu_per_op: $cpu"
    results+=("$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ops_per_sec"])' "$out")")
    stop
  done
  median=$(printf '%s\n' "${results[@]}" | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
  echo "== clients=$clients conns=$conns read_ratio=$ratio: median ${median} ops/s over $RUNS runs"
done
