package correlate

import (
	"cmp"
	"fmt"
	"slices"
	"testing"
	"time"
)

// monitoredCall is an oslo call with call_monitor_timeout 2 s: its server heartbeats every second while a worker
// handles it, the first one a second after the worker took it.
func monitoredCall(msgID, uniqueID string) []byte {
	pairs := []kv{{"method", "report_state"}, {"args", map[string]any{}}, {"version", "1.0"}, {"_msg_id", msgID},
		{"_reply_q", replyQ}, {"_timeout", 2}, {"_unique_id", uniqueID}}
	return envelope(pyJSON(append(pairs, ctxKeys(reqID)...)...))
}

// A server with an executor pool of `pool`, four monitored calls at once, each handled in 1.5 s: the calls taken
// only when a worker came free carry their wait (server_wait_us), the first ones none, and the workers known busy
// peak at the pool size.
func TestSaturatedServerWaitIsSplitFromHandling(t *testing.T) {
	for _, pool := range []int{1, 4} {
		t.Run(fmt.Sprintf("pool %d", pool), func(t *testing.T) {
			c := newCloud(t, Config{})
			const n, handle, beat = 4, 1500 * time.Millisecond, time.Second
			t0 := c.h.now
			for i := range n {
				body := monitoredCall(fmt.Sprintf("m%d", i), fmt.Sprintf("u%d", i))
				c.condSend.publish("nova", "scheduler", false, callProps(60000), body)
				c.schedListen.deliver("1", uint64(i+1), "nova", "scheduler", callProps(60000), body)
			}
			// The server's timeline, as its pool would run it: call i starts in round i/pool.
			type ev struct {
				at    time.Duration
				call  int
				reply bool
			}
			var evs []ev
			for i := range n {
				start := time.Duration(i/pool) * handle
				evs = append(evs, ev{start + beat, i, false}, ev{start + handle, i, true})
			}
			slices.SortFunc(evs, func(a, b ev) int { return cmp.Compare(a.at, b.at) })
			for k, e := range evs {
				c.h.now = t0.Add(e.at)
				id := fmt.Sprintf("m%d", e.call)
				body := replyBody(id, fmt.Sprintf("hb%d", e.call), nil, nil, false)
				if e.reply {
					body = replyBody(id, fmt.Sprintf("r%d", e.call), "ok", nil, true)
				}
				c.schedSend.publish("", replyQ, false, osloProps, body)
				c.condReply.deliver(c.replyTag, uint64(k+1), "", replyQ, osloProps, body)
				c.h.flush()
			}
			var peak int
			for _, l := range c.h.c.servers {
				peak = max(peak, l.peak)
			}
			c.h.advance(time.Minute)
			waited := 0
			for _, r := range c.h.records() {
				var i int
				fmt.Sscanf(r.MsgID, "m%d", &i)
				want := (time.Duration(i/pool) * handle).Microseconds()
				if r.ServerWaitUS != want {
					t.Errorf("call %d: server_wait_us %d, want %d (server_us %d)", i, r.ServerWaitUS, want, r.ServerUS)
				}
				if r.ServerWaitUS > 0 {
					waited++
				}
			}
			if waited != n-pool || peak != pool {
				t.Errorf("%d calls waited (want %d), busy workers peaked at %d (want %d)", waited, n-pool, peak, pool)
			}
		})
	}
}

// An unmonitored call gives no split, however long it took: the wire does not say when a worker took it.
func TestUnmonitoredCallGetsNoWait(t *testing.T) {
	c := newCloud(t, Config{})
	for i := range 2 {
		c.call(fmt.Sprintf("m%d", i), fmt.Sprintf("u%d", i), uint64(i+1), replyBody(fmt.Sprintf("m%d", i), fmt.Sprintf("r%d", i), 1, nil, true))
	}
	for _, r := range c.h.records() {
		if r.ServerWaitUS != 0 {
			t.Errorf("an unmonitored call has server_wait_us %d", r.ServerWaitUS)
		}
	}
}
