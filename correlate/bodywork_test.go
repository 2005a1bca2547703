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
