package e2e

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/amqptrace/amqptrace/correlate"
	"github.com/amqptrace/amqptrace/internal/brokertest"
	"github.com/amqptrace/amqptrace/internal/pipeline"
	"github.com/amqptrace/amqptrace/tracing"
	"github.com/amqptrace/amqptrace/tracing/jaegertest"
)

// TestJaegerOsloScenario runs the real oslo.messaging scenario (testdata/oslo_scenario.py: nova-api calling
// nova-conductor and two nova-compute servers under one RequestContext) through a pipeline whose sinks are the
// JSON Lines writer and a real OTLP exporter pointed at a real Jaeger, then reads the trace back through Jaeger's
// query API and checks every span against the JSON Lines record it came from: services, one trace for the one
// request id, CLIENT→SERVER and PRODUCER→CONSUMER parents, nesting under the handling span, attributes,
// timestamps to the microsecond, error status for the remote exception and the timeouts, and no secrets.
func TestJaegerOsloScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: runs real oslo.messaging processes and Jaeger")
	}
	brokerAddr := brokertest.Require(t)
	requireOslo(t)
	j := jaegertest.Start(t)
	acct := brokerAccount(t)

	x := startExporter(t, tracing.Config{Endpoint: j.OTLPAddr, Insecure: true, BatchTimeout: 100 * time.Millisecond})
	h := startPipeline(t, brokerAddr, func(c *pipeline.Config) { c.Sinks = append(c.Sinks, x.exp) })

	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, python, "testdata/oslo_scenario.py", "--url", acct.rabbitURL(h.addr),
		"--exchange", acct.exchange, "--suffix", acct.suffix)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var m manifest
	if err := json.Unmarshal(stdout.Bytes(), &m); err != nil || runErr != nil || len(m.Failures) > 0 {
		t.Fatalf("oslo scenario: run: %v, manifest: %v, failures: %q\nstderr (tail):\n%s", runErr, err, m.Failures,
			tail(stderr.String(), 4000))
	}
	want := len(m.Actions)
	if !h.col.waitFor(60*time.Second, func(rs []correlate.Record) bool { return len(rs) >= want }) {
		t.Fatalf("only %d of %d records within 60s", len(h.col.snapshot()), want)
	}
	// Stop the pipeline (every record reaches every sink), then flush the exporter: after this, everything the
	// run produced has been handed to Jaeger or counted as lost.
	h.stop()
	if err := x.shutdown(30 * time.Second); err != nil {
		t.Fatalf("exporter Shutdown: %v", err)
	}
	records := parseJSONLines(t, h.events.Bytes())
	if len(records) != want {
		t.Fatalf("%d records in the events file, want %d (one per action)", len(records), want)
	}

	wantSpans := 0
	for i := range records {
		wantSpans += expectedSpans(&records[i])
	}
	st := x.exp.Stats()
	if st.RecordsIn != uint64(want) || st.RecordsDropped != 0 || st.SampledOut != 0 || st.SpansDropped != 0 ||
		st.ExportErrors != 0 || st.SpansExported != uint64(wantSpans) {
		t.Fatalf("exporter stats %+v: want %d records in, %d spans exported, nothing dropped", st, want, wantSpans)
	}

	// /api/services: exactly the OpenStack services the scenario ran, no fallback service.
	wantServices := map[string]bool{}
	for _, p := range m.Processes {
		wantServices[p.Service] = true
	}
	var services []string
	eventually(t, 20*time.Second, "services in Jaeger", func() (bool, string) {
		var err error
		services, err = j.Services(ctx)
		return err == nil && len(services) >= len(wantServices), fmt.Sprintf("%v %v", services, err)
	})
	sort.Strings(services)
	if len(services) != len(wantServices) {
		t.Errorf("Jaeger services %v, want exactly %v", services, wantServices)
	}
	for s := range wantServices {
		if !slices.Contains(services, s) {
			t.Errorf("Jaeger services %v lack %s", services, s)
		}
	}

	// One trace for the one request: every service's search finds the same single trace, and it holds every span.
	var traceID string
	eventually(t, 20*time.Second, "the request's trace", func() (bool, string) {
		trs, err := j.Traces(ctx, "nova-api", 0, time.Hour)
		if err != nil || len(trs) == 0 {
			return false, fmt.Sprint(err)
		}
		ids := traceIDsOf(trs)
		if len(ids) != 1 {
			t.Fatalf("nova-api is in %d traces %v, want 1 (one request id)", len(ids), ids)
		}
		traceID = ids[0]
		return true, ""
	})
	var tr *jaegertest.Trace
	eventually(t, 20*time.Second, "every span in the trace", func() (bool, string) {
		var err error
		tr, err = j.Trace(ctx, traceID)
		if err != nil && !errors.Is(err, jaegertest.ErrNotFound) {
			t.Fatalf("query trace: %v", err)
		}
		if err != nil {
			return false, err.Error()
		}
		return len(tr.Spans) >= wantSpans, fmt.Sprintf("%d of %d spans", len(tr.Spans), wantSpans)
	})
	if len(tr.Spans) != wantSpans {
		t.Errorf("trace has %d spans, want %d", len(tr.Spans), wantSpans)
	}
	for s := range wantServices {
		trs, err := j.Traces(ctx, s, 0, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if ids := traceIDsOf(trs); len(ids) != 1 || ids[0] != traceID {
			t.Errorf("service %s is in traces %v, want only %s", s, ids, traceID)
		}
	}

	checkTraceAgainstRecords(t, &m, tr, records)
	checkTraceWarnings(t, tr)

	// Secrets crossed the wire in the scenario (the oslo test proves that); none may reach Jaeger.
	raw := rawTrace(ctx, t, j, traceID)
	secrets := map[string]string{"auth token": m.AuthToken, "admin_password": m.AdminPassword}
	if acct.dedicated { // otherwise the password may be a common word ("guest")
		secrets["AMQP password"] = acct.pass
	}
	for what, s := range secrets {
		if s == "" {
			t.Fatalf("%s: empty secret", what)
		}
		if bytes.Contains(raw, []byte(s)) {
			t.Errorf("%s leaked into Jaeger", what)
		}
	}
	counts := map[string]int{}
	for i := range tr.Spans {
		counts[tr.Service(&tr.Spans[i])+"/"+spanKind(&tr.Spans[i])]++
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%d", k, counts[k])
	}
	t.Logf("Jaeger services %v; trace %s: %d spans from %d records (%d bytes of trace JSON):%s", services, traceID,
		len(tr.Spans), len(records), len(raw), b.String())
}

