#!/usr/bin/env bash
# The systemd units of deploy/systemd, for real:
#   1. every unit passes `systemd-analyze verify` (installed by install.sh into
#      a scratch root, so the binaries are at the paths the units name; any
#      diagnostic fails, not only errors);
#   2. a Debian bookworm root (debootstrap minbase + systemd + the runtime
#      libraries the binaries need, found with ldd + dpkg -S; cached as a
#      tarball in DEPLOY_CACHE, keyed by that package list) gets the binaries,
#      units, user and flag files (the examples with free ports) and is booted
#      with systemd-nspawn on the host network;
#   3. systemctl starts a 3-replica kvraft and a 3-replica shard controller
#      (Type=notify: start returns once each replica sent READY=1), as user
#      dstack in their state directories; kvctl on the host writes and reads;
#   4. `systemctl stop` of the kvraft leader is graceful (exit status 0, well
#      within TimeoutStopSec); `kill -9` of a replica is restarted by systemd;
#      a SIGSTOPped replica is restarted by the watchdog (WatchdogSec=4s here);
#      the cluster serves, and keeps its data, after each;
#   5. a shardkv group, mr-coordinator and mr-worker@1 start (READY) and serve:
#      the group joins and serves kvctl, a word count job runs; they stop with
#      exit status 0;
#   6. the machine powers off (every replica exits 0); everything started is
#      cleaned up (nspawn, temporary directories), on failure too.
# Environment (set by tests/deploy/CMakeLists.txt): DSTACK_BIN, DSTACK_LIB,
# DSTACK_SOURCE, DEPLOY_CACHE. Optional: DEBIAN_MIRROR, KEEP_WORK=1 (keep the
# booted root for inspection). Needs root, debootstrap, systemd-container.
set -euo pipefail

T0=$SECONDS
step() { printf '[systemd_test %4ds] %s\n' $((SECONDS - T0)) "$*"; }
fail() {
  printf '[systemd_test %4ds] FAIL: %s\n' $((SECONDS - T0)) "$*" >&2
  exit 1
}

# ---- prerequisites --------------------------------------------------------
for v in DSTACK_BIN DSTACK_LIB DSTACK_SOURCE DEPLOY_CACHE; do
  [ -n "${!v:-}" ] || fail "$v is not set (run through ctest, or set it as tests/deploy/CMakeLists.txt does)"
done
[ "$(id -u)" = 0 ] || fail "must run as root (debootstrap, systemd-nspawn, nsenter)"
for c in systemd-analyze systemd-sysusers debootstrap systemd-nspawn nsenter pgrep ldd dpkg tar zstd ss sha256sum timeout; do
  command -v "$c" >/dev/null ||
    fail "missing prerequisite '$c' (scripts/setup.sh --tests installs debootstrap and systemd-container)"
done
DAEMONS=(kvraft-server shardctrler-server shardkv-server mr-coordinator mr-worker)
for b in "${DAEMONS[@]}" kvctl mrrun; do
  [ -x "$DSTACK_BIN/$b" ] || fail "$DSTACK_BIN/$b is missing: build it first"
done
[ -f "$DSTACK_LIB/mr-app-wc.so" ] || fail "$DSTACK_LIB/mr-app-wc.so is missing: build the MapReduce apps first"
UNITS_DIR=$DSTACK_SOURCE/deploy/systemd
[ -x "$UNITS_DIR/install.sh" ] || fail "$UNITS_DIR/install.sh is missing"
KVCTL=$DSTACK_BIN/kvctl
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# The test's own watchdog period and restart delay (the units say 10 s and 2 s).
TEST_WATCHDOG_SEC=4
RESTART_SEC=$(sed -n 's/^RestartSec=\([0-9]*\)s$/\1/p' "$UNITS_DIR/kvraft@.service")
STOP_TIMEOUT_SEC=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s$/\1/p' "$UNITS_DIR/kvraft@.service")
[ -n "$RESTART_SEC" ] && [ -n "$STOP_TIMEOUT_SEC" ] ||
  fail "kvraft@.service has no RestartSec=Ns / TimeoutStopSec=Ns"

