package tracing

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amqptrace/amqptrace/correlate"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/resource"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// exportAll runs records through a fresh Exporter (Record, then Shutdown's flush) into an in-memory exporter and
// returns the spans, so the tests cover the same path production uses.
func exportAll(t *testing.T, cfg Config, recs ...*correlate.Record) (tracetest.SpanStubs, *Exporter) {
	t.Helper()
	mem := newMemExporter()
	e := NewWithExporter(cfg, mem)
	for _, r := range recs {
		e.Record(r)
	}
	if err := e.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	return mem.GetSpans(), e
}

// memExporter keeps its spans across Shutdown (tracetest.InMemoryExporter clears them there) and counts
// Shutdown calls.
type memExporter struct {
	*tracetest.InMemoryExporter
	shutdowns atomic.Int32
}

func newMemExporter() *memExporter {
	return &memExporter{InMemoryExporter: tracetest.NewInMemoryExporter()}
}

func (m *memExporter) Shutdown(context.Context) error {
	m.shutdowns.Add(1)
	return nil
}

func attrMap(kvs []attribute.KeyValue) map[attribute.Key]attribute.Value {
	m := make(map[attribute.Key]attribute.Value, len(kvs))
	for _, kv := range kvs {
		m[kv.Key] = kv.Value
	}
	return m
}

func resAttr(r *resource.Resource, k attribute.Key) string {
	v, _ := r.Set().Value(k)
	return v.String()
}

func wantAttrs(t *testing.T, s tracetest.SpanStub, want map[string]any) {
	t.Helper()
	got := attrMap(s.Attributes)
	for k, w := range want {
		v, ok := got[attribute.Key(k)]
		if !ok {
			t.Errorf("%s %q: attribute %s missing", s.SpanKind, s.Name, k)
			continue
		}
		if fmt.Sprint(v.AsInterface()) != fmt.Sprint(w) {
			t.Errorf("%s %q: %s = %v, want %v", s.SpanKind, s.Name, k, v.AsInterface(), w)
		}
	}
}

func byKind(spans tracetest.SpanStubs, k trace.SpanKind) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range spans {
		if s.SpanKind == k {
			out = append(out, s)
		}
	}
	return out
}

func hasEvent(s tracetest.SpanStub, name string) (int, bool) {
	n := 0
	for _, e := range s.Events {
		if e.Name == name {
			n++
		}
	}
	return n, n > 0
}

