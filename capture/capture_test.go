package capture

import (
	"bytes"
	"math/rand"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
	"go.uber.org/goleak"

	"github.com/amqptrace/amqptrace/internal/recorded"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// sink records what a Tap is given.
type sink struct {
	streams [2]bytes.Buffer
	gaps    [2][]int64
	info    ConnInfo
	end     *ConnEnd
}

type dirWriter struct {
	s   *sink
	dir Direction
}

func (w dirWriter) WriteStamped(p []byte, _ time.Time) (int, error) {
	return w.s.streams[w.dir].Write(p)
}

func newSinks() (*[]*sink, TapFunc) {
	var all []*sink
	return &all, func(info ConnInfo) Tap {
		s := &sink{info: info}
		all = append(all, s)
		return Tap{ClientToServer: dirWriter{s, ClientToServer}, ServerToClient: dirWriter{s, ServerToClient},
			Gap:  func(d Direction, n int64) { s.gaps[d] = append(s.gaps[d], n) },
			Done: func(e ConnEnd) { s.end = &e }}
	}
}

var (
	clientAP = netip.MustParseAddrPort("127.0.0.1:40001")
	brokerAP = netip.MustParseAddrPort("127.0.0.1:5672")
)

// pkt builds an Ethernet/IPv4/TCP packet.
func pkt(_ testing.TB, from, to netip.AddrPort, seq uint32, flags string, payload []byte) []byte {
	return recorded.TCPPacket(from, to, seq, flags, payload)
}

type feeder struct {
	t  testing.TB
	c  *Capture
	at time.Time
}

func (f *feeder) send(from, to netip.AddrPort, seq uint32, flags string, payload []byte) {
	f.t.Helper()
	f.at = f.at.Add(time.Millisecond)
	if err := f.c.Packet(layers.LinkTypeEthernet, pkt(f.t, from, to, seq, flags, payload), 0, f.at); err != nil {
		f.t.Fatal(err)
	}
}

func newFeeder(t testing.TB, tap TapFunc) *feeder {
	return &feeder{t: t, c: New(Config{Ports: []uint16{5672}, Tap: tap}), at: time.Unix(1700000000, 0)}
}

// A capture of two interfaces (tshark -i lo -i any) holds each packet twice, and one interface's copies can come
// after the other's first data: a second SYN does not start the stream over, so its first bytes come once.
func TestSYNCopyAfterDataIsIgnored(t *testing.T) {
	all, tap := newSinks()
	f := newFeeder(t, tap)
	hdr := []byte("AMQP\x00\x00\x09\x01")
	f.send(clientAP, brokerAP, 999, "S", nil)
	f.send(brokerAP, clientAP, 4999, "SA", nil)
	f.send(clientAP, brokerAP, 1000, "A", hdr)
	f.send(clientAP, brokerAP, 999, "S", nil) // the second interface's copies
	f.send(brokerAP, clientAP, 4999, "SA", nil)
	f.send(clientAP, brokerAP, 1000, "A", hdr)
	f.send(brokerAP, clientAP, 5000, "A", []byte("start"))
	f.send(clientAP, brokerAP, 1008, "A", []byte("start-ok"))
	if len(*all) != 1 {
		t.Fatalf("%d connections, want 1", len(*all))
	}
	s := (*all)[0]
	if got := s.streams[ClientToServer].String(); got != string(hdr)+"start-ok" {
		t.Errorf("client stream %q", got)
	}
	if got := s.streams[ServerToClient].String(); got != "start" {
		t.Errorf("server stream %q", got)
	}
	if len(s.gaps[0])+len(s.gaps[1]) != 0 {
		t.Errorf("gaps %v", s.gaps)
	}
}

// A connection from its SYN, with retransmissions, reordering and a FIN each way: both streams exactly.
func TestReassemblyInOrderAndReordered(t *testing.T) {
	all, tap := newSinks()
	f := newFeeder(t, tap)
	f.send(clientAP, brokerAP, 999, "S", nil)
	f.send(brokerAP, clientAP, 4999, "SA", nil)
	f.send(clientAP, brokerAP, 1000, "A", []byte("AMQP\x00\x00\x09\x01"))
	f.send(brokerAP, clientAP, 5000, "A", []byte("hello "))
	f.send(brokerAP, clientAP, 5011, "A", []byte("!"))                    // ahead of a hole
	f.send(brokerAP, clientAP, 5006, "A", []byte("world"))                // fills it
	f.send(brokerAP, clientAP, 5000, "A", []byte("hello "))               // retransmission
	f.send(clientAP, brokerAP, 1004, "A", []byte("\x00\x00\x09\x01more")) // overlapping
	f.send(clientAP, brokerAP, 1012, "FA", nil)
	f.send(brokerAP, clientAP, 5012, "FA", nil)
	if len(*all) != 1 {
		t.Fatalf("%d connections", len(*all))
	}
	s := (*all)[0]
	if got := s.streams[0].String(); got != "AMQP\x00\x00\x09\x01more" {
		t.Errorf("client stream %q", got)
	}
	if got := s.streams[1].String(); got != "hello world!" {
		t.Errorf("server stream %q", got)
	}
	if s.info.MidStream || s.info.Client != clientAP || s.info.Server != brokerAP {
		t.Errorf("info %+v", s.info)
	}
	if s.end == nil || s.end.Reason != "fin" || len(s.gaps[0])+len(s.gaps[1]) != 0 {
		t.Errorf("end %+v gaps %v", s.end, s.gaps)
	}
	if st := f.c.Stats(); st.Retransmitted != 10 || st.Gaps != 0 || st.ConnsOpen != 0 {
		t.Errorf("stats %+v", st)
	}
}

// A hole that never fills becomes a gap of the right size after GapTimeout; a connection without its SYN is
// mid-stream, its broker told by the port.
func TestReassemblyGapAndMidStream(t *testing.T) {
	all, tap := newSinks()
	f := newFeeder(t, tap)
	f.send(brokerAP, clientAP, 7000, "A", []byte("abc"))
	f.send(brokerAP, clientAP, 7010, "A", []byte("xyz")) // 7 bytes lost before it
	f.at = f.at.Add(2 * time.Second)
	f.c.Tick(f.at)
	f.send(brokerAP, clientAP, 7013, "A", []byte("!"))
	f.c.Close()
	s := (*all)[0]
	if !s.info.MidStream || s.info.Server != brokerAP {
		t.Fatalf("info %+v", s.info)
	}
	if got := s.streams[1].String(); got != "abcxyz!" || len(s.gaps[1]) != 1 || s.gaps[1][0] != 7 {
		t.Fatalf("stream %q gaps %v", got, s.gaps[1])
	}
	if s.end == nil || s.end.Reason != "capture ended" {
		t.Fatalf("end %+v", s.end)
	}
	if st := f.c.Stats(); st.Gaps != 1 || st.GapBytes != 7 || st.MidStream != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TLS is recognised from its first record and never reaches the writers.
func TestTLSNotDecoded(t *testing.T) {
	all, tap := newSinks()
	f := newFeeder(t, tap)
	f.send(clientAP, brokerAP, 1, "S", nil)
	f.send(clientAP, brokerAP, 2, "A", []byte{22, 3, 1, 0, 200, 1, 0, 0, 196, 3, 3})
	f.send(brokerAP, clientAP, 50, "SA", nil)
	f.send(brokerAP, clientAP, 51, "A", []byte{22, 3, 3, 0, 90, 2, 0})
	f.c.Close()
	s := (*all)[0]
	if s.streams[0].Len() != 0 || s.streams[1].Len() != 0 || s.end == nil || !s.end.TLS {
		t.Fatalf("TLS reached the writers: %q %q end %+v", s.streams[0].String(), s.streams[1].String(), s.end)
	}
	if f.c.Stats().TLS != 1 {
		t.Fatalf("TLS not counted")
	}
}

// Other ports and non-TCP are passed over.
func TestOtherTrafficIgnored(t *testing.T) {
	all, tap := newSinks()
	f := newFeeder(t, tap)
	f.send(clientAP, netip.MustParseAddrPort("127.0.0.1:80"), 1, "A", []byte("GET /"))
	if len(*all) != 0 || f.c.Stats().Ignored != 1 {
		t.Fatalf("%d conns, %+v", len(*all), f.c.Stats())
	}
	if err := f.c.Packet(layers.LinkType(147), []byte{1, 2, 3}, 0, f.at); err == nil {
		t.Fatal("an unsupported link type is an error")
	}
}

// FuzzReassembly cuts a stream into segments, reorders, duplicates and drops some of them, and checks what the
// tap gets: the stream's bytes in order, with a gap of the right size exactly where bytes were dropped, never a
// byte that was not sent or one twice.
func FuzzReassembly(f *testing.F) {
	f.Add([]byte("the quick brown fox jumps over the lazy dog, again and again and again"), int64(1))
	f.Add(bytes.Repeat([]byte{0xce, 1, 0, 0}, 300), int64(7))
	f.Fuzz(func(t *testing.T, stream []byte, seed int64) {
		if len(stream) == 0 || len(stream) > 1<<16 {
			return
		}
		rng := rand.New(rand.NewSource(seed))
		type seg struct{ off, n int }
		var segs []seg
		for off := 0; off < len(stream); {
			n := min(1+rng.Intn(200), len(stream)-off)
			segs = append(segs, seg{off, n})
			off += n
		}
		kept := make([]bool, len(stream))
		var order []seg
		for _, s := range segs {
			if rng.Intn(10) == 0 && len(order) > 0 { // dropped (the first is kept: the stream starts there)
				continue
			}
			order = append(order, s)
			if rng.Intn(8) == 0 {
				order = append(order, s) // duplicated
			}
		}
		for i := range order { // local reordering
			if j := i + rng.Intn(3); j < len(order) && rng.Intn(4) == 0 {
				order[i], order[j] = order[j], order[i]
			}
		}
		// The first segment sent must be the first of the stream: mid-stream pickup starts where it starts.
		for i, s := range order {
			if s.off == 0 {
				order[0], order[i] = order[i], order[0]
				break
			}
		}
		all, tap := newSinks()
		fd := newFeeder(t, tap)
		fd.c.cfg.MaxBuffered = 1 + rng.Intn(4096)
		const isn = 0xfffff000 // wraps around
		for _, s := range order {
			for i := s.off; i < s.off+s.n; i++ {
				kept[i] = true
			}
			fd.send(brokerAP, clientAP, isn+uint32(s.off), "A", stream[s.off:s.off+s.n])
		}
		fd.c.Close()
		sk := (*all)[0]
		// Replay what the tap was told against the stream: delivered bytes must match the stream where they say
		// they are, gaps must skip exactly unseen-or-given-up bytes.
		got := sk.streams[1].Bytes()
		if len(got) > len(stream) {
			t.Fatalf("%d bytes delivered of a %d-byte stream", len(got), len(stream))
		}
		var lost int64
		for _, g := range sk.gaps[1] {
			if g <= 0 {
				t.Fatalf("gap of %d", g)
			}
			lost += g
		}
		end := 0 // bytes lost after the last segment that came are not known to be lost
		for i, k := range kept {
			if k {
				end = i + 1
			}
		}
		if int64(len(got))+lost != int64(end) {
			t.Fatalf("%d delivered + %d lost != %d sent", len(got), lost, end)
		}
		// Every byte never sent must be inside a gap: the delivered bytes are a subsequence of the stream in
		// order, and each is a byte that was sent.
		j := 0
		for i := range stream {
			if j < len(got) && kept[i] && stream[i] == got[j] {
				j++
			}
		}
		if j != len(got) {
			t.Fatalf("delivered bytes are not the sent stream in order (matched %d of %d)", j, len(got))
		}
	})
}