// expectedSpans is what design.md §7 says a record becomes: a call gives a CLIENT span and, when the server side
// was seen, a SERVER span; a cast, fanout or notification gives a PRODUCER span and one CONSUMER per delivery.
func expectedSpans(r *correlate.Record) int {
	if r.Kind == correlate.KindCall {
		if r.Delivered != nil || r.Replied != nil {
			return 2
		}
		return 1
	}
	switch {
	case len(r.Callees) > 0:
		return 1 + len(r.Callees)
	case r.Callee != nil || r.Delivered != nil:
		return 2
	}
	return 1
}

// checkTraceAgainstRecords finds every record's spans in the trace (by openstack.unique_id and span.kind) and
// checks them against the record.
func checkTraceAgainstRecords(t *testing.T, m *manifest, tr *jaegertest.Trace, records []correlate.Record) {
	type key struct{ uid, kind string }
	spans := map[key][]*jaegertest.Span{}
	for i := range tr.Spans {
		s := &tr.Spans[i]
		if s.TraceID != tr.TraceID {
			t.Errorf("span %s has trace id %s in trace %s", s.SpanID, s.TraceID, tr.TraceID)
		}
		spans[key{s.Tag("openstack.unique_id"), spanKind(s)}] = append(spans[key{s.Tag("openstack.unique_id"),
			spanKind(s)}], s)
	}
	one := func(r *correlate.Record, kind string) *jaegertest.Span {
		ss := spans[key{r.UniqueID, kind}]
		if len(ss) != 1 {
			t.Errorf("%s %s %s: %d %s spans, want 1", r.Kind, r.Method+r.EventType, r.UniqueID, len(ss), kind)
			return nil
		}
		return ss[0]
	}
	byRPC := map[string]*correlate.Record{}
	for i := range records {
		r := &records[i]
		if r.MsgID != "" {
			byRPC[r.MsgID] = r
		}
		byRPC[r.UniqueID] = r
	}

	var nErrors, timeouts, nested, fanoutConsumers, heartbeats, answered int
	for i := range records {
		r := &records[i]
		name := fmt.Sprintf("%s %s/%s%s [%s]", r.Kind, r.Topic, r.Method, r.EventType, r.Status)
		errorf := func(format string, args ...any) { t.Errorf(name+": "+format, args...) }
		if r.RequestID != m.RequestID || r.GlobalRequestID != m.GlobalRequestID {
			errorf("request ids %q/%q, want the scenario's %q/%q", r.RequestID, r.GlobalRequestID, m.RequestID,
				m.GlobalRequestID)
		}

		var first *jaegertest.Span // the CLIENT or PRODUCER span: the one that nests under a parent
		if r.Kind == correlate.KindCall {
			client := one(r, "client")
			if client == nil {
				continue
			}
			first = client
			checkCommonTags(t, name, r, client, "send")
			checkEndpoint(t, name+" CLIENT", tr, client, r.Caller)
			if client.OperationName != rpcMethodOf(r) {
				errorf("CLIENT name %q, want %q", client.OperationName, rpcMethodOf(r))
			}
			end := r.ReplyDelivered
			if r.Status == correlate.StatusTimeout {
				end = r.Deadline
			}
			checkTimes(t, name+" CLIENT", client, r.Published, end)

			if r.Delivered != nil || r.Replied != nil {
				server := one(r, "server")
				if server == nil {
					continue
				}
				checkCommonTags(t, name, r, server, "process")
				checkEndpoint(t, name+" SERVER", tr, server, r.Callee)
				if server.ParentID() != client.SpanID {
					errorf("SERVER parent %q, want its CLIENT %s", server.ParentID(), client.SpanID)
				}
				if r.Replied != nil {
					checkTimes(t, name+" SERVER", server, r.Delivered, r.Replied)
				}
				n := 0
				for _, l := range server.Logs {
					if tag(l.Fields, "event") == "heartbeat" {
						n++
					}
				}
				if n != r.Heartbeats {
					errorf("SERVER has %d heartbeat events, the record %d", n, r.Heartbeats)
				}
				heartbeats += n
				if r.Status == correlate.StatusError {
					checkError(t, name+" SERVER", server, r.Error.Module+"."+r.Error.Class)
				} else if server.Tag("error") == "true" {
					errorf("SERVER flagged as error")
				}
			}
			switch r.Status {
			case correlate.StatusError:
				nErrors++
				checkError(t, name+" CLIENT", client, r.Error.Module+"."+r.Error.Class)
			case correlate.StatusTimeout:
				timeouts++
				checkError(t, name+" CLIENT", client, "timeout")
			default:
				if client.Tag("error") == "true" {
					errorf("CLIENT flagged as error")
				}
			}
		} else {
			producer := one(r, "producer")
			if producer == nil {
				continue
			}
			first = producer
			checkCommonTags(t, name, r, producer, "send")
			checkEndpoint(t, name+" PRODUCER", tr, producer, r.Caller)
			end := r.Published
			if r.Confirmed != nil {
				end = r.Confirmed
			}
			checkTimes(t, name+" PRODUCER", producer, r.Published, end)
			consumers := spans[key{r.UniqueID, "consumer"}]
			if len(consumers) != expectedSpans(r)-1 {
				errorf("%d CONSUMER spans, want %d", len(consumers), expectedSpans(r)-1)
			}
			pids := map[string]bool{}
			for _, c := range consumers {
				checkCommonTags(t, name, r, c, "process")
				if c.ParentID() != producer.SpanID {
					errorf("CONSUMER parent %q, want its PRODUCER %s", c.ParentID(), producer.SpanID)
				}
				// A consumer span runs from its delivery to the consumer's answer when the proxy saw one (oslo's RPC
				// server answers casts on receipt), else it is the delivery instant.
				idx, _ := strconv.Atoi(c.Tag("openstack.consumer_index"))
				if a := r.AnswerTo(idx); a != nil {
					checkTimes(t, name+" CONSUMER", c, &a.Delivered, &a.At)
					if c.Tag("openstack.ack") != string(a.Outcome) {
						errorf("CONSUMER openstack.ack %q, want %q", c.Tag("openstack.ack"), a.Outcome)
					}
					answered++
				} else {
					checkTimes(t, name+" CONSUMER", c, r.Delivered, r.Delivered)
					if c.Tag("openstack.ack") != "none" {
						errorf("CONSUMER openstack.ack %q without an answer in the record", c.Tag("openstack.ack"))
					}
				}
				pids[processTag(tr, c, "process.pid")] = true
			}
			if r.Kind == correlate.KindFanout {
				fanoutConsumers += len(consumers)
				for _, ep := range r.Callees {
					if !pids[strconv.Itoa(ep.PID)] {
						errorf("no CONSUMER span in %s pid %d (have %v)", ep.Service, ep.PID, pids)
					}
				}
			}
		}

		// Nesting: an RPC made while handling another nests under that handling span, in the same process.
		if r.ParentID == "" {
			if first.ParentID() != "" {
				errorf("root span has parent %s", first.ParentID())
			}
			continue
		}
		nested++
		pr := byRPC[r.ParentID]
		if pr == nil {
			errorf("parent record %s not in the run", r.ParentID)
			continue
		}
		var handle *jaegertest.Span
		for _, kind := range []string{"server", "consumer"} {
			for _, s := range spans[key{pr.UniqueID, kind}] {
				if r.Caller != nil && processTag(tr, s, "process.pid") == strconv.Itoa(r.Caller.PID) {
					handle = s
				}
			}
		}
		if handle == nil {
			errorf("no handling span of parent %s in the caller's process", r.ParentID)
		} else if first.ParentID() != handle.SpanID {
			errorf("parent %q, want the handling span %s (%s %q)", first.ParentID(), handle.SpanID,
				spanKind(handle), handle.OperationName)
		}
	}
	// The scenario must have exercised each case, or the checks above prove nothing.
	if nErrors < 1 || timeouts < 2 || nested < 1 || fanoutConsumers < 2 || heartbeats < 1 || answered < 2 {
		t.Errorf("scenario coverage: %d errors, %d timeouts, %d nested, %d fanout consumers, %d heartbeats, %d "+
			"answered consumers; want at least 1, 2, 1, 2, 1, 2", nErrors, timeouts, nested, fanoutConsumers,
			heartbeats, answered)
	}
	t.Logf("checked %d records: %d remote errors, %d timeouts, %d nested RPCs, %d fanout consumers, %d heartbeats, "+
		"%d consumer spans ending at their answer", len(records), nErrors, timeouts, nested, fanoutConsumers,
		heartbeats, answered)
}