mkdir -p "$DEPLOY_CACHE"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dstack-systemd-test.XXXXXX")
MACHINE=dstack-sd-$$
NSPAWN_PID=""
LEADER=""
BOOTSTRAP_DIR=""

# ---- cleanup (also on failure) --------------------------------------------
# Runs a command inside the booted machine (all of PID 1's namespaces).
in_machine() { nsenter -t "$LEADER" -a "$@"; }
alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }
# Straight to PID 1 (`systemctl poweroff` would ask logind over D-Bus first).
poweroff_machine() {
  timeout 10 nsenter -t "$LEADER" -a systemctl start poweroff.target --job-mode=replace-irreversibly --no-block
}

dump_diagnostics() {
  alive "$LEADER" || return 0
  echo "---- systemd_test: unit states and the last journal lines (diagnostics)" >&2
  timeout 10 nsenter -t "$LEADER" -a systemctl --no-pager list-units --all \
    'kvraft@*' 'shardctrler@*' 'shardkv@*' 'mr-*' >&2 || true
  timeout 10 nsenter -t "$LEADER" -a journalctl --no-pager -n 80 -u 'kvraft@*' -u 'shardctrler@*' \
    -u 'shardkv@*' -u 'mr-*' >&2 || true
}

power_off() {
  if alive "$NSPAWN_PID"; then
    alive "$LEADER" && poweroff_machine >/dev/null 2>&1
    for _ in $(seq 1 300); do alive "$NSPAWN_PID" || break; sleep 0.1; done
  fi
  if alive "$NSPAWN_PID"; then
    kill -TERM "$NSPAWN_PID" 2>/dev/null || true  # nspawn asks PID 1 to halt
    for _ in $(seq 1 100); do alive "$NSPAWN_PID" || break; sleep 0.1; done
  fi
  # Last resort: SIGKILL to the container's PID 1 ends its whole PID namespace.
  if alive "$NSPAWN_PID"; then
    alive "$LEADER" && kill -KILL "$LEADER" 2>/dev/null
    kill -KILL "$NSPAWN_PID" 2>/dev/null || true
  fi
  [ -n "$NSPAWN_PID" ] && wait "$NSPAWN_PID" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  [ $rc -ne 0 ] && dump_diagnostics
  power_off
  if [ -n "$BOOTSTRAP_DIR" ]; then
    # An interrupted debootstrap may leave proc/sys mounted in its target.
    grep -o " $BOOTSTRAP_DIR/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
    rm -rf --one-file-system "$BOOTSTRAP_DIR"
  fi
  if [ "${KEEP_WORK:-0}" = 1 ]; then
    echo "systemd_test: kept $WORK" >&2
  else
    grep -o " $WORK/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
    rm -rf --one-file-system "$WORK"
  fi
  if [ $rc -eq 0 ]; then
    step "PASS"
  else
    printf '[systemd_test %4ds] FAILED (exit %d)\n' $((SECONDS - T0)) "$rc" >&2
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Polls CMD... every 0.2 s for up to SECS seconds; fails with DESC.
wait_for() {
  local secs=$1 desc=$2 deadline
  shift 2
  deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || fail "timed out after ${secs}s waiting for: $desc"
    sleep 0.2
  done
}

# ---- 1. systemd-analyze verify ---------------------------------------------
step "verify: installing units and binaries into a scratch root"
VROOT=$WORK/verify-root
mkdir -p "$VROOT/usr/lib/systemd"
# The scratch root needs systemd's own units (sysinit.target, ...) to verify against.
cp -a /usr/lib/systemd/system "$VROOT/usr/lib/systemd/"
"$UNITS_DIR/install.sh" --root "$VROOT" --bin "$DSTACK_BIN" --lib "$DSTACK_LIB" --examples \
  >"$WORK/install-verify.log" 2>&1 || { cat "$WORK/install-verify.log" >&2; fail "install.sh --root $VROOT failed"; }
# One instance of each template, as systemctl would load it.
VERIFY_UNITS=()
for f in "$UNITS_DIR"/*.service; do
  u=$(basename "$f")
  case $u in
    shardkv@.service) u=shardkv@100-1.service ;;
    *@.service) u=${u%@.service}@1.service ;;
  esac
  VERIFY_UNITS+=("$u")
done
[ ${#VERIFY_UNITS[@]} -ge 5 ] || fail "expected at least 5 units in $UNITS_DIR, found ${#VERIFY_UNITS[@]}"
# systemd-analyze verify exits 0 on settings it ignores ("Unknown key",
# "Failed to parse ..."): any output at all is a failure.
if ! out=$(cd "$VROOT/etc/systemd/system" &&
  systemd-analyze verify --root="$VROOT" --man=no "${VERIFY_UNITS[@]}" 2>&1) || [ -n "$out" ]; then
  echo "$out" >&2
  fail "systemd-analyze verify reported problems in deploy/systemd units"
fi
step "verify: ${VERIFY_UNITS[*]}: clean"

# ---- 2. the Debian root file system ----------------------------------------
step "rootfs: runtime packages from ldd of the binaries"
LDD_INPUTS=()
for b in "${DAEMONS[@]}"; do LDD_INPUTS+=("$DSTACK_BIN/$b"); done
LDD_INPUTS+=("$DSTACK_LIB"/mr-app-*.so)
ldd_out=$(ldd "${LDD_INPUTS[@]}")
if grep -q 'not found' <<<"$ldd_out"; then
  grep 'not found' <<<"$ldd_out" >&2
  fail "the binaries need libraries the host does not have"
fi
mapfile -t LIBS < <(awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// && $1 !~ /:$/ {print $1}' \
  <<<"$ldd_out" | sort -u)
# Each library under every name dpkg may know it by (merged /usr: /lib is
# /usr/lib), all looked up in one dpkg -S call (one call per path is slow).
declare -A CANDIDATES
all_candidates=()
for lib in "${LIBS[@]}"; do
  r=$(readlink -f "$lib")
  CANDIDATES[$lib]="$lib $r /usr$lib /usr$r ${lib#/usr} ${r#/usr}"
  read -ra c <<<"${CANDIDATES[$lib]}"
  all_candidates+=("${c[@]}")
done
declare -A OWNER
while IFS= read -r line; do
  [[ $line == diversion* ]] && continue
  pkgs=${line%%: /*}
  OWNER[${line#*: }]=${pkgs%%[:,]*}
done < <(dpkg -S "${all_candidates[@]}" 2>/dev/null || true)
PACKAGES=()
for lib in "${LIBS[@]}"; do
  pkg=""
  for cand in ${CANDIDATES[$lib]}; do
    if [ -n "${OWNER[$cand]:-}" ]; then pkg=${OWNER[$cand]}; break; fi
  done
  [ -n "$pkg" ] || fail "no Debian package owns $lib (needed by the binaries); install it from Debian"
  PACKAGES+=("$pkg")
done
mapfile -t PACKAGES < <(printf '%s\n' "${PACKAGES[@]}" systemd systemd-sysv dbus | sort -u)
INCLUDE=$(IFS=,; echo "${PACKAGES[*]}")
# Bump RECIPE when the way the root is made changes.
RECIPE=2
KEY=$(echo "recipe=$RECIPE bookworm minbase $MIRROR $INCLUDE" | sha256sum | cut -c1-16)
TARBALL=$DEPLOY_CACHE/systemd-rootfs-bookworm-$KEY.tar.zst
step "rootfs: ${#PACKAGES[@]} packages: $INCLUDE"

if [ -f "$TARBALL" ]; then
  step "rootfs: cached $(basename "$TARBALL")"
else
  step "rootfs: not cached; debootstrap bookworm from $MIRROR (takes a few minutes)"
  BOOTSTRAP_DIR=$(mktemp -d "$DEPLOY_CACHE/bootstrap.XXXXXX")
  if ! debootstrap --variant=minbase --include="$INCLUDE" bookworm "$BOOTSTRAP_DIR" "$MIRROR" \
    >"$WORK/debootstrap.log" 2>&1; then
    tail -n 30 "$WORK/debootstrap.log" >&2
    fail "debootstrap failed (is $MIRROR reachable?); log above"
  fi
  chroot "$BOOTSTRAP_DIR" apt-get clean
  rm -rf "$BOOTSTRAP_DIR"/var/lib/apt/lists/* "$BOOTSTRAP_DIR"/var/cache/apt/*.bin
  # A container does not need these; they only slow the boot down or fail in it.
  for u in systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer \
    e2scrub_all.timer e2scrub_reap.service fstrim.timer; do
    ln -sf /dev/null "$BOOTSTRAP_DIR/etc/systemd/system/$u"
  done
  chmod 0755 "$BOOTSTRAP_DIR"  # mktemp made it 0700: the container's / must be 0755
  step "rootfs: packing $(du -sh "$BOOTSTRAP_DIR" | cut -f1) into the cache"
  tar -C "$BOOTSTRAP_DIR" --numeric-owner --xattrs -c . | zstd -q -T0 -3 -o "$TARBALL.tmp.$$"
  mv "$TARBALL.tmp.$$" "$TARBALL"
  rm -rf --one-file-system "$BOOTSTRAP_DIR"
  BOOTSTRAP_DIR=""
  # Roots cached for other package lists are stale now.
  find "$DEPLOY_CACHE" -maxdepth 1 -name 'systemd-rootfs-*.tar.zst' ! -name "$(basename "$TARBALL")" -delete
  step "rootfs: cached $(basename "$TARBALL") ($(du -h "$TARBALL" | cut -f1))"
fi

ROOT=$WORK/root
mkdir -p "$ROOT"
zstd -q -d -c "$TARBALL" | tar -C "$ROOT" --numeric-owner --xattrs -x
chmod 0755 "$ROOT"  # the container's /: users other than root must traverse it
step "rootfs: fresh copy unpacked"

# ---- 3. install into the root ------------------------------------------------
"$UNITS_DIR/install.sh" --root "$ROOT" --bin "$DSTACK_BIN" --lib "$DSTACK_LIB" \
  >"$WORK/install.log" 2>&1 || { cat "$WORK/install.log" >&2; fail "install.sh --root $ROOT failed"; }
DSTACK_GID=$(awk -F: '$1 == "dstack" {print $3}' "$ROOT/etc/group")
[ -n "$DSTACK_GID" ] || fail "install.sh did not create the dstack group in the root"

# The example flag files with every 127.0.0.1 port replaced by a free one.
declare -A PORT_OF
used_ports=" "
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    [[ $used_ports == *" $p "* ]] && continue
    [ -z "$(ss -Htan "sport = :$p")" ] || continue
    used_ports+="$p "
    echo "$p"
    return
  done
}
sed_script=$WORK/ports.sed
: >"$sed_script"
for old in $(grep -ho '127\.0\.0\.1:[0-9]*' "$UNITS_DIR"/examples/*.flags | cut -d: -f2 | sort -u); do
  new=$(free_port)
  PORT_OF[$old]=$new
  printf 's/127\\.0\\.0\\.1:%s\\b/127.0.0.1:%s/g\n' "$old" "$new" >>"$sed_script"
done
for f in "$UNITS_DIR"/examples/*.flags; do
  sed -f "$sed_script" "$f" >"$ROOT/etc/dstack/$(basename "$f")"
  chown "0:$DSTACK_GID" "$ROOT/etc/dstack/$(basename "$f")"
  chmod 0640 "$ROOT/etc/dstack/$(basename "$f")"
done
addr() { echo "127.0.0.1:${PORT_OF[$1]}"; }
# Client addresses, from the examples' ports.
KV_EPS="$(addr 23791),$(addr 23792),$(addr 23793)"
CTRL_EPS="$(addr 25001),$(addr 25002),$(addr 25003)"
G100_EPS="$(addr 25101),$(addr 25102),$(addr 25103)"
MR_EP=$(addr 7070)

# The MapReduce job's input.
mkdir -p "$ROOT/srv/dstack-test"
printf 'systemd unit\nsystemd watchdog, systemd\n' >"$ROOT/srv/dstack-test/words.txt"
chmod 0644 "$ROOT/srv/dstack-test/words.txt"

# Drop-ins for the test: LeakSanitizer needs ptrace (refused in the sandbox),
# and a short watchdog so the hang test is quick.
for unit in kvraft@ shardctrler@ shardkv@ mr-coordinator mr-worker@; do
  d=$ROOT/etc/systemd/system/$unit.service.d
  mkdir -p "$d"
  printf '[Service]\nEnvironment=ASAN_OPTIONS=detect_leaks=0\n' >"$d/10-test-asan.conf"
  # How each run ended, in the unit's journal (a stopped unit is unloaded at
  # once, so `systemctl show` no longer knows its exit status).
  cat >"$d/30-test-exit.conf" <<'EOF'
[Service]
ExecStopPost=/bin/sh -c 'echo "dstack-test-exit: result=$$SERVICE_RESULT code=$$EXIT_CODE status=$$EXIT_STATUS"'
EOF
done
printf '[Service]\nWatchdogSec=%ss\n' "$TEST_WATCHDOG_SEC" \
  >"$ROOT/etc/systemd/system/kvraft@.service.d/20-test-watchdog.conf"
step "install: binaries, units, user dstack (gid $DSTACK_GID), flag files (ports ${PORT_OF[23791]}...), test drop-ins"

# ---- boot ----------------------------------------------------------------------
step "boot: systemd-nspawn -b -M $MACHINE (host network)"
systemd-nspawn -D "$ROOT" -b --register=no --keep-unit -M "$MACHINE" --console=read-only \
  </dev/null >"$WORK/nspawn.log" 2>&1 &
NSPAWN_PID=$!
find_leader() {
  local c
  for c in $(pgrep -P "$NSPAWN_PID"); do
    if [[ $(readlink "/proc/$c/exe" 2>/dev/null) == */systemd ]]; then
      LEADER=$c
      return 0
    fi
  done
  return 1
}
deadline=$((SECONDS + 30))
until find_leader; do
  if ! alive "$NSPAWN_PID"; then
    tail -n 20 "$WORK/nspawn.log" >&2
    fail "systemd-nspawn exited during boot; its output is above"
  fi
  [ $SECONDS -lt $deadline ] || fail "no systemd PID 1 under systemd-nspawn ($NSPAWN_PID) after 30 s"
  sleep 0.2
