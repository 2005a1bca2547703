package capture

import (
	"context"
	"fmt"
	"hash/maphash"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/amqptrace/amqptrace/frames"
	"github.com/amqptrace/amqptrace/internal/recorded"
)

// This file writes its own capture files: the real oslo.messaging connections recorded in
// frames/testdata/oslo, cut into Ethernet/IPv4/TCP packets (a SYN handshake, both directions interleaved,
// segments split at awkward offsets, some retransmitted, a FIN each way), written with pcapgo's pcap and pcapng
// writers. ReadFile reads them back into a Capture whose taps are frames decoders set up as
// pipeline.Passive's are (resynchronising, hunting on a connection picked up mid-stream, Resync on a gap).
// The frames must be exactly those of decoding the recorded streams directly. (The test imports frames; the
// package itself does not, which TestImportRules checks.)

type osloConn = recorded.Conn

func loadOslo(t *testing.T) []osloConn {
	t.Helper()
	conns, err := recorded.Load(filepath.Join("..", "frames", "testdata", "oslo"))
	if err != nil {
		t.Fatal(err)
	}
	return conns
}

// frameEvent is what the test compares of a frame: everything but the payload, which is hashed.
type frameEvent struct {
	Type             frames.Type
	Channel          uint16
	Class, Method    uint16
	Len              int
	Hash             uint64
	Offset           int64
	ConnName, DirStr string
}

func (e frameEvent) String() string {
	return fmt.Sprintf("%s %s@%d type=%d ch=%d %d.%d len=%d hash=%x", e.ConnName, e.DirStr, e.Offset, e.Type,
		e.Channel, e.Class, e.Method, e.Len, e.Hash)
}

var frameSeed = maphash.MakeSeed()

// frameLog records each direction's frames (frames are borrowed: only copies are kept).
type frameLog struct {
	name   string
	events [2][]frameEvent
}

func (l *frameLog) HandleFrame(f *frames.Frame) {
	l.events[f.Dir] = append(l.events[f.Dir], frameEvent{Type: f.Type, Channel: f.Channel, Class: f.ClassID,
		Method: f.MethodID, Len: len(f.Payload), Hash: maphash.Bytes(frameSeed, f.Payload), Offset: f.Offset,
		ConnName: l.name, DirStr: f.Dir.String()})
}

// decodeDirect is the reference: each recorded stream decoded whole, as frames' own tests do.
func decodeDirect(t *testing.T, c osloConn) *frameLog {
	t.Helper()
	l := &frameLog{name: c.Name}
	conn := frames.NewConn(l, frames.Options{})
	if _, err := conn.ClientDecoder().Write(c.C2S); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ServerDecoder().Write(c.S2C); err != nil {
		t.Fatal(err)
	}
	if err := conn.Err(); err != nil {
		t.Fatalf("%s decoded directly: %v", c.Name, err)
	}
	if len(l.events[0]) == 0 || len(l.events[1]) == 0 {
		t.Fatalf("%s: no frames decoded directly", c.Name)
	}
	return l
}

// writeCapture writes the packets to a pcap (ng false) or pcapng file.
func writeCapture(t *testing.T, path string, pkts []recorded.Packet, ng bool) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := recorded.WriteCapture(f, pkts, ng); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// replayed is what replaying a file gave: each connection's frames (by client address) and what it was told.
type replayed struct {
	logs  map[netip.AddrPort]*frameLog
	info  map[netip.AddrPort]ConnInfo
	gaps  int
	ended int
	off   map[netip.AddrPort]error
	stats Stats
}

// replay reads path with ReadFile into a Capture whose taps decode as pipeline.Passive's do.
func replay(t *testing.T, path string) *replayed {
	t.Helper()
	r := &replayed{logs: map[netip.AddrPort]*frameLog{}, info: map[netip.AddrPort]ConnInfo{},
		off: map[netip.AddrPort]error{}}
	c := New(Config{Ports: []uint16{5672}, Tap: func(info ConnInfo) Tap {
		l := &frameLog{}
		r.logs[info.Client], r.info[info.Client] = l, info
		fc := frames.NewConn(l, frames.Options{Resync: true})
		if info.MidStream {
			fc.ClientDecoder().Resync(0)
			fc.ServerDecoder().Resync(0)
		}
		return Tap{
			ClientToServer: fc.ClientDecoder(),
			ServerToClient: fc.ServerDecoder(),
			Gap: func(d Direction, lost int64) {
				r.gaps++
				if d == ClientToServer {
					fc.ClientDecoder().Resync(lost)
				} else {
					fc.ServerDecoder().Resync(lost)
				}
			},
			Done: func(ConnEnd) {
				fc.ClientDecoder().End()
				fc.ServerDecoder().End()
				r.ended++
				r.off[info.Client] = fc.Err()
			},
		}
	}})
	n, err := ReadFile(context.Background(), path, c, ReadOptions{})
	if err != nil {
		t.Fatalf("ReadFile(%s): %v after %d packets", path, err, n)
	}
	c.Close()
	r.stats = c.Stats()
	return r
}

