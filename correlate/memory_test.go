package correlate

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/amqptrace/amqptrace/internal/wire"
)

// A backlog of 200,000 messages to a stopped nova-compute: the pending table keeps at most MaxPending of them and at
// most MaxPendingBytes of estimated memory, evicts the oldest (counted, emitted Incomplete), and the heap it holds
// per pending message is stated here and checked against the estimate.
func TestBacklogMemoryIsBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("fills the pending table")
	}
	const backlog = 200000
	for _, tc := range []struct {
		name       string
		call       bool
		argBytes   int
		maxPending int
		maxBytes   int
	}{
		{"casts, bounded by count", false, 100, 100000, 256 << 20},
		{"calls with 2 KiB of arguments, bounded by bytes", true, 2048, 0, 64 << 20},
		// What amqptrace proxy holds with its defaults: the byte cap comes before the count cap.
		{"calls with small arguments, bounded by the default bytes", true, 0, 2 * backlog, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBacklogCloud(t, Config{MaxPending: tc.maxPending, MaxPendingBytes: tc.maxBytes, MaxPayloadBytes: 4096})
			var emitted, incomplete int
			b.h.c.sink = SinkFunc(func(r *Record) {
				emitted++
				if r.Incomplete {
					incomplete++
				}
			})
			b.compute.cn.Close("nova-compute stopped", nil)
			b.h.flush()
			args := map[string]any{"instance": map[string]any{"uuid": "6b0c5e3e-0000-4000-8000-000000000000",
				"host": "cmp1"}}
			if tc.argBytes > 0 {
				args["request_spec"] = strings.Repeat("x", tc.argBytes)
			}
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for i := range backlog {
				body := castBody("build_and_run_instance", fmt.Sprintf("u-%08d", i), reqID, args)
				props := osloProps
				if tc.call {
					body = callBody("get_console_output", fmt.Sprintf("m-%08d", i), fmt.Sprintf("u-%08d", i), reqID, args)
					props = callProps(600000)
				}
				b.api.publish("nova", "compute.cmp1", false, props, body)
				if i%1000 == 999 {
					b.h.flush()
				}
				b.h.step(time.Microsecond)
			}
			b.h.flush()
			runtime.GC()
			runtime.ReadMemStats(&after)
			st := b.h.c.Stats()
			heap := int64(after.HeapAlloc) - int64(before.HeapAlloc)
			per := float64(heap) / float64(st.Pending)
			t.Logf("%d messages: %d pending, %d evicted (%d for bytes); heap %.1f MiB, %.0f bytes per pending message, estimated %.0f",
				backlog, st.Pending, st.Evicted, st.EvictedForBytes, float64(heap)/(1<<20), per,
				float64(st.PendingBytes)/float64(st.Pending))
			if st.Pending+int64(st.Evicted) != backlog || uint64(incomplete) != st.Evicted || emitted != incomplete {
				t.Errorf("pending %d + evicted %d != %d, or emitted %d / incomplete %d", st.Pending, st.Evicted, backlog,
					emitted, incomplete)
			}
			if tc.maxPending > 0 && tc.maxPending < backlog && st.Pending != int64(tc.maxPending) {
				t.Errorf("pending %d, want the cap %d", st.Pending, tc.maxPending)
			}
			if maxBytes := st.MaxPendingBytes; tc.maxPending == 0 || tc.maxPending >= backlog {
				if st.PendingBytes > maxBytes || st.EvictedForBytes == 0 {
					t.Errorf("estimated %d bytes over the cap %d, or no eviction for bytes", st.PendingBytes, maxBytes)
				}
			}
			// The estimate must not undercount what the table really holds: it is what the bound trusts, and the
			// process's memory budget trusts the bound.
			if float64(heap) > 1.1*float64(st.PendingBytes) {
				t.Errorf("the table holds %d bytes of heap, its estimate says %d", heap, st.PendingBytes)
			}
			runtime.KeepAlive(b)
		})
	}
}

// heapAfter is the live heap after f, garbage collected.
func heapAfter(f func()) uint64 {
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.GC()
	runtime.ReadMemStats(&after)
	if after.HeapAlloc < before.HeapAlloc {
		return 0
	}
	return after.HeapAlloc - before.HeapAlloc
}

// Memory follows the bytes a peer sends, not the sizes it announces. A client that opens 2,047 channels and
// announces a 1 MiB body on each, sending one byte of it, would hold 2 GB if buffers were reserved at the announced
// size, and 2,000 connections each announcing a frame_max frame and sending one byte of it 256 MB.
func TestAnnouncedSizesReserveNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 2,000 connections")
	}
	t.Run("2,047 channels announcing 1 MiB bodies", func(t *testing.T) {
		h := newHarness(t, Config{})
		api := h.conn("nova-api", 7, "10.0.0.9")
		grew := heapAfter(func() {
			for ch := uint16(2); ch <= 2048; ch++ {
				api.c2s(wire.ChannelOpen(ch), wire.Publish(ch, "nova", "conductor", false),
					wire.Header(ch, 1<<20, osloProps), wire.Body(ch, []byte("{"), 0))
			}
			h.flush()
		})
		t.Logf("heap grew %d KiB for 2,047 announced MiB", grew>>10)
		if grew > 64<<20 {
			t.Errorf("heap grew %d MiB: buffers follow the announced sizes", grew>>20)
		}
	})
	t.Run("2,000 connections announcing frame_max frames", func(t *testing.T) {
		h := newHarness(t, Config{})
		conns := make([]*tconn, 2000)
		for i := range conns {
			conns[i] = h.conn("nova-compute", i, "10.0.1.1")
		}
		frame := wire.Body(1, make([]byte, frameMax-8), 0)
		grew := heapAfter(func() {
			for _, c := range conns {
				c.c2s(frame[:8]) // the 7-byte header and one payload byte
			}
		})
		t.Logf("heap grew %d KiB for 2,000 announced frames of %d KiB", grew>>10, frameMax>>10)
		if grew > 64<<20 {
			t.Errorf("heap grew %d MiB: carry buffers follow the announced frame sizes", grew>>20)
		}
		for _, c := range conns {
			c.c2s(frame[8:]) // the rest arrives: each frame completes (a stray body, counted) and its buffer goes
		}
	})
}

// 300,000 consumer tags on one connection (a client that sends Basic.Consume in a loop): the correlator keeps
// maxConsumersPerConn of them and counts the rest; the heap does not follow the flood.
func TestConsumerTableIsBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("sends 300,000 consumes")
	}
	h := newHarness(t, Config{})
	c := h.conn("nova-api", 7, "10.0.0.9")
	const n = 300000
	grew := heapAfter(func() {
		batch := make([][]byte, 0, 1000)
		for i := range n {
			batch = append(batch, wire.Consume(1, "q-flood", fmt.Sprintf("ctag-%0200d", i), false, false, nil))
			if len(batch) == cap(batch) {
				c.c2s(batch...)
				batch = batch[:0]
				h.flush()
			}
		}
		h.flush()
	})
	st := h.c.Stats()
	t.Logf("heap grew %d KiB for %d consumer tags of 205 bytes; %d not tracked", grew>>10, n, st.ConsumersUntracked)
	if want := max(n-maxConsumersPerConn, 0); st.ConsumersUntracked != uint64(want) {
		t.Errorf("untracked %d, want %d", st.ConsumersUntracked, want)
	}
	if grew > 32<<20 {
		t.Errorf("heap grew %d MiB for a consumer flood", grew>>20)
	}
}
