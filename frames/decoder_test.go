package frames

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/amqptrace/amqptrace/internal/wire"
)

// handshake is a client stream up to Tune-Ok (frame_max 131072) and the matching broker stream.
func handshake() (c2s, s2c []byte) {
	c2s = wire.Concat(wire.ProtocolHeader(), wire.StartOKPlain(wire.Table{"connection_name": "t:1:u"}, "guest", "guest"),
		wire.TuneOK(2047, 131072, 60), wire.Open("/"))
	s2c = wire.Concat(wire.Start(wire.Table{"product": "RabbitMQ"}), wire.Tune(2047, 131072, 60), wire.OpenOK())
	return c2s, s2c
}

// countingHandler counts frames by type.
type countingHandler struct{ n [9]int }

func (h *countingHandler) HandleFrame(f *Frame) { h.n[f.Type]++ }

func TestDecodeSwitchesOff(t *testing.T) {
	hs, _ := handshake()
	tooBig := wire.Frame(wire.TypeBody, 1, nil)
	copy(tooBig[3:7], []byte{0xff, 0xff, 0xff, 0xff})
	badEnd := wire.Heartbeat()
	badEnd[len(badEnd)-1] = 0x00
	shortMethod := wire.Frame(wire.TypeMethod, 1, []byte{0, 60})
	tests := []struct {
		name   string
		dir    Direction
		stream []byte
		want   error
		frames int // frames handed over before decoding switched off
	}{
		{"AMQP 1.0", ClientToServer, []byte("AMQP\x00\x01\x00\x00\x00\x00\x00\x21\x02\x00\x00\x00"), ErrProtocolHeader, 0},
		{"AMQP 1.0 SASL", ClientToServer, []byte("AMQP\x03\x01\x00\x00"), ErrProtocolHeader, 0},
		{"HTTP", ClientToServer, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), ErrProtocolHeader, 0},
		{"TLS", ClientToServer, []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc}, ErrProtocolHeader, 0},
		{"garbage", ClientToServer, bytes.Repeat([]byte{0xA5}, 100), ErrProtocolHeader, 0},
		{"AMQP 0-8", ClientToServer, []byte("AMQP\x01\x01\x08\x00"), ErrProtocolHeader, 0},
		{"broker refuses header", ServerToClient, []byte("AMQP\x00\x00\x09\x01"), ErrProtocolHeader, 0},
		{"4 GiB frame", ClientToServer, wire.Concat(hs, tooBig), ErrFrameTooLarge, 3},
		{"bad frame end", ClientToServer, wire.Concat(hs, wire.Heartbeat(), badEnd, wire.Heartbeat()), ErrFrameEnd, 4},
		{"unknown frame type", ClientToServer, wire.Concat(hs, wire.Frame(4, 0, nil)), ErrMalformed, 3},
		{"method without ids", ClientToServer, wire.Concat(hs, shortMethod), ErrMalformed, 3},
		{"garbage part-way", ClientToServer, wire.Concat(hs, wire.Heartbeat(), []byte("this is not a frame at all")), ErrMalformed, 4},
	}
	for _, tt := range tests {
		for _, chunk := range []int{len(tt.stream), 1, 3} {
			t.Run(tt.name, func(t *testing.T) {
				h := &countingHandler{}
				var logs bytes.Buffer
				conn := NewConn(h, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
				d := conn.ClientDecoder()
				if tt.dir == ServerToClient {
					d = conn.ServerDecoder()
				}
				feed(t, d, tt.stream, every(chunk))
				err := conn.Err()
				if !errors.Is(err, tt.want) {
					t.Fatalf("Err() = %v, want %v", err, tt.want)
				}
				var de *DecodeError
				if !errors.As(err, &de) || de.Dir != tt.dir || de.State == "" {
					t.Fatalf("Err() = %#v, want a *DecodeError for %v", err, tt.dir)
				}
				got := 0
				for _, n := range h.n {
					got += n
				}
				if got != tt.frames {
					t.Errorf("%d frames handed over, want %d", got, tt.frames)
				}
				st := conn.Stats()
				ds := st.Client
				if tt.dir == ServerToClient {
					ds = st.Server
				}
				if !st.Off || ds.Bytes != uint64(len(tt.stream)) || ds.Frames != uint64(tt.frames) {
					t.Errorf("stats %+v, want off, %d bytes, %d frames", st, len(tt.stream), tt.frames)
				}
				// After switching off, more bytes are counted and nothing is decoded, in both directions.
				feed(t, d, wire.Heartbeat(), whole(nil))
				feed(t, conn.ServerDecoder(), wire.Heartbeat(), whole(nil))
				if st2 := conn.Stats(); st2.Client.Frames+st2.Server.Frames != uint64(tt.frames) {
					t.Errorf("frames decoded after switching off: %+v", st2)
				}
				if strings.Count(logs.String(), "decoding switched off") != 1 {
					t.Errorf("want exactly one log line, got:\n%s", logs.String())
				}
				if d.carry != nil {
					t.Error("carry buffer kept after switching off")
				}
			})
		}
	}
}

