package frames

import (
	"log/slog"
	"strconv"
	"testing"
)

// resyncRecorder is a recorder that also counts Resync calls per direction.
type resyncRecorder struct {
	recorder
	resyncs [2]int
}

func (r *resyncRecorder) Resync(dir Direction) { r.resyncs[dir]++ }

// frameEndOffset is the stream offset just past e's frame-end octet.
func frameEndOffset(e event) int64 { return e.Offset + 8 + int64(e.Len) }

// TestResyncMidStream picks every recorded stream up at many offsets: the decoder must find the first frame that
// starts at or after the offset and decode every frame from there exactly as a decoder that saw the whole stream
// did, at the same stream offsets.
func TestResyncMidStream(t *testing.T) {
	for _, dir := range []string{"oslo", "amqp091"} {
		for _, c := range loadCaptures(t, dir) {
			ref, _ := decodeCapture(t, c, whole(c.c2s), whole(c.s2c))
			for d, stream := range [][]byte{c.c2s, c.s2c} {
				want := ref.events[d]
				step := max(len(stream)/60, 1)
				for k := 1; k < len(stream); k += step {
					r := &resyncRecorder{}
					conn := NewConn(r, Options{Resync: true})
					dec := conn.ClientDecoder()
					if d == 1 {
						dec = conn.ServerDecoder()
					}
					dec.Resync(int64(k))
					stop := min(k+64<<10, len(stream)) // the next 64 KiB prove the point
					feed(t, dec, stream[k:stop], every(1+k%700))
					dec.End()
					var tail []event
					for _, e := range want {
						if e.Offset >= int64(k) && frameEndOffset(e) <= int64(stop) {
							tail = append(tail, e)
						}
					}
					diffEvents(t, c.name+" picked up at "+strconv.Itoa(k), tail, r.events[d])
					if conn.Err() != nil {
						t.Fatalf("%s at %d: decoding switched off: %v", c.name, k, conn.Err())
					}
					if r.resyncs[d] != 1 {
						t.Fatalf("%s at %d: %d Resync calls, want 1", c.name, k, r.resyncs[d])
					}
				}
			}
		}
	}
}

// TestResyncGap cuts a hole out of each recorded stream: the frames wholly before the hole and every frame that
// starts after it are decoded; nothing is made of the frames the hole cut.
func TestResyncGap(t *testing.T) {
	for _, c := range loadCaptures(t, "oslo") {
		ref, _ := decodeCapture(t, c, whole(c.c2s), whole(c.s2c))
		stream, want := c.s2c, ref.events[ServerToClient]
		step := max(len(stream)/60, 1)
		for a := 1; a < len(stream); a += step {
			for _, n := range []int{1, 7, 100, 5000} {
				b := min(a+n, len(stream))
				r := &resyncRecorder{}
				conn := NewConn(r, Options{Resync: true})
				dec := conn.ServerDecoder()
				feed(t, dec, stream[:a], every(333))
				dec.Resync(int64(b - a))
				feed(t, dec, stream[b:], every(333))
				dec.End()
				var keep []event
				for _, e := range want {
					if frameEndOffset(e) <= int64(a) || e.Offset >= int64(b) {
						keep = append(keep, e)
					}
				}
				diffEvents(t, c.name+" hole "+strconv.Itoa(a)+"+"+strconv.Itoa(n), keep, r.events[ServerToClient])
				st := conn.Stats().Server
				if st.Resyncs != 1 {
					t.Fatalf("%d resyncs, want 1", st.Resyncs)
				}
			}
		}
	}
}

// TestResyncFramingError: under Options.Resync a corrupt frame costs that frame (and what the hunt passes over),
// never the connection; without it decoding switches off as before.
func TestResyncFramingError(t *testing.T) {
	c := loadCaptures(t, "oslo")[0]
	ref, _ := decodeCapture(t, c, whole(c.c2s), whole(c.s2c))
	want := ref.events[ServerToClient]
	victim := want[len(want)/2]
	bad := append([]byte(nil), c.s2c...)
	bad[frameEndOffset(victim)-1] = 0x00 // its frame-end octet

	r := &resyncRecorder{}
	conn := NewConn(r, Options{Resync: true})
	feed(t, conn.ServerDecoder(), bad, every(512))
	if conn.Err() != nil {
		t.Fatalf("decoding switched off under Resync: %v", conn.Err())
	}
	var keep []event
	for _, e := range want {
		if e.Offset != victim.Offset {
			keep = append(keep, e)
		}
	}
	diffEvents(t, "corrupt frame end", keep, r.events[ServerToClient])
	if st := conn.Stats().Server; st.Resyncs != 1 || r.resyncs[ServerToClient] != 1 {
		t.Fatalf("resyncs: stats %d, handler %d; want 1", st.Resyncs, r.resyncs[ServerToClient])
	}

	strict := NewConn(&recorder{}, Options{Logger: slog.New(slog.DiscardHandler)})
	feed(t, strict.ServerDecoder(), bad, every(512))
	if strict.Err() == nil {
		t.Fatalf("without Options.Resync a bad frame end must switch decoding off")
	}
}