func TestCallSpans(t *testing.T) {
	r := callSelectDestinations()
	spans, _ := exportAll(t, Config{}, r)
	if len(spans) != 2 {
		t.Fatalf("got %d spans, want CLIENT + SERVER", len(spans))
	}
	cl, sv := byKind(spans, trace.SpanKindClient), byKind(spans, trace.SpanKindServer)
	if len(cl) != 1 || len(sv) != 1 {
		t.Fatalf("kinds: %d client, %d server", len(cl), len(sv))
	}
	c, s := cl[0], sv[0]

	if c.Name != "scheduler/select_destinations" || s.Name != c.Name {
		t.Errorf("names %q / %q", c.Name, s.Name)
	}
	if !c.StartTime.Equal(*r.Published) || !c.EndTime.Equal(*r.ReplyDelivered) {
		t.Errorf("client %v → %v, want published → reply delivered", c.StartTime, c.EndTime)
	}
	if !s.StartTime.Equal(*r.Delivered) || !s.EndTime.Equal(*r.Replied) {
		t.Errorf("server %v → %v, want delivered → replied", s.StartTime, s.EndTime)
	}
	if s.Parent.SpanID() != c.SpanContext.SpanID() || s.SpanContext.TraceID() != c.SpanContext.TraceID() {
		t.Errorf("server parent %v, want client %v", s.Parent.SpanID(), c.SpanContext.SpanID())
	}
	if c.Status.Code != codes.Unset || s.Status.Code != codes.Unset {
		t.Errorf("ok call has status %v / %v", c.Status, s.Status)
	}

	common := map[string]any{
		"rpc.system.name":          "oslo_messaging",
		"rpc.method":               "scheduler/select_destinations",
		"rpc.response.status_code": "OK",
		"messaging.system":         "rabbitmq",
		"messaging.rabbitmq.destination.routing_key": "scheduler",
		"messaging.message.id":                       r.UniqueID,
		"messaging.message.conversation_id":          r.MsgID,
		"openstack.request_id":                       reqID,
		"openstack.global_request_id":                globalReqID,
		"openstack.topic":                            "scheduler",
		"openstack.version":                          "4.5",
		"openstack.queue_wait_us":                    380,
		"openstack.server_time_us":                   3600,
		"openstack.heartbeats":                       2,
		"openstack.timeout_ms":                       60000,
	}
	wantAttrs(t, c, common)
	wantAttrs(t, s, common)
	wantAttrs(t, c, map[string]any{
		"messaging.operation.type":    "send",
		"messaging.operation.name":    "publish",
		"messaging.destination.name":  "nova",
		"messaging.message.body.size": 912,
		"server.address":              "10.0.0.2",
		"server.port":                 5672,
		"network.peer.address":        epConductor.Host,
		"network.peer.port":           epConductor.Port,
	})
	wantAttrs(t, s, map[string]any{
		"messaging.operation.type":                "process",
		"messaging.operation.name":                "consume",
		"messaging.destination.name":              "nova",
		"messaging.destination.subscription.name": r.Queue,
		"server.address":                          "10.0.0.2",
		"network.peer.address":                    epScheduler.Host,
		"network.peer.port":                       epScheduler.Port,
	})
	if _, ok := attrMap(c.Attributes)["openstack.namespace"]; ok {
		t.Error("namespace attribute set for a record without namespace")
	}

	// Resources: the caller owns CLIENT, the callee owns SERVER.
	for _, tc := range []struct {
		span tracetest.SpanStub
		ep   correlate.Endpoint
	}{{c, epConductor}, {s, epScheduler}} {
		if got := resAttr(tc.span.Resource, "service.name"); got != tc.ep.Service {
			t.Errorf("%s service.name %q, want %q", tc.span.SpanKind, got, tc.ep.Service)
		}
		// The endpoints' hosts are IPs: they belong in host.ip, and host.name stays unset rather than lie.
		if got := resAttr(tc.span.Resource, "host.ip"); got != fmt.Sprintf("[%q]", tc.ep.Host) {
			t.Errorf("%s host.ip %s, want [%q]", tc.span.SpanKind, got, tc.ep.Host)
		}
		if _, ok := tc.span.Resource.Set().Value("host.name"); ok {
			t.Errorf("%s host.name set from an IP", tc.span.SpanKind)
		}
		if got, want := resAttr(tc.span.Resource, "service.instance.id"), instanceID(tc.ep.Service, tc.ep.Host, tc.ep.PID); got != want || len(got) != 36 {
			t.Errorf("%s service.instance.id %q, want %q", tc.span.SpanKind, got, want)
		}
		if got := resAttr(tc.span.Resource, "process.pid"); got != fmt.Sprint(tc.ep.PID) {
			t.Errorf("%s process.pid %q, want %d", tc.span.SpanKind, got, tc.ep.PID)
		}
		if got := resAttr(tc.span.Resource, "telemetry.distro.name"); got != "amqptrace" {
			t.Errorf("%s telemetry.distro.name %q", tc.span.SpanKind, got)
		}
	}

	// Heartbeats are SERVER events at the heartbeat times; the publisher confirm is a CLIENT event.
	if n, _ := hasEvent(s, "heartbeat"); n != 2 {
		t.Errorf("server has %d heartbeat events, want 2", n)
	}
	if _, ok := hasEvent(c, "publisher_confirm"); !ok {
		t.Error("client lacks publisher_confirm event")
	}
	for _, ev := range s.Events {
		if ev.Name == "heartbeat" && !ev.Time.Equal(r.HeartbeatTimes[0]) && !ev.Time.Equal(r.HeartbeatTimes[1]) {
			t.Errorf("heartbeat at %v, not a recorded time", ev.Time)
		}
	}
}

