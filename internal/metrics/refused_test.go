package metrics

import (
	"bufio"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/amqptrace/amqptrace/correlate"
	"github.com/amqptrace/amqptrace/internal/brokertest"
	"github.com/amqptrace/amqptrace/internal/pipeline"
	"github.com/amqptrace/amqptrace/internal/wire"
)

// A client whose login the real RabbitMQ refuses, and which sends everything at once before the refusal (publishes
// whose method, routing key and body are not valid UTF-8, one over BodyCap, a gzip one), gets no record, no
// decoded body and no record metric series: an unauthenticated client reaches nothing past the handshake.
func TestRefusedLoginMakesNoRecordsAndNoSeries(t *testing.T) {
	brokertest.Require(t)
	src := &Sources{}
	reg, records := NewRegistry(src, Limits{})
	var got []*correlate.Record
	recs := correlate.SinkFunc(func(r *correlate.Record) { got = append(got, r) }) // one Fanout goroutine
	p, err := pipeline.New(pipeline.Config{
		Upstreams: []string{brokertest.Addr()},
		Correlate: correlate.Config{BodyCap: 1024},
		Sinks:     []correlate.Sink{records, recs},
		SinkNames: []string{"metrics", "test"},
	})
	if err != nil {
		t.Fatal(err)
	}
	src.Pipeline = p.Stats
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, ln) }()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write(wire.ProtocolHeader()); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	if _, err := readFrame(r); err != nil { // Connection.Start
		t.Fatalf("reading Connection.Start: %v", err)
	}
	body := []byte("{\"oslo.version\": \"2.0\", \"oslo.message\": \"{\\\"method\\\": \\\"pin\xc9\xf8g\\\", \\\"_unique_id\\\": \\\"u1\\\"}\"}")
	gz := wire.Properties{ContentType: "application/json", ContentEncoding: "gzip"}
	session := wire.Concat(
		wire.StartOKPlain(wire.Table{"connection_name": "attacker:1:x"}, "guest", "not-the-password-"+t.Name()),
		wire.TuneOK(2047, 131072, 60), wire.Open("/"), wire.ChannelOpen(1),
		wire.Message(1, "nova", "compute.\xc9", wire.Properties{ContentType: "application/json"}, body, 131072),
		wire.Message(1, "nova", "compute", wire.Properties{}, []byte("{"+strings.Repeat("a", 8192)), 131072),
		wire.Message(1, "nova", "compute", gz, []byte("\x1f\x8b\x08\x00 not gzip"), 131072))
	if _, err := c.Write(session); err != nil {
		t.Fatal(err)
	}
	// RabbitMQ answers a failed PLAIN login with Connection.Close 403 (authentication_failure_close) and closes.
	if _, err := io.Copy(io.Discard, r); err != nil {
		t.Fatalf("reading the refusal: %v", err)
	}
	_ = c.Close()
	waitFor(t, "the connection to end in the pipeline", func() bool {
		st := p.Stats()
		return st.Proxy.ConnsOpen == 0 && st.Decode.ConnsClosed == 1
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	st := p.Stats()
	cs := st.Correlate
	if len(got) != 0 || cs.RecordsOut != 0 || cs.MessagesIn != 0 || cs.TruncatedBodies != 0 || cs.PlainMessages != 0 ||
		cs.UnknownMessages != 0 || cs.ParseFailures != 0 {
		t.Errorf("a refused login reached the correlator: %d records, stats %+v", len(got), cs)
	}
	if cs.PreOpenFrames == 0 {
		t.Error("pre-open frames were not counted")
	}
	for _, name := range []string{"amqptrace_records_total", "amqptrace_rpc_queue_wait_seconds",
		"amqptrace_rpc_client_duration_seconds", "amqptrace_rpc_server_duration_seconds"} {
		if n, err := testutil.GatherAndCount(reg, name); err != nil || n != 0 {
			t.Errorf("%s: %d series (err %v), want none", name, n, err)
		}
	}
	if n, err := testutil.GatherAndCount(reg, "amqptrace_pre_open_frames_total"); err != nil || n != 1 {
		t.Errorf("amqptrace_pre_open_frames_total: %d series (err %v), want 1", n, err)
	}
}

// readFrame reads one AMQP frame (header, payload, end octet) and returns its payload.
func readFrame(r *bufio.Reader) ([]byte, error) {
	var h [7]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	size := int(h[3])<<24 | int(h[4])<<16 | int(h[5])<<8 | int(h[6])
	b := make([]byte, size+1)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	return b[:size], nil
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
