#!/usr/bin/env bash
# Installs the dstack daemons, their systemd units, the dstack system user and
# (optionally) the example flag files, on this machine or into a root directory.
#   deploy/systemd/install.sh [--root DIR] [--bin DIR] [--lib DIR] [--examples]
#     --root DIR   install into DIR instead of / (an image or container root)
#     --bin DIR    where the built binaries are (default: build/release/bin)
#     --lib DIR    where the MapReduce apps mr-app-*.so are (default: build/release/lib)
#     --examples   also copy examples/*.flags to /etc/dstack (never overwrites)
# Layout: binaries in /usr/local/bin, apps in /usr/local/lib/dstack, units in
# /etc/systemd/system, the user in /etc/sysusers.d/dstack.conf, flag files in
# /etc/dstack (root:dstack 0640), state in /var/lib/dstack/<unit> (created by
# systemd). Nothing is enabled or started: see deploy/systemd/README.md.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
ROOT=/
BIN=$REPO/build/release/bin
LIB=$REPO/build/release/lib
EXAMPLES=0
while [ $# -gt 0 ]; do
  case $1 in
    --root) ROOT=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --lib) LIB=$2; shift 2 ;;
    --examples) EXAMPLES=1; shift ;;
    *) echo "usage: $0 [--root DIR] [--bin DIR] [--lib DIR] [--examples]" >&2; exit 2 ;;
  esac
done
ROOT=${ROOT%/}

DAEMONS=(kvraft-server shardctrler-server shardkv-server mr-coordinator mr-worker)
CLIS=(kvctl mrrun kvbench)
for b in "${DAEMONS[@]}"; do
  if [ ! -x "$BIN/$b" ]; then
    echo "install.sh: $BIN/$b is missing; build it first (or pass --bin DIR)" >&2
    exit 1
  fi
done

install -d -m 0755 "$ROOT/usr/local/bin" "$ROOT/usr/local/lib/dstack" \
  "$ROOT/etc/systemd/system" "$ROOT/etc/sysusers.d"
for b in "${DAEMONS[@]}" "${CLIS[@]}"; do
  [ -x "$BIN/$b" ] && install -m 0755 "$BIN/$b" "$ROOT/usr/local/bin/$b"
done
shopt -s nullglob
apps=("$LIB"/mr-app-*.so)
[ ${#apps[@]} -gt 0 ] && install -m 0644 "${apps[@]}" "$ROOT/usr/local/lib/dstack/"
install -m 0644 "$HERE"/*.service "$ROOT/etc/systemd/system/"
install -m 0644 "$HERE/dstack.sysusers.conf" "$ROOT/etc/sysusers.d/dstack.conf"

# The user now, not only at the next boot, so the flag files can be owned by its group.
if [ "$ROOT" = "" ]; then
  systemd-sysusers dstack.conf
else
  systemd-sysusers --root="$ROOT" dstack.conf
fi
gid=$(awk -F: '$1 == "dstack" {print $3}' "$ROOT/etc/group")
install -d -m 0750 -o 0 -g "$gid" "$ROOT/etc/dstack"
if [ $EXAMPLES -eq 1 ]; then
  for f in "$HERE"/examples/*.flags; do
    dest=$ROOT/etc/dstack/$(basename "$f")
    [ -e "$dest" ] || install -m 0640 -o 0 -g "$gid" "$f" "$dest"
  done
fi

if [ "$ROOT" = "" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
fi
echo "install.sh: installed into ${ROOT:-/}: ${#DAEMONS[@]} daemons, ${#apps[@]} apps, units, user dstack"
