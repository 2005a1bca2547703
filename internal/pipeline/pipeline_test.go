package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/amqptrace/amqptrace/correlate"
	"github.com/amqptrace/amqptrace/internal/brokertest"
	"github.com/amqptrace/amqptrace/internal/testio"
	"github.com/amqptrace/amqptrace/proxy"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// sinkUpstream is a stand-in broker that reads and discards everything, so the pipeline can be tested without
// RabbitMQ. It counts the bytes it got.
type sinkUpstream struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	got   int
	conns []net.Conn
}

func startSinkUpstream(t *testing.T) *sinkUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &sinkUpstream{ln: ln}
	u.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.mu.Lock()
			u.conns = append(u.conns, c)
			u.mu.Unlock()
			u.wg.Go(func() {
				n, _ := io.Copy(io.Discard, c)
				u.mu.Lock()
				u.got += int(n)
				u.mu.Unlock()
				_ = c.Close()
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		u.mu.Lock()
		for _, c := range u.conns {
			_ = c.Close()
		}
		u.mu.Unlock()
		u.wg.Wait()
	})
	return u
}

// running is a pipeline served on loopback.
type running struct {
	p      *Pipeline
	addr   string
	cancel context.CancelFunc
	done   chan error
}

func serve(t *testing.T, cfg Config) *running {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{p: p, addr: ln.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- p.Serve(ctx, ln) }()
	<-p.Ready()
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok && err != nil {
			t.Errorf("Serve: %v", err)
		}
		if ok {
			close(r.done)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return within 30s of cancel")
	}
}

// waitUntil polls cond; the pipeline has no event to wait on for counters, so this is the condition wait with a
// bound (10 ms steps, no timing assertion).
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestNewRejectsBadUpstreams(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Error("New without upstreams: no error")
	}
	if _, err := New(Config{Upstreams: []string{"no-port"}}); err == nil {
		t.Error("New with upstream without a port: no error")
	}
	if _, err := New(Config{Upstreams: []string{"127.0.0.1:5672"}}); err != nil {
		t.Errorf("New with a good upstream: %v", err)
	}
}

func TestServeTwice(t *testing.T) {
	up := startSinkUpstream(t)
	r := serve(t, Config{Upstreams: []string{up.ln.Addr().String()}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.p.Serve(context.Background(), ln); !errors.Is(err, ErrServed) {
		t.Errorf("second Serve: %v, want ErrServed", err)
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Error("the second Serve left its listener open")
	}
	if r.p.Addr() == nil || r.p.Addr().String() != r.addr {
		t.Errorf("Addr %v, want %s", r.p.Addr(), r.addr)
	}
}

// heartbeatFrame is an AMQP heartbeat: type 8, channel 0, size 0, frame-end.
var heartbeatFrame = []byte{8, 0, 0, 0, 0, 0, 0, 0xCE}

// TestDecodeStatsLiveAndClosed checks that Stats sums the decoders of live connections and keeps the counts of
// closed ones, and that a framing error switches decoding off for that connection only, with bytes still flowing.
func TestDecodeStatsLiveAndClosed(t *testing.T) {
	up := startSinkUpstream(t)
	logs := &testio.Buffer{}
	r := serve(t, Config{
		Upstreams: []string{up.ln.Addr().String()},
		Logger:    slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})

	good, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	stream := append([]byte("AMQP\x00\x00\x09\x01"), heartbeatFrame...)
	stream = append(stream, heartbeatFrame...)
	if _, err := good.Write(stream); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "two heartbeats decoded on a live connection", func() bool {
		st := r.p.Stats().Decode
		return st.ConnsLive == 1 && st.Client.Heartbeats == 2
	})

	bad, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	// A frame whose end octet is wrong: decoding must switch off, forwarding must not.
	garbage := append([]byte("AMQP\x00\x00\x09\x01"), 8, 0, 0, 0, 0, 0, 0, 0x00)
	garbage = append(garbage, []byte("more bytes after the bad frame")...)
	if _, err := bad.Write(garbage); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "decoding switched off on the bad connection", func() bool {
		st := r.p.Stats().Decode
		return st.ConnsLive == 2 && st.ConnsOff == 1
	})

	_ = good.Close()
	_ = bad.Close()
	waitUntil(t, "both connections closed", func() bool {
		st := r.p.Stats().Decode
		return st.ConnsLive == 0 && st.ConnsClosed == 2
	})
	st := r.p.Stats()
	if st.Decode.Client.Heartbeats != 2 || st.Decode.ConnsOff != 1 {
		t.Errorf("after close: %d heartbeats, %d off; want the live counts kept (2, 1)", st.Decode.Client.Heartbeats,
			st.Decode.ConnsOff)
	}
	if want := uint64(len(stream) + len(garbage)); st.Decode.Client.Bytes != want {
		t.Errorf("decoders counted %d client bytes, want %d", st.Decode.Client.Bytes, want)
	}
	waitUntil(t, "the upstream got every byte", func() bool {
		up.mu.Lock()
		defer up.mu.Unlock()
		return up.got == len(stream)+len(garbage)
	})
	r.stop(t)
	if !strings.Contains(logs.String(), "decode switched off") {
		t.Errorf("no close reason with \"decode switched off\" in the logs:\n%s", logs.String())
	}
}

