package frames

import (
	"bytes"
	"log/slog"
	"testing"

	"github.com/amqptrace/amqptrace/internal/wire"
)

var discard = slog.New(slog.DiscardHandler)

// benchDecoder returns a client Decoder past the handshake (frame_max 131072).
func benchDecoder(b *testing.B) (*Decoder, *Conn) {
	hs, _ := handshake()
	conn := NewConn(HandlerFunc(func(*Frame) {}), Options{Logger: discard})
	conn.ClientDecoder().Write(hs)
	return conn.ClientDecoder(), conn
}

func benchFrames(b *testing.B, stream []byte, framesPerStream int, chunk int) {
	d, conn := benchDecoder(b)
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		for p := stream; len(p) > 0; {
			n := min(chunk, len(p))
			d.Write(p[:n])
			p = p[n:]
		}
	}
	b.StopTimer()
	if conn.Err() != nil {
		b.Fatal(conn.Err())
	}
	b.ReportMetric(float64(b.N*framesPerStream)/b.Elapsed().Seconds(), "frames/s")
}

// 128 KiB body frames written whole (a pump that reads whole frames).
func BenchmarkBodyFrames128K(b *testing.B) {
	stream := bytes.Repeat(wire.Frame(wire.TypeBody, 1, make([]byte, 131064)), 8)
	benchFrames(b, stream, 8, len(stream))
}

// 128 KiB body frames arriving in 32 KiB reads (the proxy's pump buffer), so every frame straddles writes and is
// carried.
func BenchmarkBodyFrames128KIn32KReads(b *testing.B) {
	stream := bytes.Repeat(wire.Frame(wire.TypeBody, 1, make([]byte, 131064)), 8)
	benchFrames(b, stream, 8, 32<<10)
}

// Small frames: heartbeats and acks, in 32 KiB reads.
func BenchmarkSmallFrames(b *testing.B) {
	var s []byte
	n := 0
	for len(s) < 32<<10 {
		s = append(s, wire.Heartbeat()...)
		s = append(s, wire.Ack(1, uint64(n), false)...)
		n += 2
	}
	benchFrames(b, s, n, 32<<10)
}
