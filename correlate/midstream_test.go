package correlate

import (
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/amqptrace/amqptrace/frames"
	"github.com/amqptrace/amqptrace/internal/wire"
)

// Tests of connections a packet capture picked up in the middle (ConnInfo.HandshakeUnseen) or lost bytes of
// (Conn.Resync).

// midConn is a connection whose handshake was not seen: its frames start with the channel traffic.
func (h *harness) midConn(host string) *tconn {
	h.ids++
	cn := h.c.NewConn(ConnInfo{ID: h.ids, Client: host + ":40999", Upstream: "127.0.0.1:5672", HandshakeUnseen: true})
	dc := frames.NewConn(h.stamped(cn), frames.Options{Resync: true})
	dc.ClientDecoder().Resync(0)
	dc.ServerDecoder().Resync(0)
	return &tconn{h: h, cn: cn, dec: dc}
}

// capturedConn is a connection as a capture sees it from its start: no handshake yet, decoders that resynchronise.
func (h *harness) capturedConn(client string) *tconn {
	h.ids++
	cn := h.c.NewConn(ConnInfo{ID: h.ids, Client: client})
	return &tconn{h: h, cn: cn, dec: frames.NewConn(h.stamped(cn), frames.Options{Resync: true})}
}

// A call whose caller and server were both picked up mid-stream is paired: the caller is known by its host.
func TestHandshakeUnseenPairs(t *testing.T) {
	h := newHarness(t, Config{Source: "capture"})
	server := h.conn("nova-conductor", 7, "10.0.0.2")
	server.rpcServer("conductor", "ctl1")
	client := h.midConn("10.0.0.1")

	tag := "3" // the server's topic consumer, from rpcServer: its Consume was seen
	client.publish("nova", "conductor", false, callProps(30000), callBody("ping", "m1", "u1", "req-1", nil))
	h.step(1e6)
	server.deliver("1", 1, "nova", "conductor", callProps(30000), callBody("ping", "m1", "u1", "req-1", nil))
	h.step(1e6)
	server.publish("", replyQ, false, osloProps, replyBody("m1", "u2", "pong", nil, true))
	h.step(1e6)
	client.deliver(tag, 1, "", replyQ, osloProps, replyBody("m1", "u2", "pong", nil, true))
	r := h.only()
	if r.Status != StatusOK || r.Method != "ping" || r.MsgID != "m1" || r.Source != "capture" {
		t.Fatalf("record %s", dump([]*Record{r}))
	}
	if r.Caller == nil || r.Caller.Host != "10.0.0.1" || r.Callee == nil || r.Callee.Service != "nova-conductor" {
		t.Fatalf("caller %+v callee %+v", r.Caller, r.Callee)
	}
	if st := h.c.Stats(); st.HandshakeUnseen != 1 {
		t.Fatalf("HandshakeUnseen %d, want 1", st.HandshakeUnseen)
	}
}

// A hole in the middle of a message abandons it: the next message's body frames never complete the one whose
// body was lost, so no record pairs the wrong bodies.
func TestResyncAbandonsContent(t *testing.T) {
	h := newHarness(t, Config{})
	c := h.conn("nova-api", 9, "10.0.0.1")
	before := h.c.Stats()
	body := callBody("lost", "m1", "u1", "req-1", nil)
	// The publish method and header arrive, the body is lost with the hole.
	c.c2s(wire.Publish(1, "nova", "conductor", false), wire.Header(1, uint64(len(body)), callProps(30000)))
	c.dec.ClientDecoder().Resync(int64(len(body) + 8))
	// A body of the same size on the same channel follows (a message whose method and header were lost too).
	other := callBody("lost", "m2", "u2", "req-2", nil)
	c.c2s(wire.Body(1, other, frameMax))
	if rs := h.records(); len(rs) != 0 {
		t.Fatalf("a body after the hole completed the message before it: %s", dump(rs))
	}
	if st := h.c.Stats(); st.MessagesIn != before.MessagesIn || st.ChannelResets == before.ChannelResets {
		t.Fatalf("messages in %d → %d, channel resets %d → %d: want no message and a reset", before.MessagesIn,
			st.MessagesIn, before.ChannelResets, st.ChannelResets)
	}
}

// A hole in the handshake opens the connection as picked up mid-stream: what the client does afterwards is seen.
func TestResyncInHandshakeOpens(t *testing.T) {
	h := newHarness(t, Config{})
	tc := h.capturedConn("10.0.0.1:41000")
	tc.c2s(wire.ProtocolHeader())
	tc.dec.ServerDecoder().Resync(300) // Start, Tune, Open-Ok lost
	tc.dec.ClientDecoder().Resync(200) // Start-Ok, Tune-Ok, Open lost
	tc.c2s(wire.ChannelOpen(1))
	tc.publish("nova", "compute", false, osloProps, castBody("go", "u9", "req-9", nil))
	h.advance(3e9)
	r := h.only()
	if r.Kind != KindCast || r.Method != "go" || r.Source != "" {
		t.Fatalf("record %s", dump([]*Record{r}))
	}
	if st := h.c.Stats(); st.HandshakeUnseen != 1 || st.PreOpenFrames != 0 {
		t.Fatalf("HandshakeUnseen %d PreOpenFrames %d", st.HandshakeUnseen, st.PreOpenFrames)
	}
}

