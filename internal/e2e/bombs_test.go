package e2e

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/amqptrace/amqptrace/internal/brokertest"
	"github.com/amqptrace/amqptrace/internal/pipeline"
)

// TestCompressionBombsDoNotStallOthers: one connection through the proxy publishes bzip2, gzip and zlib bombs
// (tiny bodies that inflate to 64 MiB) and large legitimate compressed bodies, as kombu marks them, while another
// connection through the same proxy times round trips, on both forwarding engines. The bombs are parsed on the
// body workers, bounded, and counted; the other connection's round trips all complete. Their p50 and p99, idle and
// under the bombs, are logged (figures, not assertions: timing is the machine's).
func TestCompressionBombsDoNotStallOthers(t *testing.T) {
	brokerAddr := brokertest.Require(t)
	bz2Bomb, err := os.ReadFile("../../correlate/testdata/bomb-64mib-zeros.bz2")
	if err != nil {
		t.Fatal(err)
	}
	zeros := make([]byte, 64<<20)
	gzBomb, zlBomb := compress(t, "gzip", zeros), compress(t, "zlib", zeros)
	// A legitimate large body: 4 MiB of an oslo-ish JSON document, gzip'd (kombu compresses what it is told to).
	legit := compress(t, "gzip", []byte(`{"oslo.version": "2.0", "oslo.message": "{\"method\": \"sync\", \"args\": {\"blob\": \"`+
		strings.Repeat("0123456789abcdef", 256<<10)+`\"}, \"_unique_id\": \"big\"}"}`))
	bombs := []struct {
		kind string
		body []byte
	}{{"application/x-bz2", bz2Bomb}, {"application/x-gzip", zlBomb}, {"gzip", gzBomb}, {"application/x-gzip", legit}}
	for _, engine := range []struct {
		name  string
		loops int
	}{{"event-loop", 0}, {"goroutines", -1}} {
		t.Run(engine.name, func(t *testing.T) {
			h := startPipeline(t, brokerAddr, func(c *pipeline.Config) { c.EventLoops = engine.loops })
			echo := dial(t, brokertest.URLVia(h.addr), "e2e-bomb-echo-"+randHex(4))
			rtt := roundTripper(t, echo)
			idle := rtt(300)

			bomber := dial(t, brokertest.URLVia(h.addr), "e2e-bomber-"+randHex(4))
			ch := channel(t, bomber)
			q := "amqptrace-e2e-bombs-" + randHex(4)
			_, err := ch.QueueDeclare(q, false, true, false, false, nil)
			must(t, err, "queue.declare")
			// The bomber publishes 40 bodies a second: first unmarked (the same bytes, which amqptrace does not
			// inflate: what the bytes alone cost this machine), then marked compressed, as kombu does.
			bomb := func(marked bool) (stop func() int) {
				ctx, cancel := context.WithCancel(context.Background())
				var wg sync.WaitGroup
				sent := 0
				wg.Go(func() {
					tick := time.NewTicker(25 * time.Millisecond)
					defer tick.Stop()
					for i := 0; ; i++ {
						b := bombs[i%len(bombs)]
						pub := amqp.Publishing{ContentType: "application/json", Body: b.body}
						if marked {
							pub.Headers = amqp.Table{"compression": b.kind}
						}
						if ch.PublishWithContext(ctx, "", q, false, false, pub) != nil {
							return
						}
						sent++
						select {
						case <-ctx.Done():
							return
						case <-tick.C:
						}
					}
				})
				return func() int { cancel(); wg.Wait(); return sent }
			}
			stop := bomb(false)
			unmarked := rtt(1000)
			stop()
			stop = bomb(true)
			eventually(t, 30*time.Second, "the first bombs at the workers", func() (bool, string) {
				st := h.p.Stats().Correlate
				return st.BodiesOffloaded+st.BodiesShed >= 4, fmt.Sprintf("%d offloaded, %d shed", st.BodiesOffloaded, st.BodiesShed)
			})
			loaded := rtt(1000)
			sent := stop()
			st := h.p.Stats().Correlate
			t.Logf("%s: round trips p50/p99 idle %v/%v; beside the same bytes unmarked %v/%v; beside the bombs %v/%v; "+
				"%d bombs sent, %d bodies offloaded, %d shed, %d truncated, %d inflations cut at their time bound",
				engine.name, pct(idle, 50), pct(idle, 99), pct(unmarked, 50), pct(unmarked, 99), pct(loaded, 50),
				pct(loaded, 99), sent, st.BodiesOffloaded, st.BodiesShed, st.TruncatedBodies, st.InflateCut)
			if st.BodiesOffloaded == 0 || st.TruncatedBodies == 0 {
				t.Errorf("offloaded %d, truncated %d: want the bombs parsed on the workers and read as truncated",
					st.BodiesOffloaded, st.TruncatedBodies)
			}
			if d := h.p.Stats().Decode; d.ConnsOff != 0 {
				t.Errorf("%d connections' decoding switched off; the bombs must be bounded, not fatal", d.ConnsOff)
			}
		})
	}
}

