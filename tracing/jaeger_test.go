package tracing

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/amqptrace/amqptrace/correlate"
	"github.com/amqptrace/amqptrace/tracing/jaegertest"
)

// shift moves every timestamp of r by d, so fixtures land inside Jaeger's search window.
func shift(r *correlate.Record, d time.Duration) *correlate.Record {
	for _, p := range []**time.Time{&r.Published, &r.Confirmed, &r.Delivered, &r.Replied, &r.ReplyDelivered, &r.Deadline} {
		if *p != nil {
			t := (*p).Add(d)
			*p = &t
		}
	}
	for i := range r.HeartbeatTimes {
		r.HeartbeatTimes[i] = r.HeartbeatTimes[i].Add(d)
	}
	return r
}

// TestJaegerExport sends one Nova boot request (a cast, a call with a SERVER child and heartbeats, a nested cast,
// a remote exception, a timeout never delivered, a notification) and a fanout of another request through New's
// real OTLP gRPC exporter into a real Jaeger, and reads them back through Jaeger's query API.
func TestJaegerExport(t *testing.T) {
	j := jaegertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	e, err := New(ctx, Config{Endpoint: j.OTLPAddr, BatchTimeout: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stopRun := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- e.Run(runCtx) }()

	// Recent, whole-microsecond times: Jaeger stores microseconds and searches a window around now.
	d := time.Now().Add(-time.Minute).Truncate(time.Second).Sub(t0.Truncate(time.Second))
	recs := bootRequest()
	recs = append(recs, fanoutUpdateAggregates())
	for _, r := range recs {
		e.Record(shift(r, d))
	}
	stopRun()
	if err := <-runErr; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if err := e.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if st := e.Stats(); st.SpansExported != 13 || st.SpansDropped != 0 || st.RecordsDropped != 0 {
		t.Fatalf("stats %+v, want 13 spans exported", st)
	}

	// Services are the OpenStack processes, as Jaeger lists them.
	var services []string
	waitFor(t, "services in Jaeger", func() bool {
		services, err = j.Services(ctx)
		return err == nil && len(services) >= 4
	})
	for _, want := range []string{"nova-api", "nova-conductor", "nova-scheduler", "nova-compute"} {
		if !slices.Contains(services, want) {
			t.Errorf("Jaeger services %v lack %s", services, want)
		}
	}
	if slices.Contains(services, unknownService) || slices.Contains(services, overflowService) {
		t.Errorf("Jaeger services %v include a fallback service", services)
	}

	// One trace per request id.
	wantTrace := traceIDFor(globalReqID).String()
	var tr *jaegertest.Trace
	waitFor(t, "the boot trace", func() bool {
		tr, err = j.Trace(ctx, wantTrace)
		if err != nil && !errors.Is(err, jaegertest.ErrNotFound) {
			t.Fatalf("query trace: %v", err)
		}
		return err == nil && len(tr.Spans) == 10
	})
	computeTraces, err := j.Traces(ctx, "nova-compute", 0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(computeTraces) != 1 || computeTraces[0].TraceID != wantTrace {
		t.Errorf("nova-compute has %d traces, want exactly the boot trace", len(computeTraces))
	}
	conductorTraces, err := j.Traces(ctx, "nova-conductor", 0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(conductorTraces) != 2 {
		t.Errorf("nova-conductor has %d traces, want 2 (the boot request and the fanout's request)", len(conductorTraces))
	}

	find := func(op, kind string) *jaegertest.Span {
		for i := range tr.Spans {
			if tr.Spans[i].OperationName == op && tr.Spans[i].Tag("span.kind") == kind {
				return &tr.Spans[i]
			}
		}
		t.Fatalf("no %s span %q in %d spans", kind, op, len(tr.Spans))
		return nil
	}
	us := func(p *time.Time) int64 { return p.UnixMicro() }

	// The call: CLIENT in the conductor, SERVER child in the scheduler, times as recorded (microseconds).
	sel := recs[1]
	client := find("scheduler/select_destinations", "client")
	server := find("scheduler/select_destinations", "server")
	if tr.Service(client) != "nova-conductor" || tr.Service(server) != "nova-scheduler" {
		t.Errorf("call services %s → %s", tr.Service(client), tr.Service(server))
	}
	if server.ParentID() != client.SpanID {
		t.Errorf("SERVER parent %s, want CLIENT %s", server.ParentID(), client.SpanID)
	}
	if client.StartTime != us(sel.Published) || client.StartTime+client.Duration != us(sel.ReplyDelivered) {
		t.Errorf("CLIENT %d+%d, want %d → %d", client.StartTime, client.Duration, us(sel.Published), us(sel.ReplyDelivered))
	}
	if server.StartTime != us(sel.Delivered) || server.StartTime+server.Duration != us(sel.Replied) {
		t.Errorf("SERVER %d+%d, want %d → %d", server.StartTime, server.Duration, us(sel.Delivered), us(sel.Replied))
	}
	if n := len(server.Logs); n != 2 {
		t.Errorf("SERVER has %d logs, want 2 heartbeats", n)
	}
	p := tr.Processes[server.ProcessID]
	if p.Tag("process.pid") != strconv.Itoa(epScheduler.PID) || p.Tag("host.ip") == "" || p.Tag("host.name") != "" ||
		p.Tag("service.instance.id") != instanceID(epScheduler.Service, epScheduler.Host, epScheduler.PID) ||
		p.Tag("telemetry.distro.name") != "amqptrace" {
		t.Errorf("scheduler process tags %v", p.Tags)
	}
	// The conventions' names, read back as Jaeger stored them (numbers come back as their decimal text).
	for _, tc := range []struct {
		span *jaegertest.Span
		want map[string]string
	}{
		{client, map[string]string{
			"messaging.destination.name": "nova", "messaging.rabbitmq.destination.routing_key": "scheduler",
			"messaging.operation.name": "publish", "messaging.message.id": sel.UniqueID,
			"rpc.response.status_code": "OK", "server.address": "10.0.0.2", "server.port": "5672",
			"network.peer.address": epConductor.Host, "network.peer.port": strconv.Itoa(epConductor.Port)}},
		{server, map[string]string{
			"messaging.destination.name": "nova", "messaging.operation.name": "consume",
			"messaging.destination.subscription.name": sel.Queue,
			"network.peer.address":                    epScheduler.Host, "network.peer.port": strconv.Itoa(epScheduler.Port)}},
	} {
		for k, w := range tc.want {
			if got := tc.span.Tag(k); got != w {
				t.Errorf("%s span: %s = %q, want %q", tc.span.Tag("span.kind"), k, got, w)
			}
		}
	}
	if client.Tag("rpc.system.name") != "oslo_messaging" || client.Tag("openstack.request_id") != reqID {
		t.Errorf("client tags %v", client.Tags)
	}

	// Nesting: the call was made while the conductor handled the build_instances cast.
	consume := find("consume conductor/compute_task.build_instances", "consumer")
	if client.ParentID() != consume.SpanID || tr.Service(consume) != "nova-conductor" {
		t.Errorf("CLIENT parent %s, want the conductor's CONSUMER %s", client.ParentID(), consume.SpanID)
	}

	// Errors are flagged.
	for _, tc := range []struct{ op, kind, etype string }{
		{"conductor/object_action", "client", "nova.exception.InstanceNotFound"},
		{"conductor/object_action", "server", "nova.exception.InstanceNotFound"},
		{"compute/get_console_output", "client", "timeout"},
	} {
		s := find(tc.op, tc.kind)
		if s.Tag("error") != "true" || s.Tag("otel.status_code") != "ERROR" || s.Tag("error.type") != tc.etype {
			t.Errorf("%s %s: error=%q status=%q error.type=%q", tc.kind, tc.op, s.Tag("error"), s.Tag("otel.status_code"), s.Tag("error.type"))
		}
	}
	if s := find("scheduler/select_destinations", "client"); s.Tag("error") == "true" {
		t.Error("ok call flagged as error")
	}
	timeout := find("compute/get_console_output", "client")
	if timeout.StartTime+timeout.Duration != us(recs[4].Deadline) || timeout.Tag("openstack.ever_delivered") != "false" {
		t.Errorf("timeout span ends %d (want %d), ever_delivered=%q", timeout.StartTime+timeout.Duration,
			us(recs[4].Deadline), timeout.Tag("openstack.ever_delivered"))
	}
	// Jaeger's warnings would reveal a dangling parent or a malformed span. Two are expected and benign: an
	// instant span (a cast's delivery, seen as one timestamp) is "sanitized" by 1ns, and a consumer that starts
	// after its producer ended is reported, not moved, because skew adjustment is off (one clock: the proxy's).
	for _, s := range tr.Spans {
		for _, w := range s.Warnings {
			benign := (strings.HasPrefix(w, "Negative duration detected") && s.Duration == 0) ||
				strings.HasPrefix(w, "clock skew adjustment disabled")
			if !benign {
				t.Errorf("Jaeger warns about %s %q: %s", s.Tag("span.kind"), s.OperationName, w)
			}
		}
	}
}
