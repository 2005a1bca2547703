#!/usr/bin/env bash
# otelcol.sh: build a small OpenTelemetry Collector distribution once, cache it outside the repository, and print
# its path on stdout (progress goes to stderr).
#
# It holds what the scale-out recipe in deploy/collector/ needs and nothing else: the OTLP receiver and exporter,
# the loadbalancing exporter (routes every span of a trace to the same backend collector, by trace id), the
# tail_sampling processor (keeps errors, timeouts and slow calls, samples the rest) and the batch processor. The
# contrib distribution has them too, but building all of it takes far longer; the ocb builder would generate the
# same main package as below. Versions are the collector release Jaeger v2 (scripts/jaeger.sh) is built on, so
# both binaries share most of the module cache.
#
# Usage: OTELCOL_BIN=$(scripts/otelcol.sh)
# Env:   XDG_CACHE_HOME / HOME choose the cache root.
set -euo pipefail

core="v0.140.0"    # go.opentelemetry.io/collector modules on the 0.x line
stable="v1.46.0"   # ... and on the 1.x line of the same release
contrib="v0.140.1" # opentelemetry-collector-contrib components of that release
cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/amqptrace"
dest_dir="$cache_root/otelcol-$contrib"
bin="$dest_dir/otelcol"

if [[ -x "$bin" ]]; then
	echo "$bin"
	exit 0
fi
mkdir -p "$dest_dir"
exec 9>"$dest_dir/.lock"
flock 9
if [[ -x "$bin" ]]; then
	echo "$bin"
	exit 0
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/amqptrace-otelcol-build.XXXXXX")"
trap 'chmod -R u+w "$work" 2>/dev/null || true; rm -rf "$work"' EXIT

cat >"$work/main.go" <<'GO'
// Command otelcol is the collector amqptrace's scale-out recipe and its end-to-end test run.
package main

import (
	"os"

	"github.com/open-telemetry/opentelemetry-collector-contrib/exporter/loadbalancingexporter"
	"github.com/open-telemetry/opentelemetry-collector-contrib/processor/tailsamplingprocessor"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/provider/envprovider"
	"go.opentelemetry.io/collector/confmap/provider/fileprovider"
	"go.opentelemetry.io/collector/confmap/provider/yamlprovider"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/debugexporter"
	"go.opentelemetry.io/collector/exporter/otlpexporter"
	"go.opentelemetry.io/collector/otelcol"
	"go.opentelemetry.io/collector/processor"
	"go.opentelemetry.io/collector/processor/batchprocessor"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/otlpreceiver"
	"go.opentelemetry.io/collector/service/telemetry/otelconftelemetry"
)

func factories() (otelcol.Factories, error) {
	f := otelcol.Factories{Telemetry: otelconftelemetry.NewFactory()}
	var err error
	if f.Receivers, err = otelcol.MakeFactoryMap[receiver.Factory](otlpreceiver.NewFactory()); err != nil {
		return f, err
	}
	if f.Processors, err = otelcol.MakeFactoryMap[processor.Factory](batchprocessor.NewFactory(),
		tailsamplingprocessor.NewFactory()); err != nil {
		return f, err
	}
	f.Exporters, err = otelcol.MakeFactoryMap[exporter.Factory](otlpexporter.NewFactory(), debugexporter.NewFactory(),
		loadbalancingexporter.NewFactory())
	return f, err
}

func main() {
	set := otelcol.CollectorSettings{
		BuildInfo: component.BuildInfo{Command: "otelcol", Description: "amqptrace's collector: OTLP, loadbalancing, tail_sampling", Version: "amqptrace"},
		Factories: factories,
		ConfigProviderSettings: otelcol.ConfigProviderSettings{ResolverSettings: confmap.ResolverSettings{
			ProviderFactories: []confmap.ProviderFactory{fileprovider.NewFactory(), envprovider.NewFactory(),
				yamlprovider.NewFactory()}, // yaml: is what --set uses,
		}},
	}
	if err := otelcol.NewCommand(set).Execute(); err != nil {
		os.Exit(1)
	}
}
GO

echo "otelcol.sh: building the collector (collector $core, contrib $contrib; several minutes when cold)" >&2
(
	cd "$work"
	export GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0 GOWORK=off GOTOOLCHAIN=local
	go mod init amqptrace.local/otelcol >/dev/null 2>&1
	go get \
		"go.opentelemetry.io/collector/otelcol@$core" \
		"go.opentelemetry.io/collector/receiver/otlpreceiver@$core" \
		"go.opentelemetry.io/collector/exporter/otlpexporter@$core" \
		"go.opentelemetry.io/collector/exporter/debugexporter@$core" \
		"go.opentelemetry.io/collector/processor/batchprocessor@$core" \
		"go.opentelemetry.io/collector/service@$core" \
		"go.opentelemetry.io/collector/component@$stable" \
		"go.opentelemetry.io/collector/confmap@$stable" \
		"go.opentelemetry.io/collector/confmap/provider/envprovider@$stable" \
		"go.opentelemetry.io/collector/confmap/provider/fileprovider@$stable" \
		"go.opentelemetry.io/collector/confmap/provider/yamlprovider@$stable" \
		"github.com/open-telemetry/opentelemetry-collector-contrib/exporter/loadbalancingexporter@$contrib" \
		"github.com/open-telemetry/opentelemetry-collector-contrib/processor/tailsamplingprocessor@$contrib" \
		"github.com/aws/aws-sdk-go-v2/service/servicediscovery@v1.40.2" >&2
	# The servicediscovery pin: the loadbalancing exporter's AWS resolver asks for v1.39.15, which the module
	# proxy's checksum database does not serve; v1.40.2 is API-compatible. No `go mod tidy`: it would also fetch
	# the components' test dependencies, some of which are not served either; go build adds what it needs.
	go build -trimpath -o "$work/otelcol" .
)
cp "$work/otelcol" "$bin.tmp"
chmod 0755 "$bin.tmp"
mv -f "$bin.tmp" "$bin"
echo "$bin"