// A capture that lost a reply listener's Basic.Consume-Ok, or its Basic.Consume, still knows the consumer's queue:
// a tag the client chose names it at the Consume, and a delivery through the default exchange names it otherwise.
// Either way the call waits for its reply to reach the caller, instead of ending at the reply's publish.
func TestLostConsumeKeepsTheReplyQueue(t *testing.T) {
	for _, lost := range []string{"consume-ok", "consume"} {
		t.Run(lost, func(t *testing.T) {
			h := newHarness(t, Config{Source: "capture"})
			server := h.conn("nova-conductor", 7, "10.0.0.2")
			server.rpcServer("conductor", "ctl1")
			caller := h.conn("nova-api", 8, "10.0.0.1")
			caller.c2s(wire.QueueDeclare(1, replyQ, false, false, false, wire.Table{"x-expires": int32(1800000)}))
			if lost == "consume-ok" {
				caller.c2s(wire.Consume(1, replyQ, "1", false, false, nil))
			} else {
				caller.s2c(wire.ConsumeOK(1, "1"))
			}
			// Both calls: the first delivery through the default exchange teaches the queue when the
			// Consume was lost, so only the call before it waits in vain.
			for i, id := range []string{"m1", "m2"} {
				u := fmt.Sprint(i)
				caller.publish("nova", "conductor", false, callProps(30000), callBody("ping", id, "u"+u, "req-1", nil))
				h.step(1e6)
				server.deliver("1", uint64(i+1), "nova", "conductor", callProps(30000), callBody("ping", id, "u"+u, "req-1", nil))
				h.step(1e6)
				server.publish("", replyQ, false, osloProps, replyBody(id, "r"+u, "pong", nil, true))
				h.step(1e6)
				caller.deliver("1", uint64(i+1), "", replyQ, osloProps, replyBody(id, "r"+u, "pong", nil, true))
				h.step(1e6)
			}
			h.advance(time.Minute)
			got := map[string]bool{}
			for _, r := range h.records() {
				got[r.MsgID] = r.ReplyDelivered != nil
			}
			want := map[string]bool{"m1": true, "m2": true}
			if lost == "consume" {
				want["m1"] = false // ended at the reply's publish: nothing said the caller consumed there
			}
			if !maps.Equal(got, want) {
				t.Fatalf("reply delivered, by call: %v, want %v", got, want)
			}
		})
	}
}

// Consume-Oks are matched by tag: one that a capture lost does not shift a later consumer onto the queue of the
// request before it.
func TestConsumeOKMatchedByTag(t *testing.T) {
	h := newHarness(t, Config{Source: "capture"})
	c := h.conn("nova-compute", 9, "10.0.0.3")
	// A client-named consumer whose Consume-Ok was lost, then a broker-named one, answered.
	c.c2s(wire.Consume(1, "first", "a", false, false, nil), wire.Consume(1, "second", "", false, false, nil))
	c.s2c(wire.ConsumeOK(1, "amq.ctag-B"))
	for i, tag := range []string{"a", "amq.ctag-B"} {
		u := fmt.Sprint(i)
		c.deliver(tag, uint64(i+1), "nova", "compute", osloProps, castBody("build", "u"+u, "req-"+u, nil))
		h.step(1e6)
	}
	h.advance(time.Minute)
	got := map[string]string{}
	for _, r := range h.records() {
		got[r.UniqueID] = r.Queue
	}
	if want := map[string]string{"u0": "first", "u1": "second"}; !maps.Equal(got, want) {
		t.Fatalf("queue by delivery: %v, want %v", got, want)
	}
}

// A capture that lost the broker's side of a login takes the connection as open at the hole; the client's
// Start-Ok and Open, read after that, still name it and its vhost.
func TestLateHandshakeNamesTheConnection(t *testing.T) {
	h := newHarness(t, Config{})
	tc := h.capturedConn("10.0.0.1:41000")
	tc.c2s(wire.ProtocolHeader())
	tc.dec.ServerDecoder().Resync(300) // Start, Tune, Open-Ok lost: open at the hole
	tc.c2s(wire.StartOKPlain(wire.Table{"connection_name": "nova-api:77:x"}, "guest", "guest"),
		wire.TuneOK(2047, frameMax, 60), wire.Open("/region-one"), wire.ChannelOpen(1))
	tc.publish("nova", "compute", false, osloProps, castBody("go", "u9", "req-9", nil))
	h.advance(3e9)
	r := h.only()
	if r.Caller == nil || r.Caller.Service != "nova-api" || r.Caller.PID != 77 || r.Caller.Vhost != "/region-one" {
		t.Fatalf("caller %+v", r.Caller)
	}
}
