#!/usr/bin/env bash
# Demo part: mr-coordinator and two mr-workers on 127.0.0.1 with state under
# DATA_DIR/mapreduce/, a word count over the texts with mrrun, the 10 most
# frequent words, and `mrrun status`. The daemons keep running (PIDs in
# DATA_DIR/*.pid, stopped by `scripts/demo.sh stop`).
# Called by scripts/demo.sh with BIN_DIR DATA_DIR.
# Environment: MR_COORDINATOR_PORT (default 23801), DSTACK_TEXTS (the pg-*.txt
# inputs; default <repo>/../shared/data).
set -euo pipefail
BIN=$1
DATA=$2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PORT=${MR_COORDINATOR_PORT:-23801}
TEXTS=${DSTACK_TEXTS:-$ROOT/../shared/data}
export MRRUN_COORDINATOR=127.0.0.1:$PORT
MR=$DATA/mapreduce
mkdir -p "$MR"

run() {
  echo "\$ mrrun $*"
  "$BIN/mrrun" "$@"
}

shopt -s nullglob
inputs=("$TEXTS"/pg-*.txt)
if [ ${#inputs[@]} -eq 0 ]; then
  echo "demo: no pg-*.txt under $TEXTS (set DSTACK_TEXTS)" >&2
  exit 1
fi

"$BIN/mr-coordinator" --listen="$MRRUN_COORDINATOR" --data-dir="$MR/coordinator" \
  >>"$MR/coordinator.log" 2>&1 &
echo $! >"$DATA/mr-coordinator.pid"
disown
for _ in $(seq 1 50); do
  if "$BIN/mrrun" --rpc-timeout=1s list >/dev/null 2>&1; then break; fi
  sleep 0.2
done
for i in 1 2; do
  # Working directory and intermediate files under DATA_DIR too.
  (cd "$MR" && exec "$BIN/mr-worker" --coordinator="$MRRUN_COORDINATOR" \
    --work-dir="$MR/intermediate" >>"$MR/worker-$i.log" 2>&1) &
  echo $! >"$DATA/mr-worker-$i.pid"
  disown
done
echo "demo: started mr-coordinator on $MRRUN_COORDINATOR and 2 mr-workers, logs in $MR/"

OUT=$MR/wc-output
rm -rf "$OUT"
echo "demo: word count over ${#inputs[@]} texts ($(cat "${inputs[@]}" | wc -c) bytes)"
run --app=wc --reduces=10 --output="$OUT" --input "${inputs[@]}"
echo "demo: the 10 most frequent words (word count):"
cat "$OUT"/mr-out-* | sort -k2,2nr -k1,1 | sed -n '1,10s/^/  /p'
run status
run list
echo "demo: try it yourself: MRRUN_COORDINATOR=$MRRUN_COORDINATOR \\"
echo "        $BIN/mrrun --app=indexer --output=/tmp/idx --input $TEXTS/pg-*.txt"
