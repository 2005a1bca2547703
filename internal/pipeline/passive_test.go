package pipeline

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"testing"

	"github.com/amqptrace/amqptrace/capture"
	"github.com/amqptrace/amqptrace/correlate"
	"github.com/amqptrace/amqptrace/frames"
	"github.com/amqptrace/amqptrace/internal/recorded"
)

// recordKeys name the records, sorted, for the log.
func recordKeys(rs []correlate.Record) []string {
	var out []string
	for _, r := range rs {
		out = append(out, fmt.Sprintf("%s/%s %s", r.Kind, r.Status, r.Method))
	}
	sort.Strings(out)
	return out
}

// TestPassiveOwnPcap replays a pcap written by the test (the recorded oslo connections as packets, see
// recorded.Packets) through Passive as `amqptrace replay` does (capture.ReadFile, backpressure, packet clock),
// and checks it decodes every frame of the recorded streams, with no gap, resync or decoder switched off, and
// that its records say source "replay". The records themselves are not compared with a reference: the
// recordings keep each connection's bytes but not the order of events across connections, which the correlator
// depends on, and the packets here interleave the connections in an order of the test's making.
func TestPassiveOwnPcap(t *testing.T) {
	conns, err := recorded.Load(filepath.Join("..", "..", "frames", "testdata", "oslo"))
	if err != nil {
		t.Fatal(err)
	}
	var all [][]recorded.Packet
	var frameCount [2]uint64
	for i, c := range conns {
		all = append(all, recorded.Packets(i, c))
		fc := frames.NewConn(frames.HandlerFunc(func(f *frames.Frame) { frameCount[f.Dir]++ }), frames.Options{})
		_, _ = fc.ClientDecoder().Write(c.C2S)
		_, _ = fc.ServerDecoder().Write(c.S2C)
	}
	path := filepath.Join(t.TempDir(), "oslo.pcap")
	if err := recorded.WriteCaptureFile(path, recorded.Interleave(all, 0), false); err != nil {
		t.Fatal(err)
	}

	newPassive := func(col *collector) *Passive {
		return NewPassive(PassiveConfig{Capture: capture.Config{Ports: []uint16{recorded.BrokerPort}},
			Correlate: correlate.Config{Source: "replay"}, Sinks: []correlate.Sink{col}, SinkNames: []string{"test"},
			Backpressure: true, PacketClock: true})
	}
	replayed := &collector{}
	p := newPassive(replayed)
	if err := p.Run(context.Background(), func(ctx context.Context, c *capture.Capture) error {
		defer c.Close()
		_, err := capture.ReadFile(ctx, path, c, capture.ReadOptions{Pace: p.Pace})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	st := p.Stats()
	if st.Capture.Gaps != 0 || st.Capture.MidStream != 0 || st.Decode.ConnsOff != 0 ||
		st.Decode.Client.Resyncs+st.Decode.Server.Resyncs != 0 {
		t.Fatalf("capture %+v, decode %+v: want no gap, mid-stream pick-up, resync or decoder off", *st.Capture, st.Decode)
	}
	if st.Decode.Client.Frames != frameCount[0] || st.Decode.Server.Frames != frameCount[1] {
		t.Fatalf("replay decoded %d/%d frames, the streams directly %d/%d", st.Decode.Client.Frames,
			st.Decode.Server.Frames, frameCount[0], frameCount[1])
	}

	rs := replayed.records()
	if len(rs) == 0 {
		t.Fatal("no records")
	}
	t.Logf("%d frames decoded (%d/%d each way), as the streams decoded directly; %d records: %q",
		frameCount[0]+frameCount[1], frameCount[0], frameCount[1], len(rs), recordKeys(rs))
	for _, r := range replayed.records() {
		if r.Source != "replay" {
			t.Fatalf("record %d: source %q", r.ID, r.Source)
		}
	}
}
