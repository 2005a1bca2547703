package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/amqptrace/amqptrace/correlate"
	"github.com/amqptrace/amqptrace/internal/brokertest"
)

// osloEscape puts JSON text inside a JSON string the way json.dumps does for oslo's double encoding, byte by byte:
// every byte that is not '"' or '\' is kept as it is, so invalid UTF-8 in the inner text reaches the wire raw
// (json.Marshal would turn it into U+FFFD escapes, which is exactly what this test must not do).
func osloEscape(inner string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(inner)
}

// osloEnvelope is {"oslo.version": "2.0", "oslo.message": "<inner>"} built by concatenation.
func osloEnvelope(inner string) []byte {
	return []byte(`{"oslo.version": "2.0", "oslo.message": "` + osloEscape(inner) + `"}`)
}

// osloProps are the properties kombu gives every oslo message.
func osloProps(body []byte) amqp.Publishing {
	return amqp.Publishing{ContentType: "application/json", ContentEncoding: "utf-8", Headers: amqp.Table{},
		DeliveryMode: amqp.Persistent, Body: body}
}

// confirmPublish publishes on a confirming channel and waits for the broker's ack.
func confirmPublish(ctx context.Context, ch *amqp.Channel, exchange, key string, mandatory bool, msg amqp.Publishing) error {
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, mandatory, false, msg)
	if err != nil {
		return fmt.Errorf("publish to %q/%q: %w", exchange, key, err)
	}
	ok, err := dc.WaitContext(ctx)
	if err != nil || !ok {
		return fmt.Errorf("confirm of %q/%q: ack=%v %v", exchange, key, ok, err)
	}
	return nil
}