func TestTruncatedStreamIsNotAnError(t *testing.T) {
	hs, _ := handshake()
	body := wire.Body(1, bytes.Repeat([]byte("x"), 1000), 0)
	for cut := 1; cut < len(body); cut++ {
		h := &countingHandler{}
		conn := NewConn(h, Options{})
		feed(t, conn.ClientDecoder(), wire.Concat(hs, body[:cut]), whole(nil))
		if conn.Err() != nil || h.n[TypeBody] != 0 {
			t.Fatalf("cut at %d: err %v, %d bodies", cut, conn.Err(), h.n[TypeBody])
		}
	}
}

func TestProtocolHeaderByteByByte(t *testing.T) {
	hs, s2c := handshake()
	h := &countingHandler{}
	conn := NewConn(h, Options{})
	feed(t, conn.ClientDecoder(), hs, every(1))
	feed(t, conn.ServerDecoder(), s2c, every(1))
	if conn.Err() != nil || h.n[TypeMethod] != 6 || conn.FrameMax() != 131072 {
		t.Fatalf("err %v, %d methods, frame_max %d", conn.Err(), h.n[TypeMethod], conn.FrameMax())
	}
}

func TestFrameMaxEnforced(t *testing.T) {
	hs, _ := handshake()
	// payload = frame_max − 8 is the largest allowed; one more byte is too large (pitfall 4.7).
	ok := wire.Frame(wire.TypeBody, 1, make([]byte, 131072-8))
	over := wire.Frame(wire.TypeBody, 1, make([]byte, 131072-7))
	quiet := Options{Logger: slog.New(slog.DiscardHandler)}
	conn := NewConn(&countingHandler{}, quiet)
	feed(t, conn.ClientDecoder(), wire.Concat(hs, ok), every(1000))
	if conn.Err() != nil {
		t.Fatalf("frame of exactly frame_max rejected: %v", conn.Err())
	}
	feed(t, conn.ClientDecoder(), over, every(1000))
	if !errors.Is(conn.Err(), ErrFrameTooLarge) {
		t.Fatalf("Err() = %v, want ErrFrameTooLarge", conn.Err())
	}
	// Before Tune-Ok, MaxFrameSize bounds frames.
	conn = NewConn(&countingHandler{}, Options{MaxFrameSize: 4096, Logger: quiet.Logger})
	feed(t, conn.ClientDecoder(), wire.Concat(wire.ProtocolHeader(), wire.Frame(wire.TypeBody, 1, make([]byte, 4089))), whole(nil))
	if !errors.Is(conn.Err(), ErrFrameTooLarge) {
		t.Fatalf("Err() = %v, want ErrFrameTooLarge", conn.Err())
	}
}

func TestHandlerPanicSwitchesOff(t *testing.T) {
	hs, _ := handshake()
	n := 0
	conn := NewConn(HandlerFunc(func(f *Frame) {
		if n++; n == 3 {
			panic("boom")
		}
	}), Options{Logger: slog.New(slog.DiscardHandler)})
	feed(t, conn.ClientDecoder(), wire.Concat(hs, wire.Heartbeat()), whole(nil))
	if !errors.Is(conn.Err(), ErrPanic) || n != 3 {
		t.Fatalf("Err() = %v after %d frames, want ErrPanic after 3", conn.Err(), n)
	}
}

