package jaegertest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Jaeger is a running Jaeger v2 process.
type Jaeger struct {
	// OTLPAddr is the host:port of the OTLP gRPC receiver (plain gRPC).
	OTLPAddr string
	// QueryURL is the base URL of the query service's HTTP API and UI, e.g. "http://127.0.0.1:41234".
	QueryURL string
	// Client is the HTTP client the query helpers use.
	Client *http.Client

	cmd   *exec.Cmd
	waitc chan error // receives cmd.Wait's result once
	logs  *tailBuffer
}

// Start starts Jaeger from JAEGER_BIN and waits until its query API answers. It skips the test when JAEGER_BIN
// is unset, unless CI=true, where that is a failure.
func Start(t testing.TB) *Jaeger {
	t.Helper()
	bin := os.Getenv("JAEGER_BIN")
	if bin == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("JAEGER_BIN is not set (build it with scripts/jaeger.sh)")
		}
		t.Skip("JAEGER_BIN not set; build Jaeger with scripts/jaeger.sh and export JAEGER_BIN to run this test")
	}
	ports, err := freePorts(3)
	if err != nil {
		t.Fatalf("jaegertest: free ports: %v", err)
	}
	otlp, queryHTTP, queryGRPC := addr(ports[0]), addr(ports[1]), addr(ports[2])

	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "jaeger.yaml")
	if err := os.WriteFile(cfgPath, []byte(config(otlp, queryHTTP, queryGRPC)), 0o600); err != nil {
		t.Fatalf("jaegertest: %v", err)
	}

	j := &Jaeger{
		OTLPAddr: otlp,
		QueryURL: "http://" + queryHTTP,
		Client:   &http.Client{Timeout: 5 * time.Second},
		waitc:    make(chan error, 1),
		logs:     &tailBuffer{max: 64 << 10},
	}
	j.cmd = exec.Command(bin, "--config", "file:"+cfgPath)
	j.cmd.Dir = dir
	j.cmd.Stdout = j.logs
	j.cmd.Stderr = j.logs
	// A clean environment apart from what a Go binary needs: no OTEL_* or proxy settings leak in from the
	// developer's shell, so the process reaches nothing but its own loopback listeners.
	j.cmd.Env = []string{"HOME=" + dir, "PATH=" + os.Getenv("PATH")}
	if err := j.cmd.Start(); err != nil {
		t.Fatalf("jaegertest: start %s: %v", bin, err)
	}
	go func() { j.waitc <- j.cmd.Wait() }()
	t.Cleanup(func() { j.stop(t) })

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := j.waitReady(ctx); err != nil {
		t.Fatalf("jaegertest: Jaeger did not come up: %v\n--- jaeger output ---\n%s", err, j.logs.String())
	}
	return j
}

func addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// config is a minimal Jaeger v2 (OpenTelemetry Collector) configuration: OTLP gRPC in, memory storage, query out.
func config(otlp, queryHTTP, queryGRPC string) string {
	return `service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    resource:
      service.name: jaeger
    metrics:
      level: none
    logs:
      level: warn

extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
  jaeger_query:
    storage:
      traces: memstore
    max_clock_skew_adjust: 0s
    enable_tracing: false
    http:
      endpoint: ` + queryHTTP + `
    grpc:
      endpoint: ` + queryGRPC + `

receivers:
  otlp:
    protocols:
      grpc:
        endpoint: ` + otlp + `

processors:
  batch:
    timeout: 50ms

exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`
}

