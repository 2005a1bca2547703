package e2e

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/amqptrace/amqptrace/capture"
	"github.com/amqptrace/amqptrace/correlate"
)

// The loss oracle. It reads the whole capture itself (not through package capture), lays each TCP direction out
// as a byte stream, walks the AMQP frames of that stream and groups them into messages (a basic.publish or
// basic.deliver with its header and body frames), and names each message's action by the unique id or msg id
// its body carries. A removed packet is a byte range of one direction; the actions it damages are those with a
// message whose bytes (first frame to last) overlap that range: its own frames were in the packet, or it was half
// assembled when the hole came, which the decoder's resync abandons.

// pcapStream is one direction of one TCP connection.
type pcapStream struct {
	src, dst string // ip:port
}

// oraclePacket is one packet of the capture with its payload's place in its direction's stream.
type oraclePacket struct {
	key      pcapStream
	off, end uint64 // payload range, relative to the direction's first sequence number
	ts       time.Time
}

// oracleMessage is one AMQP message in one direction's stream: the bytes from its method frame to its last frame.
type oracleMessage struct {
	off, end uint64
	body     []byte
	// deliver says it is a Basic.Deliver; viaDefault that its exchange is the default one ("").
	deliver, viaDefault bool
}

// readOracle reads every packet of a pcap file and returns them in file order, and the stream of each direction
// whose SYN it saw.
func readOracle(t *testing.T, path string) ([]oraclePacket, map[pcapStream][]byte) {
	t.Helper()
	r := openPcap(t, path)
	type seg struct {
		off  uint64
		data []byte
	}
	isn := map[pcapStream]uint32{}
	syn := map[pcapStream]bool{}
	segs := map[pcapStream][]seg{}
	var pkts []oraclePacket
	for {
		data, ci, err := r.ReadPacketData()
		if err != nil {
			break
		}
		p := gopacket.NewPacket(data, r.LinkType(), gopacket.DecodeOptions{NoCopy: true, Lazy: true})
		tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		nl := p.NetworkLayer()
		if tcp == nil || nl == nil {
			pkts = append(pkts, oraclePacket{})
			continue
		}
		k := pcapStream{fmt.Sprintf("%s:%d", nl.NetworkFlow().Src(), tcp.SrcPort), fmt.Sprintf("%s:%d", nl.NetworkFlow().Dst(), tcp.DstPort)}
		if _, ok := isn[k]; !ok || tcp.SYN {
			isn[k] = tcp.Seq
			if tcp.SYN {
				isn[k]++ // the SYN takes one sequence number
				syn[k] = true
			}
		}
		off := uint64(tcp.Seq - isn[k]) // wraps correctly in 32 bits
		pl := tcp.Payload
		pkts = append(pkts, oraclePacket{key: k, off: off, end: off + uint64(len(pl)), ts: ci.Timestamp})
		if len(pl) > 0 {
			segs[k] = append(segs[k], seg{off, bytes.Clone(pl)})
		}
	}
	streams := map[pcapStream][]byte{}
	for k, ss := range segs {
		if !syn[k] {
			continue // begun before the recording (another test's connection): not ours, and not walkable
		}
		slices.SortStableFunc(ss, func(a, b seg) int { return int(a.off) - int(b.off) })
		var s []byte
		for _, sg := range ss {
			if sg.off > uint64(len(s)) {
				t.Fatalf("%v: the capture itself has a hole at %d (the oracle needs a whole recording)", k, len(s))
			}
			if end := sg.off + uint64(len(sg.data)); end > uint64(len(s)) {
				s = append(s, sg.data[uint64(len(s))-sg.off:]...)
			}
		}
		streams[k] = s
	}
	return pkts, streams
}