// rpcMethodOf is rpc.method as the conventions shape it: "<topic>/<namespace>.<method>".
func rpcMethodOf(r *correlate.Record) string {
	m := r.Method
	if r.Namespace != nil && *r.Namespace != "" {
		m = *r.Namespace + "." + m
	}
	return r.Topic + "/" + m
}

func checkCommonTags(t *testing.T, name string, r *correlate.Record, s *jaegertest.Span, op string) {
	t.Helper()
	want := map[string]string{
		"messaging.system":                           "rabbitmq",
		"messaging.message.id":                       r.UniqueID,
		"messaging.rabbitmq.destination.routing_key": r.RoutingKey,
		"messaging.operation.type":                   op,
		"messaging.destination.name":                 cmp.Or(r.Exchange, "amq.default"),
		"openstack.request_id":                       r.RequestID,
		"openstack.global_request_id":                r.GlobalRequestID,
		"openstack.kind":                             string(r.Kind),
		"openstack.status":                           string(r.Status),
	}
	if r.Kind != correlate.KindNotification {
		want["rpc.system.name"] = "oslo_messaging"
		want["rpc.method"] = rpcMethodOf(r)
	} else {
		want["openstack.event_type"] = r.EventType
	}
	if r.Kind == correlate.KindCall {
		want["messaging.message.conversation_id"] = r.MsgID
	}
	for k, v := range want {
		if got := s.Tag(k); got != v {
			t.Errorf("%s %s span: %s=%q, want %q", name, spanKind(s), k, got, v)
		}
	}
}