done
# systemctl cannot connect until PID 1 has set up its socket: retry until it answers.
deadline=$((SECONDS + 90))
state=""
while [ $SECONDS -lt $deadline ]; do
  state=$(timeout 60 nsenter -t "$LEADER" -a systemctl is-system-running --wait 2>/dev/null) || true
  case $state in running | degraded | maintenance | stopping) break ;; esac
  sleep 0.3
done
case $state in
  running) ;;
  degraded)
    echo "systemd_test: the machine is degraded (not by our units, none started yet):" >&2
    in_machine systemctl --no-pager --failed >&2 || true
    ;;
  *) tail -n 30 "$WORK/nspawn.log" >&2; fail "the machine did not boot (state '$state')" ;;
esac
step "boot: PID 1 is host PID $LEADER, system $state"

# ---- helpers on units --------------------------------------------------------
prop() { in_machine systemctl show -p "$2" --value "$1"; }
kv() { "$KVCTL" --endpoints="$KV_EPS" --timeout=10s "$@"; }
# Starts units; Type=notify: systemctl start returns once every one sent READY=1.
start_units() {
  local t=$SECONDS u
  timeout 180 nsenter -t "$LEADER" -a systemctl start "$@" ||
    fail "systemctl start $* failed (or no READY=1 within TimeoutStartSec)"
  for u in "$@"; do
    [ "$(prop "$u" ActiveState)" = active ] || fail "$u is not active after start"
  done
  step "start: $* active after READY ($((SECONDS - t))s)"
}
# Checks unit $1 ran as dstack with its state directory $2 owned by dstack.
check_sandbox() {
  local u=$1 dir=$2 pid user
  pid=$(prop "$u" MainPID)
  user=$(in_machine stat -c %U "/proc/$pid")
  [ "$user" = dstack ] || fail "$u runs as '$user', not dstack"
  [ "$(in_machine stat -c %U "$dir")" = dstack ] || fail "$dir is not owned by dstack"
}
# Waits (up to $2 s) until unit $1 restarted: NRestarts above $3, a MainPID
# other than $4, active again. Prints the seconds it took.
wait_restarted() {
  local u=$1 secs=$2 restarts=$3 pid=$4 t=$SECONDS
  wait_for "$secs" "$u restarted (NRestarts > $restarts, new MainPID, active)" restarted "$u" "$restarts" "$pid"
  echo $((SECONDS - t))
}
restarted() {
  [ "$(prop "$1" NRestarts)" -gt "$2" ] && [ "$(prop "$1" ActiveState)" = active ] &&
    [ "$(prop "$1" MainPID)" != "$3" ] && [ "$(prop "$1" MainPID)" != 0 ]
}
# The kvraft leader's replica id, from kvctl endpoint status.
kv_leader() {
  "$KVCTL" --endpoints="$KV_EPS" --timeout=3s -w json endpoint status 2>/dev/null |
    grep -o '"id":[0-9]*,"role":"leader"' | grep -o '[0-9]*' | head -n1
}
unit_log() { in_machine journalctl --no-pager -o cat -u "$1"; }
# How the unit's last run ended (the test drop-in's ExecStopPost line); waits
# up to 5 s for the journal to have it.
has_exit() { unit_log "$1" | grep -q '^dstack-test-exit:'; }
last_exit() {
  wait_for 5 "$1's exit record in the journal" has_exit "$1"
  unit_log "$1" | grep '^dstack-test-exit:' | tail -n1
}

