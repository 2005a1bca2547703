package e2e

import (
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/amqptrace/amqptrace/correlate"
	"github.com/amqptrace/amqptrace/internal/brokertest"
	"github.com/amqptrace/amqptrace/internal/pipeline"
)

// TestPartialVisibility makes oslo-shaped calls with amqp091-go where the pipeline sees only one side:
//
//   - caller via pipeline 1, server direct: a client-side record (published, reply delivered, no callee);
//   - caller direct, server via pipeline 1: a server-side record (delivered, replied, no caller);
//   - caller via pipeline 1, server via pipeline 2: each pipeline has its side, with the same ids.
func TestPartialVisibility(t *testing.T) {
	brokerAddr := brokertest.Require(t)
	// Short deadlines and grace bound how long a one-sided record can wait to become final.
	tune := func(c *pipeline.Config) { c.Correlate.Grace = time.Second }
	h1 := startPipeline(t, brokerAddr, tune)
	h2 := startPipeline(t, brokerAddr, tune)
	direct := brokertest.URL()
	via1, via2 := brokertest.URLVia(h1.addr), brokertest.URLVia(h2.addr)
	id := randHex(4)
	exchange := "amqptrace-e2e-partial-" + id
	requestID := "req-partial-" + randHex(8)

	type side struct{ caller, server string }
	cases := []struct {
		name  string
		topic string
		urls  side
	}{
		{"caller-only", "partial_a_" + id, side{via1, direct}},
		{"server-only", "partial_b_" + id, side{direct, via1}},
		{"two-pipelines", "partial_c_" + id, side{via1, via2}},
	}
	msgIDs := map[string]string{}
	uniqueIDs := map[string]string{}
	var conns []*amqp.Connection
	for _, c := range cases {
		server, caller := dial(t, c.urls.server, "e2e-server-"+c.name), dial(t, c.urls.caller, "e2e-caller-"+c.name)
		conns = append(conns, server, caller)
		startServer(t, server, exchange, c.topic, osloReply)
		msgIDs[c.name], uniqueIDs[c.name] = osloCall(t, caller, exchange, c.topic, "ping", requestID)
	}

	has := func(id string) func([]correlate.Record) bool {
		return func(rs []correlate.Record) bool {
			for _, r := range rs {
				if r.MsgID == id {
					return true
				}
			}
			return false
		}
	}
	// Pipeline 1 sees a side of all three calls, pipeline 2 one.
	for _, name := range []string{"caller-only", "server-only", "two-pipelines"} {
		if !h1.col.waitFor(20*time.Second, has(msgIDs[name])) {
			t.Errorf("pipeline 1: no record for %s within 20s", name)
		}
	}
	if !h2.col.waitFor(20*time.Second, has(msgIDs["two-pipelines"])) {
		t.Errorf("pipeline 2: no record for two-pipelines within 20s")
	}
	// Clients leave before the pipelines stop, so the stops do not wait out the shutdown grace.
	for _, c := range conns {
		_ = c.Close()
	}
	h1.stop()
	h2.stop()

	find := func(h *harness, name string) *correlate.Record {
		var found *correlate.Record
		for _, r := range h.col.snapshot() {
			if r.MsgID == msgIDs[name] {
				if found != nil {
					t.Errorf("%s: more than one record", name)
				}
				found = &r
			}
		}
		if found == nil {
			t.Fatalf("%s: no record", name)
		}
		if found.UniqueID != uniqueIDs[name] || found.RequestID != requestID || found.Method != "ping" ||
			found.Kind != correlate.KindCall || found.Protocol != "oslo" || !orderedTimes(found) {
			t.Errorf("%s: record %+v: want call ping, unique_id %s, request_id %s, ordered times", name, found,
				uniqueIDs[name], requestID)
		}
		return found
	}
	callerSide := func(name string, r *correlate.Record) {
		if r.Status != correlate.StatusOK || r.Published == nil || r.ReplyDelivered == nil || r.Caller == nil ||
			r.Caller.Service != "e2e-caller-"+name {
			t.Errorf("%s caller side: status %s published %v reply_delivered %v caller %+v", name, r.Status,
				r.Published, r.ReplyDelivered, r.Caller)
		}
		if r.Delivered != nil || r.Replied != nil || r.Callee != nil {
			t.Errorf("%s caller side: saw the server (delivered %v replied %v callee %+v) through a pipeline it "+
				"does not cross", name, r.Delivered, r.Replied, r.Callee)
		}
	}
	serverSide := func(name string, r *correlate.Record) {
		if r.Delivered == nil || r.Replied == nil || r.Callee == nil || r.Callee.Service != "e2e-server-"+name {
			t.Errorf("%s server side: delivered %v replied %v callee %+v", name, r.Delivered, r.Replied, r.Callee)
		}
		if r.Published != nil || r.ReplyDelivered != nil || r.Caller != nil {
			t.Errorf("%s server side: saw the caller (published %v reply_delivered %v caller %+v) through a "+
				"pipeline it does not cross", name, r.Published, r.ReplyDelivered, r.Caller)
		}
		if r.Status == correlate.StatusError || r.Status == correlate.StatusUnroutable {
			t.Errorf("%s server side: status %s for a successful reply", name, r.Status)
		}
	}

	callerSide("caller-only", find(h1, "caller-only"))
	serverSide("server-only", find(h1, "server-only"))
	r1, r2 := find(h1, "two-pipelines"), find(h2, "two-pipelines")
	callerSide("two-pipelines", r1)
	serverSide("two-pipelines", r2)
	if r1.MsgID != r2.MsgID || r1.UniqueID != r2.UniqueID || r1.RequestID != r2.RequestID {
		t.Errorf("two pipelines disagree on ids: %s/%s/%s vs %s/%s/%s", r1.MsgID, r1.UniqueID, r1.RequestID,
			r2.MsgID, r2.UniqueID, r2.RequestID)
	}
	if n1, n2 := len(h1.col.snapshot()), len(h2.col.snapshot()); n1 != 3 || n2 != 1 {
		t.Errorf("pipeline 1 has %d records (want 3), pipeline 2 has %d (want 1)", n1, n2)
	}
	for _, name := range []string{"caller-only", "server-only", "two-pipelines"} {
		r := find(h1, name)
		t.Logf("pipeline 1 %s: status %s, caller %v, callee %v", name, r.Status, r.Caller != nil, r.Callee != nil)
	}
	for i, h := range []*harness{h1, h2} {
		st := h.p.Stats().Correlate
		t.Logf("pipeline %d: %d records, unmatched replies %d, unmatched deliveries %d, expired %d", i+1,
			st.RecordsOut, st.UnmatchedReplies, st.UnmatchedDeliveries, st.Expired)
	}
	t.Logf("pipeline 2 two-pipelines: status %s, same msg_id/unique_id/request_id as pipeline 1: %v", r2.Status,
		r1.MsgID == r2.MsgID && r1.UniqueID == r2.UniqueID && r1.RequestID == r2.RequestID)
}
