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
	"github.com/amqptrace/amqptrace/tracing"
	"github.com/amqptrace/amqptrace/tracing/jaegertest"
)

// TestJaegerTwoProxiesJoin puts two pipelines (two proxies, each with its own exporter and nothing shared) in
// front of one broker: an oslo-shaped caller (amqp091-go) through proxy A, its server through proxy B. Proxy A
// sees only the caller's side of the call, proxy B only the server's; because span and trace ids are derived from
// the request and message ids, their spans must join in Jaeger into one trace: the CLIENT span from A, the SERVER
// span from B, the SERVER's parent the CLIENT.
func TestJaegerTwoProxiesJoin(t *testing.T) {
	brokerAddr := brokertest.Require(t)
	j := jaegertest.Start(t)
	cfg := tracing.Config{Endpoint: j.OTLPAddr, Insecure: true, BatchTimeout: 50 * time.Millisecond}
	xa, xb := startExporter(t, cfg), startExporter(t, cfg)
	ha, hb := startPipeline(t, brokerAddr, exportTo(xa)), startPipeline(t, brokerAddr, exportTo(xb))

	id := randHex(4)
	callerSvc, serverSvc := "e2e-join-caller-"+id, "e2e-join-server-"+id
	exchange, topic := "amqptrace-e2e-join-"+id, "join_"+id
	requestID := "req-join-" + randHex(8)
	server := dial(t, brokertest.URLVia(hb.addr), serverSvc)
	caller := dial(t, brokertest.URLVia(ha.addr), callerSvc)
	startServer(t, server, exchange, topic, osloReply)
	msgID, uniqueID := osloCall(t, caller, exchange, topic, "ping", requestID)

	has := func(rs []correlate.Record) bool {
		return slices.ContainsFunc(rs, func(r correlate.Record) bool { return r.MsgID == msgID })
	}
	if !ha.col.waitFor(20*time.Second, has) || !hb.col.waitFor(20*time.Second, has) {
		t.Fatalf("records for %s: proxy A %d, proxy B %d; want one each within 20s", msgID, len(ha.col.snapshot()),
			len(hb.col.snapshot()))
	}
	_ = caller.Close()
	_ = server.Close()
	ha.stop()
	hb.stop()
	for name, x := range map[string]*traceExport{"A": xa, "B": xb} {
		if err := x.shutdown(20 * time.Second); err != nil {
			t.Fatalf("exporter %s Shutdown: %v", name, err)
		}
		if st := x.exp.Stats(); st.SpansExported == 0 || st.SpansDropped != 0 || st.RecordsDropped != 0 {
			t.Errorf("exporter %s stats %+v: want spans exported, none dropped", name, st)
		}
	}

	// Each side alone, as the records say: A saw the caller and not the server, B the reverse.
	ra, rb := ha.col.snapshot()[0], hb.col.snapshot()[0]
	if ra.Caller == nil || ra.Caller.Service != callerSvc || ra.Callee != nil ||
		rb.Callee == nil || rb.Callee.Service != serverSvc || rb.Caller != nil {
		t.Fatalf("proxy A record caller %+v callee %+v, proxy B record caller %+v callee %+v: want one side each",
			ra.Caller, ra.Callee, rb.Caller, rb.Callee)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var traceID string
	eventually(t, 20*time.Second, "the caller's trace", func() (bool, string) {
		trs, err := j.Traces(ctx, callerSvc, 0, time.Hour)
		if err != nil || len(trs) == 0 {
			return false, fmt.Sprint(err)
		}
		if ids := traceIDsOf(trs); len(ids) != 1 {
			t.Fatalf("caller in %d traces %v, want 1", len(ids), ids)
		}
		traceID = trs[0].TraceID
		return true, ""
	})
	var tr *jaegertest.Trace
	eventually(t, 20*time.Second, "the server's span in the caller's trace", func() (bool, string) {
		var err error
		tr, err = j.Trace(ctx, traceID)
		if err != nil && !errors.Is(err, jaegertest.ErrNotFound) {
			t.Fatalf("query trace: %v", err)
		}
		if err != nil {
			return false, err.Error()
		}
		for i := range tr.Spans {
			if tr.Service(&tr.Spans[i]) == serverSvc {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d spans, none from %s", len(tr.Spans), serverSvc)
	})
	srvTraces, err := j.Traces(ctx, serverSvc, 0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if ids := traceIDsOf(srvTraces); len(ids) != 1 || ids[0] != traceID {
		t.Errorf("server in traces %v, want only the caller's %s", ids, traceID)
	}

	var client, srv []*jaegertest.Span
	for i := range tr.Spans {
		s := &tr.Spans[i]
		t.Logf("span %s %s %q service %s parent %q", s.SpanID, spanKind(s), s.OperationName, tr.Service(s),
			s.ParentID())
		if s.Tag("openstack.msg_id") != msgID || s.Tag("messaging.message.id") != uniqueID ||
			s.Tag("openstack.request_id") != requestID {
			t.Errorf("span %s: msg_id %q unique_id %q request_id %q, want %s/%s/%s", s.SpanID,
				s.Tag("openstack.msg_id"), s.Tag("messaging.message.id"), s.Tag("openstack.request_id"), msgID,
				uniqueID, requestID)
		}
		switch spanKind(s) {
		case "client":
			client = append(client, s)
		case "server":
			srv = append(srv, s)
		}
	}
	checkTraceWarnings(t, tr)
	if len(tr.Spans) != 2 || len(client) != 1 || len(srv) != 1 {
		t.Fatalf("trace has %d spans (%d CLIENT, %d SERVER), want exactly one CLIENT (proxy A) and one SERVER "+
			"(proxy B)", len(tr.Spans), len(client), len(srv))
	}
	c, s := client[0], srv[0]
	if tr.Service(c) != callerSvc || tr.Service(s) != serverSvc {
		t.Errorf("CLIENT in %s, SERVER in %s: want %s and %s", tr.Service(c), tr.Service(s), callerSvc, serverSvc)
	}
	if s.ParentID() != c.SpanID || c.ParentID() != "" {
		t.Errorf("SERVER parent %q, CLIENT parent %q: want %s and none", s.ParentID(), c.ParentID(), c.SpanID)
	}
	if c.Tag("rpc.system.name") != "oslo_messaging" || c.Tag("rpc.method") != topic+"/ping" ||
		s.Tag("rpc.method") != topic+"/ping" {
		t.Errorf("rpc tags: client %s %s, server %s", c.Tag("rpc.system.name"), c.Tag("rpc.method"), s.Tag("rpc.method"))
	}
	// Times: each proxy stamped what it saw; A's CLIENT spans publish → reply delivered, B's SERVER delivery →
	// reply publish.
	checkTimes(t, "CLIENT (proxy A)", c, ra.Published, ra.ReplyDelivered)
	checkTimes(t, "SERVER (proxy B)", s, rb.Delivered, rb.Replied)
}