// walkFrames calls fn with each whole frame of one direction's stream (after the client's protocol header, if
// any): its place, type, channel and payload.
func walkFrames(t *testing.T, s []byte, fn func(off, end uint64, typ byte, ch uint16, pl []byte)) {
	t.Helper()
	var off uint64
	if bytes.HasPrefix(s, []byte("AMQP")) {
		off = 8
	}
	for off+7 <= uint64(len(s)) {
		typ, ch, size := s[off], binary.BigEndian.Uint16(s[off+1:]), uint64(binary.BigEndian.Uint32(s[off+3:]))
		end := off + 7 + size + 1
		if end > uint64(len(s)) {
			return // the recording ended inside a frame
		}
		if s[end-1] != 0xCE {
			t.Fatalf("oracle: no frame end at %d", end-1)
		}
		fn(off, end, typ, ch, s[off+7:end-1])
		off = end
	}
}

// amqpMessages returns the messages of one direction's stream.
func amqpMessages(t *testing.T, s []byte) []oracleMessage {
	t.Helper()
	type inProgress struct {
		msg       oracleMessage
		remaining uint64
		header    bool
	}
	open := map[uint16]*inProgress{}
	var out []oracleMessage
	walkFrames(t, s, func(off, end uint64, typ byte, ch uint16, pl []byte) {
		switch typ {
		case 1:
			if len(pl) >= 4 && binary.BigEndian.Uint16(pl) == 60 {
				switch binary.BigEndian.Uint16(pl[2:]) {
				case 40, 50, 71: // publish, return, get-ok: content follows
					open[ch] = &inProgress{msg: oracleMessage{off: off}}
				case 60: // deliver: consumer tag, delivery tag, redelivered, exchange, ...
					m := oracleMessage{off: off, deliver: true}
					if n := 4 + 1 + int(pl[4]) + 8 + 1; n < len(pl) {
						m.viaDefault = pl[n] == 0
					}
					open[ch] = &inProgress{msg: m}
				}
			}
		case 2:
			if m := open[ch]; m != nil && len(pl) >= 12 {
				m.remaining, m.header = binary.BigEndian.Uint64(pl[4:]), true
			}
		case 3:
			if m := open[ch]; m != nil && m.header {
				m.msg.body = append(m.msg.body, pl...)
				m.remaining -= min(m.remaining, uint64(len(pl)))
			}
		}
		if m := open[ch]; m != nil && m.header && m.remaining == 0 {
			m.msg.end = end
			out = append(out, m.msg)
			delete(open, ch)
		}
	})
	return out
}

// lostSetup says whether removed packet p carried a Basic.Consume or a Consume-Ok (consume), a Queue.Declare
// or Queue.Bind (topology), or the Connection.Open that names the vhost (vhost).
func lostSetup(t *testing.T, s []byte, p oraclePacket) (consume, topology, vhost bool) {
	walkFrames(t, s, func(off, end uint64, typ byte, _ uint16, pl []byte) {
		if off < p.end && p.off < end && typ == 1 && len(pl) >= 4 {
			switch binary.BigEndian.Uint32(pl) {
			case 60<<16 | 20, 60<<16 | 21:
				consume = true
			case 50<<16 | 10, 50<<16 | 20:
				topology = true
			case 10<<16 | 40:
				vhost = true
			}
		}
	})
	return consume, topology, vhost
}

// openOKEnd is where the broker's Connection.Open-Ok ends in its direction's stream (0: none).
func openOKEnd(t *testing.T, s []byte) (at uint64) {
	walkFrames(t, s, func(_, end uint64, typ byte, _ uint16, pl []byte) {
		if at == 0 && typ == 1 && len(pl) >= 4 && binary.BigEndian.Uint32(pl) == 10<<16|41 {
			at = end
		}
	})
	return at
}