func TestCallRemoteError(t *testing.T) {
	r := callObjectActionError()
	spans, _ := exportAll(t, Config{}, r)
	if len(spans) != 2 {
		t.Fatalf("got %d spans", len(spans))
	}
	for _, s := range spans {
		if s.Status.Code != codes.Error {
			t.Errorf("%s status %v, want Error", s.SpanKind, s.Status)
		}
		if !strings.Contains(s.Status.Description, "InstanceNotFound") {
			t.Errorf("%s status description %q", s.SpanKind, s.Status.Description)
		}
		wantAttrs(t, s, map[string]any{
			"error.type":               "nova.exception.InstanceNotFound",
			"rpc.response.status_code": "ERROR",
		})
		found := false
		for _, ev := range s.Events {
			if ev.Name != "exception" {
				continue
			}
			found = true
			m := attrMap(ev.Attributes)
			if m["exception.type"].AsString() != "nova.exception.InstanceNotFound" ||
				m["exception.message"].AsString() != r.Error.Message {
				t.Errorf("%s exception event attrs %v", s.SpanKind, ev.Attributes)
			}
		}
		if !found {
			t.Errorf("%s has no exception event", s.SpanKind)
		}
	}
}

func TestCallTimeoutNeverDelivered(t *testing.T) {
	r := callTimeoutNeverDelivered()
	spans, _ := exportAll(t, Config{}, r)
	if len(spans) != 1 || spans[0].SpanKind != trace.SpanKindClient {
		t.Fatalf("got %d spans (%v), want one CLIENT: there is no server", len(spans), spans)
	}
	c := spans[0]
	if c.Status.Code != codes.Error || !strings.Contains(c.Status.Description, "never delivered") {
		t.Errorf("status %v", c.Status)
	}
	if !c.EndTime.Equal(*r.Deadline) {
		t.Errorf("timeout span ends %v, want the deadline %v", c.EndTime, *r.Deadline)
	}
	wantAttrs(t, c, map[string]any{"error.type": "timeout", "openstack.ever_delivered": false, "rpc.response.status_code": "TIMEOUT"})
	if _, ok := hasEvent(c, "timeout"); !ok {
		t.Error("no timeout event")
	}
}

func TestCallTimeoutLateReply(t *testing.T) {
	r := callSelectDestinations()
	r.Status = correlate.StatusTimeout
	r.TimeoutMS = 2
	r.Deadline = at(2000 + 2000)
	r.LateReply = true
	r.EverDelivered = bp(true)
	spans, _ := exportAll(t, Config{}, r)
	cl := byKind(spans, trace.SpanKindClient)
	if len(cl) != 1 || len(byKind(spans, trace.SpanKindServer)) != 1 {
		t.Fatalf("spans %v", spans)
	}
	c := cl[0]
	if !c.EndTime.Equal(*r.Deadline) {
		t.Errorf("client ends %v, want deadline %v (the caller gave up)", c.EndTime, *r.Deadline)
	}
	if !strings.Contains(c.Status.Description, "late") {
		t.Errorf("status %q does not say the reply was late", c.Status.Description)
	}
	found := false
	for _, ev := range c.Events {
		if ev.Name == "late_reply" {
			found = ev.Time.Equal(*r.ReplyDelivered)
		}
	}
	if !found {
		t.Error("no late_reply event at the reply delivery time")
	}
}

func TestUnroutableCast(t *testing.T) {
	r := castBuildAndRun()
	r.Status = correlate.StatusUnroutable
	r.Delivered, r.Callee, r.Callees, r.Deliveries = nil, nil, nil, 0
	r.ReturnCode, r.ReturnText = 312, "NO_ROUTE"
	r.EverDelivered = bp(false)
	spans, _ := exportAll(t, Config{}, r)
	if len(spans) != 1 || spans[0].SpanKind != trace.SpanKindProducer {
		t.Fatalf("spans %v, want one PRODUCER", spans)
	}
	p := spans[0]
	if p.Status.Code != codes.Error || !strings.Contains(p.Status.Description, "never delivered") ||
		!strings.Contains(p.Status.Description, "312") {
		t.Errorf("status %v", p.Status)
	}
	wantAttrs(t, p, map[string]any{"error.type": "unroutable", "openstack.return_code": 312})
}

