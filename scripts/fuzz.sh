#!/usr/bin/env bash
# fuzz.sh DURATION: run every native fuzz target of the module, one after another, each for DURATION (e.g. 30s).
# go test -fuzz takes one target in one package at a time, so the targets are discovered with `go test -list`.
set -euo pipefail
fuzztime=${1:-30s}
cd "$(dirname "$0")/.."
count=0
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  grep -qs '^func Fuzz' "$dir"/*_test.go || continue
  for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
    echo "fuzz: $pkg $target for $fuzztime"
    go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"
    count=$((count + 1))
  done
done
echo "fuzz: $count targets ran for $fuzztime each, no failures"
