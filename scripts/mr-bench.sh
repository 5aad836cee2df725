#!/usr/bin/env bash
# MapReduce benchmark (not a test): word count with mrrun on 1, 2 and 4
# workers against mr-sequential and against a plain single-threaded hash-map
# word count (mr-wc-baseline: the speed one core can reach), over the 8 texts
# and over a corpus generated from them; plus the coordinator's overhead per
# task. Workers share nothing but inputs and outputs (each its own --work-dir;
# map output is fetched over gRPC). Release build in BUILD_DIR. Prints a
# table; the generated corpus is deleted at the end.
#   CORPUS_MB   size of the generated corpus (default 1024; 0 skips it)
#   FILE_MB     size of each generated input file = one map task (default 32)
#   WORKERS     worker counts to try (default "1 2 4")
#   NOCOMBINE   1: also each worker count with --nocombine (default 0)
#   SEQUENTIAL  0: skip mr-sequential (slow: minutes per GiB); outputs are then
#               checked against the hash-map count's (default 1)
#   BUILD_DIR   (default build-mrbench)   PORT (default 23811)
#   DSTACK_TEXTS  the pg-*.txt inputs (default <repo>/../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD_DIR=${BUILD_DIR:-build-mrbench}
CORPUS_MB=${CORPUS_MB:-1024}
FILE_MB=${FILE_MB:-32}
WORKERS=${WORKERS:-1 2 4}
NOCOMBINE=${NOCOMBINE:-0}
SEQUENTIAL=${SEQUENTIAL:-1}
PORT=${PORT:-23811}
TEXTS=${DSTACK_TEXTS:-$ROOT/../shared/data}
ADDR=127.0.0.1:$PORT

cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C "$BUILD_DIR" mr-coordinator mr-worker mrrun mr-sequential mr-app-wc mr-wc-baseline |
  tail -n 1
BIN=$ROOT/$BUILD_DIR/bin

TMP=$(mktemp -d "${TMPDIR:-/tmp}/mr-bench.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

echo "machine: $(nproc) cores, $(uptime | sed 's/.*load average/load average/')"

# A corpus of FILE_MB-sized files made of the texts, repeated.
make_corpus() {
  local dir=$1 total_mb=$2 file_mb=$3
  mkdir -p "$dir"
  cat "$TEXTS"/pg-*.txt >"$TMP/all.txt"
  local n=$(( (total_mb + file_mb - 1) / file_mb ))
  for i in $(seq 1 "$n"); do
    local f=$dir/part-$(printf %04d "$i").txt
    while [ "$(stat -c %s "$f" 2>/dev/null || echo 0)" -lt $((file_mb << 20)) ]; do
      cat "$TMP/all.txt" >>"$f"
    done
    truncate -s $((file_mb << 20)) "$f"
  done
  rm -f "$TMP/all.txt"
}

start_cluster() {
  local workers=$1
  rm -rf "$TMP/coord" "$TMP/work"
  "$BIN/mr-coordinator" --listen="$ADDR" --data-dir="$TMP/coord" --log-level=warn \
    >>"$TMP/coordinator.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 100); do
    "$BIN/mrrun" --coordinator="$ADDR" --rpc-timeout=1s list >/dev/null 2>&1 && break
    sleep 0.1
  done
  for i in $(seq 1 "$workers"); do
    "$BIN/mr-worker" --coordinator="$ADDR" --work-dir="$TMP/work/$i" --log-level=warn \
      >>"$TMP/worker.log" 2>&1 &
    PIDS+=($!)
  done
  # Timed from when every worker is up (registered), as a running cluster is.
  for _ in $(seq 1 100); do
    [ "$("$BIN/mrrun" --coordinator="$ADDR" workers 2>/dev/null | tail -n +2 | wc -l)" -ge \
      "$workers" ] && break
    sleep 0.1
  done
}

# CPU seconds (user + system) the given processes used so far: the measure
# that does not depend on what else the machine runs.
cpu_seconds() {
  local ticks=0 t
  for p in "$@"; do
    t=$(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0)
    ticks=$((ticks + t))
  done
  awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz }'
}

stop_cluster() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}