# ---- 4. kvraft and the shard controller ----------------------------------------
start_units kvraft@1 kvraft@2 kvraft@3 shardctrler@1 shardctrler@2 shardctrler@3
check_sandbox kvraft@1 /var/lib/dstack/kvraft-1
check_sandbox shardctrler@2 /var/lib/dstack/shardctrler-2
wait_for 30 "kvctl put through the kvraft replicas" kv put systemd-test hello
[ "$(kv get systemd-test)" = hello ] || fail "kvctl get systemd-test did not return hello"
"$KVCTL" --controllers="$CTRL_EPS" --timeout=10s ctrl query >/dev/null ||
  fail "kvctl ctrl query against the shard controller failed"
step "kvctl (host): put/get on kvraft ($KV_EPS), ctrl query on the controller: ok"

# ---- graceful stop -------------------------------------------------------------
has_leader() { [ -n "$(kv_leader)" ]; }
wait_for 20 "a kvraft leader" has_leader
leader=$(kv_leader)
[ -n "$leader" ] || fail "no kvraft leader"
t=$SECONDS
timeout $((STOP_TIMEOUT_SEC + 10)) nsenter -t "$LEADER" -a systemctl stop "kvraft@$leader" ||
  fail "systemctl stop kvraft@$leader failed"
took=$((SECONDS - t))
exit_line=$(last_exit "kvraft@$leader")
# code=exited status=0: the daemon exited by itself with 0, not by a signal.
[ "$exit_line" = "dstack-test-exit: result=success code=exited status=0" ] ||
  fail "kvraft@$leader did not exit cleanly on SIGTERM: '$exit_line'"
