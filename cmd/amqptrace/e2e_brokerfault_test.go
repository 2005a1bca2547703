package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/amqptrace/amqptrace/correlate"
	"github.com/amqptrace/amqptrace/internal/brokertest"
	"github.com/amqptrace/amqptrace/internal/wire"
)

// faultRelay stands between amqptrace and RabbitMQ and plays a sick broker on command: it can put a method frame
// into every connection's broker → client stream, between two frames (Connection.Blocked, as a memory alarm does),
// or close every connection the way the broker does for 320 CONNECTION_FORCED (Connection.Close, then the
// sockets). It never touches the shared broker's configuration.
type faultRelay struct {
	t      *testing.T
	ln     net.Listener
	target string
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []*faultConn
}

type faultConn struct {
	c, u net.Conn
	wmu  sync.Mutex // held while a whole frame is written to c, so an injected frame lands between two
}

func startFaultRelay(t *testing.T, target string) *faultRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &faultRelay{t: t, ln: ln, target: target}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			fc := &faultConn{c: c, u: u}
			r.mu.Lock()
			r.conns = append(r.conns, fc)
			r.mu.Unlock()
			r.wg.Add(2)
			go func() { defer r.wg.Done(); _, _ = io.Copy(u, c); _ = u.Close() }()
			go func() { defer r.wg.Done(); fc.frames(); _ = c.Close() }()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		r.mu.Lock()
		for _, fc := range r.conns {
			_ = fc.c.Close()
			_ = fc.u.Close()
		}
		r.mu.Unlock()
		r.wg.Wait()
	})
	return r
}

// frames forwards the broker's stream frame by frame (it has no protocol header), whole frames under wmu.
func (fc *faultConn) frames() {
	hdr := make([]byte, 7)
	for {
		if _, err := io.ReadFull(fc.u, hdr); err != nil {
			return
		}
		size := binary.BigEndian.Uint32(hdr[3:7])
		frame := make([]byte, 7+int(size)+1)
		copy(frame, hdr)
		if _, err := io.ReadFull(fc.u, frame[7:]); err != nil {
			return
		}
		fc.wmu.Lock()
		_, err := fc.c.Write(frame)
		fc.wmu.Unlock()
		if err != nil {
			return
		}
	}
}

// inject writes a frame to every open connection's client, between two broker frames.
func (r *faultRelay) inject(frame []byte) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, fc := range r.conns {
		fc.wmu.Lock()
		if _, err := fc.c.Write(frame); err == nil {
			n++
		}
		fc.wmu.Unlock()
	}
	return n
}

// forceClose does what RabbitMQ does to every connection for 320 CONNECTION_FORCED: a Connection.Close, then the
// end of both sockets.
func (r *faultRelay) forceClose() {
	r.inject(wire.Method(0, 10, 50, wire.Short(320),
		wire.ShortStr("CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"), wire.Short(0), wire.Short(0)))
	r.mu.Lock()
	conns := r.conns
	r.conns = nil
	r.mu.Unlock()
	for _, fc := range conns {
		_ = fc.c.Close()
		_ = fc.u.Close()
	}
}

// What the broker does to the connections of a call in flight is on the call's record: a memory alarm
// (Connection.Blocked) and then a forced close of every connection, while nova-compute (pool of one) handles a
// 3 s call from nova-conductor. With the real oslo.messaging; oslo reconnects by itself.
func TestE2EBrokerTroubleLandsOnTheCallsInFlight(t *testing.T) {
	skipShort(t)
	relay := startFaultRelay(t, brokertest.Require(t))
	rig := startOsloRig(t, "e2e_fault", relay.ln.Addr().String())
	client, httpAddr := rig.client, rig.httpAddr
	srv := rig.oslo(t, "server", "--pool", "1")
	srv.waitLine(60*time.Second, func(l string) bool { return l == "READY" })
	burst := rig.oslo(t, "burst", "--calls", "1", "--seconds", "3")

	// Once the call is in the server's hands, the broker raises a memory alarm, then forces every connection closed.
	deadline := time.Now().Add(60 * time.Second)
	for {
		var v correlate.InFlight
		getJSON(t, client, "http://"+httpAddr+"/api/inflight", &v)
		if len(v.Servers) > 0 && v.Servers[0].InFlight == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the call never reached the server: %+v", v)
		}
		time.Sleep(50 * time.Millisecond) // polling the live view for the call to be delivered
	}
	if n := relay.inject(wire.Method(0, 10, 60, wire.ShortStr("low on memory"))); n == 0 {
		t.Fatal("no connection to block")
	}
	time.Sleep(200 * time.Millisecond) // let the alarm stand a moment, as a real one does, before the close
	relay.forceClose()

	// oslo reconnects; the call ends one way or the other (its reply, or its 120 s timeout is not waited for: the
	// record is flushed at amqptrace's stop).
	select {
	case <-burst.done:
	case <-time.After(30 * time.Second):
	}
	var call *correlate.Record
	recs := rig.stop(t)
	for i := range recs {
		if recs[i].Method == "report_state" {
			call = &recs[i]
		}
	}
	if call == nil {
		t.Fatalf("no record of the call: %+v", recs)
	}
	types := map[string]bool{}
	for _, e := range call.Events {
		types[e.Type] = true
	}
	if !types[correlate.EventConnectionBlocked] || !types[correlate.EventConnectionClosed] {
		t.Errorf("the call's record does not carry the broker's trouble: %s %+v", call.Status, call.Events)
	}
	t.Logf("call %s: status %s, cause %q, events %s", call.MsgID, call.Status, call.Cause, fmt.Sprint(call.Events))
}