// checkEndpoint: the span's process is the OpenStack process of ep (service, pid, host), as Jaeger shows it.
func checkEndpoint(t *testing.T, name string, tr *jaegertest.Trace, s *jaegertest.Span, ep *correlate.Endpoint) {
	t.Helper()
	if ep == nil {
		t.Errorf("%s: the record has no endpoint for it", name)
		return
	}
	p := tr.Processes[s.ProcessID]
	// The host is the TCP peer, an IP here: host.ip carries it, host.name is left to names.
	if p.ServiceName != ep.Service || p.Tag("process.pid") != strconv.Itoa(ep.PID) ||
		!strings.Contains(p.Tag("host.ip"), `"`+ep.Host+`"`) || p.Tag("host.name") != "" || p.Tag("service.instance.id") == "" {
		t.Errorf("%s: process %s pid %s host.ip %s host.name %q instance %q, want %s pid %d host %s", name, p.ServiceName,
			p.Tag("process.pid"), p.Tag("host.ip"), p.Tag("host.name"), p.Tag("service.instance.id"), ep.Service, ep.PID, ep.Host)
	}
	// The network attributes name this side's socket: the client's end as the proxy accepted it, and the broker.
	if s.Tag("network.peer.address") != ep.Host || s.Tag("network.peer.port") != strconv.Itoa(ep.Port) || ep.Port == 0 ||
		s.Tag("server.address") == "" || s.Tag("server.port") == "" {
		t.Errorf("%s: network.peer %s:%s (want %s:%d), server %s:%s", name, s.Tag("network.peer.address"),
			s.Tag("network.peer.port"), ep.Host, ep.Port, s.Tag("server.address"), s.Tag("server.port"))
	}
}

