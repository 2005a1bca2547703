package e2e

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/amqptrace/amqptrace/correlate"
	"github.com/amqptrace/amqptrace/internal/brokertest"
	"github.com/amqptrace/amqptrace/internal/pipeline"
	"github.com/amqptrace/amqptrace/tracing"
	"github.com/amqptrace/amqptrace/tracing/jaegertest"
)

// TestJaegerDeadCollector points the exporter at a collector that accepts TCP and never answers, and pushes
// pipelined oslo-shaped calls through the pipeline. What must hold is functional, never a timing: every call
// round-trips, every record reaches the other sinks and the exporter's Record returns for each one, no sink queue
// drops, and every record the exporter was given is accounted for as dropped (queue full or failed export), none
// as exported.
func TestJaegerDeadCollector(t *testing.T) {
	brokerAddr := brokertest.Require(t)
	bh := startBlackhole(t)
	// A small queue and batches, and a short export timeout, so that the dead collector's effect (a full queue,
	// failed exports) shows within a short test; the assertions do not depend on these figures.
	x := startExporter(t, tracing.Config{Endpoint: bh.addr(), Insecure: true, BatchSize: 8,
		BatchTimeout: 10 * time.Millisecond, ExportTimeout: 300 * time.Millisecond})
	counted := &countingSink{next: x.exp}
	h := startPipeline(t, brokerAddr, func(c *pipeline.Config) { c.Sinks = append(c.Sinks, counted) })

	const n = 300
	id := randHex(4)
	exchange, topic := "amqptrace-e2e-dead-"+id, "dead_"+id
	server := dial(t, brokertest.URLVia(h.addr), "e2e-dead-server-"+id)
	caller := dial(t, brokertest.URLVia(h.addr), "e2e-dead-caller-"+id)
	startServer(t, server, exchange, topic, osloReply)
	msgIDs := osloCalls(t, caller, exchange, topic, "ping", "req-dead-"+randHex(8), n) // fails unless all reply

	if !h.col.waitFor(30*time.Second, func(rs []correlate.Record) bool { return len(rs) >= n }) {
		t.Fatalf("%d of %d records reached the collecting sink within 30s", len(h.col.snapshot()), n)
	}
	eventually(t, 30*time.Second, "the exporter's Record returned for every record", func() (bool, string) {
		got := counted.returned.Load()
		return got >= n, fmt.Sprintf("%d of %d", got, n)
	})
	eventually(t, 30*time.Second, "the exporter reached the collector", func() (bool, string) {
		return bh.accepted.Load() > 0, "no connection accepted"
	})
	_ = caller.Close()
	_ = server.Close()
	h.stop()

	records := h.col.snapshot()
	events := parseJSONLines(t, h.events.Bytes())
	want := map[string]bool{}
	for _, id := range msgIDs {
		want[id] = true
	}
	for _, rs := range [][]correlate.Record{records, events} {
		got := 0
		for _, r := range rs {
			if want[r.MsgID] && r.Kind == correlate.KindCall && r.Status == correlate.StatusOK {
				got++
			}
		}
		if got != n || len(rs) != n {
			t.Errorf("%d ok call records of %d (%d in all), want %d", got, n, len(rs), n)
		}
	}
	ps := h.p.Stats()
	if ps.RecordsDropped() != 0 || ps.Correlate.QueueDrops != 0 {
		t.Errorf("pipeline dropped records: sink queues %v, correlator queue %d", ps.SinkDrops, ps.Correlate.QueueDrops)
	}
	if got := counted.returned.Load(); got != n {
		t.Errorf("exporter Record returned %d times, want %d", got, n)
	}

	// Shutdown cannot flush into a dead collector; it must still return (bounded by its context) and count.
	serr := x.shutdown(10 * time.Second)
	st := x.exp.Stats()
	t.Logf("exporter after Shutdown (err %v): %+v; collector accepted %d connections", serr, st, bh.accepted.Load())
	if st.RecordsIn != n || st.SpansExported != 0 || st.ExportErrors == 0 || st.SpansDropped == 0 {
		t.Errorf("exporter stats %+v: want %d records in, none exported, failed exports and dropped spans counted",
			st, n)
	}
	// Every record is accounted for: dropped before it became spans, or built into its CLIENT and SERVER spans
	// (both sides were behind the proxy) whose export failed.
	if st.SampledOut != 0 || st.SpansDropped%2 != 0 || st.RecordsDropped+st.SpansDropped/2 != n {
		t.Errorf("exporter stats %+v: %d records dropped + %d spans dropped / 2 != %d records", st, st.RecordsDropped,
			st.SpansDropped, n)
	}
}

