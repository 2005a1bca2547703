package capture

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/amqptrace/amqptrace/internal/recorded"
)

// stampLog records, for every write a tap gets, the wall clock at the write (the bubble's fake clock in
// synctest) and the packet time the write is stamped with.
type stampLog struct {
	wall, packet []time.Time
}

func (l *stampLog) WriteStamped(p []byte, at time.Time) (int, error) {
	l.wall = append(l.wall, time.Now())
	l.packet = append(l.packet, at)
	return len(p), nil
}

// TestReadFileRealtime: with Realtime every packet is handed over when as much wall time has passed since the
// first as capture time had, and without it the whole file goes through at once. The bubble's clock makes both
// exact: time only moves while everything waits on it.
func TestReadFileRealtime(t *testing.T) {
	path := filepath.Join(t.TempDir(), "paced.pcap")
	var pkts []recorded.Packet
	seq := uint32(1000)
	pkts = append(pkts, recorded.Packet{Data: recorded.TCPPacket(clientAP, brokerAP, seq, "S", nil)})
	seq++
	for i := range 40 {
		payload := bytes.Repeat([]byte{byte('a' + i%26)}, 10+i)
		pkts = append(pkts, recorded.Packet{Data: recorded.TCPPacket(clientAP, brokerAP, seq, "A", payload)})
		seq += uint32(len(payload))
	}
	var buf bytes.Buffer
	if err := recorded.WriteCapture(&buf, pkts, false); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, realtime := range []bool{true, false} {
		synctest.Test(t, func(t *testing.T) {
			log := &stampLog{}
			c := New(Config{Ports: []uint16{5672}, Tap: func(ConnInfo) Tap {
				return Tap{ClientToServer: log, ServerToClient: log}
			}})
			start := time.Now()
			if _, err := ReadFile(context.Background(), path, c, ReadOptions{Realtime: realtime}); err != nil {
				t.Fatal(err)
			}
			c.Close()
			if len(log.wall) != 40 {
				t.Fatalf("realtime=%v: %d writes, want one per data packet (40)", realtime, len(log.wall))
			}
			firstWall, firstPkt := log.wall[0], log.packet[0]
			for i := range log.wall {
				wall, capt := log.wall[i].Sub(firstWall), log.packet[i].Sub(firstPkt)
				if realtime && wall != capt {
					t.Fatalf("realtime: packet %d handed over %v after the first, captured %v after it", i, wall, capt)
				}
				if !realtime && wall != 0 {
					t.Fatalf("as fast as it can: packet %d waited %v", i, wall)
				}
			}
			span := log.packet[len(log.packet)-1].Sub(firstPkt)
			if span <= 0 {
				t.Fatal("the capture has no time span: the test proves nothing")
			}
			if took := time.Since(start); realtime && took < span {
				t.Fatalf("realtime replay took %v, the capture spans %v", took, span)
			}
		})
	}
}