// checkTimes: Jaeger keeps microseconds, start as UnixMicro and duration as the truncated difference; the span
// must say exactly what the record's timestamps say, converted the same way.
func checkTimes(t *testing.T, name string, s *jaegertest.Span, start, end *time.Time) {
	t.Helper()
	if start == nil || end == nil {
		t.Errorf("%s: the record lacks a timestamp (start %v, end %v)", name, start, end)
		return
	}
	if s.StartTime != start.UnixMicro() || s.Duration != end.Sub(*start).Microseconds() {
		t.Errorf("%s: span %d+%dµs, record %d+%dµs (%s → %s)", name, s.StartTime, s.Duration, start.UnixMicro(),
			end.Sub(*start).Microseconds(), start.Format(time.RFC3339Nano), end.Format(time.RFC3339Nano))
	}
}

func checkError(t *testing.T, name string, s *jaegertest.Span, errType string) {
	t.Helper()
	if s.Tag("error") != "true" || s.Tag("otel.status_code") != "ERROR" || s.Tag("error.type") != errType {
		t.Errorf("%s: error=%q otel.status_code=%q error.type=%q, want true/ERROR/%s", name, s.Tag("error"),
			s.Tag("otel.status_code"), s.Tag("error.type"), errType)
	}
}

// checkTraceWarnings fails on Jaeger's warnings (a dangling parent, a malformed span) other than the benign ones,
// and on a span id used twice in the trace: two proxies must join their spans, not draw the same span twice.
func checkTraceWarnings(t *testing.T, tr *jaegertest.Trace) {
	t.Helper()
	ids := map[string]int{}
	for i := range tr.Spans {
		s := &tr.Spans[i]
		if n := ids[s.SpanID]; n > 0 {
			t.Errorf("span id %s is used by %d spans (this one: %s %q in %s)", s.SpanID, n+1, spanKind(s),
				s.OperationName, tr.Service(s))
		}
		ids[s.SpanID]++
		for _, w := range s.Warnings {
			if !benignWarning(s, w) {
				t.Errorf("Jaeger warns about %s %q: %s", spanKind(s), s.OperationName, w)
			}
		}
	}
	for _, w := range tr.Warnings {
		t.Errorf("Jaeger warns about the trace: %s", w)
	}
}

// tag reads a log field (Jaeger's form of an event attribute; the event's name is the field "event").
func tag(kvs []jaegertest.KeyValue, key string) string {
	for _, kv := range kvs {
		if kv.Key == key {
			return fmt.Sprint(kv.Value)
		}
	}
	return ""
}
