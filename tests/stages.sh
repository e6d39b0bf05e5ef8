#!/usr/bin/env bash
# make test: runs each stage (a make target) in order, stops at the first that fails, and prints
# how long each took, so a slow stage shows before CI's time limit does.
set -uo pipefail
summary=()
total_start=$(date +%s)
for stage in "$@"; do
  start=$(date +%s)
  echo "=== make $stage"
  if ! make --no-print-directory "$stage"; then
    echo "=== make $stage FAILED after $(($(date +%s) - start)) s"
    exit 1
  fi
  summary+=("$(printf '%-14s %5d s' "$stage" $(($(date +%s) - start)))")
done
echo "=== stage times"
printf '%s\n' "${summary[@]}"
printf '%-14s %5d s\n' total $(($(date +%s) - total_start))