[ $took -lt "$STOP_TIMEOUT_SEC" ] || fail "stopping kvraft@$leader took ${took}s (TimeoutStopSec=${STOP_TIMEOUT_SEC}s)"
if unit_log "kvraft@$leader" | grep -E 'State .stop-sigterm. timed out|Killing process'; then
  fail "kvraft@$leader was killed on stop"
fi
unit_log "kvraft@$leader" | grep -q 'shutting down' || fail "kvraft@$leader logged no 'shutting down'"
unit_log "kvraft@$leader" | grep -q '] stopped$' || fail "kvraft@$leader logged no 'stopped'"
wait_for 30 "kvctl put with replica $leader stopped" kv put systemd-test after-stop
step "stop: kvraft@$leader (the leader) exited 0 in ${took}s (TimeoutStopSec=${STOP_TIMEOUT_SEC}s); the others serve"
start_units "kvraft@$leader"

# ---- kill -9: systemd restarts it --------------------------------------------
victim=$(( (leader % 3) + 1 ))
u=kvraft@$victim
pid=$(prop "$u" MainPID)
restarts=$(prop "$u" NRestarts)
in_machine sh -c "kill -KILL $pid"
took=$(wait_restarted "$u" $((RESTART_SEC + 40)) "$restarts" "$pid")
[ "$(last_exit "$u")" = "dstack-test-exit: result=signal code=killed status=KILL" ] ||
  fail "$u's last exit is '$(last_exit "$u")', not the SIGKILL"
