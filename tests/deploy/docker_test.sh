#!/usr/bin/env bash
# Deployment test: the Docker image and the compose stack, for real.
#   - starts a private dockerd (--iptables=false --bridge=none, own data root,
#     exec root, pidfile and socket /run/dstack-test-docker.sock) unless one of
#     ours is already running; DOCKER_HOST points every docker/docker-compose
#     call at it, so another Docker on this machine is never touched;
#   - imports debian:bookworm-slim from a debootstrap (minbase) root file system
#     cached as a tarball under DEPLOY_CACHE;
#   - builds the runtime image from this build's binaries
#     (deploy/docker/build-image.sh --from-build), checks every library resolves;
#   - brings deploy/docker-compose.yml up on free ports (fast Raft timing) and
#     waits until every container is healthy; then from the host: kvctl put/get
#     on kvraft, `docker-compose run --rm join` (twice: it is idempotent), kvctl
#     in sharded mode, a word count with mrrun checked against awk;
#   - `docker kill`s the leader of kvraft, of the controller and of both shardkv
#     groups, and checks every service still answers and keeps its data;
#   - `docker-compose down` (volumes kept) and `up -d`: every key, the
#     controller's configuration and the MapReduce job are still there.
# Cleans up everything it made (containers, volumes, images, the dockerd it
# started, temporary files), on failure too.
# Environment (set by ctest, see tests/deploy/CMakeLists.txt): DSTACK_BIN,
# DSTACK_LIB, DSTACK_SOURCE, DEPLOY_CACHE. Needs root, docker.io,
# docker-compose, debootstrap, python3 (scripts/setup.sh --tests) and, on a
# cold cache, Debian's mirror.
set -euo pipefail

START=$SECONDS
step() { printf 'docker_test [%3ds] %s\n' $((SECONDS - START)) "$*"; }
fail() {
  printf 'docker_test [%3ds] FAIL: %s\n' $((SECONDS - START)) "$*" >&2
  exit 1
}

# ---- prerequisites -------------------------------------------------------------
for v in DSTACK_BIN DSTACK_LIB DSTACK_SOURCE DEPLOY_CACHE; do
  [ -n "${!v:-}" ] || fail "$v is not set (run through ctest, or set it as tests/deploy/CMakeLists.txt does)"
done
[ "$(id -u)" -eq 0 ] || fail "must run as root (it starts its own dockerd)"
for c in docker dockerd docker-compose debootstrap python3 tar; do
  command -v "$c" >/dev/null ||
    fail "$c is not installed (scripts/setup.sh --tests installs docker.io docker-compose debootstrap)"
done
for b in kvraft-server shardctrler-server shardkv-server mr-coordinator mr-worker kvctl mrrun \
  kvbench mr-sequential; do
  [ -x "$DSTACK_BIN/$b" ] || fail "$DSTACK_BIN/$b is missing: build it first"
done
[ -f "$DSTACK_LIB/mr-app-wc.so" ] || fail "$DSTACK_LIB/mr-app-wc.so is missing: build target mr_apps"
COMPOSE_FILE=$DSTACK_SOURCE/deploy/docker-compose.yml
BUILD_IMAGE=$DSTACK_SOURCE/deploy/docker/build-image.sh
[ -f "$COMPOSE_FILE" ] || fail "$COMPOSE_FILE is missing"
[ -x "$BUILD_IMAGE" ] || fail "$BUILD_IMAGE is missing"
KVCTL=$DSTACK_BIN/kvctl
MRRUN=$DSTACK_BIN/mrrun
# LeakSanitizer (sanitized builds) in the host-side CLIs is fine, but keep
# their exit codes about the command.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}

# ---- state and cleanup ---------------------------------------------------------
SOCK=/run/dstack-test-docker.sock
PIDFILE=/run/dstack-test-docker.pid
DOCKER_ROOT=/var/tmp/dstack-test-docker  # data root + exec root of our dockerd
export DOCKER_HOST=unix://$SOCK
export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0
WORK=$(mktemp -d /tmp/dstack-docker-test.XXXXXX)
chmod 755 "$WORK"  # the containers' user (uid 10001) reaches $WORK/mr
PROJECT=dstacktest$$
IMAGE=dstack-test:$$
STARTED_DOCKERD=0
IMPORTED_BASE=0
BUILT_IMAGE=0
COMPOSE_UP=0
mkdir -p "$DEPLOY_CACHE"

