package tracing

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/amqptrace/amqptrace/correlate"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// ErrShutdown is returned by Run when the Exporter was shut down before Run started.
var ErrShutdown = errors.New("tracing: exporter shut down")

// Stats are the Exporter's counters since New. All are monotonic except Services.
type Stats struct {
	RecordsIn      uint64 // records offered to Record
	RecordsDropped uint64 // records offered after Shutdown, or whose building panicked
	SampledOut     uint64 // records not exported by the sampling decision
	SpansExported  uint64 // spans the exporter accepted
	SpansDropped   uint64 // spans lost to failed exports (including export timeouts) or left at Shutdown
	ExportErrors   uint64 // failed export calls
	Services       int    // distinct resources (OpenStack processes) currently cached
	ServicesSpill  uint64 // spans attributed to the catch-all resource because MaxServices was reached
	ConsumersTrim  uint64 // CONSUMER spans not built because a fanout exceeded the per-record bound
	Panics         uint64 // panics recovered while building (the record is dropped) or exporting (the chunk is)
}

// Exporter turns records into spans and exports them in batches. It is a correlate.Sink that does its work on the
// caller's goroutine: behind a correlate.Fanout that is the exporter's own Fanout goroutine, and the Fanout's
// bounded queue is the only queue in front of it (a slow or dead collector fills that queue, which drops and
// counts). Record builds the record's spans at once (it keeps nothing of the record) and exports when a batch is
// full; Run exports what is pending every BatchTimeout; Shutdown exports the rest.
type Exporter struct {
	cfg      Config
	log      *slog.Logger
	exporter sdktrace.SpanExporter

	// mu guards the builder, the pending batch and closed, and is held while a batch is exported: whoever calls
	// Record (the Fanout goroutine) waits for an export in progress, as a batching processor's worker would.
	mu      sync.Mutex
	b       *builder
	pending []sdktrace.ReadOnlySpan
	closed  bool

	// exportCtx bounds exports made by Record and Run; Shutdown cancels it so an export to a dead collector stops.
	exportCtx    context.Context
	cancelExport context.CancelFunc

	// life guards the lifecycle fields. It is never held while exporting.
	life      sync.Mutex
	started   bool               // Run was called (or Shutdown preempted it)
	stopping  bool               // Shutdown was called
	runCancel context.CancelFunc // cancels Run's context
	donec     chan struct{}      // closed when Run returns

	recordsIn, recordsDropped, sampledOut   atomic.Uint64
	spansExported, spansDropped, exportErrs atomic.Uint64
	consumersTrim                           atomic.Uint64

	lastWarn atomic.Int64 // unix nanos of the last export-failure log, for rate limiting

	panics *correlate.PanicGuard
}

// NewWithExporter returns an Exporter that hands its batches to exp (an otlptracegrpc exporter in production, a
// tracetest.InMemoryExporter in tests). Shutdown shuts exp down.
func NewWithExporter(cfg Config, exp sdktrace.SpanExporter) *Exporter {
	ctx, cancel := context.WithCancel(context.Background())
	return &Exporter{
		cfg:          cfg,
		log:          cfg.logger(),
		exporter:     exp,
		donec:        make(chan struct{}),
		b:            newBuilder(cfg.maxServices()),
		exportCtx:    ctx,
		cancelExport: cancel,
		panics:       correlate.NewPanicGuard("tracing", cfg.logger()),
	}
}

// Record is the correlate.Sink method. It builds r's spans into the pending batch and exports the batch when it is
// full; r is read during the call and not kept (the record contract would allow keeping it). After Shutdown it
// drops and counts.
func (e *Exporter) Record(r *correlate.Record) {
	if r == nil {
		return
	}
	e.recordsIn.Add(1)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		e.recordsDropped.Add(1)
		return
	}
	e.add(r)
	if len(e.pending) >= e.cfg.batchSize() {
		e.exportPending(e.exportCtx)
	}
}

// Run exports what is pending every BatchTimeout until ctx is done or Shutdown is called, and returns nil then;
// what is still pending is Shutdown's to flush. It returns ErrShutdown when Shutdown came first. Call it once.
func (e *Exporter) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	e.life.Lock()
	if e.started {
		stopping := e.stopping
		e.life.Unlock()
		if stopping {
			return ErrShutdown
		}
		return errors.New("tracing: Run called twice")
	}
	e.started = true
	e.runCancel = cancel
	e.life.Unlock()
	defer close(e.donec)

	tick := time.NewTicker(e.cfg.batchTimeout())
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			e.mu.Lock()
			if len(e.pending) > 0 && !e.closed {
				e.exportPending(e.exportCtx)
			}
			e.mu.Unlock()
		}
	}
}

// add samples and builds one record into the pending batch.
func (e *Exporter) add(r *correlate.Record) {
	defer e.panics.Recover(&e.recordsDropped)
	if !e.keep(r) {
		e.sampledOut.Add(1)
		return
	}
	before := e.b.consumersTrimmed
	e.pending = e.b.build(r, e.pending)
	if d := e.b.consumersTrimmed - before; d > 0 {
		e.consumersTrim.Add(d)
	}
}