# bench NAME FILE...: sequential, then each worker count; one table row each.
bench() {
  local name=$1
  shift
  local bytes
  bytes=$(cat "$@" | wc -c)
  local mb
  mb=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')
  local t0 t1 seq=0
  # One core's hash-map count: the speed the work itself needs.
  local base
  t0=$(now)
  "$BIN/mr-wc-baseline" --output="$TMP/base-out" "$@" >/dev/null
  t1=$(now)
  base=$(secs "$t0" "$t1")
  if [ "$SEQUENTIAL" = 1 ]; then
    t0=$(now)
    "$BIN/mr-sequential" --app=wc --output="$TMP/seq-out" --temp-dir="$TMP" "$@"
    t1=$(now)
    seq=$(secs "$t0" "$t1")
    printf "%-10s %8s MiB %3s files  %-22s %7ss %9s MiB/s\n" "$name" "$mb" "$#" "mr-sequential" \
      "$seq" "$(awk -v m="$mb" -v s="$seq" 'BEGIN { printf "%.1f", m / s }')"
  else
    cp "$TMP/base-out" "$TMP/seq-out"
  fi
  if ! cmp -s <(sort "$TMP/seq-out") <(sort "$TMP/base-out"); then
    echo "bench: mr-wc-baseline's output differs from mr-sequential" >&2
    exit 1
  fi
  printf "%-10s %8s MiB %3s files  %-22s %7ss %9s MiB/s\n" "$name" "$mb" "$#" \
    "hash-map (1 core)" "$base" "$(awk -v m="$mb" -v s="$base" 'BEGIN { printf "%.1f", m / s }')"
  local modes="combine"
  [ "$NOCOMBINE" = 1 ] && modes="combine nocombine"
  for mode in $modes; do
    for w in $WORKERS; do
      start_cluster "$w"
      rm -rf "$TMP/out"
      t0=$(now)
      "$BIN/mrrun" --coordinator="$ADDR" --poll-interval=20ms --app=wc --reduces=10 \
        "--$mode" --output="$TMP/out" --input "$@" >/dev/null 2>"$TMP/mrrun.log" ||
        { cat "$TMP/mrrun.log"; exit 1; }
      t1=$(now)
      local el cpu
      el=$(secs "$t0" "$t1")
      cpu=$(cpu_seconds "${PIDS[@]:1}")
      if ! cmp -s <(sort "$TMP/seq-out") <(cat "$TMP"/out/mr-out-* | sort); then
        echo "bench: output with $w worker(s) differs from mr-sequential" >&2
        exit 1
      fi
      local label="$w worker(s)"
      [ "$mode" = nocombine ] && label="$w worker(s) nocombine"
      printf "%-10s %8s MiB %3s files  %-22s %7ss %9s MiB/s (%s MiB/s/worker)  %sx mr-sequential, %sx hash-map; workers' CPU %ss = %s MiB per CPU-second\n" \
        "$name" "$mb" "$#" "$label" "$el" \
        "$(awk -v m="$mb" -v s="$el" 'BEGIN { printf "%.1f", m / s }')" \
        "$(awk -v m="$mb" -v s="$el" -v w="$w" 'BEGIN { printf "%.1f", m / s / w }')" \
        "$(awk -v a="$seq" -v b="$el" 'BEGIN { printf "%.2f", a / b }')" \
        "$(awk -v a="$base" -v b="$el" 'BEGIN { printf "%.2f", a / b }')" \
        "$cpu" "$(awk -v m="$mb" -v c="$cpu" 'BEGIN { printf "%.1f", (c > 0 ? m / c : 0) }')"
      stop_cluster
    done
  done
  rm -f "$TMP/seq-out" "$TMP/base-out"
}

echo
bench texts "$TEXTS"/pg-*.txt

if [ "$CORPUS_MB" -gt 0 ]; then
  make_corpus "$TMP/corpus" "$CORPUS_MB" "$FILE_MB"
  bench "corpus" "$TMP"/corpus/part-*.txt
  rm -rf "$TMP/corpus"
fi

# Coordinator overhead: 400 one-line inputs, one reduce, one worker. Each task
# costs a RequestTask and a ReportTask round trip, each with a synced RocksDB
# write, plus the worker's file creation and rename; user work is negligible.
mkdir -p "$TMP/tiny"
for i in $(seq 1 400); do echo "word$((i % 7))" >"$TMP/tiny/in-$i.txt"; done
start_cluster 1
t0=$(now)
"$BIN/mrrun" --coordinator="$ADDR" --poll-interval=20ms --app=wc --reduces=1 \
  --output="$TMP/tiny-out" --input "$TMP"/tiny/in-*.txt >/dev/null 2>&1
t1=$(now)
stop_cluster
echo
echo "coordinator overhead: 401 tiny tasks on 1 worker in $(secs "$t0" "$t1")s =" \
  "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", (b - a) * 1000 / 401 }') ms per task"