func TestCastAndFanout(t *testing.T) {
	r := castBuildAndRun()
	spans, _ := exportAll(t, Config{}, r)
	pr, co := byKind(spans, trace.SpanKindProducer), byKind(spans, trace.SpanKindConsumer)
	if len(pr) != 1 || len(co) != 1 {
		t.Fatalf("cast: %d producer, %d consumer", len(pr), len(co))
	}
	if pr[0].Name != "publish compute/build_and_run_instance" || co[0].Name != "consume compute/build_and_run_instance" {
		t.Errorf("names %q / %q", pr[0].Name, co[0].Name)
	}
	if co[0].Parent.SpanID() != pr[0].SpanContext.SpanID() {
		t.Error("consumer is not the producer's child")
	}
	if !pr[0].StartTime.Equal(*r.Published) || !pr[0].EndTime.Equal(*r.Confirmed) || !co[0].StartTime.Equal(*r.Delivered) {
		t.Errorf("times: producer %v→%v consumer %v", pr[0].StartTime, pr[0].EndTime, co[0].StartTime)
	}
	wantAttrs(t, pr[0], map[string]any{"messaging.destination.name": "nova", "openstack.server": "host1",
		"messaging.rabbitmq.destination.routing_key": "compute.host1"})
	wantAttrs(t, co[0], map[string]any{"messaging.destination.name": "nova"})
	if resAttr(co[0].Resource, "service.name") != "nova-compute" || resAttr(pr[0].Resource, "service.name") != "nova-conductor" {
		t.Error("cast resources are not caller/callee")
	}

	f := fanoutUpdateAggregates()
	spans, e := exportAll(t, Config{}, f)
	pr, co = byKind(spans, trace.SpanKindProducer), byKind(spans, trace.SpanKindConsumer)
	if len(pr) != 1 || len(co) != 2 {
		t.Fatalf("fanout: %d producer, %d consumers", len(pr), len(co))
	}
	pids := map[string]bool{}
	for _, c := range co {
		if c.Parent.SpanID() != pr[0].SpanContext.SpanID() {
			t.Error("fanout consumer is not the producer's child")
		}
		pids[resAttr(c.Resource, "process.pid")] = true
		wantAttrs(t, c, map[string]any{"messaging.destination.name": "scheduler_fanout"})
	}
	if !pids["5151"] || !pids["5252"] {
		t.Errorf("consumer resources %v, want both schedulers", pids)
	}
	if co[0].SpanContext.SpanID() == co[1].SpanContext.SpanID() {
		t.Error("two consumers share a span id")
	}
	if e.Stats().Services != 3 {
		t.Errorf("Services = %d, want 3 (conductor, two schedulers)", e.Stats().Services)
	}
}

func TestNotification(t *testing.T) {
	r := notificationCreateStart()
	spans, _ := exportAll(t, Config{}, r)
	if len(spans) != 1 || spans[0].SpanKind != trace.SpanKindProducer {
		t.Fatalf("spans %v", spans)
	}
	p := spans[0]
	if p.Name != "publish instance.create.start" {
		t.Errorf("name %q", p.Name)
	}
	if _, ok := attrMap(p.Attributes)["rpc.system.name"]; ok {
		t.Error("a notification is not an RPC")
	}
	wantAttrs(t, p, map[string]any{
		"messaging.destination.name": "nova",
		"messaging.message.id":       r.UniqueID,
		"openstack.event_type":       "instance.create.start",
		"openstack.publisher_id":     "nova-compute:host1",
		"openstack.priority":         "INFO",
	})

	r.Callees = []correlate.Endpoint{{Service: "ceilometer-agent-notification", PID: 7, Host: "10.0.0.9"}}
	r.Delivered = at(11500)
	spans, _ = exportAll(t, Config{}, r)
	if co := byKind(spans, trace.SpanKindConsumer); len(co) != 1 ||
		resAttr(co[0].Resource, "service.name") != "ceilometer-agent-notification" {
		t.Errorf("delivered notification: consumers %v", co)
	}
}