// keep is the sampling decision: failures and slow calls always, the rest by trace id.
func (e *Exporter) keep(r *correlate.Record) bool {
	if r.Status != correlate.StatusOK && r.Status != "" || r.Amends != 0 {
		return true // a follow-up always: the timeout it completes was kept
	}
	if r.Kind == correlate.KindCall && time.Duration(r.DurationUS)*time.Microsecond >= e.cfg.slowThreshold() {
		return true
	}
	return sampled(traceIDFor(traceKey(r)), e.cfg.sampleRatio())
}

// exportPending exports the pending spans in chunks of at most BatchSize, each bounded by ExportTimeout. A failed
// chunk is dropped and counted, never retried here (the OTLP exporter already retried within the timeout). When
// ctx ends (Run stopping) the rest, including an interrupted chunk, stays pending for Shutdown's flush.
func (e *Exporter) exportPending(ctx context.Context) {
	bs := e.cfg.batchSize()
	for len(e.pending) > 0 && ctx.Err() == nil {
		n := min(len(e.pending), bs)
		chunk := e.pending[:n]
		ectx, cancel := context.WithTimeout(ctx, e.cfg.exportTimeout())
		err := e.export(ectx, chunk)
		cancel()
		if err != nil && ctx.Err() != nil {
			return // interrupted, not failed: keep the chunk for the flush
		}
		if err != nil {
			e.exportErrs.Add(1)
			e.spansDropped.Add(uint64(n))
			e.warn("span export failed; batch dropped", err, n)
		} else {
			e.spansExported.Add(uint64(n))
		}
		// Clear the references so exported spans can be collected while the backing array lives on.
		clear(chunk)
		e.pending = e.pending[n:]
	}
	if len(e.pending) == 0 {
		e.pending = nil
	}
}

// errExportPanic is the error of an export call that panicked (counted in Stats.Panics too).
var errExportPanic = errors.New("tracing: span export panicked")

// export is one ExportSpans call; a panic in it fails this chunk like an export error, and only this chunk.
func (e *Exporter) export(ctx context.Context, chunk []sdktrace.ReadOnlySpan) (err error) {
	defer func() {
		if v := recover(); v != nil {
			e.panics.Caught(v)
			err = errExportPanic
		}
	}()
	return e.exporter.ExportSpans(ctx, chunk)
}

// warn logs an export failure at most once per 10 seconds: a dead collector fails every batch, and the counters
// already say how many.
func (e *Exporter) warn(msg string, err error, spans int) {
	now := time.Now().UnixNano()
	last := e.lastWarn.Load()
	if now-last < int64(10*time.Second) || !e.lastWarn.CompareAndSwap(last, now) {
		return
	}
	e.log.Warn(msg, "err", err, "spans", spans,
		"spans_dropped_total", e.spansDropped.Load(), "export_errors_total", e.exportErrs.Load())
}

// Shutdown stops Run, exports everything still pending, and shuts the underlying exporter down, all bounded by
// ctx. What ctx leaves no time for is dropped and counted. Records offered after Shutdown are dropped and counted.
// It is idempotent and safe before Run (and then a later Run returns ErrShutdown).
func (e *Exporter) Shutdown(ctx context.Context) error {
	e.life.Lock()
	if e.stopping {
		e.life.Unlock()
		return nil
	}
	e.stopping = true
	wasStarted := e.started
	e.started = true
	runCancel := e.runCancel
	e.life.Unlock()

	if wasStarted {
		runCancel()
		select {
		case <-e.donec:
		case <-ctx.Done():
			e.cancelExport()
			return errors.Join(ctx.Err(), e.exporter.Shutdown(ctx))
		}
	}
	// An export in progress in Record is bounded by ExportTimeout; Shutdown's ctx may be shorter.
	stop := context.AfterFunc(ctx, e.cancelExport)
	defer stop()
	e.mu.Lock()
	e.closed = true
	e.exportPending(ctx)
	// Whatever ctx left no time for is lost; count it.
	e.spansDropped.Add(uint64(len(e.pending)))
	e.pending = nil
	e.mu.Unlock()
	e.cancelExport()
	err := e.exporter.Shutdown(ctx)
	if ctx.Err() != nil {
		return errors.Join(ctx.Err(), err)
	}
	return err
}

// Stats returns a snapshot of the counters.
func (e *Exporter) Stats() Stats {
	return Stats{
		RecordsIn:      e.recordsIn.Load(),
		RecordsDropped: e.recordsDropped.Load(),
		SampledOut:     e.sampledOut.Load(),
		SpansExported:  e.spansExported.Load(),
		SpansDropped:   e.spansDropped.Load(),
		ExportErrors:   e.exportErrs.Load(),
		Services:       int(e.b.res.size.Load()), // atomic: read without mu
		ServicesSpill:  e.b.res.spilled.Load(),
		ConsumersTrim:  e.consumersTrim.Load(),
		Panics:         e.panics.Count(),
	}
}