// TestJaegerShutdownFlush shows that spans still queued when the exporter is shut down reach a real Jaeger: the
// batch timeout is an hour and the batch larger than the traffic, so Run exports nothing by itself; everything
// Jaeger ends up with was sent by Shutdown's flush.
func TestJaegerShutdownFlush(t *testing.T) {
	brokerAddr := brokertest.Require(t)
	j := jaegertest.Start(t)
	x := startExporter(t, tracing.Config{Endpoint: j.OTLPAddr, Insecure: true, BatchTimeout: time.Hour,
		BatchSize: 4096})
	h := startPipeline(t, brokerAddr, func(c *pipeline.Config) { c.Sinks = append(c.Sinks, x.exp) })

	const n = 25
	id := randHex(4)
	exchange, topic := "amqptrace-e2e-flush-"+id, "flush_"+id
	callerSvc, serverSvc := "e2e-flush-caller-"+id, "e2e-flush-server-"+id
	server := dial(t, brokertest.URLVia(h.addr), serverSvc)
	caller := dial(t, brokertest.URLVia(h.addr), callerSvc)
	startServer(t, server, exchange, topic, osloReply)
	requestID := "req-flush-" + randHex(8)
	osloCalls(t, caller, exchange, topic, "ping", requestID, n)
	if !h.col.waitFor(30*time.Second, func(rs []correlate.Record) bool { return len(rs) >= n }) {
		t.Fatalf("%d of %d records within 30s", len(h.col.snapshot()), n)
	}
	_ = caller.Close()
	_ = server.Close()
	h.stop() // every record has been handed to the exporter

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st := x.exp.Stats()
	if st.RecordsIn != n || st.SpansExported != 0 || st.RecordsDropped != 0 {
		t.Fatalf("before Shutdown: stats %+v, want %d records in, nothing exported yet", st, n)
	}
	services, err := j.Services(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(services, callerSvc) || slices.Contains(services, serverSvc) {
		t.Fatalf("Jaeger has %v before Shutdown: the flush below would prove nothing", services)
	}

	if err := x.shutdown(30 * time.Second); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	st = x.exp.Stats()
	if st.SpansExported != 2*n || st.SpansDropped != 0 || st.RecordsDropped != 0 || st.ExportErrors != 0 {
		t.Fatalf("after Shutdown: stats %+v, want %d spans exported (CLIENT + SERVER per call), none dropped", st, 2*n)
	}

	var tr *jaegertest.Trace
	eventually(t, 20*time.Second, "the flushed spans in Jaeger", func() (bool, string) {
		trs, err := j.Traces(ctx, callerSvc, 0, time.Hour)
		if err != nil || len(trs) == 0 {
			return false, fmt.Sprint(err)
		}
		if ids := traceIDsOf(trs); len(ids) != 1 {
			t.Fatalf("caller in %d traces, want 1 (one request id)", len(ids))
		}
		tr, err = j.Trace(ctx, trs[0].TraceID)
		if err != nil && !errors.Is(err, jaegertest.ErrNotFound) {
			t.Fatalf("query trace: %v", err)
		}
		if err != nil {
			return false, err.Error()
		}
		return len(tr.Spans) >= 2*n, fmt.Sprintf("%d of %d spans", len(tr.Spans), 2*n)
	})
	kinds := map[string]int{}
	for i := range tr.Spans {
		s := &tr.Spans[i]
		kinds[tr.Service(s)+"/"+spanKind(s)]++
		if s.Tag("openstack.request_id") != requestID {
			t.Errorf("span %s: request id %q, want %s", s.SpanID, s.Tag("openstack.request_id"), requestID)
		}
	}
	if len(tr.Spans) != 2*n || kinds[callerSvc+"/client"] != n || kinds[serverSvc+"/server"] != n {
		t.Errorf("trace has %d spans %v, want %d CLIENT in %s and %d SERVER in %s", len(tr.Spans), kinds, n,
			callerSvc, n, serverSvc)
	}
	checkTraceWarnings(t, tr)
	t.Logf("Shutdown flushed %d spans; Jaeger trace %s holds %v", st.SpansExported, tr.TraceID, kinds)
}