wait_for 30 "kvctl get after $u was killed and restarted" kv get systemd-test
[ "$(kv get systemd-test)" = after-stop ] || fail "the value written before the kill is gone"
step "kill -9: $u (pid $pid) restarted by systemd after ${took}s (NRestarts $restarts -> $(prop "$u" NRestarts)); cluster serves"

# ---- SIGSTOP: the watchdog restarts it ------------------------------------------
victim=$(( (victim % 3) + 1 ))
u=kvraft@$victim
[ "$(prop "$u" WatchdogUSec)" = "${TEST_WATCHDOG_SEC}s" ] ||
  fail "$u has WatchdogUSec=$(prop "$u" WatchdogUSec), expected ${TEST_WATCHDOG_SEC}s from the drop-in"
# A replica that runs a while past WatchdogSec is feeding the watchdog.
sleep $((TEST_WATCHDOG_SEC + 1))
[ "$(prop "$u" ActiveState)" = active ] || fail "$u died without being stopped: is WATCHDOG=1 sent?"
pid=$(prop "$u" MainPID)
restarts=$(prop "$u" NRestarts)
t=$SECONDS
in_machine sh -c "kill -STOP $pid"
wait_restarted "$u" $((TEST_WATCHDOG_SEC + RESTART_SEC + 40)) "$restarts" "$pid" >/dev/null
took=$((SECONDS - t))
unit_log "$u" | grep -q 'Watchdog timeout' || fail "$u was restarted, but not by the watchdog"
last_exit "$u" | grep -q 'result=watchdog' || fail "$u's last exit is '$(last_exit "$u")', not the watchdog's"
[ $took -ge $((TEST_WATCHDOG_SEC - 1)) ] || fail "$u restarted after ${took}s, before its watchdog could fire"
wait_for 30 "kvctl put after $u hung and was restarted" kv put systemd-test after-hang
[ "$(kv get systemd-test)" = after-hang ] || fail "kvctl get after the watchdog restart"
step "watchdog: SIGSTOPped $u (pid $pid) restarted after ${took}s (WatchdogSec=${TEST_WATCHDOG_SEC}s, RestartSec=${RESTART_SEC}s); cluster serves"