// A CONSUMER span runs from the delivery to the consumer's answer, one per delivery; one without an answer seen
// is the delivery instant and says so.
func TestConsumerSpanEndsAtTheAnswer(t *testing.T) {
	f := fanoutUpdateAggregates()
	if len(f.Callees) != 2 {
		t.Fatalf("fixture has %d callees, want 2", len(f.Callees))
	}
	f.Acks = []correlate.Ack{{Callee: 1, Delivered: *at(10_040), At: *at(10_290), Outcome: correlate.AckRequeued}}
	spans, _ := exportAll(t, Config{}, f)
	co := byKind(spans, trace.SpanKindConsumer)
	if len(co) != 2 {
		t.Fatalf("%d consumers, want 2", len(co))
	}
	for _, c := range co {
		switch attrMap(c.Attributes)["openstack.consumer_index"].AsInt64() {
		case 0:
			if !c.StartTime.Equal(*f.Delivered) || !c.EndTime.Equal(c.StartTime) {
				t.Errorf("unanswered consumer %v→%v, want the delivery instant", c.StartTime, c.EndTime)
			}
			wantAttrs(t, c, map[string]any{"openstack.ack": "none"})
		case 1:
			if !c.StartTime.Equal(*at(10_040)) || c.EndTime.Sub(c.StartTime) != 250*time.Microsecond {
				t.Errorf("answered consumer %v→%v, want its delivery to its answer (250µs)", c.StartTime, c.EndTime)
			}
			wantAttrs(t, c, map[string]any{"openstack.ack": "requeue"})
		default:
			t.Errorf("consumer without an index: %v", c.Attributes)
		}
	}
}

// TestOneTraceNested: all records of one request share one trace id; children nest under the handling span of
// the RPC named by their ParentID, derived from ParentID and their own caller only.
func TestOneTraceNested(t *testing.T) {
	spans, _ := exportAll(t, Config{}, bootRequest()...)
	if len(spans) != 10 {
		t.Fatalf("got %d spans, want 10", len(spans))
	}
	tid := spans[0].SpanContext.TraceID()
	if TraceIDHex(callSelectDestinations()) != tid.String() {
		t.Errorf("TraceIDHex %s, spans in %s", TraceIDHex(callSelectDestinations()), tid)
	}
	byID := map[trace.SpanID]tracetest.SpanStub{}
	for _, s := range spans {
		if s.SpanContext.TraceID() != tid {
			t.Errorf("%q in trace %v, want %v", s.Name, s.SpanContext.TraceID(), tid)
		}
		if _, dup := byID[s.SpanContext.SpanID()]; dup {
			t.Errorf("duplicate span id %v", s.SpanContext.SpanID())
		}
		byID[s.SpanContext.SpanID()] = s
	}
	parentName := func(name string, kind trace.SpanKind) string {
		for _, s := range spans {
			if s.Name == name && s.SpanKind == kind {
				if !s.Parent.IsValid() {
					return "<root>"
				}
				p, ok := byID[s.Parent.SpanID()]
				if !ok {
					return "<missing>"
				}
				return p.SpanKind.String() + " " + p.Name + " @" + resAttr(p.Resource, "service.name")
			}
		}
		return "<no such span>"
	}
	for _, tc := range []struct {
		name string
		kind trace.SpanKind
		want string
	}{
		{"publish conductor/compute_task.build_instances", trace.SpanKindProducer, "<root>"},
		{"scheduler/select_destinations", trace.SpanKindClient, "consumer consume conductor/compute_task.build_instances @nova-conductor"},
		{"publish compute/build_and_run_instance", trace.SpanKindProducer, "consumer consume conductor/compute_task.build_instances @nova-conductor"},
		{"conductor/object_action", trace.SpanKindClient, "consumer consume compute/build_and_run_instance @nova-compute"},
		{"compute/get_console_output", trace.SpanKindClient, "consumer consume compute/build_and_run_instance @nova-compute"},
		{"conductor/object_action", trace.SpanKindServer, "client conductor/object_action @nova-compute"},
	} {
		if got := parentName(tc.name, tc.kind); got != tc.want {
			t.Errorf("parent of %s %q = %q, want %q", tc.kind, tc.name, got, tc.want)
		}
	}

	// A request of its own is another trace.
	other, _ := exportAll(t, Config{}, fanoutUpdateAggregates())
	if other[0].SpanContext.TraceID() == tid {
		t.Error("a different request id landed in the same trace")
	}
}

