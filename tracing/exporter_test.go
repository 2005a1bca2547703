package tracing

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/amqptrace/amqptrace/correlate"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// waitFor polls cond until it holds. The test binary's -timeout is the bound; there is no timing assertion.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if t.Context().Err() != nil {
			t.Fatalf("gave up waiting for %s", what)
		}
		<-tick.C
	}
}

func runExporter(t *testing.T, e *Exporter) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- e.Run(ctx) }()
	return func() {
		cancel()
		// ErrShutdown: Shutdown came before the goroutine got to Run, which is allowed.
		if err := <-errc; err != nil && !errors.Is(err, ErrShutdown) {
			t.Errorf("Run: %v", err)
		}
	}
}

// TestRecordBuildsNoQueue: the exporter has no queue of its own (the Fanout's is the only one): Record builds the
// spans at once, on the caller's goroutine, without Run; Shutdown exports exactly what was recorded, and a record
// after Shutdown is dropped and counted.
func TestRecordBuildsNoQueue(t *testing.T) {
	mem := newMemExporter()
	e := NewWithExporter(Config{BatchSize: 512}, mem)
	for range 10 {
		e.Record(castBuildAndRun())
	}
	e.mu.Lock()
	pending := len(e.pending)
	e.mu.Unlock()
	if st := e.Stats(); st.RecordsIn != 10 || st.RecordsDropped != 0 || pending != 20 {
		t.Fatalf("in %d dropped %d pending spans %d, want 10, 0 and 20", st.RecordsIn, st.RecordsDropped, pending)
	}
	if err := e.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := len(mem.GetSpans()); got != 20 {
		t.Errorf("exported %d spans, want 10 casts × 2", got)
	}
	if st := e.Stats(); st.SpansExported != 20 {
		t.Errorf("SpansExported %d", st.SpansExported)
	}
	e.Record(castBuildAndRun())
	if st := e.Stats(); st.RecordsDropped != 1 {
		t.Errorf("a record after Shutdown was not dropped: %+v", st)
	}
	if mem.shutdowns.Load() != 1 {
		t.Errorf("exporter shut down %d times", mem.shutdowns.Load())
	}
}

