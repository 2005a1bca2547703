package correlate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/amqptrace/amqptrace/frames"
	"github.com/amqptrace/amqptrace/internal/wire"
)

// Run with its real drain ticker under a fake clock: a call with a 1.5 s timeout is emitted as a timeout at deadline +
// grace, and the pending call left at shutdown is flushed (Incomplete) through a Fanout into JSON Lines.
func TestRunExpiresAndFlushes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var got []*Record
		collect := SinkFunc(func(r *Record) {
			mu.Lock()
			got = append(got, r)
			mu.Unlock()
		})
		var out bytes.Buffer
		jl := NewJSONLines(&out)
		fan := NewFanout(16, collect, jl)
		c := New(Config{Sink: fan, Grace: 5 * time.Second, Logger: slog.New(slog.DiscardHandler)})

		ctx, cancel := context.WithCancel(t.Context())
		fctx, fcancel := context.WithCancel(context.Background())
		runDone, fanDone := make(chan error, 1), make(chan error, 1)
		go func() { runDone <- c.Run(ctx) }()
		go func() { fanDone <- fan.Run(fctx) }()
		synctest.Wait() // both are running and idle
		if err := c.Run(ctx); !errors.Is(err, ErrRunning) {
			// The second Run must refuse at once; if it had started it would block until cancel.
			t.Errorf("second Run = %v", err)
		}

		cn := c.NewConn(ConnInfo{ID: 1, Client: "10.0.0.5:4000"})
		dec := frames.NewConn(cn, frames.Options{})
		props := wire.Table{"connection_name": "nova-conductor:4242:abc"}
		start := time.Now()
		dec.ClientDecoder().Write(wire.Concat(wire.ProtocolHeader(), wire.StartOKPlain(props, "guest", "pw"),
			wire.TuneOK(2047, frameMax, 60), wire.Open("/"), wire.ChannelOpen(1),
			wire.Message(1, "nova", "scheduler", callProps(1500), callBody("fast", "m1", "u1", reqID, nil), frameMax),
			wire.Message(1, "nova", "scheduler", callProps(60000), callBody("slow", "m2", "u2", reqID, nil), frameMax)))
		// The broker accepts the login after the client pipelined its publishes: they were held, and count now.
		dec.ServerDecoder().Write(wire.Concat(wire.Start(wire.Table{}), wire.Tune(2047, frameMax, 60), wire.OpenOK()))

		time.Sleep(1500*time.Millisecond + 5*time.Second) // fake time: the bubble's clock jumps
		synctest.Wait()
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n != 1 {
			t.Fatalf("after deadline+grace: %d records, want 1", n)
		}
		if r := got[0]; r.MsgID != "m1" || r.Status != StatusTimeout || r.Incomplete ||
			r.Deadline.Sub(start) != 1500*time.Millisecond {
			t.Errorf("expired record: %s", dump(got))
		}

		cancel()
		if err := <-runDone; err != nil {
			t.Fatal(err)
		}
		fcancel()
		if err := <-fanDone; err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[1].MsgID != "m2" || !got[1].Incomplete || got[1].Status != StatusTimeout {
			t.Fatalf("flushed: %s", dump(got))
		}
		if err := jl.Flush(); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if len(lines) != 2 {
			t.Fatalf("JSON Lines: %q", out.String())
		}
		for _, l := range lines {
			var r Record
			if err := json.Unmarshal([]byte(l), &r); err != nil {
				t.Fatal(err)
			}
		}
		if d := fan.Dropped(); d[0] != 0 || d[1] != 0 {
			t.Errorf("dropped %v", d)
		}
		cn.Close("done", nil)
	})
}

func TestFanoutDropsWhenFull(t *testing.T) {
	block := make(chan struct{})
	slow := SinkFunc(func(*Record) { <-block })
	var fast int
	fan := NewFanout(2, slow, SinkFunc(func(*Record) { fast++ }))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- fan.Run(ctx) }()
	// Without Run draining the slow sink's queue, at most queue+1 records fit; the rest are dropped at once.
	for range 10 {
		fan.Record(&Record{})
	}
	close(block)
	cancel()
	<-done
	if d := fan.Dropped(); d[0] < 7 || d[0] > 8 {
		t.Errorf("slow sink dropped %d, want 7 or 8", d[0])
	}
	if fast+int(fan.Dropped()[1]) != 10 {
		t.Errorf("fast sink got %d + dropped %d, want 10", fast, fan.Dropped()[1])
	}
}

func TestQueueFullDrops(t *testing.T) {
	h := newHarness(t, Config{QueueSize: 2})
	api := h.conn("nova-api", 7, "10.0.0.9") // its handshake queued nothing but ChannelOpen
	for i := range 5 {
		api.publish("nova", "conductor", false, osloProps, castBody("m", string(rune('a'+i)), reqID, nil))
	}
	st := h.c.Stats()
	if st.QueueDrops != 4 || st.MessagesIn != 2 {
		t.Fatalf("drops %d in %d", st.QueueDrops, st.MessagesIn)
	}
}
