package frames

import (
	"fmt"
	"testing"
)

// resyncLimit is FuzzResync's MaxFrameSize: small, so a false frame announced by the garbage reaches only a few
// KiB into the valid stream after it, and the stream, repeated, can be several times longer than that.
const resyncLimit = 4096

// resyncStream is one direction of a recorded connection, from its first frame, repeated until it is
// resyncTail bytes longer than twice the limit, with the frames of one copy.
type resyncStream struct {
	name   string
	dir    Direction
	bytes  []byte
	events []event // offsets from bytes[0]
}

func resyncStreams(f *testing.F) []resyncStream {
	var out []resyncStream
	for _, c := range loadCaptures(f, "oslo") {
		ref, _ := decodeCapture(f, c, whole(c.c2s), whole(c.s2c))
		for d, stream := range [][]byte{c.c2s, c.s2c} {
			evs := ref.events[d]
			if len(evs) == 0 {
				continue
			}
			from := evs[0].Offset
			one := stream[from:]
			fits := true
			for _, e := range evs {
				fits = fits && e.Len+8 <= resyncLimit
			}
			if !fits {
				continue
			}
			s := resyncStream{name: fmt.Sprintf("%s dir %d", c.name, d), dir: Direction(d)}
			for len(s.bytes) < 3*resyncLimit {
				base := int64(len(s.bytes))
				for _, e := range evs {
					e.Offset += base - from
					e.Payload = nil
					s.events = append(s.events, e)
				}
				s.bytes = append(s.bytes, one...)
			}
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		f.Fatal("no recorded stream fits FuzzResync's frame limit")
	}
	return out
}

// resyncHandler records frames and checks, on every frame, that the decoder holds no more than its bound.
type resyncHandler struct {
	recorder
	resyncs int
}

func (r *resyncHandler) Resync(Direction) { r.resyncs++ }

// FuzzResync feeds a resynchronising decoder arbitrary bytes followed by a valid recorded stream (one direction of
// a real oslo.messaging connection, from a frame boundary, repeated). The decoder either starts hunting (a
// connection picked up mid-stream) or starts in sync and meets the garbage as framing errors. It must not panic
// or switch decoding off, must hold no more than one frame's worth of bytes while hunting (and carry no more than
// one frame), and must find its place again: every frame of the valid stream that starts two frame limits or more
// past the garbage's end (a false frame found in the garbage can reach one limit into the valid bytes; what it
// lands on, once more) is delivered intact, at its offset, and they are the last frames delivered.
func FuzzResync(f *testing.F) {
	streams := resyncStreams(f)
	f.Add([]byte{}, uint8(0), uint16(0), uint8(1))
	f.Add([]byte("garbage, not a frame"), uint8(1), uint16(5), uint8(0))
	f.Add([]byte{1, 0, 0, 0, 0, 0x0f, 0xf0, 0, 10}, uint8(2), uint16(3), uint8(3)) // a method frame announcing 4080 bytes
	f.Add([]byte{8, 0, 0, 0, 0, 0, 0, 0xce, 3, 0, 1, 0, 0, 0, 4}, uint8(3), uint16(7), uint8(2))
	for _, s := range streams[:2] {
		f.Add(s.bytes[:200], uint8(4), uint16(50), uint8(1)) // real frames as the garbage, cut short
	}
	f.Fuzz(func(t *testing.T, garbage []byte, pick uint8, chunk uint16, flags uint8) {
		if len(garbage) > 64<<10 {
			return
		}
		s := streams[int(pick)%len(streams)]
		r := &resyncHandler{}
		conn := NewConn(r, Options{MaxFrameSize: resyncLimit, Resync: true, Logger: discard})
		d := conn.ClientDecoder()
		if s.dir == ServerToClient {
			d = conn.ServerDecoder()
		}
		start := int64(0)
		if flags&1 != 0 {
			d.Resync(0) // picked up mid-stream
		} else if s.dir == ClientToServer {
			if _, err := d.Write(protocolHeader[:]); err != nil { // in sync: the garbage comes as framing errors
				t.Fatal(err)
			}
			start = int64(len(protocolHeader))
		}
		in := append(append([]byte(nil), garbage...), s.bytes...)
		step := 1 + int(chunk)%(2*resyncLimit)
		if flags&2 != 0 {
			step = 1 + int(chunk)%13
		}
		for p := in; len(p) > 0; {
			n := min(step, len(p))
			if got, err := d.Write(p[:n]); got != n || err != nil {
				t.Fatalf("Write(%d bytes) = %d, %v", n, got, err)
			}
			p = p[n:]
			if len(d.huntBuf) > resyncLimit || len(d.carry) > resyncLimit {
				t.Fatalf("holding %d bytes hunting and %d carried; the limit is %d", len(d.huntBuf), len(d.carry),
					resyncLimit)
			}
		}
		d.End()
		if err := conn.Err(); err != nil {
			t.Fatalf("decoding switched off: %v", err)
		}
		if st := d.stats.load(); st.Bytes != uint64(start)+uint64(len(in)) {
			t.Fatalf("counted %d bytes of %d", st.Bytes, int(start)+len(in))
		}

		origin := start + int64(len(garbage)) // stream offset of the valid bytes' first byte
		if flags&1 == 0 && fakeTune(r.events[s.dir], s, origin) {
			// A decoder in sync takes a Tune at the start of its stream for what it is, the connection's frame_max:
			// garbage that parses as one before any framing error is, to the decoder, a real start. A direction
			// that lost its place (picked up mid-stream, or after a framing error) believes no Tune, so there the
			// recovery is asserted whatever the garbage holds.
			return
		}
		var want []event
		for _, e := range s.events {
			if e.Offset >= 2*resyncLimit {
				e.Offset += origin
				want = append(want, e)
			}
		}
		if len(want) == 0 {
			t.Fatalf("%s: no frame two limits into the valid stream", s.name)
		}
		got := r.events[s.dir]
		if len(got) < len(want) {
			t.Fatalf("%s after %d bytes of garbage: %d frames delivered, want at least the last %d", s.name,
				len(garbage), len(got), len(want))
		}
		got = got[len(got)-len(want):]
		for i := range got {
			got[i].Payload = nil
		}
		diffEvents(t, fmt.Sprintf("%s after %d bytes of garbage", s.name, len(garbage)), want, got)
	})
}

// fakeTune reports whether the decoder delivered a frame_max-setting method (Tune from the broker, Tune-Ok from the
// client) that is not one of the valid stream's frames: one it found in the garbage.
func fakeTune(got []event, s resyncStream, origin int64) bool {
	method := uint16(31)
	if s.dir == ServerToClient {
		method = 30
	}
	real := map[int64]bool{}
	for _, e := range s.events {
		real[origin+e.Offset] = true
	}
	for _, e := range got {
		if e.Type == TypeMethod && e.ClassID == ClassConnection && e.MethodID == method && !real[e.Offset] {
			return true
		}
	}
	return false
}
