package correlate

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
)

// Fanout is a Sink that hands each record to several sinks, each behind its own bounded queue and goroutine: a slow
// sink loses records (counted by Dropped) and never slows the correlator or the other sinks. A sink that panics
// loses the record it panicked on, counted by Dropped and by Panics, and goes on with the next one. A sink that
// blocks forever costs its own queue (every later record counted in its Dropped) and its one goroutine, nothing
// else. These queues are the only ones between the correlator and a sink: a sink does its work (batching,
// aggregating, writing) on its Fanout goroutine and adds no queue of its own.
type Fanout struct {
	outs    []fanoutOut
	started atomic.Bool
	stopped atomic.Bool
}

type fanoutOut struct {
	sink    Sink
	q       chan *Record
	dropped *atomic.Uint64
	panics  *PanicGuard
}

// NewFanout returns a Fanout with a queue of queueSize records (default 4096) per sink. Call Run to start it.
func NewFanout(queueSize int, sinks ...Sink) *Fanout {
	named := make([]NamedSink, len(sinks))
	for i, s := range sinks {
		named[i] = NamedSink{Name: "sink" + strconv.Itoa(i), Sink: s}
	}
	return NewNamedFanout(queueSize, nil, named...)
}

// NamedSink is a sink with the name its drops and panics are reported under (metrics, events, ui, tracing).
type NamedSink struct {
	Name string
	Sink Sink
}

// NewNamedFanout is NewFanout with a name per sink for the panic log line (component "sink:<name>") and a logger
// for it (nil discards).
func NewNamedFanout(queueSize int, log *slog.Logger, sinks ...NamedSink) *Fanout {
	if queueSize <= 0 {
		queueSize = 4096
	}
	f := &Fanout{}
	for _, s := range sinks {
		f.outs = append(f.outs, fanoutOut{sink: s.Sink, q: make(chan *Record, queueSize), dropped: new(atomic.Uint64),
			panics: NewPanicGuard("sink:"+s.Name, log)})
	}
	return f
}

// Record queues r for every sink, without blocking: the same pointer for all of them, since a record is
// immutable once emitted (doc.go, "Records and sinks"). A full queue drops r for that sink only, counted.
func (f *Fanout) Record(r *Record) {
	for i := range f.outs {
		o := &f.outs[i]
		if f.stopped.Load() {
			o.dropped.Add(1)
			continue
		}
		select {
		case o.q <- r:
		default:
			o.dropped.Add(1)
		}
	}
}

// Dropped returns, per sink in NewFanout order, how many records were dropped because its queue was full, the
// Fanout had stopped, or the sink panicked on them, plus those the sink itself reports lost (a sink with a
// Dropped() uint64 method, such as JSONLines when its writes fail), so that each sink has one drop count.
func (f *Fanout) Dropped() []uint64 {
	out := make([]uint64, len(f.outs))
	for i := range f.outs {
		out[i] = f.outs[i].dropped.Load()
		if d, ok := f.outs[i].sink.(droppedCounter); ok {
			out[i] += d.Dropped()
		}
	}
	return out
}

// droppedCounter is a sink that counts the records it received and could not deliver.
type droppedCounter interface{ Dropped() uint64 }

// Panics returns, per sink in NewFanout order, how many records the sink panicked on (each also counted in Dropped).
func (f *Fanout) Panics() []uint64 {
	out := make([]uint64, len(f.outs))
	for i := range f.outs {
		out[i] = f.outs[i].panics.Count()
	}
	return out
}

// Run delivers queued records, one goroutine per sink, until ctx ends; then each goroutine delivers what is still
// queued and Run returns after all have finished. Cancel ctx only after the Correlator's Run has returned, so its
// final flush gets through.
func (f *Fanout) Run(ctx context.Context) error {
	if !f.started.CompareAndSwap(false, true) {
		return ErrRunning
	}
	var wg sync.WaitGroup
	for i := range f.outs {
		o := &f.outs[i]
		wg.Go(func() { fanoutPump(ctx, o) })
	}
	wg.Wait()
	return nil
}

// fanoutPump feeds one sink from its queue.
func fanoutPump(ctx context.Context, o *fanoutOut) {
	for {
		select {
		case r := <-o.q:
			o.deliver(r)
		case <-ctx.Done():
			for {
				select {
				case r := <-o.q:
					o.deliver(r)
				default:
					return
				}
			}
		}
	}
}

