#!/usr/bin/env bash
# fuzz.sh BUDGET: run every native fuzz target of the module, one after another, each for BUDGET: a duration (30s,
# 10m) or a number of generated inputs (300000x), as go test's -fuzztime takes it.
# go test -fuzz takes one target in one package at a time, so the targets are discovered with `go test -list`.
#
# A duration budget meets a race in Go's fuzzing coordinator before Go 1.27 (golang/go#75804): when the deadline
# fires, the coordinator can compare the deadline's error against a child context not yet cancelled and fail the
# target with a bare "context deadline exceeded" at the end of its budget, having found nothing. A count budget
# sets no deadline, but it cannot promise a time, and CI promises 30 s per target. So for a duration budget this
# script recognises exactly that failure (the bare message, no failing input reported, nothing new in
# testdata/fuzz), replays the target's seed corpus and names the target in its summary; any other failure, and any
# failure under a count budget, fails the run. The target has fuzzed for its whole budget by then: the race is
# in the coordinator's shutdown.
set -euo pipefail
budget=${1:-30s}
cd "$(dirname "$0")/.."
count=0
raced=()
log=$(mktemp)
trap 'rm -f "$log"' EXIT

corpus_listing() { ls -A "$1/testdata/fuzz/$2" 2>/dev/null || true; }

for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  grep -qs '^func Fuzz' "$dir"/*_test.go || continue
  for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
    echo "fuzz: $pkg $target for $budget"
    before=$(corpus_listing "$dir" "$target")
    count=$((count + 1))
    if go test -run '^$' -fuzz "^${target}\$" -fuzztime "$budget" "$pkg" 2>&1 | tee "$log"; then
      continue
    fi
    if [[ $budget == *x ]] || ! grep -qxE '[[:space:]]+context deadline exceeded' "$log" ||
      grep -q 'Failing input written to' "$log" || [[ $(corpus_listing "$dir" "$target") != "$before" ]]; then
      echo "fuzz: $pkg $target failed"
      exit 1
    fi
    echo "fuzz: $target stopped with Go's coordinator deadline race (golang/go#75804), no input found; replaying its corpus"
    go test -count=1 -run "^${target}\$" "$pkg"
    raced+=("$target")
  done
done
if ((${#raced[@]})); then
  echo "fuzz: $count targets ran for $budget each, no failures; ${#raced[@]} stopped by golang/go#75804: ${raced[*]}"
else
  echo "fuzz: $count targets ran for $budget each, no failures"
fi
