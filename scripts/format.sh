#!/usr/bin/env bash
# Formats every C++ file of ours with .clang-format (Google based).
#   ./scripts/format.sh          rewrite files in place
#   ./scripts/format.sh --check  list unformatted files, exit 1 if any
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || { echo "format.sh: apt-get install clang-format" >&2; exit 2; }
mapfile -t files < <(git ls-files '*.cc' '*.h')
if [ "${1:-}" = "--check" ]; then
  bad=0
  for f in "${files[@]}"; do
    if ! clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then echo "unformatted: $f"; bad=1; fi
  done
  exit $bad
fi
clang-format -i "${files[@]}"