// damagedByLoss returns the unique ids of the actions that have a message overlapping one of the removed packets
// (damaged), and of those with a message that follows a hole in the same direction within capture.DefaultGapTimeout
// of capture time (delayed): the reassembly holds such bytes until the hole is given up, so they reach the
// correlator after what was captured meanwhile on other connections (a fanout's deliveries before its publish).
func damagedByLoss(t *testing.T, m *manifest, pkts []oraclePacket, streams map[pcapStream][]byte, removed []int) (damaged, delayed map[string]bool) {
	t.Helper()
	msgs := map[pcapStream][]oracleMessage{}
	for k, s := range streams {
		msgs[k] = amqpMessages(t, s)
	}
	owner := func(body []byte) []*action {
		var as []*action
		for i := range m.Actions {
			a := &m.Actions[i]
			if bytes.Contains(body, []byte(a.Publishes[0].UniqueID)) ||
				(a.Publishes[0].MsgID != nil && bytes.Contains(body, []byte(*a.Publishes[0].MsgID))) {
				as = append(as, a)
			}
		}
		return as
	}
	// firstSeen is when the byte at off of a stream was captured.
	firstSeen := func(k pcapStream, off uint64) time.Time {
		for _, p := range pkts {
			if p.key == k && p.off <= off && off < p.end {
				return p.ts
			}
		}
		return time.Time{}
	}
	broker := ":" + strconv.Itoa(int(brokerPort(t)))
	gone := map[int]bool{}
	for _, i := range removed {
		gone[i] = true
	}
	// The capture looks at its holes when capture time has moved on by tickEvery since it last looked, before the
	// packet that moved it; these are the times it looked.
	const tickEvery = 100 * time.Millisecond
	var ticks []time.Time
	var last time.Time
	for i, p := range pkts {
		if !gone[i] && (p.ts.Sub(last) >= tickEvery || p.ts.Before(last)) {
			ticks = append(ticks, p.ts)
			last = p.ts
		}
	}
	damaged, delayed = map[string]bool{}, map[string]bool{}
	for _, i := range removed {
		p := pkts[i]
		if p.end == p.off {
			continue // no payload: an ACK, a SYN or a FIN
		}
		// The hole shows when the first segment after it arrives (its wait starts then), and it is given up at the
		// first look GapTimeout later; what arrived in between is held and reaches the correlator late. With no
		// segment after it, nothing is held.
		var holeAt time.Time
		for j := i + 1; j < len(pkts); j++ {
			if q := pkts[j]; !gone[j] && q.key == p.key && q.end > q.off && q.off >= p.end {
				holeAt = q.ts
				break
			}
		}
		var givenUp time.Time // zero: held until the connection or the file ends
		if !holeAt.IsZero() {
			for _, tk := range ticks {
				if tk.Sub(holeAt) >= capture.DefaultGapTimeout {
					givenUp = tk
					break
				}
			}
		}
		// A lost Basic.Consume or Consume-Ok leaves the consumer's queue unknown until a delivery through the
		// default exchange names it (a reply queue's): the deliveries of that connection up to that one may be
		// taken for someone else's, and a call answered in between is not seen to reach its caller. A lost
		// Queue.Declare or Queue.Bind leaves the correlator short of a queue a fanout or cast is routed to, so
		// it may end that message's record before the delivery that queue gets: every later delivery of the
		// connection may be affected.
		consume, topology, vhost := lostSetup(t, streams[p.key], p)
		if vhost {
			// A lost Connection.Open leaves the connection's vhost unknown: with several vhosts on the wire it
			// has a topology of its own, and anything it publishes or gets may be taken apart from its vhost's.
			for _, k := range []pcapStream{p.key, {p.key.dst, p.key.src}} {
				for _, msg := range msgs[k] {
					for _, a := range owner(msg.body) {
						damaged[a.Publishes[0].UniqueID] = true
					}
				}
			}
		}
		if consume || topology {
			back := pcapStream{p.key.dst, p.key.src}
			if strings.HasSuffix(p.key.src, broker) {
				back = p.key
			}
			for _, msg := range msgs[back] {
				if !msg.deliver || firstSeen(back, msg.off).Before(p.ts) {
					continue
				}
				for _, a := range owner(msg.body) {
					damaged[a.Publishes[0].UniqueID] = true
				}
				if msg.viaDefault && !topology {
					break
				}
			}
		}
		// A hole in the broker's side of a login holds the client's messages too: they wait for the Open-Ok
		// (correlate's login gate), which is behind the hole, or for the hole to be given up.
		if back := (pcapStream{p.key.dst, p.key.src}); !holeAt.IsZero() && p.off < openOKEnd(t, streams[p.key]) {
			for _, msg := range msgs[back] {
				if at := firstSeen(back, msg.off); givenUp.IsZero() || at.Before(givenUp) {
					for _, a := range owner(msg.body) {
						delayed[a.Publishes[0].UniqueID] = true
					}
				}
			}
		}
		for _, msg := range msgs[p.key] {
			if msg.end <= p.off {
				continue
			}
			into := damaged
			if msg.off >= p.end {
				at := firstSeen(p.key, msg.off)
				if holeAt.IsZero() || at.Before(holeAt) || (!givenUp.IsZero() && !at.Before(givenUp)) {
					continue
				}
				into = delayed
			}
			for _, a := range owner(msg.body) {
				into[a.Publishes[0].UniqueID] = true
			}
		}
	}
	return damaged, delayed
}