// freePorts reserves n distinct loopback ports by listening on port 0, then releases them for Jaeger. Another
// process could take one in between; that shows up as a failed start with Jaeger's own error in the output.
func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// waitReady polls until the query API answers and the OTLP port accepts connections, or Jaeger exits.
func (j *Jaeger) waitReady(ctx context.Context) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := j.Services(ctx); err == nil {
			c, err := net.DialTimeout("tcp", j.OTLPAddr, time.Second)
			if err == nil {
				c.Close()
				return nil
			}
		}
		select {
		case err := <-j.waitc:
			j.waitc <- err // keep it for stop
			return fmt.Errorf("jaeger exited: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// stop terminates Jaeger and waits for it: SIGTERM, then SIGKILL if it has not exited after 10 seconds.
func (j *Jaeger) stop(t testing.TB) {
	j.Client.CloseIdleConnections() // keep-alive connections hold goroutines; goleak would see them
	if j.cmd.Process == nil {
		return
	}
	_ = j.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-j.waitc:
	case <-time.After(10 * time.Second):
		t.Logf("jaegertest: Jaeger ignored SIGTERM; killing it")
		_ = j.cmd.Process.Kill()
		<-j.waitc
	}
	if t.Failed() {
		t.Logf("--- jaeger output (tail) ---\n%s", j.logs.String())
	}
}

// Logs returns the tail of Jaeger's output, for failure messages.
func (j *Jaeger) Logs() string { return j.logs.String() }

// Services lists the service names Jaeger has seen.
func (j *Jaeger) Services(ctx context.Context) ([]string, error) {
	var out struct {
		Data []string `json:"data"`
	}
	if err := j.get(ctx, "/api/services", nil, &out); err != nil {
		return nil, err
	}
	return out.Data, nil
}

// Traces returns the traces that have a span of service (up to limit; 0 means 100), searched over the last
// lookback (0 means 48 hours, so a fixture's fixed timestamps are found whatever the wall clock).
func (j *Jaeger) Traces(ctx context.Context, service string, limit int, lookback time.Duration) ([]Trace, error) {
	if limit <= 0 {
		limit = 100
	}
	q := url.Values{"service": {service}, "limit": {strconv.Itoa(limit)}}
	if lookback > 0 {
		end := time.Now()
		q.Set("start", strconv.FormatInt(end.Add(-lookback).UnixMicro(), 10))
		q.Set("end", strconv.FormatInt(end.UnixMicro(), 10))
	} else {
		q.Set("lookback", "2d")
	}
	var out struct {
		Data []Trace `json:"data"`
	}
	if err := j.get(ctx, "/api/traces", q, &out); err != nil {
		return nil, err
	}
	return out.Data, nil
}

// Trace fetches one trace by its 32-hex-digit id. A trace Jaeger does not have is an error wrapping ErrNotFound.
func (j *Jaeger) Trace(ctx context.Context, traceID string) (*Trace, error) {
	var out struct {
		Data []Trace `json:"data"`
	}
	if err := j.get(ctx, "/api/traces/"+url.PathEscape(traceID), nil, &out); err != nil {
		return nil, err
	}
	if len(out.Data) == 0 {
		return nil, fmt.Errorf("trace %s: %w", traceID, ErrNotFound)
	}
	return &out.Data[0], nil
}

// ErrNotFound is returned by Trace when Jaeger does not (yet) have the trace.
var ErrNotFound = errors.New("jaegertest: not found")

func (j *Jaeger) get(ctx context.Context, path string, q url.Values, v any) error {
	u := j.QueryURL + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := j.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode == http.StatusNotFound {
		return fmt.Errorf("GET %s: %w", path, ErrNotFound)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %.200s", path, resp.Status, body)
	}
	return json.Unmarshal(body, v)
}

// Trace is one trace as Jaeger's query API returns it.
type Trace struct {
	TraceID   string             `json:"traceID"`
	Spans     []Span             `json:"spans"`
	Processes map[string]Process `json:"processes"`
	Warnings  []string           `json:"warnings"`
}

// Span is one span of a Trace. StartTime and Duration are microseconds (since the epoch, and long).
type Span struct {
	TraceID       string      `json:"traceID"`
	SpanID        string      `json:"spanID"`
	OperationName string      `json:"operationName"`
	References    []Reference `json:"references"`
	StartTime     int64       `json:"startTime"`
	Duration      int64       `json:"duration"`
	Tags          []KeyValue  `json:"tags"`
	Logs          []Log       `json:"logs"`
	ProcessID     string      `json:"processID"`
	Warnings      []string    `json:"warnings"`
}

// Reference links a span to its parent ("CHILD_OF") or a follows-from predecessor.
type Reference struct {
	RefType string `json:"refType"`
	TraceID string `json:"traceID"`
	SpanID  string `json:"spanID"`
}

// KeyValue is a tag. Value is a string, bool, number (float64) as JSON decodes it.
type KeyValue struct {
	Key   string `json:"key"`
	Type  string `json:"type"`
	Value any    `json:"value"`
}

// Log is a span event.
type Log struct {
	Timestamp int64      `json:"timestamp"`
	Fields    []KeyValue `json:"fields"`
}

// Process is the resource of a span: service name and resource attributes as tags.
type Process struct {
	ServiceName string     `json:"serviceName"`
	Tags        []KeyValue `json:"tags"`
}

// Tag returns the value of the span's tag key as a string ("" when absent).
func (s *Span) Tag(key string) string { return tag(s.Tags, key) }

// ParentID returns the span id of the CHILD_OF reference, or "".
func (s *Span) ParentID() string {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" {
			return r.SpanID
		}
	}
	return ""
}

// Tag returns the value of the process's tag key as a string ("" when absent).
func (p *Process) Tag(key string) string { return tag(p.Tags, key) }

// Service returns the service name of span s.
func (tr *Trace) Service(s *Span) string { return tr.Processes[s.ProcessID].ServiceName }

// SpanByID returns the span with that id, or nil.
func (tr *Trace) SpanByID(id string) *Span {
	for i := range tr.Spans {
		if tr.Spans[i].SpanID == id {
			return &tr.Spans[i]
		}
	}
	return nil
}

func tag(kvs []KeyValue, key string) string {
	for _, kv := range kvs {
		if kv.Key == key {
			switch v := kv.Value.(type) {
			case string:
				return v
			case float64:
				return strconv.FormatFloat(v, 'f', -1, 64)
			default:
				return fmt.Sprint(v)
			}
		}
	}
	return ""
}

// tailBuffer keeps the last max bytes written to it: Jaeger's output, for failure messages, bounded.
type tailBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if over := b.buf.Len() - b.max; over > 0 {
		b.buf.Next(over)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
