#!/usr/bin/env bash
# The main job: install dependencies, build (Release), start a local cluster of
# every daemon that exists on 127.0.0.1 with all state under ./data/, and run a
# short demonstration with the command-line clients.
#   ./scripts/demo.sh        start and demonstrate
#   ./scripts/demo.sh stop   stop everything the demo started
# Environment: BUILD_DIR (default build/release), DATA_DIR (default ./data),
# DSTACK_TEXTS (input texts; default ../shared/data).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD_DIR=${BUILD_DIR:-build/release}
DATA_DIR=${DATA_DIR:-$ROOT/data}
export DSTACK_TEXTS=${DSTACK_TEXTS:-$ROOT/../shared/data}

stop_all() {
  local pids=()
  shopt -s nullglob
  for f in "$DATA_DIR"/*.pid; do
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
    rm -f "$f"
  done
  # Graceful shutdown first; SIGKILL what is still running after 10 s.
  for _ in $(seq 1 100); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive -eq 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  echo "demo: stopped ${#pids[@]} daemon(s) (state kept under $DATA_DIR; delete it to start afresh)"
}

if [ "${1:-}" = "stop" ]; then
  stop_all
  exit 0
elif [ -n "${1:-}" ]; then
  echo "usage: $0 [stop]" >&2
  exit 2
fi

stop_all >/dev/null  # a previous demo's daemons, if any
./scripts/setup.sh
echo "demo: building (Release) in $BUILD_DIR"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" | tail -n 1
BIN=$ROOT/$BUILD_DIR/bin
mkdir -p "$DATA_DIR"

echo
echo "demo: binaries built in $BIN"
for b in mr-coordinator mr-worker mrrun mr-sequential kvraft-server kvctl kvbench \
         shardctrler-server shardkv-server raft-sim; do
  if [ -x "$BIN/$b" ]; then
    echo "---- $b --help (first lines)"
    "$BIN/$b" --help | head -n 6
  fi
done

for part in kvraft shardctrler shardkv mapreduce; do
  if [ -x "scripts/demo-$part.sh" ]; then
    echo
    echo "==== demo: $part"
    "scripts/demo-$part.sh" "$BIN" "$DATA_DIR"
  fi
done

echo
echo "demo: done. Daemons (if any) keep running; their logs and state are under $DATA_DIR."
echo "demo: stop them with: ./scripts/demo.sh stop"