// collector keeps the records it gets.
type collector struct {
	mu sync.Mutex
	rs []correlate.Record
}

func (c *collector) Record(r *correlate.Record) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rs = append(c.rs, *r)
}

func (c *collector) records() []correlate.Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]correlate.Record(nil), c.rs...)
}

// TestShutdownFlushesPending makes a generic RPC call that nobody answers, with a long deadline, and stops the
// pipeline: Serve must return only after the pending record went through the correlator's flush and the fan-out
// into every sink.
func TestShutdownFlushesPending(t *testing.T) {
	brokerAddr := brokertest.Require(t)
	a, b := &collector{}, &collector{}
	logs := &testio.Buffer{}
	r := serve(t, Config{Upstreams: []string{brokerAddr}, ShutdownGrace: time.Second, Sinks: []correlate.Sink{a, b},
		Logger: slog.New(slog.NewTextHandler(logs, nil))})

	conn, err := amqp.Dial(brokertest.URLVia(r.addr))
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
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	id := "pending-" + q.Name
	dc, err := ch.PublishWithDeferredConfirm("", q.Name, false, false, amqp.Publishing{
		ReplyTo: q.Name, CorrelationId: id, Expiration: "600000", Body: []byte(`{"x": 1}`)})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := dc.WaitContext(context.Background()); !ok || err != nil {
		t.Fatalf("publish not confirmed: %v", err)
	}
	// The decoder handed the publish to the correlator's queue before the confirm came back, but the correlator
	// goroutine may not have taken it yet: wait until it counts the call as pending.
	waitUntil(t, "the call pending in the correlator", func() bool { return r.p.Stats().Correlate.Pending >= 1 })
	if n := len(a.records()); n != 0 {
		t.Fatalf("%d records before shutdown; the call has a 10 minute deadline", n)
	}
	_ = conn.Close()
	r.stop(t)

	for i, c := range []*collector{a, b} {
		rs := c.records()
		found := 0
		for _, rec := range rs {
			if rec.MsgID == id {
				found++
			}
		}
		if found != 1 {
			t.Errorf("sink %d: %d records for the pending call after shutdown, want 1 (of %d records)", i, found,
				len(rs))
		}
	}
	if st := r.p.Stats(); st.RecordsDropped() != 0 || st.Proxy.ConnsOpen != 0 || st.Decode.ConnsLive != 0 {
		t.Errorf("after shutdown: %d records dropped, %d conns open, %d decoders live", st.RecordsDropped(),
			st.Proxy.ConnsOpen, st.Decode.ConnsLive)
	}
	// The last line states what observation saw and lost; make bench reads these fields by name.
	st := r.p.Stats()
	var stop string
	for l := range strings.Lines(logs.String()) {
		if strings.Contains(l, `msg="pipeline stopped"`) {
			stop = l
		}
	}
	for _, kv := range []string{
		fmt.Sprintf(" messages=%d ", st.Correlate.MessagesIn),
		fmt.Sprintf(" messages_dropped=%d ", st.Correlate.QueueDrops),
		fmt.Sprintf(" records=%d ", st.Correlate.RecordsOut),
		fmt.Sprintf(" records_dropped=%d ", st.RecordsDropped()),
		fmt.Sprintf(" decode_off=%d", st.Decode.ConnsOff),
	} {
		if !strings.Contains(stop, kv) {
			t.Errorf("stop line lacks %q: %q", kv, stop)
		}
	}
	if st.Correlate.MessagesIn == 0 {
		t.Error("the correlator counted no messages; the stop line check proves little")
	}
}

// TestRunListens checks Run: it listens on Config.Listen, forwards, and returns nil when ctx ends.
func TestRunListens(t *testing.T) {
	up := startSinkUpstream(t)
	p, err := New(Config{Listen: "127.0.0.1:0", Upstreams: []string{up.ln.Addr().String()}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	<-p.Ready()
	c, err := net.Dial("tcp", p.Addr().String())
	if err != nil {
		t.Fatalf("dial %v: %v", p.Addr(), err)
	}
	if _, err := c.Write([]byte("AMQP\x00\x00\x09\x01")); err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	waitUntil(t, "the connection forwarded and closed", func() bool {
		st := p.Stats()
		return st.Proxy.ConnsTotal == 1 && st.Decode.ConnsClosed == 1 && st.Decode.Client.Bytes == 8
	})
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

// Readiness is false before Serve, true once Serve runs and a check found the upstream, and false again once
// Serve has returned, each time with its reason.
func TestReadinessFollowsServeAndUpstream(t *testing.T) {
	up := startSinkUpstream(t)
	p, err := New(Config{Upstreams: []string{up.ln.Addr().String()}, Health: Health{Check: proxy.CheckTCP}})
	if err != nil {
		t.Fatal(err)
	}
	if ok, why := p.Readiness(); ok || !strings.Contains(why, "not serving") {
		t.Errorf("before Serve: %v %q", ok, why)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, ln) }()
	guard := time.After(10 * time.Second)
	for {
		changed := p.HealthChanged()
		if ok, _ := p.Readiness(); ok {
			break
		}
		select {
		case <-changed:
		case <-guard:
			_, why := p.Readiness()
			t.Fatalf("never ready: %s", why)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if ok, why := p.Readiness(); ok || !strings.Contains(why, "stopped") {
		t.Errorf("after Serve: %v %q", ok, why)
	}
}
