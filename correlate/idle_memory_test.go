package correlate

import (
	"fmt"
	"log/slog"
	"runtime"
	"testing"

	"github.com/amqptrace/amqptrace/frames"
	"github.com/amqptrace/amqptrace/internal/wire"
)

// TestIdleConnectionMemory opens 1,000 connections through the decoders and the correlator, each with a full
// handshake (py-amqp's client properties, capabilities table included, and RabbitMQ's server properties), and
// states what an idle one holds and what its handshake allocated. Idle connections are most of a proxy's
// connections, so their state must be sized for idle: what a connection needs only to carry messages is made when
// the first one comes, and a handshake leaves little garbage behind (the bench reads the proxy's RSS right after
// the connections opened, when the garbage of their handshakes has not been collected yet).
func TestIdleConnectionMemory(t *testing.T) {
	const n = 1000
	c := New(Config{Logger: slog.New(slog.DiscardHandler), InlineBodies: true})
	caps := wire.Table{"authentication_failure_close": true, "consumer_cancel_notify": true, "publisher_confirms": true,
		"connection.blocked": true}
	c2s := make([][]byte, n)
	for i := range c2s {
		props := wire.Table{"product": "py-amqp", "product_version": "5.1.1", "platform": "Python 3.12.3",
			"capabilities": caps, "connection_name": fmt.Sprintf("nova-compute:%d:%08d-8888-4888-8888-888888888888", 4000+i, i)}
		c2s[i] = wire.Concat(wire.ProtocolHeader(), wire.StartOKAMQPlain(props, "guest", "guest"),
			wire.TuneOK(2047, 131072, 60), wire.Open("/"))
	}
	s2c := wire.Concat(wire.Start(wire.Table{"product": "RabbitMQ", "version": "3.12.1", "platform": "Erlang/OTP 25",
		"cluster_name": "rabbit@controller", "capabilities": wire.Table{"publisher_confirms": true,
			"exchange_exchange_bindings": true, "basic.nack": true, "consumer_cancel_notify": true,
			"connection.blocked": true, "consumer_priorities": true, "authentication_failure_close": true,
			"per_consumer_qos": true, "direct_reply_to": true}}),
		wire.Tune(2047, 131072, 60), wire.OpenOK())
	infos := make([]ConnInfo, n)
	for i := range infos {
		infos[i] = ConnInfo{ID: uint64(i + 1), Client: fmt.Sprintf("10.0.0.5:%d", 40000+i), Upstream: "127.0.0.1:5672"}
	}
	conns := make([]*Conn, n)
	decs := make([]*frames.Conn, n)

	before := heapNow()
	for i := range n {
		conns[i] = c.NewConn(infos[i])
		decs[i] = frames.NewConn(conns[i], frames.Options{})
		_, _ = decs[i].ClientDecoder().Write(c2s[i])
		_, _ = decs[i].ServerDecoder().Write(s2c)
	}
	after := heapNow()
	for i, cn := range conns {
		if ep := cn.id.Load().ep; !cn.opened.Load() || ep.Service != "nova-compute" || ep.PID != 4000+i {
			t.Fatalf("connection %d: opened %v, endpoint %+v", i, cn.opened.Load(), ep)
		}
	}
	live := float64(after.live-before.live) / n
	allocated := float64(after.total-before.total) / n
	t.Logf("%d idle connections: %.0f B live and %.0f B allocated per connection (decoders, correlate state, handshake)",
		n, live, allocated)
	if live > 1536 {
		t.Errorf("an idle connection holds %.0f B, want at most 1,536 B", live)
	}
	if allocated > 3072 {
		t.Errorf("a connection and its handshake allocated %.0f B, want at most 3,072 B", allocated)
	}
	runtime.KeepAlive(decs)
}

type heapSample struct{ live, total uint64 }

// heapNow is the live heap after two collections and the bytes allocated so far.
func heapNow() heapSample {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return heapSample{ms.HeapAlloc, ms.TotalAlloc}
}
