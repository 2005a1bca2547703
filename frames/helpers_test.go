package frames

import (
	"bytes"
	"compress/gzip"
	"encoding/hex"
	"fmt"
	"hash/maphash"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// event is what the tests remember of a frame: everything but the payload, which is kept as a hash (and, for
// non-body frames, as a copy so golden tests can decode it).
type event struct {
	Dir      Direction
	Type     Type
	Channel  uint16
	ClassID  uint16
	MethodID uint16
	Len      int
	Hash     uint64
	Offset   int64
	Payload  []byte // nil for body frames
}

func (e event) String() string {
	return fmt.Sprintf("%s@%d type=%d ch=%d %d.%d len=%d hash=%x", e.Dir, e.Offset, e.Type, e.Channel, e.ClassID,
		e.MethodID, e.Len, e.Hash)
}

var hashSeed = maphash.MakeSeed()

// recorder is a Handler that copies what it is handed (frames are borrowed).
type recorder struct{ events [2][]event }

func (r *recorder) HandleFrame(f *Frame) {
	e := event{Dir: f.Dir, Type: f.Type, Channel: f.Channel, ClassID: f.ClassID, MethodID: f.MethodID,
		Len: len(f.Payload), Hash: maphash.Bytes(hashSeed, f.Payload), Offset: f.Offset}
	if f.Type != TypeBody {
		e.Payload = bytes.Clone(f.Payload)
	}
	r.events[f.Dir] = append(r.events[f.Dir], e)
}

// capture is one recorded connection: the bytes each way.
type capture struct {
	name     string
	c2s, s2c []byte
}

// loadCaptures reads testdata/<dir>/conn-N.{c2s,s2c}.gz (written by testdata/record.go).
func loadCaptures(t testing.TB, dir string) []capture {
	t.Helper()
	names, err := filepath.Glob(filepath.Join("testdata", dir, "conn-*.c2s.gz"))
	if err != nil || len(names) == 0 {
		t.Fatalf("no captures in testdata/%s: %v", dir, err)
	}
	sort.Strings(names)
	var out []capture
	for _, n := range names {
		base := strings.TrimSuffix(n, ".c2s.gz")
		out = append(out, capture{name: base, c2s: gunzip(t, n), s2c: gunzip(t, base+".s2c.gz")})
	}
	return out
}

func gunzip(t testing.TB, name string) []byte {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	// Bound what a capture may expand to (the largest is ~8.4 MB).
	b, err := io.ReadAll(io.LimitReader(z, 64<<20))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// feed writes b to d in chunks chosen by next (which returns the next chunk length, ≥ 1), checking the io.Writer
// contract on every call.
func feed(t testing.TB, d *Decoder, b []byte, next func() int) {
	t.Helper()
	for len(b) > 0 {
		n := min(max(next(), 1), len(b))
		if got, err := d.Write(b[:n]); got != n || err != nil {
			t.Fatalf("Write(%d bytes) = %d, %v", n, got, err)
		}
		b = b[n:]
	}
}

func whole(b []byte) func() int { return func() int { return len(b) } }
func every(n int) func() int    { return func() int { return n } }

// decodeCapture runs a capture through a fresh Conn, each direction chunked by its own function.
func decodeCapture(t testing.TB, c capture, cs, ss func() int) (*recorder, *Conn) {
	t.Helper()
	r := &recorder{}
	conn := NewConn(r, Options{})
	feed(t, conn.ClientDecoder(), c.c2s, cs)
	feed(t, conn.ServerDecoder(), c.s2c, ss)
	return r, conn
}

// diffEvents reports the first difference between two frame sequences, with a hex dump of the payloads.
func diffEvents(t testing.TB, what string, want, got []event) {
	t.Helper()
	for i := range min(len(want), len(got)) {
		w, g := want[i], got[i]
		if w.Dir != g.Dir || w.Type != g.Type || w.Channel != g.Channel || w.ClassID != g.ClassID ||
			w.MethodID != g.MethodID || w.Len != g.Len || w.Hash != g.Hash || w.Offset != g.Offset {
			t.Fatalf("%s: frame %d differs:\nwant %v\ngot  %v\nwant payload:\n%sgot payload:\n%s", what, i, w, g,
				hex.Dump(want[i].Payload), hex.Dump(got[i].Payload))
		}
	}
	if len(want) != len(got) {
		t.Fatalf("%s: %d frames, want %d", what, len(got), len(want))
	}
}
