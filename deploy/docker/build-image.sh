#!/usr/bin/env bash
# Builds the dstack runtime image.
#   deploy/docker/build-image.sh [--tag TAG]
#       compile from this source tree (Dockerfile, multi-stage: slow, ~10+ min
#       on 2 cores)
#   deploy/docker/build-image.sh --from-build BUILD_DIR [--tag TAG]
#       package the binaries of an existing build (BUILD_DIR/bin, BUILD_DIR/lib;
#       Dockerfile.prebuilt): seconds plus the apt-get of the runtime libraries.
#       The runtime packages are worked out with ldd + dpkg -S on this (Debian
#       12) host; a sanitized build (libasan in ldd) also gets ASAN_OPTIONS=
#       detect_leaks=0 (LeakSanitizer needs ptrace, which containers lack).
# Options: --tag TAG (default dstack:latest), --base IMAGE (default
# debian:bookworm-slim). Uses the legacy builder (DOCKER_BUILDKIT=0: BuildKit
# needs buildx) and --network host (apt works without a Docker bridge).
# DOCKER_HOST is honoured. Prints "built TAG" at the end.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TAG=dstack:latest
BASE=debian:bookworm-slim
FROM_BUILD=""
BINARIES=(kvraft-server shardctrler-server shardkv-server mr-coordinator mr-worker
  kvctl mrrun kvbench mr-sequential)

usage() {
  sed -n '2,17s/^# \{0,1\}//p' "$0" >&2
  exit 2
}
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) TAG=${2:?}; shift 2 ;;
    --tag=*) TAG=${1#*=}; shift ;;
    --base) BASE=${2:?}; shift 2 ;;
    --base=*) BASE=${1#*=}; shift ;;
    --from-build) FROM_BUILD=${2:?}; shift 2 ;;
    --from-build=*) FROM_BUILD=${1#*=}; shift ;;
    -h | --help) usage ;;
    *) echo "build-image.sh: unknown argument $1" >&2; usage ;;
  esac
done
command -v docker >/dev/null || { echo "build-image.sh: docker is not installed" >&2; exit 1; }
export DOCKER_BUILDKIT=0

if [ -z "$FROM_BUILD" ]; then
  # The source tree without build directories, local data and git metadata
  # (the repository has no .dockerignore; a tarball on stdin is the context).
  echo "build-image.sh: building $TAG from source in $ROOT (multi-stage)"
  tar -C "$ROOT" -c --exclude=./.git --exclude='./build*' --exclude=./data \
    --exclude=./.cache . |
    docker build --network host --force-rm -f deploy/docker/Dockerfile -t "$TAG" -
  echo "built $TAG"
  exit 0
fi

BIN=$FROM_BUILD/bin
LIB=$FROM_BUILD/lib
CTX=$(mktemp -d /tmp/dstack-image.XXXXXX)
trap 'rm -rf "$CTX"' EXIT
mkdir -p "$CTX/bin" "$CTX/lib"
for b in "${BINARIES[@]}"; do
  [ -x "$BIN/$b" ] || { echo "build-image.sh: $BIN/$b is missing (build it first)" >&2; exit 1; }
  cp "$BIN/$b" "$CTX/bin/"
done
shopt -s nullglob
apps=("$LIB"/mr-app-*.so)
[ ${#apps[@]} -gt 0 ] || { echo "build-image.sh: no $LIB/mr-app-*.so (build target mr_apps)" >&2; exit 1; }
cp "${apps[@]}" "$CTX/lib/"
cp "$HERE/install-runtime.sh" "$HERE/Dockerfile.prebuilt" "$CTX/"

# Runtime packages: the Debian package of every library the binaries load.
libs=$(ldd "$CTX"/bin/* "$CTX"/lib/*.so 2>/dev/null | grep -v '^/' || true)
if grep -q "not found" <<<"$libs"; then
  echo "build-image.sh: libraries missing on this host:" >&2
  grep "not found" <<<"$libs" | sort -u >&2
  exit 1
fi
extra=""
asan=""
if command -v dpkg >/dev/null; then
  extra=$(awk '/=>/ { print $3 }' <<<"$libs" | sort -u | while read -r p; do
    dpkg -S "$p" 2>/dev/null || dpkg -S "/usr$p" 2>/dev/null || true
  done | cut -d: -f1 | sort -u | tr '\n' ' ')
else
  echo "build-image.sh: no dpkg here: installing the usual runtime packages only" >&2
fi
if grep -q libasan <<<"$libs"; then
  asan="detect_leaks=0"
  extra="$extra libasan8 libubsan1"
else
  strip --strip-unneeded "$CTX"/bin/* "$CTX"/lib/*.so 2>/dev/null || true
fi
echo "build-image.sh: building $TAG from $FROM_BUILD (runtime packages: ${extra:-default}${asan:+; sanitized: ASAN_OPTIONS=$asan})"
docker build --network host --force-rm -f "$CTX/Dockerfile.prebuilt" -t "$TAG" \
  --build-arg BASE_IMAGE="$BASE" --build-arg RUNTIME_EXTRA_PACKAGES="$extra" \
  --build-arg ASAN_OPTIONS="$asan" "$CTX"
echo "built $TAG"
