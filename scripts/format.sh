#!/usr/bin/env bash
# Formats kvferry's C++ sources with the checked-in .clang-format.
#   scripts/format.sh          rewrite files in place
#   scripts/format.sh --check  list files that differ, exit 1 if any (changes nothing)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
mapfile -t files < <(git ls-files --cached --others --exclude-standard -- \
  'include/*.h' 'src/*.h' 'src/*.cc' 'tools/*.h' 'tools/*.cc' 'tests/*.h' 'tests/*.cc')
[[ ${#files[@]} -eq 0 ]] && exit 0

if [[ "${1:-}" == "--check" ]]; then
  bad=0
  for f in "${files[@]}"; do
    if ! clang-format --style=file "$f" | cmp -s - "$f"; then
      echo "needs formatting: $f"
      bad=1
    fi
  done
  exit "$bad"
fi
clang-format --style=file -i "${files[@]}"