// A frame header claiming 4 GiB must be rejected before anything is buffered.
func TestHugeFrameHeaderAllocatesNothing(t *testing.T) {
	hs, _ := handshake()
	hdr := []byte{wire.TypeBody, 0, 1, 0xff, 0xff, 0xff, 0xff}
	// Switching off allocates the DecodeError and its log record; that is all it may allocate: a few small
	// objects, never a payload-sized buffer.
	conns := make([]*Conn, 101)
	for i := range conns {
		conns[i] = NewConn(&countingHandler{}, Options{Logger: slog.New(slog.DiscardHandler)})
		feed(t, conns[i].ClientDecoder(), hs, whole(nil))
	}
	i := 0
	before := heapAlloc()
	allocs := testing.AllocsPerRun(100, func() { conns[i].ClientDecoder().Write(hdr); i++ })
	perCall := (heapAlloc() - before) / uint64(len(conns))
	for _, c := range conns {
		if !errors.Is(c.Err(), ErrFrameTooLarge) {
			t.Fatalf("Err() = %v", c.Err())
		}
	}
	t.Logf("rejecting a 4 GiB header: %v allocs, %d bytes", allocs, perCall)
	if allocs > 20 || perCall > 4<<10 {
		t.Fatalf("rejecting a 4 GiB header: %v allocs, %d bytes; want a few small error objects", allocs, perCall)
	}
	// And a header announcing a size just under the limit, split from its payload, allocates nothing per frame
	// once the carry pool is warm.
	d := NewConn(&countingHandler{}, Options{}).ClientDecoder()
	feed(t, d, hs, whole(nil))
	fr := wire.Frame(wire.TypeBody, 1, make([]byte, 100000))
	feed(t, d, fr, every(7)) // warm the pool
	if a := testing.AllocsPerRun(50, func() { d.Write(fr[:7]); d.Write(fr[7:50000]); d.Write(fr[50000:]) }); a != 0 {
		t.Fatalf("straddling body frame: %v allocs per frame, want 0", a)
	}
}

func TestZeroAllocsOnWholeFrames(t *testing.T) {
	hs, s2c := handshake()
	cases := map[string][]byte{
		"heartbeats":  bytes.Repeat(wire.Heartbeat(), 16),
		"basic.ack":   bytes.Repeat(wire.Ack(1, 42, false), 16),
		"publish":     wire.Message(1, "nova", "scheduler", wire.Properties{ContentType: "application/json"}, make([]byte, 300000), 131072),
		"body frames": bytes.Repeat(wire.Frame(wire.TypeBody, 1, make([]byte, 131064)), 4),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			h := &countingHandler{}
			conn := NewConn(h, Options{})
			feed(t, conn.ClientDecoder(), hs, whole(nil))
			feed(t, conn.ServerDecoder(), s2c, whole(nil))
			d := conn.ClientDecoder()
			if a := testing.AllocsPerRun(100, func() { d.Write(b) }); a != 0 {
				t.Fatalf("%v allocs per Write, want 0", a)
			}
			if conn.Err() != nil || h.n[TypeMethod]+h.n[TypeBody]+h.n[TypeHeartbeat] < 100 {
				t.Fatalf("err %v, counts %v", conn.Err(), h.n)
			}
		})
	}
}

