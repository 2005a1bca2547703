package correlate

import (
	"bytes"
	"compress/gzip"
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/amqptrace/amqptrace/internal/wire"
)

// goid is the calling goroutine's id, from its stack header ("goroutine 42 [running]:").
func goid() int {
	var b [64]byte
	f := strings.Fields(string(b[:runtime.Stack(b[:], false)]))
	n, _ := strconv.Atoi(f[1])
	return n
}

func gzipOf(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// compressed are kombu's properties for a compressed body ("compression" header, as kombu sets it).
func compressed(kind string) wire.Properties {
	p := osloProps
	p.Headers = wire.Table{"compression": kind}
	return p
}

// Compressed bodies, bombs among them, are inflated and parsed on the body workers, never on the goroutine that
// feeds the connection (in the proxy: the one that forwards its bytes); their records are whole.
func TestSlowBodiesParseOnWorkers(t *testing.T) {
	bz2Bomb, err := os.ReadFile("testdata/bomb-64mib-zeros.bz2") // 79 bytes: bzip2 -9 of 64 MiB of zeros
	if err != nil {
		t.Fatal(err)
	}
	synctest.Test(t, func(t *testing.T) {
		h := newLiveHarness(t, Config{})
		h.c.cfg.InlineBodies = false
		var mu sync.Mutex
		inflatedOn := map[int]int{}
		decompressHook = func() { mu.Lock(); inflatedOn[goid()]++; mu.Unlock() }
		defer func() { decompressHook = nil }()
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- h.c.Run(ctx) }()

		api := h.conn("nova-api", 7, "10.0.0.9")
		feeder := goid()
		h.now = time.Now()
		api.publish("nova", "conductor", false, compressed("application/x-gzip"),
			gzipOf(t, castBody("build_instances", "ugz", reqID, map[string]any{"x": strings.Repeat("a", 5000)})))
		api.publish("nova", "conductor", false, compressed("application/x-bz2"), bz2Bomb)
		api.publish("nova", "conductor", false, compressed("application/x-gzip"), gzipOf(t, make([]byte, 64<<20)))
		time.Sleep(5 * time.Second)
		synctest.Wait()

		mu.Lock()
		defer mu.Unlock()
		if inflatedOn[feeder] != 0 || len(inflatedOn) == 0 {
			t.Errorf("inflated on goroutines %v; the feeding goroutine is %d: want every inflation on a worker", inflatedOn, feeder)
		}
		st := h.c.Stats()
		if st.BodiesOffloaded != 3 || st.BodiesShed != 0 || st.TruncatedBodies != 2 {
			t.Errorf("offloaded %d shed %d truncated %d; want 3, 0, 2 (the two bombs read as truncated)",
				st.BodiesOffloaded, st.BodiesShed, st.TruncatedBodies)
		}
		var cast *Record
		for _, r := range h.emitted() {
			if r.UniqueID == "ugz" {
				cast = r
			}
		}
		if cast == nil || cast.Method != "build_instances" || cast.RequestID != reqID {
			t.Errorf("the gzip cast's record: %s", dump(h.emitted()))
		}
		cancel()
		<-done
	})
}

// The hand-off to the workers never waits: while the workers are busy, a connection's bodies past its share
// (workPerConn) are shed and counted, its feeding goes on, and another connection still gets its share.
func TestBodyWorkersShedPerConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newLiveHarness(t, Config{})
		h.c.cfg.InlineBodies = false
		release := make(chan struct{})
		decompressHook = func() { <-release }
		defer func() { decompressHook = nil }()
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- h.c.Run(ctx) }()

		a, b := h.conn("nova-api", 7, "10.0.0.9"), h.conn("nova-compute", 8, "10.0.0.10")
		h.now = time.Now()
		body := gzipOf(t, castBody("m", "u", reqID, nil))
		const extra = 3
		for range workPerConn + extra {
			a.publish("nova", "conductor", false, compressed("application/x-gzip"), body)
		}
		b.publish("nova", "conductor", false, compressed("application/x-gzip"), body)
		synctest.Wait()
		st := h.c.Stats()
		if st.BodiesShed != extra || st.BodiesOffloaded != workPerConn+1 {
			t.Errorf("shed %d offloaded %d; want %d shed (connection a past its share) and %d offloaded",
				st.BodiesShed, st.BodiesOffloaded, extra, workPerConn+1)
		}
		close(release)
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if n := a.cn.work.Load() + b.cn.work.Load(); n != 0 || h.c.work.bytes.Load() != 0 {
			t.Errorf("after the workers finished: %d jobs and %d bytes still counted", n, h.c.work.bytes.Load())
		}
		cancel()
		<-done
	})
}

// Inflation has a CPU budget: a client that sends compressed bodies as fast as it can gets inflateCPU of
// inflating per second, and the rest of its bodies are shed (counted); the budget refills with time.
func TestInflationBudget(t *testing.T) {
	var b inflateBudget
	t0 := time.Unix(1_800_000_000, 0)
	if !b.allow(t0) {
		t.Fatal("a fresh budget refuses")
	}
	b.spend(inflateCPU + 30*time.Millisecond) // one long inflation overdraws it
	if b.allow(t0.Add(time.Millisecond)) {
		t.Error("an overdrawn budget allows")
	}
	// It fills at inflateCPU per second: 30 ms of debt is gone after 0.3 s, and then some.
	if !b.allow(t0.Add(time.Second)) {
		t.Error("the budget did not refill in a second")
	}
	if !b.allow(t0.Add(time.Hour)) || b.left != inflateCPU {
		t.Errorf("after an hour the budget holds %v, want at most %v", b.left, inflateCPU)
	}
}

// Through the workers: bombs that each take 30 ms to inflate, from several connections at once (so that no
// connection passes its share), are inflated until the budget is spent and shed after it; a second later the
// budget has refilled and a compressed body is inflated again.
func TestBodyWorkersKeepToTheInflationBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newLiveHarness(t, Config{})
		h.c.cfg.InlineBodies = false
		var mu sync.Mutex
		n := 0
		decompressHook = func() {
			time.Sleep(30 * time.Millisecond) // a bomb's inflation, in the bubble's time
			mu.Lock()
			n++
			mu.Unlock()
		}
		defer func() { decompressHook = nil }()
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- h.c.Run(ctx) }()

		body := gzipOf(t, castBody("m", "u", reqID, nil))
		h.now = time.Now()
		const conns = 5
		for i := range conns {
			c := h.conn("nova-api", 10+i, "10.0.0.9")
			for range workPerConn {
				c.publish("nova", "conductor", false, compressed("application/x-gzip"), body)
			}
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		st := h.c.Stats()
		mu.Lock()
		first := n
		mu.Unlock()
		// At most the budget and one inflation per worker that started before it was spent, plus what refilled
		// while they ran.
		most := int((inflateCPU+time.Duration(workers())*30*time.Millisecond)/(30*time.Millisecond)) + 1
		if st.BodiesShed == 0 || first > most || first+int(st.BodiesShed) != conns*workPerConn {
			t.Errorf("inflated %d, shed %d of %d; want some shed and at most %d inflated", first, st.BodiesShed,
				conns*workPerConn, most)
		}
		late := h.conn("nova-api", 99, "10.0.0.9")
		late.publish("nova", "conductor", false, compressed("application/x-gzip"), body)
		time.Sleep(time.Second)
		synctest.Wait()
		mu.Lock()
		if n != first+1 {
			t.Errorf("after the refill: %d inflated, want %d", n, first+1)
		}
		mu.Unlock()
		cancel()
		<-done
	})
}
