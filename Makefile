# amqptrace: `make demo` and `make test` are all a new machine needs (see README.md).
GO        ?= go
BIN       := bin/amqptrace
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
FUZZTIME  ?= 2m
# Tests that need the broker fail instead of skipping when CI=true.
TESTFLAGS ?= -count=1 -timeout 25m

.PHONY: all build test test-short lint fuzz fuzz-ci bench demo deps jaeger otelcol jaeger-run clean help

all: build

help:
	@echo "make demo      proxy + UI + a simulated OpenStack cloud in front of the local RabbitMQ"
	@echo "make test      every test, against a real RabbitMQ, oslo.messaging, Jaeger and Chromium"
	@echo "make bench     direct vs haproxy vs amqptrace, with ratios"
	@echo "make fuzz      every fuzz target for FUZZTIME (default $(FUZZTIME))"
	@echo "make build     bin/amqptrace"

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/amqptrace

# deps installs and starts what the tests talk to (RabbitMQ, python3-oslo.messaging, chromium) and builds Jaeger
# into a cache outside the repository.
deps:
	scripts/ensure-test-deps.sh

jaeger:
	@scripts/jaeger.sh

# otelcol builds (once) the OpenTelemetry Collector the scale-out recipe (deploy/collector) and its test run.
otelcol:
	@scripts/otelcol.sh

# jaeger-run builds (once) and runs a loopback Jaeger v2: OTLP gRPC on 127.0.0.1:4317, API on 127.0.0.1:16686.
jaeger-run:
	$$(scripts/jaeger.sh) --config file:deploy/jaeger-local.yaml

test: deps
	$(GO) vet ./...
	JAEGER_BIN=$$(scripts/jaeger.sh) OTELCOL_BIN=$$(scripts/otelcol.sh) $(GO) test $(TESTFLAGS) ./...
	# The proxy tests once more on the goroutine pumps (the path TLS connections and non-Linux systems take).
	PROXY_TEST_PUMPS=goroutines $(GO) test $(TESTFLAGS) ./proxy

# test-short skips the slow end-to-end suites; for a quick edit-test loop.
test-short:
	$(GO) test -short -count=1 ./...

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

fuzz:
	scripts/fuzz.sh $(FUZZTIME)

# fuzz-ci gives each target 30 s. scripts/fuzz.sh tells Go 1.26's deadline race at the end of a duration budget
# (golang/go#75804) from a finding.
fuzz-ci:
	scripts/fuzz.sh 30s

bench: build
	scripts/ensure-rabbitmq.sh --nofile 20000
	$(GO) run ./cmd/amqptrace-bench --amqptrace $(BIN) $(BENCHFLAGS)

demo:
	@echo "make demo: building $(BIN) (the first build downloads the Go modules: a minute or two on a fresh machine)"
	@$(MAKE) --no-print-directory build
	@echo "make demo: checking RabbitMQ on 127.0.0.1:5672 (starts it, or installs it with apt-get, if needed)"
	@scripts/ensure-rabbitmq.sh
	@echo "make demo: starting the proxy (clients on 127.0.0.1:5673), the UI (http://127.0.0.1:8080/) and a simulated OpenStack cloud; Ctrl-C stops it"
	$(BIN) demo $(DEMOFLAGS)

clean:
	rm -rf bin