// Body frames of two channels interleaved inside their messages (legal, celery/librabbitmq#97) come out in stream
// order with their own channel numbers, however the stream is split.
func TestInterleavedChannelsInsideMessages(t *testing.T) {
	hs, _ := handshake()
	a := wire.Body(1, bytes.Repeat([]byte("a"), 3*4088), 4096)
	b := wire.Body(2, bytes.Repeat([]byte("b"), 3*4088), 4096)
	stream := wire.Concat(hs, wire.Publish(1, "", "q", false), wire.Publish(2, "", "q", false),
		wire.Header(1, 3*4088, wire.Properties{}), wire.Header(2, 3*4088, wire.Properties{}),
		a[:4096], b[:4096], a[4096:8192], b[4096:8192], a[8192:], b[8192:])
	for _, chunk := range []int{1, 100, 4096, len(stream)} {
		var chans []uint16
		conn := NewConn(HandlerFunc(func(f *Frame) {
			if f.Type == TypeBody {
				chans = append(chans, f.Channel)
				if len(f.Payload) != 4088 || f.Payload[0] != "ab"[f.Channel-1] {
					t.Fatalf("body frame on channel %d: %d bytes starting %q", f.Channel, len(f.Payload), f.Payload[0])
				}
			}
		}), Options{})
		feed(t, conn.ClientDecoder(), stream, every(chunk))
		if fmt.Sprint(chans) != "[1 2 1 2 1 2]" || conn.Err() != nil {
			t.Fatalf("chunk %d: body channels %v, err %v", chunk, chans, conn.Err())
		}
	}
}

// TestWriteStampedSetsFrameTime checks that every frame completed by a WriteStamped call carries that call's read
// time, including a frame that straddles two writes (it gets the time of the write that completed it), and that a
// plain Write stamps frames with the time of the call.
func TestWriteStampedSetsFrameTime(t *testing.T) {
	stream := append(wire.ProtocolHeader(), wire.Heartbeat()...)
	stream = append(stream, wire.Heartbeat()...)
	var got []time.Time
	c := NewConn(HandlerFunc(func(f *Frame) { got = append(got, f.Time) }), Options{})
	d := c.ClientDecoder()
	t1 := time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC)
	t2 := t1.Add(time.Millisecond)
	split := len(wire.ProtocolHeader()) + 8 + 3 // the second heartbeat straddles the two writes
	_, _ = d.WriteStamped(stream[:split], t1)
	_, _ = d.WriteStamped(stream[split:], t2)
	if len(got) != 2 || !got[0].Equal(t1) || !got[1].Equal(t2) {
		t.Fatalf("frame times = %v, want [%v %v]", got, t1, t2)
	}
	before := time.Now()
	_, _ = d.Write(wire.Heartbeat())
	if len(got) != 3 || got[2].Before(before) {
		t.Fatalf("plain Write stamped %v, want a time not before %v", got[len(got)-1], before)
	}
}

// endRecorder records frames and EndWrite calls in order.
type endRecorder struct {
	log   []string
	panic bool
}

func (e *endRecorder) HandleFrame(f *Frame) { e.log = append(e.log, fmt.Sprintf("frame %d", f.Type)) }
func (e *endRecorder) EndWrite(dir Direction) {
	if e.panic {
		panic("boom")
	}
	e.log = append(e.log, fmt.Sprintf("end %d", dir))
}

// TestEndWriteFollowsEachWrite checks the WriteEnder contract: one EndWrite per write, after the frames that write
// completed (none for a write that only starts a frame), and a panic in it switches decoding off.
func TestEndWriteFollowsEachWrite(t *testing.T) {
	rec := &endRecorder{}
	c := NewConn(rec, Options{})
	hb := wire.Heartbeat()
	stream := append(append(wire.ProtocolHeader(), hb...), hb...)
	_, _ = c.ClientDecoder().Write(stream[:len(stream)-3]) // header, one heartbeat, and part of the next
	_, _ = c.ClientDecoder().Write(stream[len(stream)-3:])
	want := []string{"frame 8", "end 0", "frame 8", "end 0"}
	if fmt.Sprint(rec.log) != fmt.Sprint(want) {
		t.Fatalf("calls = %v, want %v", rec.log, want)
	}
	rec.log = nil
	_, _ = c.ServerDecoder().Write(hb[:2])
	if fmt.Sprint(rec.log) != "[end 1]" {
		t.Fatalf("a write completing no frame: calls = %v, want [end 1]", rec.log)
	}

	boom := &endRecorder{panic: true}
	c = NewConn(boom, Options{})
	if n, err := c.ClientDecoder().Write(stream); n != len(stream) || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if !errors.Is(c.Err(), ErrPanic) {
		t.Fatalf("Err = %v, want ErrPanic", c.Err())
	}
}
