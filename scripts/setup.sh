#!/usr/bin/env bash
# Installs the build and test dependencies from Debian 12 packages, and nothing
# else. Idempotent and quiet; does nothing (fast) when everything is installed.
#   ./scripts/setup.sh           what the build needs
#   ./scripts/setup.sh --tests   also what the deployment tests need (docker.io,
#                                docker-compose, debootstrap, systemd-container)
set -euo pipefail

PACKAGES=(
  g++ cmake ninja-build pkg-config
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev librocksdb-dev libspdlog-dev prometheus-cpp-dev libsystemd-dev libssl-dev openssl
  libgtest-dev libgmock-dev libbenchmark-dev
)
case "${1:-}" in
  "") ;;
  --tests) PACKAGES+=(docker.io docker-compose debootstrap systemd-container) ;;
  *) echo "usage: $0 [--tests]" >&2; exit 2 ;;
esac

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO=sudo; else
    echo "setup.sh: missing packages (${missing[*]}) and not root; run as root" >&2
    exit 1
  fi
fi
echo "setup.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
