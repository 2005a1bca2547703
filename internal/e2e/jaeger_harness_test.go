package e2e

// Helpers for the Jaeger end-to-end tests (jaeger_*_test.go): a tracing exporter owned by a test, a counting sink,
// a TCP "collector" that accepts and never answers, pipelined oslo-shaped calls, and readers for Jaeger's answers.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/amqptrace/amqptrace/correlate"
	"github.com/amqptrace/amqptrace/internal/pipeline"
	"github.com/amqptrace/amqptrace/tracing"
	"github.com/amqptrace/amqptrace/tracing/jaegertest"
)

// traceExport is one tracing.Exporter with its Run goroutine, owned by a test. shutdown flushes it; the test's
// cleanup shuts it down too (idempotent), so neither the goroutine nor the gRPC connection outlives the test.
type traceExport struct {
	t      testing.TB
	exp    *tracing.Exporter
	runErr chan error
	cancel context.CancelFunc
	once   sync.Once
	err    error
}

// startExporter builds a real OTLP gRPC exporter (tracing.New) and runs it. Register it before the pipeline that
// feeds it, so the cleanups run in data-flow order: pipeline (flushes records into the exporter), then exporter.
func startExporter(t testing.TB, cfg tracing.Config) *traceExport {
	t.Helper()
	e, err := tracing.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("tracing.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	x := &traceExport{t: t, exp: e, runErr: make(chan error, 1), cancel: cancel}
	go runExporter(e, ctx, x.runErr)
	t.Cleanup(func() { _ = x.shutdown(30 * time.Second) })
	return x
}

// runExporter is the exporter's Run goroutine; a named function so a leak report says what it is.
func runExporter(e *tracing.Exporter, ctx context.Context, done chan<- error) { done <- e.Run(ctx) }

// shutdown flushes what is queued and stops the exporter, bounded by limit, and joins Run. Run returns nil when
// Shutdown stops it (or ErrShutdown if Shutdown won the race to start); anything else fails the test.
func (x *traceExport) shutdown(limit time.Duration) error {
	x.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), limit)
		defer cancel()
		x.err = x.exp.Shutdown(ctx)
		x.cancel()
		if err := <-x.runErr; err != nil && !errors.Is(err, tracing.ErrShutdown) {
			x.t.Errorf("exporter Run: %v", err)
		}
	})
	return x.err
}

// countingSink passes records on and counts the calls that returned: a Record that blocked would leave the count
// short of the number of records, a functional (not timing) witness that the sink never blocked.
type countingSink struct {
	next     correlate.Sink
	returned atomic.Uint64
}

func (s *countingSink) Record(r *correlate.Record) {
	s.next.Record(r)
	s.returned.Add(1)
}

// blackhole is a collector that accepts TCP connections and never reads or writes: the worst collector there
// is, since the exporter's writes succeed until the socket buffers fill and no answer ever comes.
type blackhole struct {
	ln       net.Listener
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    []net.Conn
	accepted atomic.Int64
}

func startBlackhole(t testing.TB) *blackhole {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("blackhole listen: %v", err)
	}
	b := &blackhole{ln: ln}
	b.wg.Add(1)
	go b.acceptLoop()
	t.Cleanup(b.close)
	return b
}

func (b *blackhole) addr() string { return b.ln.Addr().String() }

func (b *blackhole) acceptLoop() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.mu.Lock()
		b.conns = append(b.conns, c)
		b.mu.Unlock()
		b.accepted.Add(1)
	}
}

func (b *blackhole) close() {
	_ = b.ln.Close()
	b.wg.Wait()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.conns {
		_ = c.Close()
	}
}

// eventually polls cond until it holds or timeout passes; it reports the last state on failure. Polling a
// condition with a deadline is how these tests wait on Jaeger, which offers no notification.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v (last: %s)", what, timeout, state)
		}
		<-tick.C
	}
}

// parseJSONLines decodes the events file of a run: the public form of the records, what the spans are compared
// against.
func parseJSONLines(t testing.TB, b []byte) []correlate.Record {
	t.Helper()
	var out []correlate.Record
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var r correlate.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("events line %d: %v", len(out)+1, err)
		}
		out = append(out, r)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("events: %v", err)
	}
	return out
}

