package e2e

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/amqptrace/amqptrace/correlate"
	"github.com/amqptrace/amqptrace/internal/pipeline"
	"github.com/amqptrace/amqptrace/internal/testio"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// collector is a sink that keeps a deep copy of every record (through JSON, the public form of a record) and
// signals each arrival, so tests wait on a condition instead of sleeping.
type collector struct {
	mu      sync.Mutex
	records []correlate.Record
	arrived chan struct{}
}

func newCollector() *collector { return &collector{arrived: make(chan struct{}, 1)} }

func (c *collector) Record(r *correlate.Record) {
	b, err := json.Marshal(r)
	if err != nil {
		panic(err) // a record that does not marshal is a bug the test must see
	}
	var cp correlate.Record
	if err := json.Unmarshal(b, &cp); err != nil {
		panic(err)
	}
	c.mu.Lock()
	c.records = append(c.records, cp)
	c.mu.Unlock()
	select {
	case c.arrived <- struct{}{}:
	default:
	}
}

func (c *collector) snapshot() []correlate.Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]correlate.Record(nil), c.records...)
}

// waitFor waits until cond holds over the records seen so far, or timeout passes; it returns whether cond held.
func (c *collector) waitFor(timeout time.Duration, cond func([]correlate.Record) bool) bool {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		if cond(c.snapshot()) {
			return true
		}
		select {
		case <-c.arrived:
		case <-timer.C:
			return cond(c.snapshot())
		}
	}
}

// harness is one pipeline on loopback with its outputs captured: records, the JSON Lines events and debug logs.
type harness struct {
	t      testing.TB
	p      *pipeline.Pipeline
	addr   string
	col    *collector
	events *testio.Buffer
	jsonl  *correlate.JSONLines
	logs   *testio.Buffer
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// startPipeline runs a pipeline in front of upstream. tune, when set, adjusts the config before New.
func startPipeline(t testing.TB, upstream string, tune func(*pipeline.Config)) *harness {
	t.Helper()
	h := &harness{t: t, col: newCollector(), events: &testio.Buffer{}, logs: &testio.Buffer{}, done: make(chan error, 1)}
	h.jsonl = correlate.NewJSONLines(h.events)
	logger := slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := pipeline.Config{
		Upstreams:     []string{upstream},
		ShutdownGrace: 5 * time.Second,
		Sinks:         []correlate.Sink{h.col, h.jsonl},
		Logger:        logger,
	}
	if tune != nil {
		tune(&cfg)
	}
	p, err := pipeline.New(cfg)
	if err != nil {
		t.Fatalf("pipeline.New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	h.p, h.addr = p, ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- p.Serve(ctx, ln) }()
	t.Cleanup(h.stop)
	return h
}

// stop shuts the pipeline down (grace, correlator flush, sink flush) and fails the test if that goes wrong.
// It is idempotent; after it, every record is in h.col and h.events.
func (h *harness) stop() {
	h.once.Do(func() {
		h.cancel()
		select {
		case err := <-h.done:
			if err != nil {
				h.t.Errorf("pipeline.Serve: %v", err)
			}
		case <-time.After(60 * time.Second):
			h.t.Fatalf("pipeline did not stop within 60s")
		}
		if err := h.jsonl.Close(); err != nil {
			h.t.Errorf("events: %v", err)
		}
	})
}

// recordsJSON is every record collected, as JSON, for the secret scan.
func (h *harness) recordsJSON() []byte {
	b, err := json.Marshal(h.col.snapshot())
	if err != nil {
		h.t.Fatalf("marshal records: %v", err)
	}
	return b
}

// orderedTimes checks published ≤ delivered ≤ replied ≤ reply_delivered over the timestamps that are present.
func orderedTimes(r *correlate.Record) bool {
	var last *time.Time
	for _, ts := range []*time.Time{r.Published, r.Delivered, r.Replied, r.ReplyDelivered} {
		if ts == nil {
			continue
		}
		if last != nil && ts.Before(*last) {
			return false
		}
		last = ts
	}
	return true
}

func strp(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}