func compress(t *testing.T, kind string, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w interface {
		Write([]byte) (int, error)
		Close() error
	}
	if kind == "gzip" {
		w = gzip.NewWriter(&buf)
	} else {
		w, _ = zlib.NewWriterLevel(&buf, zlib.BestCompression)
	}
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// roundTripper returns a function that makes n publish → delivery round trips on conn through its own queue and
// returns their durations.
func roundTripper(t *testing.T, conn *amqp.Connection) func(n int) []time.Duration {
	ch := channel(t, conn)
	q := "amqptrace-e2e-echo-" + randHex(4)
	_, err := ch.QueueDeclare(q, false, true, false, false, nil)
	must(t, err, "queue.declare")
	msgs, err := ch.Consume(q, "", true, false, false, false, nil)
	must(t, err, "basic.consume")
	return func(n int) []time.Duration {
		out := make([]time.Duration, 0, n)
		for i := range n {
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := ch.PublishWithContext(ctx, "", q, false, false, amqp.Publishing{Body: []byte(fmt.Sprint(i))})
			cancel()
			must(t, err, "publish")
			select {
			case <-msgs:
			case <-time.After(30 * time.Second):
				t.Fatalf("round trip %d: no delivery within 30s", i)
			}
			out = append(out, time.Since(start))
		}
		return out
	}
}

// pct is the p-th percentile of ds.
func pct(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

// TestStarvedObservationStillForwards: one connection's observation is starved (it sends nothing but compression
// bombs, back to back, each worth a 25 ms inflation and 64 MiB if it were let through), and that connection still
// forwards every message, byte for byte, at the speed of the same bytes unmarked (figures logged, not asserted:
// timing is the machine's); what observation could not afford is shed and counted, never waited for.
func TestStarvedObservationStillForwards(t *testing.T) {
	brokerAddr := brokertest.Require(t)
	bz2Bomb, err := os.ReadFile("../../correlate/testdata/bomb-64mib-zeros.bz2")
	if err != nil {
		t.Fatal(err)
	}
	gzBomb := compress(t, "gzip", make([]byte, 64<<20))
	bombs := []struct {
		kind string
		body []byte
	}{{"application/x-bz2", bz2Bomb}, {"gzip", gzBomb}}
	const n = 200
	h := startPipeline(t, brokerAddr, nil)
	conn := dial(t, brokertest.URLVia(h.addr), "e2e-starved-"+randHex(4))
	ch := channel(t, conn)
	must(t, ch.Confirm(false), "confirm.select")
	q := "amqptrace-e2e-starved-" + randHex(4)
	_, err = ch.QueueDeclare(q, false, true, false, false, nil)
	must(t, err, "queue.declare")
	rx := channel(t, dial(t, brokertest.URLVia(h.addr), "e2e-starved-rx-"+randHex(4)))
	msgs, err := rx.Consume(q, "", true, false, false, false, nil)
	must(t, err, "basic.consume")

	run := func(marked bool) time.Duration {
		start := time.Now()
		for i := range n {
			b := bombs[i%len(bombs)]
			pub := amqp.Publishing{ContentType: "application/json", Body: b.body}
			if marked {
				pub.Headers = amqp.Table{"compression": b.kind}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", q, false, false, pub)
			if err == nil {
				var ok bool
				ok, err = dc.WaitContext(ctx)
				if err == nil && !ok {
					err = fmt.Errorf("nacked")
				}
			}
			cancel()
			must(t, err, "publish")
		}
		for i := range n {
			select {
			case d := <-msgs:
				if want := bombs[i%len(bombs)].body; !bytes.Equal(d.Body, want) {
					t.Fatalf("message %d: %d bytes delivered, want the %d sent", i, len(d.Body), len(want))
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("message %d of %d not delivered within 30s", i, n)
			}
		}
		return time.Since(start)
	}
	plain := run(false)
	before := h.p.Stats().Correlate
	starved := run(true)
	st := h.p.Stats().Correlate
	shed := st.BodiesShed - before.BodiesShed
	t.Logf("%d bombs with confirms: unmarked %v (%.0f msg/s), marked compressed %v (%.0f msg/s); %d offloaded, %d shed, "+
		"%d inflations cut", n, plain.Round(time.Millisecond), n/plain.Seconds(), starved.Round(time.Millisecond),
		n/starved.Seconds(), st.BodiesOffloaded-before.BodiesOffloaded, shed, st.InflateCut-before.InflateCut)
	// Each bomb is parsed (or shed) twice, as the publish and as the delivery: some must have been shed.
	if shed == 0 {
		t.Errorf("no body shed while %d bombs went through: observation kept up with something it cannot afford", n)
	}
	if d := h.p.Stats().Decode; d.ConnsOff != 0 {
		t.Errorf("%d connections' decoding switched off", d.ConnsOff)
	}
}
