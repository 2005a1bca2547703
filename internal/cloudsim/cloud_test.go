package cloudsim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/amqptrace/amqptrace/internal/brokertest"
)

// spy is an independent consumer on the broker: one server-named queue bound with "#" to the cloud's control
// exchanges and to the port-update fanout exchange, so it receives a copy of every call, cast, fanout and
// notification the cloud publishes (replies use the default exchange and cannot be spied on this way).
type spy struct {
	conn *amqp.Connection
	mu   sync.Mutex
	got  []amqp.Delivery
	done chan struct{}
}

func newSpy(t *testing.T, prefix string) *spy {
	t.Helper()
	conn, err := amqp.Dial(brokertest.URL())
	if err != nil {
		t.Fatal(err)
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, ex := range []string{"nova", "neutron", "openstack"} {
		if err := ch.ExchangeDeclare(prefix+ex, "topic", false, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		if err := ch.QueueBind(q.Name, "#", prefix+ex, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	fx := prefix + "q-agent-notifier-port-update_fanout"
	if err := ch.ExchangeDeclare(fx, "fanout", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q.Name, "", fx, false, nil); err != nil {
		t.Fatal(err)
	}
	dl, err := ch.Consume(q.Name, "spy", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := &spy{conn: conn, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for d := range dl {
			s.mu.Lock()
			s.got = append(s.got, d)
			s.mu.Unlock()
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *spy) close() {
	_ = s.conn.Close()
	<-s.done
}

// waitFor waits until the spy holds n messages (the broker confirmed every publish before the cloud counted it,
// so they are all on their way), or fails after a generous bound.
func (s *spy) waitFor(t *testing.T, n int) []amqp.Delivery {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		s.mu.Lock()
		got := len(s.got)
		s.mu.Unlock()
		if got >= n || time.Now().After(deadline) {
			break
		}
		<-tick.C
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.got) != n {
		t.Fatalf("spy received %d messages, the cloud counted %d", len(s.got), n)
	}
	return append([]amqp.Delivery(nil), s.got...)
}

// cleanupBroker deletes what the cloud left on the shared broker (topic, server and notification queues and the
// control exchanges survive their processes, as in OpenStack).
func cleanupBroker(t *testing.T, c *Cloud) {
	conn, err := amqp.Dial(brokertest.URL())
	if err != nil {
		t.Log(err)
		return
	}
	defer func() { _ = conn.Close() }()
	ch, err := conn.Channel()
	if err != nil {
		return
	}
	if c.svc == nil {
		return
	}
	for _, s := range c.svc.servers {
		_, _ = ch.QueueDelete(s.topic, false, false, false)
		_, _ = ch.QueueDelete(s.topic+"."+s.server, false, false, false)
	}
	for _, q := range []string{".info", ".error"} {
		_, _ = ch.QueueDelete(c.svc.notifier.topic+q, false, false, false)
	}
	for _, ex := range []string{c.svc.novaEx, c.svc.neutronEx, c.svc.cinderEx} {
		_ = ch.ExchangeDelete(ex, false, false)
	}
}

func runCloud(t *testing.T, cfg Config) *Cloud {
	t.Helper()
	c := New(cfg)
	t.Cleanup(func() { cleanupBroker(t, c) })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := c.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if ctx.Err() != nil {
		t.Fatal("Run returned only because the test's deadline passed")
	}
	select {
	case <-c.Ready():
	default:
		t.Fatal("Ready was never closed")
	}
	return c
}

func testPrefix() string { return "cloudsim-" + hexID()[:8] + "-" }

// innerKeys returns the top-level keys of a JSON object in the order they appear.
func innerKeys(t *testing.T, inner string) []string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(inner))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("inner message is not an object: %v", err)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

// contextKeys is the _context_* key set and order of a nova RequestContext, from the wire-format document's
// example (section 4.2).
var contextKeys = strings.Fields(`_context_user _context_project_id _context_system_scope _context_project
_context_domain _context_user_domain _context_project_domain _context_is_admin _context_read_only
_context_show_deleted _context_auth_token _context_request_id _context_global_request_id _context_resource_uuid
_context_roles _context_user_identity _context_is_admin_project _context_user_name _context_project_name
_context_remote_address _context_timestamp _context_read_deleted _context_quota_class`)

// classify checks one spied message against the wire format and returns its (kind, method).
func classify(t *testing.T, d amqp.Delivery, prefix string) (kind, method string, inner map[string]any) {
	t.Helper()
	const envPrefix = `{"oslo.version": "2.0", "oslo.message": "`
	if !bytes.HasPrefix(d.Body, []byte(envPrefix)) {
		t.Fatalf("body does not start with the oslo envelope: %.80s", d.Body)
	}
	var env map[string]string
	if err := json.Unmarshal(d.Body, &env); err != nil {
		t.Fatalf("envelope: %v", err)
	}
	if err := json.Unmarshal([]byte(env["oslo.message"]), &inner); err != nil {
		t.Fatalf("inner message: %v", err)
	}
	keys := innerKeys(t, env["oslo.message"])

	// Properties, as kombu sets them.
	if d.ContentType != "application/json" || d.ContentEncoding != "utf-8" || d.DeliveryMode != 2 || d.Priority != 0 {
		t.Errorf("properties: %q %q %d %d", d.ContentType, d.ContentEncoding, d.DeliveryMode, d.Priority)
	}
	if d.Headers == nil || len(d.Headers) != 0 {
		t.Errorf("headers = %v, want a present, empty table", d.Headers)
	}
	if d.CorrelationId != "" || d.ReplyTo != "" || d.MessageId != "" || d.Type != "" || d.AppId != "" {
		t.Errorf("oslo never sets correlation_id/reply_to/message_id/type/app_id: %+v", d)
	}

	var want []string
	var ctxKeys = keys
	switch {
	case inner["event_type"] != nil:
		kind, method = "notification", inner["event_type"].(string)
		want = []string{"message_id", "publisher_id", "event_type", "priority", "payload", "timestamp", "_unique_id"}
		if inner["_context_auth_token"] != nil {
			t.Errorf("notification %s carries an auth token", method)
		}
		prio := strings.ToLower(inner["priority"].(string))
		if d.RoutingKey != prefix+"notifications."+prio || inner["priority"] != strings.ToUpper(prio) {
			t.Errorf("notification routing key %q, priority %v", d.RoutingKey, inner["priority"])
		}
		if id, _ := inner["message_id"].(string); len(id) != 36 || strings.Count(id, "-") != 4 {
			t.Errorf("message_id %q is not a dashed uuid", id)
		}
	default:
		method = inner["method"].(string)
		want = []string{"method", "args"}
		for _, k := range []string{"namespace", "version"} {
			if _, ok := inner[k]; ok {
				want = append(want, k)
			}
		}
		switch {
		case inner["_msg_id"] != nil:
			kind = "call"
			want = append(want, "_msg_id", "_reply_q", "_timeout")
			if d.Expiration == "" {
				t.Errorf("call %s has no expiration", method)
			}
			if q, _ := inner["_reply_q"].(string); !strings.HasPrefix(q, "reply_") || len(q) != 38 {
				t.Errorf("_reply_q %q", q)
			}
		case strings.HasSuffix(d.Exchange, "_fanout"):
			kind = "fanout"
			if d.RoutingKey != "" {
				t.Errorf("fanout with routing key %q", d.RoutingKey)
			}
		default:
			kind = "cast"
		}
		if kind != "call" && d.Expiration != "" {
			t.Errorf("%s %s has expiration %q", kind, method, d.Expiration)
		}
		want = append(want, "_unique_id")
		if tok, _ := inner["_context_auth_token"].(string); !strings.HasPrefix(tok, "gAAAAAB") {
			t.Errorf("%s %s: auth token %q does not look like a (fake) Fernet token", kind, method, tok)
		}
	}
	want = append(want, contextKeys...)
	if fmt.Sprint(ctxKeys) != fmt.Sprint(want) {
		t.Errorf("%s %s: inner keys\n got %v\nwant %v", kind, method, ctxKeys, want)
	}
	if id, _ := inner["_unique_id"].(string); len(id) != 32 {
		t.Errorf("_unique_id %q is not uuid4 hex", id)
	}
	if rid, _ := inner["_context_request_id"].(string); !strings.HasPrefix(rid, "req-") {
		t.Errorf("request id %q", rid)
	}
	return kind, method, inner
}

// TestBootsOnTheWire runs a fault-free cloud for a fixed number of boots, checks the per-boot counts, and checks
// every message an independent consumer received: envelope, key order, properties, and the same (kind, method)
// totals as Counts. Python's json and oslo.messaging's own deserializer then read a sample of the bodies.
func TestBootsOnTheWire(t *testing.T) {
	brokertest.Require(t)
	prefix := testPrefix()
	sp := newSpy(t, prefix)
	const boots = 4
	c := runCloud(t, Config{URL: brokertest.URL(), Rate: 8, MaxBoots: boots, Prefix: prefix, Seed: 7,
		ErrorRate: -1, SlowRate: -1, TimeoutRate: -1})
	counts := c.Counts()

	if counts.Boots != boots || counts.Mismatched != 0 || counts.Bad != 0 || counts.LateReplies != 0 {
		t.Fatalf("counts: %+v", counts)
	}
	perBoot := map[Key]int{
		{"cast", "build_instances", "ok"}:               1,
		{"call", "select_destinations", "ok"}:           1,
		{"cast", "build_and_run_instance", "ok"}:        1,
		{"notification", "instance.create.start", "ok"}: 1,
		{"call", "object_action", "ok"}:                 2,
		{"fanout", "port_update", "ok"}:                 1,
		{"call", "get_devices_details_list", "ok"}:      1,
		{"call", "update_device_up", "ok"}:              1,
		{"cast", "create_volume", "ok"}:                 2,
		{"call", "initialize_connection", "ok"}:         1,
		{"notification", "instance.create.end", "ok"}:   1,
		{"call", "get_console_output", "ok"}:            1,
	}
	total, calls := 0, 0
	for k, n := range counts.Sent {
		total += n
		if k.Kind == "call" {
			calls += n
		}
		if k.Status != "ok" {
			t.Errorf("fault-free run sent %v ×%d", k, n)
		}
		switch k.Method {
		case "report_state", "tunnel_sync":
			continue // periodic, independent of boots
		}
		if perBoot[k]*boots != n {
			t.Errorf("%v: sent %d, want %d", k, n, perBoot[k]*boots)
		}
	}
	if counts.Sent[Key{"call", "tunnel_sync", "ok"}] != 3 {
		t.Errorf("tunnel_sync: %d, want one per agent (3)", counts.Sent[Key{"call", "tunnel_sync", "ok"}])
	}
	if counts.Replies != calls {
		t.Errorf("%d final replies for %d calls", counts.Replies, calls)
	}

	got := sp.waitFor(t, total)
	seen := map[Key]int{}
	samples := map[string]string{}
	requestIDs := map[string]bool{}
	for _, d := range got {
		kind, method, inner := classify(t, d, prefix)
		seen[Key{kind, method, "ok"}]++
		samples[kind+" "+method] = string(d.Body)
		if method == "build_and_run_instance" || method == "port_update" || method == "initialize_connection" {
			requestIDs[inner["_context_request_id"].(string)] = true
		}
		if method == "build_instances" {
			args := inner["args"].(map[string]any)
			if pw, _ := args["admin_password"].(string); pw == "" {
				t.Error("build_instances lacks the admin_password argument redaction is tested with")
			}
		}
	}
	for k, n := range counts.Sent {
		if seen[k] != n {
			t.Errorf("%v: cloud sent %d, spy saw %d", k, n, seen[k])
		}
	}
	// One boot, one request context: boot-chain messages carry exactly `boots` distinct request ids.
	if len(requestIDs) != boots {
		t.Errorf("%d distinct request ids across the boot chains, want %d", len(requestIDs), boots)
	}

	var lines []string
	for _, b := range samples {
		lines = append(lines, b)
	}
	out := checkWithPython(t, redumpScript, lines)
	if !strings.HasPrefix(out, fmt.Sprintf("ok %d", len(lines))) {
		t.Fatalf("python json: %s", out)
	}
	// And oslo.messaging's own reader accepts them.
	out = checkWithPython(t, `
import json, sys
from oslo_messaging._drivers import common
n = 0
for line in sys.stdin:
    if line.strip():
        msg = common.deserialize_msg(json.loads(line))
        assert "_unique_id" in msg and "_context_request_id" in msg, msg.keys()
        n += 1
print("ok", n)
`, lines)
	if !strings.HasPrefix(out, fmt.Sprintf("ok %d", len(lines))) {
		t.Fatalf("oslo deserialize_msg: %s", out)
	}
}

// TestFaults runs with heavy fault injection: the callers must see exactly the outcome the cloud meant (so
// Counts.Sent is what amqptrace should record), every late reply must arrive late, and heartbeats must come
// exactly for the monitored calls that ran long.
func TestFaults(t *testing.T) {
	brokertest.Require(t)
	prefix := testPrefix()
	sp := newSpy(t, prefix)
	c := runCloud(t, Config{URL: brokertest.URL(), Rate: 5, MaxBoots: 6, Prefix: prefix, Seed: 11,
		ErrorRate: 0.2, SlowRate: 0.2, TimeoutRate: 0.2})
	counts := c.Counts()
	t.Logf("counts: %+v", counts)
	if counts.Mismatched != 0 {
		t.Errorf("%d calls ended differently from their injected fate", counts.Mismatched)
	}
	byStatus := map[string]int{}
	timeoutsWithServer, total := 0, 0
	for k, n := range counts.Sent {
		byStatus[k.Status] += n
		total += n
		if k.Kind == "call" && k.Status == "timeout" && k.Method != "get_console_output" {
			timeoutsWithServer += n
		}
	}
	if byStatus["error"] == 0 || byStatus["timeout"] == 0 || byStatus["aborted"] != 0 {
		t.Errorf("statuses %v: want errors and timeouts, nothing aborted", byStatus)
	}
	if counts.LateReplies != timeoutsWithServer {
		t.Errorf("%d late replies, want one per timed-out call that reached a server (%d)", counts.LateReplies, timeoutsWithServer)
	}
	if (counts.MonitoredSlow > 0) != (counts.Heartbeats > 0) {
		t.Errorf("%d heartbeats for %d long monitored calls", counts.Heartbeats, counts.MonitoredSlow)
	}
	if counts.Boots != 6 {
		t.Errorf("boots %d, want 6", counts.Boots)
	}
	for _, d := range sp.waitFor(t, total) {
		kind, method, _ := classify(t, d, prefix)
		if kind == "call" && (method == "get_console_output") && strings.HasSuffix(d.RoutingKey, ".host-gone") && d.Expiration != "1500" {
			t.Errorf("call to host-gone with expiration %q", d.Expiration)
		}
	}
}

// TestRunStopsOnCancel runs an unbounded cloud, cancels it once it has finished a boot, and expects Run to return
// nil with every goroutine joined (goleak in TestMain checks the rest).
func TestRunStopsOnCancel(t *testing.T) {
	brokertest.Require(t)
	c := New(Config{URL: brokertest.URL(), Rate: 20, Prefix: testPrefix(), ErrorRate: -1, SlowRate: -1, TimeoutRate: -1})
	t.Cleanup(func() { cleanupBroker(t, c) })
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(time.Minute)
	for c.Counts().Boots == 0 {
		select {
		case err := <-errc:
			t.Fatalf("Run returned early: %v", err)
		case <-deadline:
			cancel()
			t.Fatal("no boot finished within a minute")
		case <-tick.C:
		}
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
}