// diffFrames reports the first difference between two frame sequences.
func diffFrames(t *testing.T, what string, want, got []frameEvent) {
	t.Helper()
	for i := range min(len(want), len(got)) {
		w, g := want[i], got[i]
		g.ConnName = w.ConnName
		if w != g {
			t.Fatalf("%s: frame %d of %d differs:\nwant %v\ngot  %v", what, i, len(want), w, g)
		}
	}
	if len(want) != len(got) {
		t.Fatalf("%s: %d frames, want %d", what, len(got), len(want))
	}
}

func clientOf(i int) netip.AddrPort { return recorded.Client(i) }

// TestOwnPcapReplay: a pcap and a pcapng file of the four recorded oslo connections, from their SYNs, give
// exactly the frames of decoding the recorded streams directly, at the same offsets, with no gap.
func TestOwnPcapReplay(t *testing.T) {
	conns := loadOslo(t)
	var all [][]recorded.Packet
	for i, c := range conns {
		all = append(all, recorded.Packets(i, c))
	}
	pkts := recorded.Interleave(all, 0)
	for _, ng := range []bool{false, true} {
		path := filepath.Join(t.TempDir(), "oslo.pcap")
		if ng {
			path += "ng"
		}
		writeCapture(t, path, pkts, ng)
		r := replay(t, path)
		st := r.stats
		t.Logf("%s: %d packets, %d connections, %d mid-stream, %d retransmitted bytes, %d gaps",
			filepath.Base(path), st.Packets, st.Conns, st.MidStream, st.Retransmitted, st.Gaps)
		if st.Packets != uint64(len(pkts)) || st.Conns != uint64(len(conns)) || st.MidStream != 0 || st.Gaps != 0 ||
			r.gaps != 0 || st.Ignored != 0 || r.ended != len(conns) {
			t.Fatalf("%s: stats %+v, %d gaps told, %d ended; want %d packets, %d connections from their SYN, no gap",
				path, st, r.gaps, r.ended, len(pkts), len(conns))
		}
		if st.Retransmitted == 0 {
			t.Fatalf("%s: no retransmitted bytes counted", path)
		}
		for i, c := range conns {
			want := decodeDirect(t, c)
			got := r.logs[clientOf(i)]
			if got == nil {
				t.Fatalf("%s: %s not captured", path, c.Name)
			}
			if err := r.off[clientOf(i)]; err != nil {
				t.Fatalf("%s: %s: decoding switched off: %v", path, c.Name, err)
			}
			for d := range 2 {
				diffFrames(t, fmt.Sprintf("%s %s dir %d", filepath.Base(path), c.Name, d), want.events[d], got.events[d])
			}
		}
	}
}

// TestOwnPcapMidStream: the same capture with each connection's first packets missing (its handshake and the
// first bytes each way), as when the capture starts after the clients connected. Every connection is picked up
// mid-stream, and from the first frame that starts at or after the first byte captured in a direction, every
// frame is decoded exactly (offsets counted from that first byte).
func TestOwnPcapMidStream(t *testing.T) {
	conns := loadOslo(t)
	for _, skip := range []int{3 + 1, 3 + 12, 3 + 25} {
		var all [][]recorded.Packet
		var first [][2]int // per connection, the stream offset of the first byte captured each way
		for i, c := range conns {
			p := recorded.Packets(i, c)
			f := [2]int{-1, -1}
			for _, q := range p[skip:] {
				if q.Off >= 0 && f[q.Dir] < 0 {
					f[q.Dir] = q.Off
				}
			}
			all, first = append(all, p), append(first, f)
		}
		path := filepath.Join(t.TempDir(), "late.pcap")
		writeCapture(t, path, recorded.Interleave(all, skip), false)
		r := replay(t, path)
		st := r.stats
		if st.MidStream != uint64(len(conns)) || st.Gaps != 0 {
			t.Fatalf("skip %d: %d of %d connections mid-stream, %d gaps; want all, none", skip, st.MidStream,
				len(conns), st.Gaps)
		}
		total, kept := 0, 0
		for i, c := range conns {
			ref := decodeDirect(t, c)
			got := r.logs[clientOf(i)]
			if got == nil || !r.info[clientOf(i)].MidStream {
				t.Fatalf("skip %d: %s not captured mid-stream", skip, c.Name)
			}
			if err := r.off[clientOf(i)]; err != nil {
				t.Fatalf("skip %d: %s: decoding switched off: %v", skip, c.Name, err)
			}
			for d := range 2 {
				k := first[i][d]
				var want []frameEvent
				for _, e := range ref.events[d] {
					if k >= 0 && e.Offset >= int64(k) {
						e.Offset -= int64(k)
						want = append(want, e)
					}
				}
				total += len(ref.events[d])
				kept += len(want)
				if len(want) == 0 {
					t.Fatalf("skip %d: %s dir %d: the test keeps no whole frame", skip, c.Name, d)
				}
				diffFrames(t, fmt.Sprintf("skip %d: %s dir %d from %d", skip, c.Name, d, k), want, got.events[d])
			}
		}
		t.Logf("skip %d packets per connection: %d of %d frames after the first byte captured, all decoded",
			skip, kept, total)
	}
}
