package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/amqptrace/amqptrace/correlate"
	"github.com/amqptrace/amqptrace/internal/brokertest"
	"github.com/amqptrace/amqptrace/tracing"
	"github.com/amqptrace/amqptrace/tracing/jaegertest"
)

// rpcPeer is one side of a generic AMQP RPC (reply_to + correlation_id) behind the proxy.
type rpcPeer struct {
	conn *amqp.Connection
	ch   *amqp.Channel
}

func dialPeer(t *testing.T, url, service string) *rpcPeer {
	t.Helper()
	cfg := amqp.Config{Properties: amqp.Table{"connection_name": fmt.Sprintf("%s:%d:%s", service, os.Getpid(), randHex(8))}}
	conn, err := amqp.DialConfig(url, cfg)
	if err != nil {
		t.Fatalf("%s: dial the proxy: %v", service, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("%s: channel: %v", service, err)
	}
	return &rpcPeer{conn: conn, ch: ch}
}

// caller makes calls one at a time on a confirming channel: publish, wait for the broker's confirm, wait for the
// reply with the same correlation id.
type caller struct {
	*rpcPeer
	replyQ  string
	replies <-chan amqp.Delivery
	mu      sync.Mutex
	ids     []string // correlation ids of completed calls
}

func newCaller(t *testing.T, url string) *caller {
	t.Helper()
	c := &caller{rpcPeer: dialPeer(t, url, "e2e-sigterm-client")}
	q, err := c.ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.replyQ = q.Name
	if c.replies, err = c.ch.Consume(q.Name, "", true, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	return c
}

// publish sends one request and waits for its publisher confirm.
func (c *caller) publish(ctx context.Context, queue, id string) error {
	dc, err := c.ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, false, false, amqp.Publishing{
		ContentType: "application/json", ReplyTo: c.replyQ, CorrelationId: id, Expiration: "600000",
		Body: []byte(`{"op": "add", "a": 1, "b": 2}`)})
	if err != nil {
		return fmt.Errorf("publish %s: %w", id, err)
	}
	ok, err := dc.WaitContext(ctx)
	if err != nil || !ok {
		return fmt.Errorf("confirm %s: ack=%v %v", id, ok, err)
	}
	return nil
}

// call makes one whole RPC to queue.
func (c *caller) call(ctx context.Context, queue string) error {
	id := "sigterm-" + randHex(8)
	if err := c.publish(ctx, queue, id); err != nil {
		return err
	}
	for {
		select {
		case d, ok := <-c.replies:
			if !ok {
				return errors.New("reply consumer closed")
			}
			if d.CorrelationId != id {
				return fmt.Errorf("reply for %q while waiting for %q", d.CorrelationId, id)
			}
			c.mu.Lock()
			c.ids = append(c.ids, id)
			c.mu.Unlock()
			return nil
		case <-ctx.Done():
			return fmt.Errorf("reply to %s: %w", id, ctx.Err())
		}
	}
}

func (c *caller) completed() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.ids...)
}

