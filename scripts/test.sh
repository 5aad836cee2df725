#!/usr/bin/env bash
# Installs dependencies, builds every target with AddressSanitizer +
# UndefinedBehaviorSanitizer, and runs every test with ctest (in parallel, with a
# per-test timeout). Warnings in our code fail the build (-DWERROR=ON). Ends
# with ctest's summary line.
#   BUILD_DIR   build directory (default build/asan)
#   CTEST_ARGS  extra ctest arguments, e.g. CTEST_ARGS="-R raft" to run some tests
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh --tests

BUILD_DIR=${BUILD_DIR:-build/asan}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DSANITIZE=address,undefined -DWERROR=ON >/dev/null
echo "test.sh: building in $BUILD_DIR ($(nproc) cores)"
cmake --build "$BUILD_DIR"

# halt_on_error: a sanitizer report fails the test that caused it.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:halt_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/scripts/lsan.supp}
cd "$BUILD_DIR"
# shellcheck disable=SC2086
ctest --output-on-failure -j "$(nproc)" --timeout 600 ${CTEST_ARGS:-}
