#!/usr/bin/env bash
# etcd baseline benchmark (not a test): the same load points as
# scripts/kv-bench.sh, run against a 3-member etcd 3.4 cluster on this machine,
# so our kvraft figures can be compared with etcd measured in the same session.
#
# Installs (apt-get, as root, only what is missing; Debian 12 packages only):
#   etcd-server etcd-client     etcd 3.4 and etcdctl
#   golang-go                   Go 1.19, to build the load generator
#   golang-etcd-server-dev      etcd's clientv3 source (+ its golang-*-dev deps)
#   time                        /usr/bin/time, the load generator's CPU time
# etcd's own load generator (tools/benchmark) is not in Debian's packages, so
# the load comes from scripts/etcd-bench/main.go ("etcd-kvbench"): N clients,
# each one request in flight, over M clientv3 connections; random keys out of
# 10000, 256-byte values, linearizable Gets, fixed duration, the same JSON line
# as `kvbench -w json`. It is built offline against Debian's Go packages
# (GOPATH=/usr/share/gocode, GO111MODULE=off) into the temp dir.
#
# Run (from anywhere; serialise with other benchmarks on a shared machine):
#   flock /tmp/bench.lock ./scripts/etcd-bench.sh
#   RUNS=3 DUR=8s POINTS="64 64 0;64 64 1" ./scripts/etcd-bench.sh   clients conns read-ratio
#   TARGET=all ./scripts/etcd-bench.sh      spread requests over all 3 members
#                                           (default: leader only, as kvbench)
#   ETCD_FLAGS="--snapshot-count=10000" ./scripts/etcd-bench.sh   extra etcd flags
#   BASE_PORT=26001 (uses BASE_PORT..BASE_PORT+5: clients +0..+2, peers +3..+5)
#
# Each run starts a fresh cluster (data in one mktemp dir, removed on exit, all
# etcd processes killed on exit), warms up with one put, runs the generator and
# prints its JSON line plus the CPU time per operation of each etcd member
# (from /proc/PID/stat) and of the generator (/usr/bin/time), and the WAL
# fdatasyncs and backend commits of each member during the run (etcd's
# /metrics) and the lines each member logged (--log-level=warn). Per point:
# median ops/s, p50 and p99 over RUNS runs.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
DUR=${DUR:-8s}
POINTS=${POINTS:-"1 1 0;16 16 0;64 64 0;1000 100 0;64 64 1;64 64 0.9"}
BASE_PORT=${BASE_PORT:-26001}
TARGET=${TARGET:-leader}

missing=()
command -v etcd >/dev/null || missing+=(etcd-server)
command -v etcdctl >/dev/null || missing+=(etcd-client)
command -v go >/dev/null || missing+=(golang-go)
[ -d /usr/share/gocode/src/go.etcd.io/etcd/clientv3 ] || missing+=(golang-etcd-server-dev)
[ -x /usr/bin/time ] || missing+=(time)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/etcd-bench.XXXXXX")
PIDS=()
GENPID=""
stop() {
  if [ -n "$GENPID" ]; then  # /usr/bin/time and the generator under it
    for c in $(pgrep -P "$GENPID"); do kill -9 "$c" 2>/dev/null || true; done
    kill -9 "$GENPID" 2>/dev/null || true
  fi
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
  PIDS=()
}
trap 'stop; rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM

# Build the load generator offline against Debian's Go packages (the Go build
# cache stays in its default place, so later builds take a second).
GEN="$TMP/etcd-kvbench"
(cd scripts/etcd-bench && GOPATH=/usr/share/gocode GO111MODULE=off GOFLAGS= GOPROXY=off \
  nice -n 19 go build -o "$GEN" .)

CURLS=() PEERURLS=() CLUSTER=""
for i in 1 2 3; do
  CURLS+=("http://127.0.0.1:$((BASE_PORT + i - 1))")
  PEERURLS+=("http://127.0.0.1:$((BASE_PORT + i + 2))")
  CLUSTER+="${CLUSTER:+,}m$i=${PEERURLS[$((i - 1))]}"
