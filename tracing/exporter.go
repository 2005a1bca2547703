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
	RecordsDropped uint64 // records dropped because the queue was full (or the exporter was shut down)
	SampledOut     uint64 // records not exported by the sampling decision
	SpansExported  uint64 // spans the exporter accepted
	SpansDropped   uint64 // spans lost to failed exports (including export timeouts)
	ExportErrors   uint64 // failed export calls
	Services       int    // distinct resources (OpenStack processes) currently cached
	ServicesSpill  uint64 // spans attributed to the catch-all resource because MaxServices was reached
	ConsumersTrim  uint64 // CONSUMER spans not built because a fanout exceeded the per-record bound
	Panics         uint64 // panics recovered while building (the record is dropped) or exporting (the chunk is)
}

// Exporter turns records into spans and exports them in batches. Record is safe for concurrent use and never
// blocks; Run is the single goroutine that builds, batches and exports; Shutdown stops Run and flushes.
type Exporter struct {
	cfg      Config
	log      *slog.Logger
	exporter sdktrace.SpanExporter

	queue chan *correlate.Record
	donec chan struct{} // closed when Run returns

	// mu guards the lifecycle fields. It is never held while sending on queue or exporting.
	mu        sync.Mutex
	started   bool               // Run was called (or Shutdown preempted it)
	stopping  bool               // Shutdown was called
	runCancel context.CancelFunc // cancels Run's context, so an in-flight export stops at Shutdown

	closed atomic.Bool // set by Shutdown: Record drops from then on

	// Owned by Run while it runs, then by Shutdown once donec is closed (or Run never started): no lock.
	b       *builder
	pending []sdktrace.ReadOnlySpan

	recordsIn, recordsDropped, sampledOut   atomic.Uint64
	spansExported, spansDropped, exportErrs atomic.Uint64
	consumersTrim                           atomic.Uint64

	lastWarn atomic.Int64 // unix nanos of the last export-failure log, for rate limiting

	panics *correlate.PanicGuard
}

// NewWithExporter returns an Exporter that hands its batches to exp (an otlptracegrpc exporter in production, a
// tracetest.InMemoryExporter in tests). Shutdown shuts exp down.
func NewWithExporter(cfg Config, exp sdktrace.SpanExporter) *Exporter {
	return &Exporter{
		cfg:      cfg,
		log:      cfg.logger(),
		exporter: exp,
		queue:    make(chan *correlate.Record, cfg.queueSize()),
		donec:    make(chan struct{}),
		b:        newBuilder(cfg.maxServices()),
		panics:   correlate.NewPanicGuard("tracing", cfg.logger()),
	}
}

// Record is the correlate.Sink method. It copies r and queues the copy without blocking; a full queue drops it
// (counted in Stats.RecordsDropped).
func (e *Exporter) Record(r *correlate.Record) {
	if r == nil {
		return
	}
	e.recordsIn.Add(1)
	if e.closed.Load() {
		e.recordsDropped.Add(1)
		return
	}
	if n := len(r.Callees) - maxConsumersPerRecord; n > 0 {
		e.consumersTrim.Add(uint64(n)) // copyRecord keeps the first maxConsumersPerRecord
	}
	select {
	case e.queue <- copyRecord(r):
	default:
		e.recordsDropped.Add(1)
	}
}

// copyRecord copies everything the span builder reads, so the caller may reuse r and what it points to once
// Record returns. Args and Result are left out on purpose: payloads are never exported.
func copyRecord(r *correlate.Record) *correlate.Record {
	c := *r
	c.Args, c.Result = nil, nil
	c.Server = copyPtr(r.Server)
	c.Namespace = copyPtr(r.Namespace)
	c.Version = copyPtr(r.Version)
	c.Caller = copyPtr(r.Caller)
	c.Callee = copyPtr(r.Callee)
	c.Error = copyPtr(r.Error)
	c.EverDelivered = copyPtr(r.EverDelivered)
	c.Published = copyPtr(r.Published)
	c.Confirmed = copyPtr(r.Confirmed)
	c.Delivered = copyPtr(r.Delivered)
	c.Replied = copyPtr(r.Replied)
	c.ReplyDelivered = copyPtr(r.ReplyDelivered)
	c.Deadline = copyPtr(r.Deadline)
	if r.Callees != nil {
		c.Callees = append([]correlate.Endpoint(nil), r.Callees[:min(len(r.Callees), maxConsumersPerRecord)]...)
	}
	if r.HeartbeatTimes != nil {
		c.HeartbeatTimes = append([]time.Time(nil), r.HeartbeatTimes[:min(len(r.HeartbeatTimes), maxHeartbeatEvents)]...)
	}
	return &c
}

func copyPtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

// Run builds, batches and exports until ctx is done or Shutdown is called, and returns nil then; what is still
// queued is Shutdown's to flush. It returns ErrShutdown when Shutdown came first. Call it once.
func (e *Exporter) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	e.mu.Lock()
	if e.started {
		stopping := e.stopping
		e.mu.Unlock()
		if stopping {
			return ErrShutdown
		}
		return errors.New("tracing: Run called twice")
	}
	e.started = true
	e.runCancel = cancel
	e.mu.Unlock()
	defer close(e.donec)

	batchTimeout := e.cfg.batchTimeout()
	timer := time.NewTimer(batchTimeout)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case r := <-e.queue:
			e.add(r)
			if len(e.pending) >= e.cfg.batchSize() {
				e.exportPending(ctx)
				timer.Reset(batchTimeout)
			}
		case <-timer.C:
			if len(e.pending) > 0 {
				e.exportPending(ctx)
			}
			timer.Reset(batchTimeout)
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

// Shutdown stops Run, builds and exports everything still queued, and shuts the underlying exporter down, all
// bounded by ctx. What ctx leaves no time for is dropped and counted. Records offered after Shutdown are dropped
// and counted. It is idempotent and safe before Run (and then a later Run returns ErrShutdown).
func (e *Exporter) Shutdown(ctx context.Context) error {
	e.mu.Lock()
	if e.stopping {
		e.mu.Unlock()
		return nil
	}
	e.stopping = true
	wasStarted := e.started
	e.started = true
	runCancel := e.runCancel
	e.mu.Unlock()

	e.closed.Store(true)
	if wasStarted {
		runCancel()
		select {
		case <-e.donec:
		case <-ctx.Done():
			// Run cannot have stopped: it owns the batch still. Stopping the exporter kills its export.
			return errors.Join(ctx.Err(), e.exporter.Shutdown(ctx))
		}
	}

	// This goroutine now owns the builder and the pending batch. Records that raced with closed are in the
	// queue; drain what is there without waiting for more.
	for drained := false; !drained && ctx.Err() == nil; {
		select {
		case r := <-e.queue:
			e.add(r)
			if len(e.pending) >= e.cfg.batchSize() {
				e.exportPending(ctx)
			}
		default:
			drained = true
		}
	}
	e.exportPending(ctx)
	// Whatever ctx left no time for is lost; count it.
	e.spansDropped.Add(uint64(len(e.pending)))
	e.pending = nil
	for drained := false; !drained; {
		select {
		case <-e.queue:
			e.recordsDropped.Add(1)
		default:
			drained = true
		}
	}
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
		Services:       int(e.b.res.size.Load()),
		ServicesSpill:  e.b.res.spilled.Load(),
		ConsumersTrim:  e.consumersTrim.Load(),
		Panics:         e.panics.Count(),
	}
}
