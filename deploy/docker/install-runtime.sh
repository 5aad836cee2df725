#!/bin/sh
# Runs inside an image build (both Dockerfiles): installs the runtime libraries
# of the dstack binaries (and nothing else), and makes the non-root user and the
# directories the daemons use.
#   install-runtime.sh [EXTRA_PACKAGE ...]
# Extra packages are for what a particular build links besides the usual set,
# for example libasan8 libubsan1 for a sanitized build (build-image.sh works
# them out with ldd). Apt needs the network: build with --network host when
# the Docker daemon has no bridge.
set -eu

PACKAGES="libgrpc++1.51 libprotobuf32 librocksdb7.8 libabsl20220623 libspdlog1.10 libfmt9
  libsystemd0 libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 ca-certificates $*"

missing=""
for p in $PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    missing="$missing $p"
done
if [ -n "$missing" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086 # word splitting wanted
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
  apt-get clean
  rm -rf /var/lib/apt/lists/*
fi

# A fixed uid/gid, so that directories shared with the host (the MapReduce
# input/output directory) can be given to it: chown 10001:10001 DIR.
groupadd --system --gid 10001 dstack
useradd --system --uid 10001 --gid dstack --home-dir /var/lib/dstack --no-create-home \
  --shell /usr/sbin/nologin dstack
# /var/lib/dstack is where each daemon's volume is mounted; a new named volume
# takes this directory's owner, so the daemons can write to it.
install -d -o dstack -g dstack -m 0750 /var/lib/dstack
install -d -o dstack -g dstack -m 0755 /srv/dstack
