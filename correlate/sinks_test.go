package correlate

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

// A sink that blocks forever costs its own drop counter and nothing else: the other sinks get every record, the
// Fanout starts no goroutine for it beyond its one pump, and Record never waits. Every sink sees the same, shared
// Record (the contract in doc.go: immutable once emitted, sinks may keep it).
func TestFanoutBlockedSinkCostsOneDropCounter(t *testing.T) {
	const queue, n = 4, 500
	release := make(chan struct{})
	var entered sync.Once
	blocked := make(chan struct{})
	stuck := SinkFunc(func(*Record) {
		entered.Do(func() { close(blocked) })
		<-release // forever, as far as the Fanout can tell: released only once the test has its figures
	})
	var got [2]atomic.Int64
	var first [2]atomic.Pointer[Record]
	mk := func(i int) Sink {
		return SinkFunc(func(r *Record) {
			first[i].CompareAndSwap(nil, r)
			got[i].Add(1)
		})
	}
	fan := NewFanout(queue, mk(0), stuck, mk(1))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- fan.Run(ctx) }()

	// Each record is handed over once the healthy sinks have the one before: their queues never fill, so any
	// drop they showed would be the stuck sink's doing.
	delivered := func(i int64) {
		for got[0].Load() < i || got[1].Load() < i {
			runtime.Gosched()
		}
	}
	r0 := &Record{ID: 1}
	fan.Record(r0)
	<-blocked
	delivered(1)
	before := runtime.NumGoroutine()
	for i := int64(2); i <= n; i++ {
		fan.Record(&Record{ID: uint64(i)})
		delivered(i)
	}
	after := runtime.NumGoroutine()
	d := fan.Dropped()
	close(release)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if after > before {
		t.Errorf("goroutines %d → %d while a sink was stuck", before, after)
	}
	if d[0] != 0 || d[2] != 0 || got[0].Load() != n || got[1].Load() != n {
		t.Errorf("healthy sinks: got %d and %d of %d, dropped %d and %d", got[0].Load(), got[1].Load(), n, d[0], d[2])
	}
	// The stuck sink: one record in its hands, a queue's worth waiting, every later one dropped and counted.
	if want := uint64(n - 1 - queue); d[1] != want {
		t.Errorf("stuck sink dropped %d, want %d", d[1], want)
	}
	if first[0].Load() != r0 || first[1].Load() != r0 {
		t.Error("sinks got copies, want the one emitted record")
	}
}