// deliver hands one record to the sink; a panic costs that record (dropped, counted) and nothing else.
func (o *fanoutOut) deliver(r *Record) {
	defer o.panics.Recover(o.dropped)
	o.sink.Record(r)
}

// Stop makes later Record calls drop (counted); use it when Run has returned for good.
func (f *Fanout) Stop() { f.stopped.Store(true) }

// JSONLines is a Sink that writes each record as one JSON object per line. It does I/O, so put it behind a Fanout.
//
// It hands its writer whole lines only: lines wait in a buffer of at most DefaultJSONLinesBuffer bytes and go out
// together in one Write, at Flush or when the buffer is full, never cut at a buffer boundary, so a crash between
// two writes leaves whole lines behind. A failed write keeps its lines for the next Flush, which tries again (a
// full disk that gets space back loses nothing that was buffered); while the buffer is full the records that
// arrive are dropped and counted, and Record does not retry the write itself, so a failing writer costs one
// attempt per Flush rather than one per record. A Write that reports n > 0 bytes with its error has written those
// bytes: the next attempt starts after them and completes the torn line. A writer that can take a failed write
// back (the events file in cmd/amqptrace truncates it) writes all or nothing.
type JSONLines struct {
	mu      sync.Mutex
	w       io.Writer
	pend    []byte // whole lines not yet written (the first one possibly in part, after a short write)
	limit   int
	enc     *json.Encoder
	buf     bytes.Buffer
	err     error // the last write's error; nil once a write succeeds again
	dropped uint64
}

// DefaultJSONLinesBuffer bounds the lines a JSONLines holds before it writes them (and, while writes fail, what it
// keeps for the retry).
const DefaultJSONLinesBuffer = 64 << 10

// NewJSONLines returns a JSON Lines sink writing to w through a buffer; call Flush (or Close) to push it out.
func NewJSONLines(w io.Writer) *JSONLines {
	j := &JSONLines{w: w, limit: DefaultJSONLinesBuffer}
	j.enc = json.NewEncoder(&j.buf)
	j.enc.SetEscapeHTML(false)
	return j
}

// Record buffers r as one line, writing the buffer first when r does not fit in it.
func (j *JSONLines) Record(r *Record) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.buf.Reset()
	if err := j.enc.Encode(r); err != nil {
		j.dropped++ // this record cannot be encoded; the next one may
		return
	}
	line := j.buf.Bytes()
	if len(j.pend) > 0 && len(j.pend)+len(line) > j.limit && j.err == nil {
		_ = j.flushLocked()
	}
	if len(j.pend) > 0 && len(j.pend)+len(line) > j.limit {
		j.dropped++ // the writer fails and its retry waits for Flush; a line larger than the buffer goes alone
		return
	}
	j.pend = append(j.pend, line...)
}

// flushLocked writes the buffered lines; j.mu is held.
func (j *JSONLines) flushLocked() error {
	for len(j.pend) > 0 {
		n, err := j.w.Write(j.pend)
		n = min(max(n, 0), len(j.pend))
		j.pend = append(j.pend[:0], j.pend[n:]...)
		if err == nil && n == 0 {
			err = io.ErrShortWrite
		}
		if err != nil {
			j.err = err
			return err
		}
	}
	j.err = nil
	return nil
}

// Dropped returns how many records were not written: those that could not be encoded, those that arrived while
// the buffer was full of lines a failing writer had not taken, and those still buffered when Close gave up.
func (j *JSONLines) Dropped() uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.dropped
}

// Flush writes the buffered lines to the underlying writer (again, after a failure) and returns the write's error.
func (j *JSONLines) Flush() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.flushLocked()
}

// Close flushes, counts what could not be written as dropped, and closes the underlying writer when it is an
// io.Closer.
func (j *JSONLines) Close() error {
	j.mu.Lock()
	err := j.flushLocked()
	if len(j.pend) > 0 {
		// The first of these lines may have gone out in part; it is still a record the file does not hold whole.
		j.dropped += uint64(bytes.Count(j.pend, []byte{'\n'}))
		j.pend = nil
	}
	j.mu.Unlock()
	if c, ok := j.w.(io.Closer); ok {
		if cerr := c.Close(); err == nil {
			err = cerr
		}
	}
	return err
}

// Err returns the last write's error, nil when the last write succeeded (or none was tried).
func (j *JSONLines) Err() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.err
}