// osloCalls makes n oslo-shaped calls on one channel without waiting between them (pipelined: as fast as the
// broker and the proxy go) and waits for every reply. It returns the calls' msg ids in publish order.
func osloCalls(t testing.TB, conn *amqp.Connection, exchange, topic, method, requestID string, n int) []string {
	t.Helper()
	return pipelinedCalls(t, conn, exchange, topic, n, "30000", func(i int, msg map[string]any) {
		msg["method"], msg["args"], msg["_context_request_id"] = method, map[string]any{"i": i}, requestID
	})
}

// pipelinedCalls publishes n oslo-shaped calls with expiration (ms) on one channel, each message as fill
// completes it (method, args, context), and waits for every reply. It returns the msg ids in publish order.
func pipelinedCalls(t testing.TB, conn *amqp.Connection, exchange, topic string, n int, expiration string,
	fill func(i int, msg map[string]any)) []string {
	t.Helper()
	ch := channel(t, conn)
	defer ch.Close()
	must(t, ch.ExchangeDeclare(exchange, "topic", false, true, false, false, nil), "exchange.declare")
	replyQ := "reply_" + randHex(16)
	_, err := ch.QueueDeclare(replyQ, false, true, false, false, amqp.Table{"x-expires": int32(60000)})
	must(t, err, "queue.declare reply")
	replies, err := ch.Consume(replyQ, "", true, false, false, false, nil)
	must(t, err, "basic.consume reply")
	ids := make([]string, n)
	pending := make(map[string]bool, n)
	for i := range ids {
		ids[i] = randHex(16)
		pending[ids[i]] = true
		msg := map[string]any{"_msg_id": ids[i], "_reply_q": replyQ, "_timeout": nil, "_unique_id": randHex(16),
			"_context_global_request_id": nil}
		fill(i, msg)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := ch.PublishWithContext(ctx, exchange, topic, false, false, osloPublishing(osloEnvelope(msg), expiration))
		cancel()
		must(t, err, "publish")
	}
	timer := time.NewTimer(30 * time.Second)
	defer timer.Stop()
	for len(pending) > 0 {
		select {
		case d, ok := <-replies:
			if !ok {
				t.Fatalf("reply channel closed with %d of %d replies missing", len(pending), n)
			}
			delete(pending, byOsloMsgID(d))
		case <-timer.C:
			t.Fatalf("%d of %d replies missing after 30s", len(pending), n)
		}
	}
	return ids
}

// exportTo adds x to a pipeline's sinks and shortens the reply grace: a one-sided record (a proxy that sees only
// the server's side) becomes final only at its deadline plus the grace.
func exportTo(x *traceExport) func(*pipeline.Config) {
	return func(c *pipeline.Config) {
		c.Sinks = append(c.Sinks, x.exp)
		c.Correlate.Grace = time.Second
	}
}

// rawTrace is the query API's answer for one trace, as bytes, for the secret scan (the typed Trace decodes only
// some fields; a secret could hide in any).
func rawTrace(ctx context.Context, t testing.TB, j *jaegertest.Jaeger, traceID string) []byte {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.QueryURL+"/api/traces/"+traceID, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := j.Client.Do(req)
	if err != nil {
		t.Fatalf("GET trace: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET trace: %s: %v", resp.Status, err)
	}
	return b
}

// spanKind is Jaeger's span.kind tag: "client", "server", "producer", "consumer".
func spanKind(s *jaegertest.Span) string { return s.Tag("span.kind") }

// benignWarning tells the Jaeger warnings that are expected of real traffic from one clock: an instant span (a
// cast's delivery is one timestamp) is "sanitized" by Jaeger, and a consumer that starts after its producer ended
// is reported, not moved, because the test Jaeger's clock-skew adjustment is off.
func benignWarning(s *jaegertest.Span, w string) bool {
	return (strings.HasPrefix(w, "Negative duration detected") && s.Duration == 0) ||
		strings.HasPrefix(w, "clock skew adjustment disabled")
}

// traceIDsOf lists the distinct trace ids of traces.
func traceIDsOf(traces []jaegertest.Trace) []string {
	seen := map[string]bool{}
	var out []string
	for _, tr := range traces {
		if !seen[tr.TraceID] {
			seen[tr.TraceID] = true
			out = append(out, tr.TraceID)
		}
	}
	return out
}

// processTag reads a resource attribute of span s's process (service.name is the process's ServiceName).
func processTag(tr *jaegertest.Trace, s *jaegertest.Span, key string) string {
	p := tr.Processes[s.ProcessID]
	return p.Tag(key)
}