// serve answers every request on queue with a reply to its reply_to, until the connection closes. The returned
// function closes the connection and waits for the server goroutine; it also runs when the test ends.
func serve(t *testing.T, s *rpcPeer, queue string) (stop func()) {
	t.Helper()
	if _, err := s.ch.QueueDeclare(queue, false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	dl, err := s.ch.Consume(queue, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for d := range dl {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_ = s.ch.PublishWithContext(ctx, "", d.ReplyTo, false, false, amqp.Publishing{ContentType: "application/json",
				CorrelationId: d.CorrelationId, Body: []byte(`{"sum": 3}`)})
			cancel()
		}
	})
	var once sync.Once
	stop = func() { once.Do(func() { _ = s.conn.Close(); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

// TestE2ESigtermDuringTraffic runs the real binary with an events file, OTLP export to a real Jaeger and a long
// shutdown grace; keeps a connection busy with calls; sends SIGTERM; and checks that the open connections keep
// working through the grace (calls and a publish with confirm after the listener closed), that the process exits
// 0 once the clients close, that the events file holds every call (the one still pending at SIGTERM flushed as
// incomplete), and that every record's spans reached Jaeger.
func TestE2ESigtermDuringTraffic(t *testing.T) {
	skipShort(t)
	broker := brokertest.Require(t)
	j := jaegertest.Start(t)
	v := testVhost(t)
	events := filepath.Join(t.TempDir(), "events.jsonl")
	p := startBin(t, "proxy", "--listen", "127.0.0.1:0", "--upstream", broker, "--http", "127.0.0.1:0", "--events", events,
		"--otlp-endpoint", j.OTLPAddr, "--shutdown-grace", "2m")
	listen, httpAddr := p.listening(true)
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	waitReady(t, p, client, httpAddr, 30*time.Second)

	url := v.url(listen)
	queue, nobody := "e2e-sigterm-rpc-"+randHex(4), "e2e-sigterm-nobody-"+randHex(4)
	stopServer := serve(t, dialPeer(t, url, "e2e-sigterm-server"), queue)
	c := newCaller(t, url)
	if _, err := c.ch.QueueDeclare(nobody, false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// A call nobody answers: pending when SIGTERM comes.
	pendingID := "sigterm-pending-" + randHex(8)
	if err := c.publish(ctx, nobody, pendingID); err != nil {
		t.Fatal(err)
	}
	// Keep the connection busy: calls back to back until told to stop, across the signal.
	stop := make(chan struct{})
	busyErr := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				busyErr <- nil
				return
			default:
			}
			if err := c.call(ctx, queue); err != nil {
				busyErr <- err
				return
			}
		}
	}()
	waitCalls := func(n int) {
		t.Helper()
		for len(c.completed()) < n {
			select {
			case err := <-busyErr:
				t.Fatalf("calls stopped after %d: %v", len(c.completed()), err)
			case <-ctx.Done():
				t.Fatalf("only %d calls within the deadline", len(c.completed()))
			case <-time.After(5 * time.Millisecond): // poll interval of a counter, not a wait for a result
			}
		}
	}
	waitCalls(20)

	signalled := time.Now()
	p.signal(syscall.SIGTERM)
	// The proxy closes its listener at SIGTERM: wait for that, so what follows is surely within the grace.
	for {
		conn, err := net.DialTimeout("tcp", listen, time.Second)
		if err != nil {
			break
		}
		_ = conn.Close()
		select {
		case <-p.done:
			t.Fatalf("amqptrace exited at SIGTERM with connections open: %v", p.err)
		case <-ctx.Done():
			t.Fatal("the proxy kept accepting after SIGTERM")
		case <-time.After(10 * time.Millisecond):
		}
	}
	atClose := len(c.completed())
	waitCalls(atClose + 20)
	close(stop)
	if err := <-busyErr; err != nil {
		t.Fatalf("busy connection after SIGTERM: %v", err)
	}
	// One more publish with confirm, after the listener closed.
	lastID := "sigterm-last-" + randHex(8)
	if err := c.publish(ctx, nobody, lastID); err != nil {
		t.Fatalf("publish after SIGTERM: %v", err)
	}
	select {
	case <-p.done:
		t.Fatalf("amqptrace exited during the grace with connections open: %v", p.err)
	default:
	}
	calls := c.completed()
	t.Logf("%d calls before the listener closed, %d after; listener closed %v after SIGTERM",
		atClose, len(calls)-atClose, time.Since(signalled).Round(time.Millisecond))

	// Clients leave; the process must exit 0 now, well before the two-minute grace.
	closed := time.Now()
	if err := c.conn.Close(); err != nil {
		t.Errorf("client close: %v", err)
	}
	stopServer()
	if code := p.wait(90 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	t.Logf("exited %v after the clients closed (%v after SIGTERM)", time.Since(closed).Round(time.Millisecond),
		time.Since(signalled).Round(time.Millisecond))

	// Every call is in the events file once, and both unanswered publishes are there, flushed at shutdown.
	recs := readEvents(t, events)
	byID := map[string]*correlate.Record{}
	for i := range recs {
		r := &recs[i]
		if byID[r.MsgID] != nil {
			t.Errorf("two records for %s", r.MsgID)
		}
		byID[r.MsgID] = r
	}
	for _, id := range calls {
		r := byID[id]
		switch {
		case r == nil:
			t.Errorf("call %s: no record", id)
		case r.Kind != correlate.KindCall || r.Status != correlate.StatusOK || r.Incomplete:
			t.Errorf("call %s: %s %s incomplete=%v, want a complete ok call", id, r.Kind, r.Status, r.Incomplete)
		case r.Caller == nil || r.Caller.Service != "e2e-sigterm-client" || r.Callee == nil || r.Callee.Service != "e2e-sigterm-server":
			t.Errorf("call %s: caller %+v callee %+v", id, r.Caller, r.Callee)
		}
	}
	for _, id := range []string{pendingID, lastID} {
		r := byID[id]
		if r == nil {
			t.Errorf("pending call %s was not flushed at shutdown", id)
			continue
		}
		if !r.Incomplete || r.Status != correlate.StatusTimeout || r.Deliveries != 0 {
			t.Errorf("pending call %s: status %s incomplete=%v deliveries %d, want an incomplete timeout never delivered",
				id, r.Status, r.Incomplete, r.Deliveries)
		}
	}
	if len(recs) != len(calls)+2 {
		t.Errorf("%d records for %d calls and 2 pending publishes", len(recs), len(calls))
	}

	// Every record's spans reached Jaeger before the process exited: look each trace up by its derived id. Jaeger
	// indexes what it received asynchronously, so each lookup polls within a bound.
	qctx, qcancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer qcancel()
	spans := 0
	for i := range recs {
		r := &recs[i]
		id := tracing.TraceIDHex(r)
		var tr *jaegertest.Trace
		for {
			var err error
			tr, err = j.Trace(qctx, id)
			if err == nil && len(tr.Spans) >= wantSpans(r) {
				break
			}
			select {
			case <-qctx.Done():
				t.Fatalf("record %s: trace %s not in Jaeger (%v; %d of %d records checked)", r.MsgID, id, err, i, len(recs))
			case <-time.After(20 * time.Millisecond): // poll interval of an external service
			}
		}
		kinds := map[string]int{}
		for k := range tr.Spans {
			kinds[tr.Spans[k].Tag("span.kind")]++
		}
		if kinds["client"] != 1 || (wantSpans(r) == 2 && kinds["server"] != 1) {
			t.Errorf("record %s: span kinds %v", r.MsgID, kinds)
		}
		spans += len(tr.Spans)
	}
	t.Logf("%d records in the events file, %d spans found in Jaeger", len(recs), spans)
}

// wantSpans is how many spans a generic call record gives: CLIENT, plus SERVER when it was delivered.
func wantSpans(r *correlate.Record) int {
	if r.Delivered != nil {
		return 2
	}
	return 1
}