compose() { docker-compose -p "$PROJECT" -f "$COMPOSE_FILE" "$@"; }

dump_state() {
  echo "---- docker-compose ps" >&2
  compose ps >&2 || true
  local c
  for c in $(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" 2>/dev/null); do
    echo "---- logs of $(docker inspect -f '{{.Name}}' "$c" 2>/dev/null) (last 15 lines)" >&2
    docker logs --tail 15 "$c" 2>&1 | sed 's/^/  /' >&2 || true
    docker inspect -f '{{range .State.Health.Log}}  health: {{.ExitCode}} {{.Output}}{{end}}' \
      "$c" 2>/dev/null | tail -n 3 >&2 || true
  done
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [ $rc -ne 0 ] && [ $COMPOSE_UP -eq 1 ]; then dump_state; fi
  step "cleanup"
  if [ $COMPOSE_UP -eq 1 ]; then
    compose --profile tools down -v --remove-orphans -t 10 >/dev/null 2>&1
  fi
  [ $BUILT_IMAGE -eq 1 ] && docker rmi -f "$IMAGE" >/dev/null 2>&1
  [ $IMPORTED_BASE -eq 1 ] && docker rmi -f debian:bookworm-slim >/dev/null 2>&1
  if [ $STARTED_DOCKERD -eq 1 ]; then
    local pid
    pid=$(cat "$PIDFILE" 2>/dev/null)
    if [ -n "$pid" ]; then
      kill -TERM "$pid" 2>/dev/null
      for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    fi
    # Mounts left behind by a dockerd that died hard, then its whole root.
    grep -o " ${DOCKER_ROOT}[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
    rm -rf "$DOCKER_ROOT" "$SOCK" "$PIDFILE"
  fi
  rm -rf "$WORK"
  if [ $rc -eq 0 ]; then
    step "PASS"
  else
    step "failed (exit $rc); see the messages above"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- dockerd -------------------------------------------------------------------
if docker version >/dev/null 2>&1; then
  step "using the dockerd already running on $SOCK (left running at the end)"
else
  step "starting a private dockerd on $SOCK (data under $DOCKER_ROOT)"
  rm -f "$SOCK"
  mkdir -p "$DOCKER_ROOT"
  echo '{}' >"$DOCKER_ROOT/daemon.json"  # not the host's /etc/docker/daemon.json
  STARTED_DOCKERD=1
  dockerd --config-file="$DOCKER_ROOT/daemon.json" --host="$DOCKER_HOST" \
    --data-root="$DOCKER_ROOT/data" --exec-root="$DOCKER_ROOT/exec" --pidfile="$PIDFILE" \
    --iptables=false --ip-masq=false --bridge=none --log-level=warn \
    >"$DOCKER_ROOT/dockerd.log" 2>&1 &
  disown
  for _ in $(seq 1 150); do
    docker version >/dev/null 2>&1 && break
    sleep 0.2
  done
  docker version >/dev/null 2>&1 || {
    tail -n 20 "$DOCKER_ROOT/dockerd.log" >&2
    fail "dockerd did not start within 30 s (log above)"
  }
fi

# ---- base image: debootstrap, cached -------------------------------------------
BASE_TAR=$DEPLOY_CACHE/debian-bookworm-minbase.tar
if ! docker image inspect debian:bookworm-slim >/dev/null 2>&1; then
  if [ ! -s "$BASE_TAR" ]; then
    step "debootstrap --variant=minbase bookworm (cold cache: about a minute)"
    ROOTFS=$WORK/rootfs
    debootstrap --variant=minbase bookworm "$ROOTFS" http://deb.debian.org/debian \
      >"$WORK/debootstrap.log" 2>&1 || {
      tail -n 20 "$WORK/debootstrap.log" >&2
      fail "debootstrap failed (is http://deb.debian.org reachable?)"
    }
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
    tar -C "$ROOTFS" --numeric-owner -cf "$BASE_TAR.tmp" .
    mv "$BASE_TAR.tmp" "$BASE_TAR"
    rm -rf "$ROOTFS"
  fi
  step "docker import $(basename "$BASE_TAR") as debian:bookworm-slim"
  docker import "$BASE_TAR" debian:bookworm-slim >/dev/null
  IMPORTED_BASE=1
fi

# ---- runtime image from this build -------------------------------------------
step "building image $IMAGE from $DSTACK_BIN (build-image.sh --from-build)"
mkdir -p "$WORK/build"
ln -s "$DSTACK_BIN" "$WORK/build/bin"
ln -s "$DSTACK_LIB" "$WORK/build/lib"
BUILT_IMAGE=1
"$BUILD_IMAGE" --from-build "$WORK/build" --tag "$IMAGE" >"$WORK/build-image.log" 2>&1 || {
  tail -n 30 "$WORK/build-image.log" >&2
  fail "the image did not build (log above)"
}
grep "^build-image.sh:" "$WORK/build-image.log" | sed 's/^/  /'
missing=$(docker run --rm --network none --entrypoint sh "$IMAGE" -c \
  'ldd /opt/dstack/bin/* /opt/dstack/lib/*.so | grep "not found" || true')
[ -z "$missing" ] || fail "libraries missing in the image: $missing"
[ "$(docker run --rm --network none "$IMAGE" id -u)" = 10001 ] || fail "the image does not run as uid 10001"

# ---- compose stack -------------------------------------------------------------
# Free ports on 127.0.0.1 (bound together, so they are distinct).
read -r -a PORTS <<<"$(python3 - <<'EOF'
import socket
socks = []
for _ in range(13):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
)"
export DSTACK_IMAGE=$IMAGE DSTACK_HOST=127.0.0.1 DSTACK_MR_DIR=$WORK/mr
export DSTACK_KVRAFT_PORT_1=${PORTS[0]} DSTACK_KVRAFT_PORT_2=${PORTS[1]} DSTACK_KVRAFT_PORT_3=${PORTS[2]}
export DSTACK_CTRL_PORT_1=${PORTS[3]} DSTACK_CTRL_PORT_2=${PORTS[4]} DSTACK_CTRL_PORT_3=${PORTS[5]}
export DSTACK_G1_PORT_1=${PORTS[6]} DSTACK_G1_PORT_2=${PORTS[7]} DSTACK_G1_PORT_3=${PORTS[8]}
export DSTACK_G2_PORT_1=${PORTS[9]} DSTACK_G2_PORT_2=${PORTS[10]} DSTACK_G2_PORT_3=${PORTS[11]}
export DSTACK_MR_PORT=${PORTS[12]}
# Test timing (tests/common/process_cluster.h FastRaftFlags); the file's
# defaults are the production ones.
export DSTACK_RAFT_FLAGS="--tick-interval=50ms --election-ticks=10 --log-level=warn"
export DSTACK_MR_FLAGS="--log-level=warn"
export DSTACK_HEALTH_INTERVAL=1s
KV=127.0.0.1:$DSTACK_KVRAFT_PORT_1,127.0.0.1:$DSTACK_KVRAFT_PORT_2,127.0.0.1:$DSTACK_KVRAFT_PORT_3
CTRL=127.0.0.1:$DSTACK_CTRL_PORT_1,127.0.0.1:$DSTACK_CTRL_PORT_2,127.0.0.1:$DSTACK_CTRL_PORT_3
MR=127.0.0.1:$DSTACK_MR_PORT
install -d -o 10001 -g 10001 "$DSTACK_MR_DIR"
compose config -q || fail "docker-compose config rejects $COMPOSE_FILE"

# Waits (up to $1 s) until every container of the project is running and healthy.
wait_healthy() {
  local deadline=$((SECONDS + $1)) ids states
  while :; do
    ids=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" \
      --filter "label=com.docker.compose.oneoff=False")
    states=$(for c in $ids; do
      docker inspect -f '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' "$c"
    done)
    if [ "$(wc -w <<<"$ids")" -eq 15 ] && ! grep -qv " running healthy$" <<<"$states"; then
      return 0
    fi
    if [ $SECONDS -ge $deadline ]; then
      echo "$states" >&2
      fail "the stack was not healthy within $1 s"
    fi
    sleep 1
  done
}

step "docker-compose up -d (15 containers; ports ${PORTS[*]})"
COMPOSE_UP=1
compose up -d >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log" >&2; fail "docker-compose up -d failed"; }
wait_healthy 120
step "stack healthy"

# ---- kvraft --------------------------------------------------------------------
kv() { "$KVCTL" --endpoints="$KV" --timeout=15s "$@"; }
step "kvctl put/get on kvraft"
kv put docker:k1 "before kill" >/dev/null
[ "$(kv get docker:k1)" = "before kill" ] || fail "kvraft: get docker:k1 is not what was put"

# ---- join and sharded KV -------------------------------------------------------
step "docker-compose run --rm join"
compose run --rm join >"$WORK/join.log" 2>&1 || { cat "$WORK/join.log" >&2; fail "join failed"; }
if ! grep -q "^gid 1 " "$WORK/join.log" || ! grep -q "^gid 2 " "$WORK/join.log"; then
  cat "$WORK/join.log" >&2
  fail "groups 1 and 2 are not in the configuration after join"
fi
compose run --rm join >"$WORK/join2.log" 2>&1 || { cat "$WORK/join2.log" >&2; fail "a second join failed"; }
grep -q "already in the configuration" "$WORK/join2.log" || fail "the second join did not skip the joined groups"

skv() { "$KVCTL" --controllers="$CTRL" --timeout=15s "$@"; }
KEYS=(alice bob carol dave erin frank grace heidi ivan judy)
step "kvctl --controllers: put ${#KEYS[@]} keys, read them back"
for k in "${KEYS[@]}"; do echo "put user:$k hello $k"; done | skv >/dev/null
check_sharded() {
  local k got
  for k in "${KEYS[@]}"; do
    got=$(skv get "user:$k") || fail "sharded get user:$k failed ($1)"
    [ "$got" = "hello $k" ] || fail "sharded user:$k is '$got', not 'hello $k' ($1)"
  done
}
check_sharded "after join"
gids=$(for k in "${KEYS[@]}"; do skv -w json locate "user:$k"; done | grep -o '"gid":[0-9]*' | sort -u | wc -l)
[ "$gids" -eq 2 ] || fail "the keys are not spread over both groups ($gids group(s))"

# ---- MapReduce -----------------------------------------------------------------
step "mrrun: word count over 3 files"
mkdir -p "$DSTACK_MR_DIR/in"
printf 'the quick brown fox\njumps over the lazy dog\n' >"$DSTACK_MR_DIR/in/a.txt"
printf 'The dog sleeps; the fox runs.\nA fox, a dog -- and the END.\n' >"$DSTACK_MR_DIR/in/b.txt"
for i in $(seq 1 200); do echo "line $i of c: raft kv shard raft"; done >"$DSTACK_MR_DIR/in/c.txt"
chmod -R a+rX "$DSTACK_MR_DIR/in"
"$MRRUN" --coordinator="$MR" --app=wc --reduces=3 --output="$DSTACK_MR_DIR/out" \
  --input "$DSTACK_MR_DIR"/in/*.txt >"$WORK/mrrun.log" 2>&1 ||
  { cat "$WORK/mrrun.log" >&2; fail "mrrun failed"; }
cat "$DSTACK_MR_DIR"/in/*.txt | tr -cs 'A-Za-z' '\n' | grep -v '^$' | LC_ALL=C sort | uniq -c |
  awk '{ print $2, $1 }' | LC_ALL=C sort >"$WORK/wc.expected"
cat "$DSTACK_MR_DIR"/out/mr-out-* | LC_ALL=C sort >"$WORK/wc.got"
diff "$WORK/wc.expected" "$WORK/wc.got" >&2 || fail "word count output differs from the expected counts"

# ---- kill one replica of each group --------------------------------------------
# The leader's id (1-3) among ENDPOINTS (kvctl -w json endpoint status), or 1.
leader_of() {
  local status
  # Non-zero when some replica did not answer: the others' lines still count.
  status=$("$KVCTL" --endpoints="$1" --timeout=5s -w json endpoint status 2>/dev/null || true)
  python3 -c '
import json, sys
try:
    items = json.load(sys.stdin)
except ValueError:
    items = []
leaders = [i["id"] for i in items if i.get("role") == "leader"]
print(leaders[0] if leaders else 1)' <<<"$status"
}
container_of() {
  docker ps -q --filter "label=com.docker.compose.project=$PROJECT" \
    --filter "label=com.docker.compose.service=$1" --filter "label=com.docker.compose.oneoff=False"
}
G1=127.0.0.1:$DSTACK_G1_PORT_1,127.0.0.1:$DSTACK_G1_PORT_2,127.0.0.1:$DSTACK_G1_PORT_3
G2=127.0.0.1:$DSTACK_G2_PORT_1,127.0.0.1:$DSTACK_G2_PORT_2,127.0.0.1:$DSTACK_G2_PORT_3
victims="kvraft-$(leader_of "$KV") ctrl-$(leader_of "$CTRL") g1-$(leader_of "$G1") g2-$(leader_of "$G2")"
step "docker kill the leaders: $victims"
for v in $victims; do
  c=$(container_of "$v")
  [ -n "$c" ] || fail "no running container for service $v"
  docker kill "$c" >/dev/null
done
step "checking every service still answers"
[ "$(kv get docker:k1)" = "before kill" ] || fail "kvraft lost docker:k1 after a replica was killed"
kv put docker:k2 "after kill" >/dev/null || fail "kvraft put failed after a replica was killed"
check_sharded "after the kill"
skv put user:zoe "written after kill" >/dev/null || fail "sharded put failed after the kill"
"$KVCTL" --controllers="$CTRL" --timeout=15s ctrl query >/dev/null ||
  fail "the controller does not answer after a replica was killed"

# ---- down (volumes kept) and up --------------------------------------------------
# SIGTERM (docker stop) must shut every daemon down gracefully: exit status 0
# (tini passes the daemon's on), within the 30 s grace period. The containers
# killed above are skipped unless Docker restarted them.
step "docker-compose stop: every daemon exits 0 on SIGTERM"
running=$(docker ps -q --filter "label=com.docker.compose.project=$PROJECT" \
  --filter "label=com.docker.compose.oneoff=False")
compose stop -t 30 >"$WORK/stop.log" 2>&1 || { cat "$WORK/stop.log" >&2; fail "docker-compose stop failed"; }
bad=""
for c in $running; do
  code=$(docker inspect -f '{{.State.ExitCode}}' "$c")
  [ "$code" = 0 ] || bad="$bad $(docker inspect -f '{{.Name}}' "$c")=$code"
done
[ -z "$bad" ] || fail "not a graceful stop (container=exit status):$bad"
step "docker-compose down (volumes kept)"
compose down -t 30 >"$WORK/down.log" 2>&1 || { cat "$WORK/down.log" >&2; fail "docker-compose down failed"; }
[ -z "$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT")" ] ||
  fail "containers left after docker-compose down"
step "docker-compose up -d again"
compose up -d >"$WORK/up2.log" 2>&1 || { cat "$WORK/up2.log" >&2; fail "the second docker-compose up -d failed"; }
wait_healthy 120
step "stack healthy again: checking the data kept in the volumes"
[ "$(kv get docker:k1)" = "before kill" ] || fail "kvraft lost docker:k1 across down/up"
[ "$(kv get docker:k2)" = "after kill" ] || fail "kvraft lost docker:k2 across down/up"
check_sharded "after down/up"
[ "$(skv get user:zoe)" = "written after kill" ] || fail "sharded user:zoe lost across down/up"
"$KVCTL" --controllers="$CTRL" --timeout=15s ctrl query | grep -q "^gid 2 " ||
  fail "the controller lost its configuration across down/up"
"$MRRUN" --coordinator="$MR" list | grep -q "job-1" ||
  fail "the coordinator lost its job across down/up"
step "all checks passed in $((SECONDS - START)) s"