// TestIDsDeterministic: two independent exporters (two proxies) given the same records in a different order
// produce the same ids.
func TestIDsDeterministic(t *testing.T) {
	recs := append(bootRequest(), fanoutUpdateAggregates())
	a, _ := exportAll(t, Config{}, recs...)
	rev := make([]*correlate.Record, len(recs))
	for i, r := range recs {
		c := *r
		c.ID = uint64(100 + i) // proxy-local ids differ
		rev[len(recs)-1-i] = &c
	}
	b, _ := exportAll(t, Config{}, rev...)
	key := func(s tracetest.SpanStub) string {
		return s.SpanKind.String() + "|" + s.Name + "|" + resAttr(s.Resource, "process.pid")
	}
	ids := map[string]string{}
	for _, s := range a {
		ids[key(s)] = s.SpanContext.TraceID().String() + "/" + s.SpanContext.SpanID().String() + "/" + s.Parent.SpanID().String()
	}
	if len(ids) != len(a) || len(b) != len(a) {
		t.Fatalf("span sets differ: %d vs %d (%d keys)", len(a), len(b), len(ids))
	}
	for _, s := range b {
		got := s.SpanContext.TraceID().String() + "/" + s.SpanContext.SpanID().String() + "/" + s.Parent.SpanID().String()
		if ids[key(s)] != got {
			t.Errorf("%s: %s vs %s", key(s), ids[key(s)], got)
		}
	}
}

func TestTraceKeyFallbacks(t *testing.T) {
	r := callSelectDestinations()
	withGlobal := traceIDFor(traceKey(r))
	r.GlobalRequestID = ""
	if traceIDFor(traceKey(r)) == withGlobal {
		t.Error("global request id did not decide the trace")
	}
	if traceKey(r) != reqID {
		t.Errorf("trace key %q, want the request id", traceKey(r))
	}
	r.RequestID = ""
	if traceKey(r) != r.MsgID {
		t.Errorf("trace key %q, want the msg id", traceKey(r))
	}
	if !traceIDFor("").IsValid() || !spanIDFor("").IsValid() {
		t.Error("invalid id")
	}
}

// TestNoSecrets: payloads (with a Keystone token and a password) never reach a span.
func TestNoSecrets(t *testing.T) {
	spans, _ := exportAll(t, Config{}, bootRequest()...)
	for _, s := range spans {
		all := fmt.Sprint(s.Attributes, s.Events, s.Status, s.Resource.Attributes())
		for _, secret := range []string{secretToken, "hunter2", "admin_password"} {
			if strings.Contains(all, secret) {
				t.Errorf("%q carries %q", s.Name, secret)
			}
		}
	}
}

func TestAttributeBounds(t *testing.T) {
	r := callObjectActionError()
	r.Error.Message = strings.Repeat("é", 5000)
	r.HeartbeatTimes = make([]time.Time, 1000)
	for i := range r.HeartbeatTimes {
		r.HeartbeatTimes[i] = r.Delivered.Add(time.Duration(i) * time.Millisecond)
	}
	spans, _ := exportAll(t, Config{}, r)
	for _, s := range spans {
		if n, _ := hasEvent(s, "heartbeat"); n > maxHeartbeatEvents {
			t.Errorf("%d heartbeat events", n)
		}
		for _, ev := range s.Events {
			for _, kv := range ev.Attributes {
				if len(kv.Value.String()) > maxAttrLen {
					t.Errorf("event attribute %s is %d bytes", kv.Key, len(kv.Value.String()))
				}
			}
		}
		if len(s.Status.Description) > maxAttrLen || !strings.HasPrefix(s.Status.Description, "InstanceNotFound: é") {
			t.Errorf("description %d bytes", len(s.Status.Description))
		}
	}
}