// osloServe is an oslo-style RPC server on queue: every request's inner message names _msg_id and _reply_q, and
// gets one final reply (result, failure null, ending true) on the default exchange, mandatory, as
// AMQPIncomingMessage.reply sends it. The returned stop closes the connection and joins the goroutine; it also
// runs when the test ends.
func osloServe(t *testing.T, s *rpcPeer, queue string) (stop func()) {
	t.Helper()
	dl, err := s.ch.Consume(queue, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for d := range dl {
			var outer struct {
				Message string `json:"oslo.message"`
			}
			var inner struct {
				MsgID  string `json:"_msg_id"`
				ReplyQ string `json:"_reply_q"`
			}
			if json.Unmarshal(d.Body, &outer) != nil || json.Unmarshal([]byte(outer.Message), &inner) != nil ||
				inner.MsgID == "" || inner.ReplyQ == "" {
				continue
			}
			reply, _ := json.Marshal(map[string]any{"result": map[string]any{"pong": true}, "failure": nil,
				"ending": true, "_msg_id": inner.MsgID, "_unique_id": randHex(16)})
			body, _ := json.Marshal(map[string]string{"oslo.version": "2.0", "oslo.message": string(reply)})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_ = s.ch.PublishWithContext(ctx, "", inner.ReplyQ, true, false, osloProps(body))
			cancel()
		}
	})
	var once sync.Once
	stop = func() { once.Do(func() { _ = s.conn.Close(); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

// panicLine returns the first "panic:" line of the process's stderr, for failure messages.
func (p *proc) panicLine() string {
	for _, l := range strings.Split(p.stderr.String(), "\n") {
		if strings.HasPrefix(l, "panic:") || strings.Contains(l, "fatal error:") {
			return l
		}
	}
	return "(no panic line in stderr)"
}

// apiCalls fetches /api/calls and decodes it; the body must be valid UTF-8 and valid JSON.
func apiCalls(ctx context.Context, client *http.Client, httpAddr string) ([]correlate.Record, error) {
	code, body, err := httpGet(ctx, client, "http://"+httpAddr+"/api/calls?limit=1000")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("GET /api/calls: %d %.200s", code, body)
	}
	if !utf8.Valid(body) {
		return nil, fmt.Errorf("GET /api/calls: body is not valid UTF-8: %.300q", body)
	}
	var resp struct {
		Calls []correlate.Record `json:"calls"`
		Count int                `json:"count"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		return nil, fmt.Errorf("GET /api/calls: not JSON: %v: %.300q", err, body)
	}
	if resp.Count != len(resp.Calls) {
		return nil, fmt.Errorf("GET /api/calls: count %d for %d calls", resp.Count, len(resp.Calls))
	}
	return resp.Calls, nil
}

// TestE2EInvalidUTF8DoesNotKillTheProxy is issue 12's reproduction against the real binary and the real broker:
// an oslo cast whose method has invalid UTF-8 (raw bytes inside the inner JSON string), a publish whose routing key
// has invalid UTF-8, and an oslo notification whose event_type has invalid UTF-8 go through the proxy. Before the
// fix the first one made the process exit (`panic: label value "pin\xc9\xf8g" is not valid UTF-8`, from the
// Prometheus sink). The test checks that the bytes were forwarded untouched (each delivery is byte for byte the
// publish), that the process is still alive and an oslo-style RPC call still works end to end through it, that
// /metrics parses with amqptrace_panics_total 0 for every component, that /api/calls is valid JSON, and, after
// SIGTERM and exit 0, that the events file holds the three records with U+FFFD for every invalid byte
// ("pin\xc9\xf8g" → "pin\uFFFD\uFFFDg") and the call, and that the spans exported for them carry the records'
// values.
func TestE2EInvalidUTF8DoesNotKillTheProxy(t *testing.T) {
	skipShort(t)
	broker := brokertest.Require(t)
	recv := startOTLPReceiver(t, true)
	v := testVhost(t)
	events := filepath.Join(t.TempDir(), "events.jsonl")
	p := startBin(t, "proxy", "--listen", "127.0.0.1:0", "--upstream", broker, "--http", "127.0.0.1:0",
		"--events", events, "--otlp-endpoint", recv.addr, "--shutdown-grace", "5s")
	listen, httpAddr := p.listening(true)
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	waitReady(t, p, client, httpAddr, 30*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()

	// alive fails the test at once when the process has exited, quoting its panic.
	alive := func(when string) {
		t.Helper()
		select {
		case <-p.done:
			t.Fatalf("amqptrace exited %s: %v: %s", when, p.err, p.panicLine())
		default:
		}
	}

	url := v.url(listen)
	pre := v.prefix
	exchange := pre + "e2e-utf8-nova"
	castTopic := pre + "e2e-utf8-conductor"
	rkQueue := pre + "e2e-utf8-rk"
	badRK := rkQueue + ".\xff\xfe\xc9"
	noteKey := pre + "e2e-utf8-notifications.info"
	rpcTopic := pre + "e2e-utf8-scheduler"

	// Topology, declared through the proxy: a topic exchange, the cast's topic queue, a queue that takes every
	// routing key under rkQueue, the notification queue and the RPC server's topic queue.
	listener := dialPeer(t, url, "e2e-utf8-listener")
	if err := listener.ch.ExchangeDeclare(exchange, "topic", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	for _, b := range [][2]string{{castTopic, castTopic}, {rkQueue, rkQueue + ".#"}, {noteKey, noteKey}, {rpcTopic, rpcTopic}} {
		if _, err := listener.ch.QueueDeclare(b[0], false, true, false, false, nil); err != nil {
			t.Fatal(err)
		}
		if err := listener.ch.QueueBind(b[0], b[1], exchange, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	deliveries := make(chan amqp.Delivery, 16)
	var consumers sync.WaitGroup
	for _, q := range []string{castTopic, rkQueue, noteKey} {
		dl, err := listener.ch.Consume(q, "", true, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		consumers.Go(func() {
			for d := range dl {
				deliveries <- d
			}
		})
	}
	stopListener := func() { _ = listener.conn.Close(); consumers.Wait() }
	t.Cleanup(stopListener)

	// (a) a cast whose method is "pin\xc9\xf8g", (b) a cast whose routing key ends in \xff\xfe\xc9, (c) a
	// notification whose event_type is "compute.\xff\xfeinstance". Every id is ASCII, so the records can be found.
	reqID := "req-" + randHex(4) + "-utf8"
	castUID, rkUID, noteUID, noteMsgID := randHex(16), randHex(16), randHex(16), randHex(8)+"-utf8"
	ctxKeys := `, "_context_request_id": "` + reqID + `", "_context_global_request_id": null, "_context_user_name": "demo"`
	castBody := osloEnvelope(`{"method": "pin` + "\xc9\xf8" + `g", "args": {"host": "h1"}, "_unique_id": "` + castUID + `"` + ctxKeys + `}`)
	rkBody := osloEnvelope(`{"method": "ping_rk", "args": {}, "_unique_id": "` + rkUID + `"` + ctxKeys + `}`)
	noteBody := osloEnvelope(`{"message_id": "` + noteMsgID + `", "publisher_id": "compute.host1", "event_type": "compute.` +
		"\xff\xfe" + `instance", "priority": "INFO", "payload": {"state": "active"}, "timestamp": "2026-01-01 00:00:00.000001", "_unique_id": "` +
		noteUID + `"` + ctxKeys + `}`)
	if utf8.Valid(castBody) || utf8.Valid(noteBody) || utf8.ValidString(badRK) {
		t.Fatal("test bug: the bodies must carry raw invalid UTF-8")
	}
	pub := dialPeer(t, url, "e2e-utf8-publisher")
	if err := pub.ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	sent := map[string][]byte{castTopic: castBody, badRK: rkBody, noteKey: noteBody}
	for _, m := range []struct {
		key  string
		body []byte
	}{{castTopic, castBody}, {badRK, rkBody}, {noteKey, noteBody}} {
		if err := confirmPublish(ctx, pub.ch, exchange, m.key, false, osloProps(m.body)); err != nil {
			alive("after an invalid-UTF-8 publish")
			t.Fatal(err)
		}
	}
	// The proxy forwards bytes untouched: each delivery is its publish, byte for byte, routing key included.
	for range len(sent) {
		select {
		case d := <-deliveries:
			want, ok := sent[d.RoutingKey]
			switch {
			case !ok:
				t.Errorf("delivery with routing key %q, which was not published", d.RoutingKey)
			case !bytes.Equal(d.Body, want):
				t.Errorf("delivery on %q: body changed in transit:\n got %q\nwant %q", d.RoutingKey, d.Body, want)
			}
			delete(sent, d.RoutingKey)
		case <-p.done:
			t.Fatalf("amqptrace exited before the messages were delivered: %v: %s", p.err, p.panicLine())
		case <-ctx.Done():
			t.Fatalf("messages not delivered (missing: %q)", sent)
		}
	}

	// The correlator emits casts and notifications after their settle time: poll /api/calls (valid JSON every
	// time) until all three records are there. Before the fix the process dies here.
	find := func(recs []correlate.Record, match func(*correlate.Record) bool) *correlate.Record {
		for i := range recs {
			if match(&recs[i]) {
				return &recs[i]
			}
		}
		return nil
	}
	isCast := func(r *correlate.Record) bool { return r.UniqueID == castUID }
	isRK := func(r *correlate.Record) bool { return r.UniqueID == rkUID }
	isNote := func(r *correlate.Record) bool { return r.UniqueID == noteUID || r.MessageID == noteMsgID }
	waitAPI := func(what string, matches ...func(*correlate.Record) bool) []correlate.Record {
		t.Helper()
		tick := time.NewTicker(50 * time.Millisecond) // poll interval, not a wait for a result
		defer tick.Stop()
		for {
			alive("while " + what)
			rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
			recs, err := apiCalls(rctx, client, httpAddr)
			rcancel()
			if err != nil {
				alive("while " + what)
				t.Fatal(err)
			}
			all := true
			for _, m := range matches {
				all = all && find(recs, m) != nil
			}
			if all {
				return recs
			}
			select {
			case <-p.done:
			case <-ctx.Done():
				t.Fatalf("%s: records not in /api/calls in time (%d records there)", what, len(recs))
			case <-tick.C:
			}
		}
	}
	waitAPI("the invalid-UTF-8 records were correlated", isCast, isRK, isNote)
	alive("after the invalid-UTF-8 records")

	// A normal oslo-style call through the same proxy still works end to end: request on the topic exchange with
	// _msg_id and _reply_q, a server that consumed it, its reply on the reply queue.
	server := dialPeer(t, url, "e2e-utf8-server")
	stopServer := osloServe(t, server, rpcTopic)
	caller := dialPeer(t, url, "e2e-utf8-caller")
	replyQ := "reply_" + randHex(16)
	if _, err := caller.ch.QueueDeclare(replyQ, false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	replies, err := caller.ch.Consume(replyQ, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := caller.ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	msgID := randHex(16)
	callInner, _ := json.Marshal(map[string]any{"method": "ping_ok", "args": map[string]any{}, "_msg_id": msgID,
		"_reply_q": replyQ, "_timeout": nil, "_unique_id": randHex(16), "_context_request_id": reqID})
	callBody, _ := json.Marshal(map[string]string{"oslo.version": "2.0", "oslo.message": string(callInner)})
	callMsg := osloProps(callBody)
	callMsg.Expiration = "30000"
	if err := confirmPublish(ctx, caller.ch, exchange, rpcTopic, false, callMsg); err != nil {
		alive("during the RPC call")
		t.Fatal(err)
	}
	for got := false; !got; {
		select {
		case d, ok := <-replies:
			if !ok {
				alive("during the RPC call")
				t.Fatal("reply consumer closed")
			}
			got = bytes.Contains(d.Body, []byte(msgID))
		case <-p.done:
			t.Fatalf("amqptrace exited during the RPC call: %v: %s", p.err, p.panicLine())
		case <-ctx.Done():
			t.Fatal("no reply to the RPC call through the proxy")
		}
	}
	isCall := func(r *correlate.Record) bool { return r.MsgID == msgID }
	api := waitAPI("the RPC call was correlated", isCall, isCast, isRK, isNote)

	// /metrics parses (scrapeMetrics fails the test otherwise) and no component recovered a panic.
	m := scrapeMetrics(t, client, httpAddr)
	if mf := m["amqptrace_panics_total"]; mf != nil {
		for _, s := range mf.GetMetric() {
			if v := s.GetCounter().GetValue(); v != 0 {
				labels := map[string]string{}
				for _, lp := range s.GetLabel() {
					labels[lp.GetName()] = lp.GetValue()
				}
				t.Errorf("amqptrace_panics_total%v = %v, want 0", labels, v)
			}
		}
	} else {
		t.Logf("amqptrace_panics_total is not exported by this build")
	}
	alive("after the scrape")

	// Clients leave, SIGTERM, exit 0; the events file then has every record.
	_ = pub.conn.Close()
	_ = caller.conn.Close()
	stopServer()
	stopListener()
	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0: %s", code, p.panicLine())
	}
	recs := readEvents(t, events)
	const wantMethod, wantEvent = "pin\uFFFD\uFFFDg", "compute.\uFFFD\uFFFDinstance"
	wantRK := rkQueue + ".\uFFFD\uFFFD\uFFFD"
	type check struct {
		what  string
		match func(*correlate.Record) bool
		field func(*correlate.Record) string
		want  string
		attr  string // span attribute carrying the field
	}
	for _, c := range []check{
		{"cast (a)", isCast, func(r *correlate.Record) string { return r.Method }, wantMethod, "openstack.method"},
		{"cast (b)", isRK, func(r *correlate.Record) string { return r.RoutingKey }, wantRK, "messaging.rabbitmq.destination.routing_key"},
		{"notification (c)", isNote, func(r *correlate.Record) string { return r.EventType }, wantEvent, "openstack.event_type"},
	} {
		r := find(recs, c.match)
		if r == nil {
			t.Errorf("%s: no record in the events file", c.what)
			continue
		}
		if got := c.field(r); got != c.want {
			t.Errorf("%s: %s is %q, want %q (U+FFFD for every invalid byte)", c.what, c.attr, got, c.want)
		}
		if a := find(api, c.match); a != nil && c.field(a) != c.field(r) {
			t.Errorf("%s: /api/calls says %q, the events file %q", c.what, c.field(a), c.field(r))
		}
		// The record's spans were exported (at the latest when the process flushed at exit) with the same value.
		id := r.UniqueID
		spans := recv.spansWhere("openstack.unique_id", id)
		if len(spans) == 0 {
			reqs, n, _ := recv.counts()
			t.Errorf("%s: no span with openstack.unique_id=%s (the receiver got %d spans in %d requests)", c.what, id, n, reqs)
		}
		for _, s := range spans {
			if s[c.attr] != c.field(r) {
				t.Errorf("%s: span %q has %s=%q, the record %q", c.what, s["span.name"], c.attr, s[c.attr], c.field(r))
			}
		}
	}
	if r := find(recs, isNote); r != nil && r.Kind != correlate.KindNotification {
		t.Errorf("notification (c): kind %s", r.Kind)
	}
	if r := find(recs, isCast); r != nil && (r.Kind != correlate.KindCast || r.RequestID != reqID) {
		t.Errorf("cast (a): kind %s request_id %q", r.Kind, r.RequestID)
	}
	if r := find(recs, isCall); r == nil {
		t.Error("the RPC call has no record in the events file")
	} else if r.Kind != correlate.KindCall || r.Status != correlate.StatusOK || r.Method != "ping_ok" ||
		r.Caller == nil || r.Caller.Service != "e2e-utf8-caller" || r.Callee == nil || r.Callee.Service != "e2e-utf8-server" {
		t.Errorf("the RPC call's record: kind %s status %s method %q caller %+v callee %+v", r.Kind, r.Status, r.Method, r.Caller, r.Callee)
	}
	if len(recv.spansWhere("openstack.msg_id", msgID)) == 0 {
		t.Error("the RPC call has no span")
	}
	if _, _, invalid := recv.counts(); invalid != 0 {
		t.Errorf("%d span strings were not valid UTF-8", invalid)
	}
	reqs, spans, _ := recv.counts()
	t.Logf("%d records in the events file, %d spans in %d OTLP requests", len(recs), spans, reqs)
}