done
ALL=$(IFS=,; echo "${CURLS[*]}")
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# WAL fdatasyncs and backend (bbolt) commits so far, from a member's /metrics.
syncs() {
  python3 - "$1" <<'EOF'
import sys, urllib.request
wal = be = 0.0
for line in urllib.request.urlopen(sys.argv[1] + "/metrics", timeout=5).read().decode().splitlines():
    if line.startswith("etcd_disk_wal_fsync_duration_seconds_count"): wal = float(line.split()[-1])
    if line.startswith("etcd_disk_backend_commit_duration_seconds_count"): be = float(line.split()[-1])
print(int(wal), int(be))
EOF
}
# Index (0-2) of the leader, once the cluster has one.
leader_index() {
  etcdctl --endpoints="$ALL" --command-timeout=2s endpoint status -w json 2>/dev/null | python3 -c '
import json, sys
st = json.load(sys.stdin)
for i, s in enumerate(st):
    if s["Status"]["leader"] and s["Status"]["leader"] == s["Status"]["header"]["member_id"]:
        print(i); break'
}
field() { python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(eval("d" + sys.argv[2]))' "$1" "$2"; }
median() { sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }

echo "etcd-bench: $(etcd --version | head -1), $(nproc) cores, $(uptime | sed 's/.*load/load/'), $(date -u +%FT%TZ), target=$TARGET"
IFS=";" read -ra LIST <<<"$POINTS"
for point in "${LIST[@]}"; do
  read -r clients conns ratio <<<"$point"
  results=() p50s=() p99s=()
  for run in $(seq "$RUNS"); do
    rm -rf "$TMP/data"
    for i in 1 2 3; do
      etcd --name="m$i" --data-dir="$TMP/data/m$i" \
        --listen-client-urls="${CURLS[$((i - 1))]}" --advertise-client-urls="${CURLS[$((i - 1))]}" \
        --listen-peer-urls="${PEERURLS[$((i - 1))]}" --initial-advertise-peer-urls="${PEERURLS[$((i - 1))]}" \
        --initial-cluster="$CLUSTER" --initial-cluster-state=new --initial-cluster-token="etcd-bench-$$" \
        --logger=zap --log-level=warn ${ETCD_FLAGS:-} >"$TMP/etcd$i.log" 2>&1 &
      PIDS+=($!)
    done
    lead=""
    for _ in $(seq 100); do
      lead=$(leader_index || true)
      [ -n "$lead" ] && break
      sleep 0.2
    done
    if [ -z "$lead" ]; then
      echo "etcd-bench: no leader after 20 s" >&2
      tail -n 20 "$TMP"/etcd*.log >&2
      exit 1
    fi
    if [ "$TARGET" = leader ]; then eps=${CURLS[$lead]}; else eps=$ALL; fi
    etcdctl --endpoints="$eps" --command-timeout=20s put warm up >/dev/null
    before=() sbefore=()
    for k in 0 1 2; do
      before+=("$(ticks "${PIDS[$k]}")")
      sbefore+=("$(syncs "${CURLS[$k]}")")
    done
    echo "0 0" >"$TMP/time"
    # In the background + wait, so that a TERM to this script acts at once.
    /usr/bin/time -f "%U %S" -o "$TMP/time" "$GEN" --endpoints="$eps" \
      --clients="$clients" --conns="$conns" --read-ratio="$ratio" --duration="$DUR" \
      --keys=10000 --value-size=256 -json >"$TMP/out" &
    GENPID=$!
    wait "$GENPID"
    GENPID=""
    out=$(cat "$TMP/out")
    ops=$(field "$out" '["ops"]')
    cpu="" fs="" logs=""
    for k in 0 1 2; do
      role=follower
      [ "$k" = "$lead" ] && role=leader
      us=$(( ($(ticks "${PIDS[$k]}") - ${before[$k]}) * 10000 / (ops > 0 ? ops : 1) ))
      cpu+="m$((k + 1))($role)=${us}us "
      read -r w0 b0 <<<"${sbefore[$k]}"
      read -r w1 b1 <<<"$(syncs "${CURLS[$k]}")"
      fs+="m$((k + 1)):wal_fsyncs=$((w1 - w0)),backend_commits=$((b1 - b0)) "
      logs+="m$((k + 1))=$(wc -l <"$TMP/etcd$((k + 1)).log") "
    done
    cpu+="client=$(awk -v ops="$ops" '{printf "%d", ($1 + $2) * 1e6 / (ops > 0 ? ops : 1)}' "$TMP/time")us"
    echo "$out cpu_per_op: $cpu syncs: ${fs% } log_lines: ${logs% }"
    results+=("$(field "$out" '["ops_per_sec"]')")
    p50s+=("$(field "$out" '["latency_ms"]["p50"]')")
    p99s+=("$(field "$out" '["latency_ms"]["p99"]')")
    stop
  done
  echo "== etcd clients=$clients conns=$conns read_ratio=$ratio: median $(printf '%s\n' "${results[@]}" | median) ops/s," \
    "p50 $(printf '%s\n' "${p50s[@]}" | median) ms, p99 $(printf '%s\n' "${p99s[@]}" | median) ms over $RUNS runs"
done