func TestResourcesBounded(t *testing.T) {
	var recs []*correlate.Record
	for i := range 5 {
		r := notificationCreateStart()
		r.Caller = &correlate.Endpoint{Service: "nova-compute", PID: 100 + i, Host: "10.0.1.1"}
		recs = append(recs, r)
	}
	spans, e := exportAll(t, Config{MaxServices: 2}, recs...)
	over := 0
	for _, s := range spans {
		if resAttr(s.Resource, "service.name") == overflowService {
			over++
		}
	}
	st := e.Stats()
	if st.Services != 2 || st.ServicesSpill != 3 || over != 3 {
		t.Errorf("services %d spill %d overflow spans %d; want 2, 3, 3", st.Services, st.ServicesSpill, over)
	}
}

// TestRecordCopies: the sink must not keep the caller's record; mutating it after Record changes nothing.
func TestRecordCopies(t *testing.T) {
	mem := newMemExporter()
	e := NewWithExporter(Config{}, mem)
	r := callSelectDestinations()
	e.Record(r)
	r.Method = "mutated"
	*r.Published = time.Time{}
	r.Caller.Service = "mutated"
	*r.Version = "mutated"
	if err := e.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, s := range mem.GetSpans() {
		all := fmt.Sprint(s.Name, s.Attributes, s.Resource.Attributes())
		if strings.Contains(all, "mutated") || s.StartTime.IsZero() {
			t.Errorf("span %q saw a mutation after Record returned", s.Name)
		}
	}
}

func TestFanoutBounded(t *testing.T) {
	r := fanoutUpdateAggregates()
	r.Callees = nil
	for i := range maxConsumersPerRecord + 88 {
		r.Callees = append(r.Callees, correlate.Endpoint{Service: "nova-compute", PID: 1, Host: fmt.Sprintf("10.1.%d.%d", i/256, i%256)})
	}
	spans, e := exportAll(t, Config{MaxServices: 10000}, r)
	if n := len(byKind(spans, trace.SpanKindConsumer)); n != maxConsumersPerRecord {
		t.Errorf("%d consumer spans, want %d", n, maxConsumersPerRecord)
	}
	if st := e.Stats(); st.ConsumersTrim != 88 {
		t.Errorf("ConsumersTrim %d, want 88", st.ConsumersTrim)
	}
}

// TestSplitVisibilityJoins models two proxies in front of one cluster: proxy A sees only the caller's side of a call
// (and the publish of a cast), proxy B only the server's side (and the delivery). Together they must draw each span
// exactly once, with the SERVER and CONSUMER spans from B naming A's CLIENT and PRODUCER spans as parents, and no
// caller-less copy under unknown_service.
func TestSplitVisibilityJoins(t *testing.T) {
	full := callSelectDestinations()
	callerSide := *full
	callerSide.Callee, callerSide.Callees, callerSide.Delivered, callerSide.Replied = nil, nil, nil, nil
	callerSide.HeartbeatTimes, callerSide.Heartbeats = nil, 0
	serverSide := *full
	serverSide.Caller, serverSide.Published, serverSide.Confirmed, serverSide.ReplyDelivered = nil, nil, nil, nil

	cast := castBuildAndRun()
	castPub := *cast
	castPub.Callee, castPub.Callees, castPub.Delivered = nil, nil, nil
	castDel := *cast
	castDel.Caller, castDel.Published, castDel.Confirmed = nil, nil, nil

	a, _ := exportAll(t, Config{}, &callerSide, &castPub)
	b, _ := exportAll(t, Config{}, &serverSide, &castDel)
	ids := map[trace.SpanID]trace.SpanKind{}
	for _, s := range append(append(tracetest.SpanStubs{}, a...), b...) {
		if svc := resAttr(s.Resource, "service.name"); svc == "" || svc == "unknown_service" {
			t.Errorf("%v span %q drawn under service %q", s.SpanKind, s.Name, svc)
		}
		if prev, dup := ids[s.SpanContext.SpanID()]; dup {
			t.Errorf("span id %s drawn twice (%v and %v)", s.SpanContext.SpanID(), prev, s.SpanKind)
		}
		ids[s.SpanContext.SpanID()] = s.SpanKind
	}
	kinds := func(ss tracetest.SpanStubs) map[trace.SpanKind]int {
		m := map[trace.SpanKind]int{}
		for _, s := range ss {
			m[s.SpanKind]++
		}
		return m
	}
	if ka := kinds(a); ka[trace.SpanKindClient] != 1 || ka[trace.SpanKindProducer] != 1 || len(ka) != 2 {
		t.Errorf("caller-side proxy drew %v, want one CLIENT and one PRODUCER", ka)
	}
	if kb := kinds(b); kb[trace.SpanKindServer] != 1 || kb[trace.SpanKindConsumer] != 1 || len(kb) != 2 {
		t.Errorf("server-side proxy drew %v, want one SERVER and one CONSUMER", kb)
	}
	for _, s := range b {
		want := trace.SpanKindClient
		if s.SpanKind == trace.SpanKindConsumer {
			want = trace.SpanKindProducer
		}
		if got, ok := ids[s.Parent.SpanID()]; !ok || got != want {
			t.Errorf("%v span's parent %s is %v in the other proxy's spans, want %v", s.SpanKind, s.Parent.SpanID(), got, want)
		}
	}
}

