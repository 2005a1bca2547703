package tracing

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
)

// The OTEL_* variables that decide transport security. When any is set, the environment decides and Config.Insecure
// is not applied, so an operator's certificate is never silently replaced by plain gRPC.
var securityEnv = []string{
	"OTEL_EXPORTER_OTLP_INSECURE", "OTEL_EXPORTER_OTLP_TRACES_INSECURE",
	"OTEL_EXPORTER_OTLP_CERTIFICATE", "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
	"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
}

var endpointEnv = []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"}

// New returns an Exporter that sends to an OTLP gRPC collector. It does not dial: the gRPC client connects
// lazily, so a collector that is down at start costs dropped spans, not a failed start.
//
// The otlptracegrpc exporter reads the standard OTEL_EXPORTER_OTLP_(TRACES_)* variables (endpoint, insecure,
// headers, certificate, client certificate, compression, timeout) itself; New passes only what Config states
// explicitly, so the environment stays in force for the rest. Config.Endpoint, when set, wins over the endpoint
// variables (the flag is the more specific choice). Transport security: see Config.Insecure.
func New(ctx context.Context, cfg Config) (*Exporter, error) {
	exp, err := otlptracegrpc.New(ctx, planTransport(cfg, os.LookupEnv).options()...)
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP gRPC exporter: %w", err)
	}
	return NewWithExporter(cfg, exp), nil
}

// transportPlan is what New tells the otlptracegrpc exporter; everything else it reads from OTEL_* itself.
type transportPlan struct {
	endpoint string // Config.Endpoint; "" leaves the endpoint to the environment / default
	url      bool   // endpoint is a URL whose scheme decides security
	insecure bool   // pass WithInsecure
}

func (p transportPlan) options() []otlptracegrpc.Option {
	var opts []otlptracegrpc.Option
	switch {
	case p.url:
		opts = append(opts, otlptracegrpc.WithEndpointURL(p.endpoint))
	case p.endpoint != "":
		opts = append(opts, otlptracegrpc.WithEndpoint(p.endpoint))
	}
	if p.insecure {
		opts = append(opts, otlptracegrpc.WithInsecure())
	}
	return opts
}

// planTransport is New's decision table, separate so that it can be tested without a collector or a real
// environment.
func planTransport(cfg Config, lookup func(string) (string, bool)) transportPlan {
	p := transportPlan{endpoint: cfg.Endpoint, url: strings.Contains(cfg.Endpoint, "://")}
	effective := cfg.Endpoint
	if effective == "" {
		for _, k := range endpointEnv {
			if v, ok := lookup(k); ok && v != "" {
				effective = v
				break
			}
		}
	}
	for _, k := range securityEnv {
		if v, ok := lookup(k); ok && v != "" {
			return p // the environment decides transport security
		}
	}
	if strings.Contains(effective, "://") {
		return p // a URL's scheme already decided
	}
	p.insecure = cfg.Insecure || isLoopback(effective)
	return p
}

// isLoopback reports whether a host:port endpoint names this machine. An empty endpoint is the exporter's default,
// localhost:4317.
func isLoopback(endpoint string) bool {
	if endpoint == "" {
		return true
	}
	host := endpoint
	if h, _, err := net.SplitHostPort(endpoint); err == nil {
		host = h
	} else if u, err := url.Parse("//" + endpoint); err == nil {
		host = u.Hostname()
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}
