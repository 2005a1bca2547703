package correlate

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
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
		{"casts, bounded by count", false, 100, 100000, 0},
		{"calls with 2 KiB of arguments, bounded by bytes", true, 2048, 0, 64 << 20},
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
				"host": "cmp1"}, "request_spec": strings.Repeat("x", tc.argBytes)}
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
			if tc.maxPending > 0 && st.Pending != int64(tc.maxPending) {
				t.Errorf("pending %d, want the cap %d", st.Pending, tc.maxPending)
			}
			if tc.maxBytes > 0 && (st.PendingBytes > int64(tc.maxBytes) || st.EvictedForBytes == 0) {
				t.Errorf("estimated %d bytes over the cap %d, or no eviction for bytes", st.PendingBytes, tc.maxBytes)
			}
			// The estimate must not undercount what the table really holds by much: it is what the bound trusts.
			if float64(heap) > 1.5*float64(st.PendingBytes) {
				t.Errorf("the table holds %d bytes of heap, its estimate says %d", heap, st.PendingBytes)
			}
			runtime.KeepAlive(b)
		})
	}
}