# ---- 5. every other unit: a shardkv group, the coordinator and a worker -----
start_units shardkv@100-1 shardkv@100-2 shardkv@100-3 mr-coordinator mr-worker@1
"$KVCTL" --controllers="$CTRL_EPS" --timeout=10s ctrl join "100=$G100_EPS" >/dev/null ||
  fail "kvctl ctrl join 100=$G100_EPS failed"
wait_for 30 "a sharded put through group 100" \
  "$KVCTL" --controllers="$CTRL_EPS" --timeout=5s put systemd-sharded yes
[ "$("$KVCTL" --controllers="$CTRL_EPS" --timeout=10s get systemd-sharded)" = yes ] ||
  fail "sharded get did not return what was put"
"$KVCTL" --endpoints="$MR_EP" --timeout=5s endpoint health >/dev/null ||
  fail "mr-coordinator at $MR_EP is not healthy"
# A word count through the coordinator and the sandboxed worker (mrrun runs in
# the machine, as dstack: the job's paths are the machine's).
in_machine runuser -u dstack -- mkdir -p /var/lib/dstack/mapreduce/out
timeout 120 nsenter -t "$LEADER" -a runuser -u dstack -- /usr/local/bin/mrrun --coordinator="$MR_EP" \
  --app=wc --reduces=2 --output=/var/lib/dstack/mapreduce/out/wc --input /srv/dstack-test/words.txt \
  >/dev/null 2>"$WORK/mrrun.log" || { cat "$WORK/mrrun.log" >&2; fail "mrrun (word count) failed"; }
