package tracing

import (
	"io"
	"log/slog"
	"time"
)

// Config configures an Exporter. The zero value works: every field has a documented default, resolved by the
// unexported accessors below, so callers set only what they mean to change.
type Config struct {
	// Endpoint is the host:port (or URL) of an OTLP gRPC collector. Empty leaves the endpoint to
	// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT, and then to the exporter's default
	// (localhost:4317). A URL's scheme decides transport security ("http" plain, "https" TLS).
	Endpoint string
	// Insecure asks for plain gRPC. It never overrides the environment: when OTEL_EXPORTER_OTLP_(TRACES_)INSECURE
	// or a certificate variable is set, the environment decides. Without either, a loopback endpoint is plain and
	// any other endpoint uses TLS with the system roots.
	Insecure bool
	// SampleRatio is the share of traces kept, 0..1. Zero means the default, 1 (keep everything); a negative value
	// keeps only the always-kept records (errors, timeouts, unroutable, slow calls).
	SampleRatio float64
	// SlowThreshold: calls at least this slow are always kept. Default 1s.
	SlowThreshold time.Duration
	// BatchSize is the most spans handed to the exporter at once. Default 512.
	BatchSize int
	// BatchTimeout is the longest a span waits for its batch to fill. Default 2s.
	BatchTimeout time.Duration
	// ExportTimeout bounds each export call. Default 10s.
	ExportTimeout time.Duration
	// MaxServices bounds the distinct resources (service.name, host.name, process.pid). Default 256.
	MaxServices int
	// Logger receives per-export-failure warnings, rate-limited. Default: discard.
	Logger *slog.Logger
}

const (
	defaultSlowThreshold = time.Second
	defaultBatchSize     = 512
	defaultBatchTimeout  = 2 * time.Second
	defaultExportTimeout = 10 * time.Second
	defaultMaxServices   = 256
)

func (c *Config) sampleRatio() float64 {
	switch {
	case c.SampleRatio == 0:
		return 1
	case c.SampleRatio < 0:
		return 0
	case c.SampleRatio > 1:
		return 1
	}
	return c.SampleRatio
}

func (c *Config) slowThreshold() time.Duration {
	if c.SlowThreshold <= 0 {
		return defaultSlowThreshold
	}
	return c.SlowThreshold
}

func (c *Config) batchSize() int {
	if c.BatchSize <= 0 {
		return defaultBatchSize
	}
	return c.BatchSize
}

func (c *Config) batchTimeout() time.Duration {
	if c.BatchTimeout <= 0 {
		return defaultBatchTimeout
	}
	return c.BatchTimeout
}

func (c *Config) exportTimeout() time.Duration {
	if c.ExportTimeout <= 0 {
		return defaultExportTimeout
	}
	return c.ExportTimeout
}

func (c *Config) maxServices() int {
	if c.MaxServices <= 0 {
		return defaultMaxServices
	}
	return c.MaxServices
}

func (c *Config) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c.Logger
}