// A reply after its call's record (a follow-up, Record.Amends) is a span of its own under the call's CLIENT span,
// which was exported as a timeout before the reply came.
func TestFollowUpIsASpanUnderTheTimedOutCall(t *testing.T) {
	call := callSelectDestinations()
	call.Status, call.EverDelivered = correlate.StatusTimeout, bp(true)
	call.Replied, call.ReplyDelivered = nil, nil
	call.Deadline = at(2000 + 2000)
	follow := callSelectDestinations()
	follow.ID, follow.Amends, follow.LateReply, follow.LateByUS = 2, 1, true, 9000
	spans, _ := exportAll(t, Config{SampleRatio: 1e-9}, call, follow)
	cl := byKind(spans, trace.SpanKindClient)
	in := byKind(spans, trace.SpanKindInternal)
	if len(cl) != 1 || len(in) != 1 {
		t.Fatalf("want the call's CLIENT span and one INTERNAL late-reply span even at a tiny sample ratio: %v", spans)
	}
	l := in[0]
	if l.Parent.SpanID() != cl[0].SpanContext.SpanID() || l.SpanContext.TraceID() != cl[0].SpanContext.TraceID() {
		t.Errorf("late reply span parent %v, want the CLIENT span %v", l.Parent.SpanID(), cl[0].SpanContext.SpanID())
	}
	if !l.StartTime.Equal(*follow.Replied) || !l.EndTime.Equal(*follow.ReplyDelivered) {
		t.Errorf("late reply span %v → %v, want replied → reply delivered", l.StartTime, l.EndTime)
	}
	wantAttrs(t, l, map[string]any{"openstack.amends": int64(1), "openstack.late_by_us": int64(9000)})
}

// What the broker did to a call is on its CLIENT span as events, and why it timed out as an attribute.
func TestRecordEventsAreSpanEvents(t *testing.T) {
	r := callSelectDestinations()
	r.Status, r.EverDelivered = correlate.StatusTimeout, bp(true)
	r.Cause = "the broker closed a connection of nova-conductor: 320 CONNECTION_FORCED"
	r.Events = []correlate.RecordEvent{{Time: *r.Delivered, Type: correlate.EventConnectionBlocked, Detail: "low on memory", Count: 1}}
	spans, _ := exportAll(t, Config{}, r)
	cl := byKind(spans, trace.SpanKindClient)
	if len(cl) != 1 {
		t.Fatalf("spans %v", spans)
	}
	if _, ok := hasEvent(cl[0], correlate.EventConnectionBlocked); !ok {
		t.Errorf("no %s event on the CLIENT span: %+v", correlate.EventConnectionBlocked, cl[0].Events)
	}
	wantAttrs(t, cl[0], map[string]any{"openstack.cause": r.Cause})
}