count=$(in_machine sh -c 'cat /var/lib/dstack/mapreduce/out/wc/mr-out-*' | awk '$1 == "systemd" {print $2}')
[ "$count" = 3 ] || fail "the word count job counted '$count' for 'systemd', not 3"
in_machine systemctl stop shardkv@100-1 shardkv@100-2 shardkv@100-3 mr-worker@1 mr-coordinator
for u in shardkv@100-1 shardkv@100-2 shardkv@100-3 mr-worker@1 mr-coordinator; do
  [ "$(last_exit "$u")" = "dstack-test-exit: result=success code=exited status=0" ] ||
    fail "$u did not stop cleanly: '$(last_exit "$u")'"
done
step "shardkv group 100 joined and served; a word count ran on mr-coordinator + mr-worker@1; all stopped cleanly"

# ---- 6. power off ---------------------------------------------------------------
t=$SECONDS
poweroff_machine || fail "systemctl start poweroff.target failed"
deadline=$((SECONDS + 60))
while alive "$NSPAWN_PID"; do
  [ $SECONDS -lt $deadline ] || fail "the machine did not power off within 60 s"
  sleep 0.2
done
wait "$NSPAWN_PID" && rc=0 || rc=$?
NSPAWN_PID=""
[ $rc -eq 0 ] || fail "systemd-nspawn exited with status $rc at power-off"
# The machine's persistent journal tells how every replica ended at power-off.
for u in kvraft@1 kvraft@2 kvraft@3 shardctrler@1 shardctrler@2 shardctrler@3; do
  exit_line=$(journalctl -D "$ROOT/var/log/journal" --no-pager -o cat -u "$u" |
    grep '^dstack-test-exit:' | tail -n1) || true
  [ "$exit_line" = "dstack-test-exit: result=success code=exited status=0" ] ||
    fail "$u did not stop cleanly at power-off: '$exit_line'"
done
step "poweroff: the machine halted in $((SECONDS - t))s; every replica had exited 0"