// dropPacketsAt copies a pcap without the packets at the given indexes.
func dropPacketsAt(t *testing.T, in, out string, removed []int) {
	t.Helper()
	copyPcap(t, in, out, func(i int, _ time.Time) bool { _, gone := slices.BinarySearch(removed, i); return !gone })
}

// pickLoss chooses each packet index with probability loss (seeded).
func pickLoss(n int, loss float64, seed int64) []int {
	rng := rand.New(rand.NewSource(seed))
	var out []int
	for i := range n {
		if rng.Float64() < loss {
			out = append(out, i)
		}
	}
	return out
}

// recordShape is what a record says about which of an action's messages were seen.
type recordShape struct {
	Kind                                        correlate.Kind
	Status                                      correlate.Status
	Method, MsgID, ErrorClass                   string
	Published, Delivered, Replied, ReplyArrived bool
	Deliveries, Heartbeats                      int
}

func shapes(m *manifest, rs []correlate.Record) map[string][]recordShape {
	by := map[string]*action{}
	for i := range m.Actions {
		by[m.Actions[i].Publishes[0].UniqueID] = &m.Actions[i]
	}
	out := map[string][]recordShape{}
	for _, r := range rs {
		a := by[r.UniqueID]
		if a == nil {
			continue
		}
		s := recordShape{Kind: r.Kind, Status: r.Status, Method: r.Method, MsgID: r.MsgID, Published: r.Published != nil,
			Delivered: r.Delivered != nil, Replied: r.Replied != nil, ReplyArrived: r.ReplyDelivered != nil, Deliveries: r.Deliveries,
			Heartbeats: r.Heartbeats}
		if r.Error != nil {
			s.ErrorClass = r.Error.Class
		}
		out[r.UniqueID] = append(out[r.UniqueID], s)
	}
	return out
}

// checkLossExactly: every action whose record differs from the whole capture's (or is missing) had a message in a
// removed packet, or lost a frame that named its routing (see damagedByLoss). A message only delayed behind a hole
// must come out the same: the reorder window covers the wait. An action with a message in a removed packet whose
// record did not change is logged, not failed.
func checkLossExactly(t *testing.T, m *manifest, whole, lossy []correlate.Record, damaged, delayed map[string]bool) (changed, changedDelayed int) {
	t.Helper()
	ws, ls := shapes(m, whole), shapes(m, lossy)
	for i := range m.Actions {
		u, l := m.Actions[i].Publishes[0].UniqueID, m.Actions[i].label()
		same := slices.Equal(ws[u], ls[u])
		if !same {
			changed++
		}
		switch {
		case !same && !damaged[u] && delayed[u]:
			changedDelayed++
			t.Errorf("%s: no packet carrying its messages was removed, they were only delayed behind a hole, but its "+
				"record changed:\n whole %+v\n lossy %+v", l, ws[u], ls[u])
		case !same && !damaged[u]:
			t.Errorf("%s: its record changed, but no packet carrying its messages was removed:\n whole %+v\n lossy %+v", l, ws[u], ls[u])
		case same && damaged[u]:
			// Not an error yet: some of an action's messages do not show in the fields compared (a call monitor's
			// heartbeat reply lost while later heartbeats arrive). Logged so that a run shows how often.
			t.Logf("%s: a removed packet carried one of its messages, but its record is unchanged: %+v", l, ws[u])
		}
	}
	return changed, changedDelayed
}