// TestRunBatchesBySize: Run exports as soon as a batch is full, without waiting for the batch timeout (an hour).
func TestRunBatchesBySize(t *testing.T) {
	mem := newMemExporter()
	e := NewWithExporter(Config{BatchSize: 4, BatchTimeout: time.Hour}, mem)
	stop := runExporter(t, e)
	e.Record(castBuildAndRun())
	e.Record(castBuildInstances())
	waitFor(t, "a full batch", func() bool { return len(mem.GetSpans()) == 4 })
	stop()
	if err := e.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := e.Stats(); st.SpansExported != 4 || st.SpansDropped != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestRunBatchTimeout: a partial batch goes out when the batch timeout fires.
func TestRunBatchTimeout(t *testing.T) {
	mem := newMemExporter()
	e := NewWithExporter(Config{BatchSize: 1000, BatchTimeout: 10 * time.Millisecond}, mem)
	stop := runExporter(t, e)
	defer stop()
	e.Record(callSelectDestinations())
	waitFor(t, "the batch timeout", func() bool { return len(mem.GetSpans()) == 2 })
	if err := e.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestShutdownFlushes: spans queued or pending in Run when Shutdown comes are exported by it.
func TestShutdownFlushes(t *testing.T) {
	mem := newMemExporter()
	e := NewWithExporter(Config{BatchTimeout: time.Hour}, mem)
	stop := runExporter(t, e)
	for _, r := range bootRequest() {
		e.Record(r)
	}
	if err := e.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	stop()
	if got := len(mem.GetSpans()); got != 10 {
		t.Errorf("flushed %d spans, want 10", got)
	}
	if err := e.Shutdown(context.Background()); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
}

func TestRunAfterShutdown(t *testing.T) {
	e := NewWithExporter(Config{}, newMemExporter())
	if err := e.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := e.Run(context.Background()); !errors.Is(err, ErrShutdown) {
		t.Errorf("Run after Shutdown: %v", err)
	}
}

type failingExporter struct{ calls, largest int }

func (f *failingExporter) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	f.calls++
	f.largest = max(f.largest, len(spans))
	return errors.New("collector says no")
}
func (f *failingExporter) Shutdown(context.Context) error { return nil }

func TestExportFailureCounted(t *testing.T) {
	f := &failingExporter{}
	e := NewWithExporter(Config{BatchSize: 3}, f)
	for _, r := range bootRequest() {
		e.Record(r)
	}
	if err := e.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := e.Stats()
	if st.SpansDropped != 10 || st.SpansExported != 0 || st.ExportErrors != uint64(f.calls) || f.calls < 4 || f.largest > 3 {
		t.Errorf("stats %+v after %d calls (largest %d); want 10 dropped in at least 4 failed batches of ≤3", st, f.calls, f.largest)
	}
}

// TestSampling: the keep decision is a function of the trace id (two exporters agree), keeps about the ratio,
// and always keeps errors, timeouts, unroutables and slow calls.
func TestSampling(t *testing.T) {
	var recs []*correlate.Record
	for i := range 400 {
		r := callSelectDestinations()
		r.GlobalRequestID = fmt.Sprintf("req-%08d-0000-4000-8000-000000000000", i)
		recs = append(recs, r)
	}
	a, ea := exportAll(t, Config{SampleRatio: 0.25}, recs...)
	b, _ := exportAll(t, Config{SampleRatio: 0.25}, recs...)
	if len(a) != len(b) {
		t.Fatalf("two exporters disagree: %d vs %d spans", len(a), len(b))
	}
	for i := range a {
		if a[i].SpanContext.TraceID() != b[i].SpanContext.TraceID() {
			t.Fatalf("span %d: different traces kept", i)
		}
	}
	kept := len(a) / 2
	if kept < 50 || kept > 150 || ea.Stats().SampledOut != uint64(400-kept) {
		t.Errorf("kept %d of 400 at ratio 0.25; sampled out %d", kept, ea.Stats().SampledOut)
	}

	// Ratio < 0: only the always-kept records.
	slow := callSelectDestinations()
	slow.DurationUS = 1_500_000
	unroutable := castBuildAndRun()
	unroutable.Status = correlate.StatusUnroutable
	spans, e := exportAll(t, Config{SampleRatio: -1},
		callSelectDestinations(), castBuildInstances(), callObjectActionError(), callTimeoutNeverDelivered(), slow, unroutable)
	names := map[string]int{}
	for _, s := range spans {
		names[s.Name]++
	}
	if names["conductor/object_action"] != 2 || names["compute/get_console_output"] != 1 ||
		names["scheduler/select_destinations"] != 2 || names["publish compute/build_and_run_instance"] != 1 ||
		names["publish conductor/compute_task.build_instances"] != 0 || e.Stats().SampledOut != 2 {
		t.Errorf("kept %v, sampled out %d", names, e.Stats().SampledOut)
	}
}

// blackhole accepts TCP connections and never writes a byte: a collector that hangs.
type blackhole struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	done  chan struct{}
}

func newBlackhole(t *testing.T) *blackhole {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &blackhole{ln: ln, done: make(chan struct{})}
	go func() {
		defer close(b.done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.conns = append(b.conns, c)
			b.mu.Unlock()
		}
	}()
	return b
}

func (b *blackhole) accepted() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.conns)
}

func (b *blackhole) close() {
	b.ln.Close()
	<-b.done
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.conns {
		c.Close()
	}
}

// TestBlackholeCollector: against a collector that accepts and never answers, Record waits at most ExportTimeout
// (for a full batch; the Fanout in front of it is what drops), exports fail and are counted, and Shutdown returns
// within its context.
func TestBlackholeCollector(t *testing.T) {
	bh := newBlackhole(t)
	defer bh.close()
	e, err := New(context.Background(), Config{
		Endpoint: bh.ln.Addr().String(), BatchSize: 4,
		BatchTimeout: time.Millisecond, ExportTimeout: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	stop := runExporter(t, e)
	defer stop()

	// Offer records until an export has failed. Record is called in line: if it blocked past its export
	// timeout, this loop would never end.
	waitFor(t, "a failed export", func() bool {
		for range 4 {
			e.Record(callSelectDestinations())
		}
		st := e.Stats()
		return st.ExportErrors > 0 && st.SpansDropped > 0
	})
	if bh.accepted() == 0 {
		t.Error("the exporter never connected to the collector")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_ = e.Shutdown(ctx) // may report the deadline: the collector never answers
	st := e.Stats()
	if st.SpansExported != 0 {
		t.Errorf("a blackhole accepted %d spans", st.SpansExported)
	}
	if st.RecordsIn != st.RecordsDropped+st.SampledOut+(st.SpansDropped+st.SpansExported)/2 {
		t.Errorf("records unaccounted for: %+v", st)
	}
}
