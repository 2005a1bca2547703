#!/usr/bin/env bash
# jaeger.sh: build a real Jaeger v2 binary once, cache it outside the repository,
# and print its path on stdout (progress goes to stderr).
#
# Why build from source: the integration tests in tracing/ need a real Jaeger v2
# (OTLP gRPC receiver + query API), and the Go module proxy is the one download
# channel this project already trusts. Jaeger's Go module keeps the v1.x tag line
# (no /v2 module path); module v1.76.0 is the source of the Jaeger v2.13.0 release,
# whose cmd/jaeger is the OpenTelemetry-Collector-based v2 binary.
#
# Jaeger's go.mod carries replace directives, so `go install module@version`
# refuses it; we copy the (read-only) module-cache tree to a writable temp dir and
# `go build ./cmd/jaeger` there instead.
#
# Usage: JAEGER_BIN=$(scripts/jaeger.sh)
# Env:   JAEGER_MODULE_VERSION overrides the pinned module version.
#        XDG_CACHE_HOME / HOME choose the cache root.
set -euo pipefail

version="${JAEGER_MODULE_VERSION:-v1.76.0}"
cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/amqptrace"
dest_dir="$cache_root/jaeger-$version"
bin="$dest_dir/jaeger"

if [[ -x "$bin" ]]; then
	echo "$bin"
	exit 0
fi

mkdir -p "$dest_dir"
# One builder at a time: parallel test runs (or engineers) must not race on the
# same cache entry. The lock lives next to the binary.
exec 9>"$dest_dir/.lock"
flock 9
if [[ -x "$bin" ]]; then
	echo "$bin"
	exit 0
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/amqptrace-jaeger-build.XXXXXX")"
trap 'chmod -R u+w "$work" 2>/dev/null || true; rm -rf "$work"' EXIT

echo "jaeger.sh: downloading github.com/jaegertracing/jaeger@$version" >&2
src="$(cd "$work" && go mod download -json "github.com/jaegertracing/jaeger@$version" |
	sed -n 's/^[[:space:]]*"Dir":[[:space:]]*"\(.*\)",\{0,1\}$/\1/p')"
if [[ -z "$src" || ! -d "$src" ]]; then
	echo "jaeger.sh: go mod download gave no source directory" >&2
	exit 1
fi

cp -r "$src" "$work/src"
chmod -R u+w "$work/src"

echo "jaeger.sh: building ./cmd/jaeger (several minutes when cold)" >&2
(
	cd "$work/src"
	# -mod=mod: the module zip has no vendor dir and go.sum may need entries for
	# the build list; -buildvcs=false: the copy is not a git checkout.
	GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0 GOWORK=off \
		go build -trimpath -o "$work/jaeger" ./cmd/jaeger
)

# Rename within the cache filesystem only after a complete build, so a killed
# build never leaves a half-written binary that the fast path would trust.
cp "$work/jaeger" "$bin.tmp"
chmod 0755 "$bin.tmp"
mv -f "$bin.tmp" "$bin"
echo "$bin"
