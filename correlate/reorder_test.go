package correlate

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/amqptrace/amqptrace/internal/wire"
)

// step is one read in a scenario: at is when its bytes were read (after the scenario's start); feed writes them to
// their decoder. Scenarios are played with the steps tapped in other orders than they were read.
type step struct {
	name string
	at   time.Duration
	feed func()
}

// osloCallSteps is a full oslo call through a proxy that sees both sides, publisher confirms on.
func osloCallSteps(c *cloud) []step {
	body := callBody("select_destinations", "msg1", "u1", reqID, map[string]any{"instance_uuids": []string{"i1"}})
	reply := replyBody("msg1", "u2", []string{"host1"}, nil, true)
	return []step{
		{"publish", 0, func() { c.condSend.publish("nova", "scheduler", false, callProps(60000), body) }},
		{"confirm", 1 * time.Millisecond, func() { c.condSend.s2c(wire.Ack(1, 1, false)) }},
		{"deliver", 2 * time.Millisecond, func() { c.schedListen.deliver("1", 1, "nova", "scheduler", callProps(60000), body) }},
		{"reply publish", 5 * time.Millisecond, func() { c.schedSend.publish("", replyQ, true, osloProps, reply) }},
		{"reply confirm", 6 * time.Millisecond, func() { c.schedSend.s2c(wire.Ack(1, 1, false)) }},
		{"reply deliver", 7 * time.Millisecond, func() { c.condReply.deliver(c.replyTag, 1, "", replyQ, osloProps, reply) }},
	}
}

// genericCallSteps is an AMQP RPC (reply_to + correlation_id) from a client to a server, both behind the proxy.
func genericCallSteps(h *harness, direct bool) []step {
	client := h.conn("", 0, "10.0.2.1")
	server := h.conn("", 0, "10.0.2.2")
	replyTo, deliveredReplyTo := "amq.gen-callback", "amq.gen-callback"
	if direct {
		replyTo, deliveredReplyTo = directReplyTo, directReplyTo+".g1h2AA5yZXBseUAxMjM0NTY3OA=="
	}
	client.c2s(wire.Consume(1, replyTo, "ctag", direct, false, nil))
	client.s2c(wire.ConsumeOK(1, "ctag"))
	stag := server.consume("rpc_queue")
	req := wire.Properties{CorrelationID: "c-1", ReplyTo: replyTo, Type: "fib"}
	delivered := req
	delivered.ReplyTo = deliveredReplyTo
	rep := wire.Properties{CorrelationID: "c-1"}
	return []step{
		{"publish", 0, func() { client.publish("", "rpc_queue", false, req, []byte("30")) }},
		{"deliver", 2 * time.Millisecond, func() { server.deliver(stag, 1, "", "rpc_queue", delivered, []byte("30")) }},
		{"reply publish", 5 * time.Millisecond, func() { server.publish("", deliveredReplyTo, false, rep, []byte("832040")) }},
		{"reply deliver", 7 * time.Millisecond, func() { client.deliver("ctag", 1, "", deliveredReplyTo, rep, []byte("832040")) }},
	}
}

// play feeds the steps in the given order, each stamped with its read time. lateEach processes every step as it
// is tapped, so a step read before an earlier-tapped one is later than the window (the orphan and hold path);
// otherwise all of them reach the correlator within the window. Then time runs until everything is final.
func play(h *harness, steps []step, order []int, lateEach bool) []*Record {
	start := h.now
	for _, i := range order {
		h.now = start.Add(steps[i].at)
		steps[i].feed()
		if lateEach {
			h.flush()
		}
	}
	h.now = start.Add(steps[len(steps)-1].at)
	h.advance(time.Minute)
	return h.records()
}

// recordJSON is the record as a sink sees it, without the emission number.
func recordJSON(t *testing.T, r *Record) string {
	t.Helper()
	cp := *r
	cp.ID = 0
	b, err := json.Marshal(&cp)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// checkCall asserts one ok call with every timestamp present and in causal order.
func checkCall(t *testing.T, rs []*Record) *Record {
	t.Helper()
	if len(rs) != 1 {
		t.Fatalf("got %d records, want 1: %s", len(rs), dump(rs))
	}
	r := rs[0]
	if r.Kind != KindCall || r.Status != StatusOK || r.Incomplete {
		t.Fatalf("kind/status %s/%s incomplete %v: %s", r.Kind, r.Status, r.Incomplete, dump(rs))
	}
	ts := []*time.Time{r.Published, r.Delivered, r.Replied, r.ReplyDelivered}
	for i, x := range ts {
		if x == nil {
			t.Fatalf("timestamp %d missing: %s", i, dump(rs))
		}
		if i > 0 && x.Before(*ts[i-1]) {
			t.Fatalf("timestamps out of order: %s", dump(rs))
		}
	}
	return r
}

// permutations returns every order of 0..n-1.
func permutations(n int) [][]int {
	if n == 0 {
		return [][]int{{}}
	}
	var out [][]int
	for _, p := range permutations(n - 1) {
		for i := 0; i <= len(p); i++ {
			q := slices.Insert(slices.Clone(p), i, n-1)
			out = append(out, q)
		}
	}
	return out
}

// Every order the taps can bring a call's six reads in gives the same record as the order they were read in, as
// long as they reach the correlator within the window.
func TestReorderWithinWindow(t *testing.T) {
	ref := func() string {
		c := newCloud(t, Config{})
		return recordJSON(t, checkCall(t, play(c.h, osloCallSteps(c), []int{0, 1, 2, 3, 4, 5}, true)))
	}()
	for _, order := range permutations(6) {
		c := newCloud(t, Config{})
		rs := play(c.h, osloCallSteps(c), order, false)
		if got := recordJSON(t, checkCall(t, rs)); got != ref {
			t.Fatalf("order %v:\n got %s\nwant %s", order, got, ref)
		}
		if st := c.h.c.Stats(); st.LateEvents != 0 || st.UnmatchedReplies != 0 || st.Confirms != 2 {
			t.Fatalf("order %v: stats %+v", order, st)
		}
	}
}

// Reads tapped later than the window take the orphan and hold path, and still give the same record.
func TestReorderBeyondWindow(t *testing.T) {
	t.Run("oslo", func(t *testing.T) {
		ref := func() string {
			c := newCloud(t, Config{})
			return recordJSON(t, checkCall(t, play(c.h, osloCallSteps(c), []int{0, 1, 2, 3, 4, 5}, true)))
		}()
		for _, tc := range []struct {
			name  string
			order []int
		}{
			{"reply publish before the delivery", []int{0, 1, 3, 4, 2, 5}},
			{"reply delivery before the reply publish", []int{0, 1, 2, 5, 3, 4}},
			{"reply before the request publish", []int{3, 4, 5, 2, 0, 1}},
			{"delivery before the publish", []int{2, 0, 1, 3, 4, 5}},
			{"everything backwards but confirms", []int{5, 3, 4, 2, 0, 1}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				c := newCloud(t, Config{})
				rs := play(c.h, osloCallSteps(c), tc.order, true)
				if got := recordJSON(t, checkCall(t, rs)); got != ref {
					t.Fatalf("\n got %s\nwant %s", got, ref)
				}
				st := c.h.c.Stats()
				if st.LateEvents == 0 || st.UnmatchedReplies != 0 || st.Expired != 0 || st.Orphans != 0 {
					t.Errorf("stats %+v", st)
				}
			})
		}
	})
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprint("generic direct=", direct), func(t *testing.T) {
			ref := func() string {
				h := newHarness(t, Config{})
				return recordJSON(t, checkCall(t, play(h, genericCallSteps(h, direct), []int{0, 1, 2, 3}, true)))
			}()
			for _, order := range [][]int{{2, 3, 0, 1}, {3, 2, 1, 0}, {1, 0, 2, 3}, {2, 0, 3, 1}, {3, 0, 1, 2}} {
				h := newHarness(t, Config{})
				rs := play(h, genericCallSteps(h, direct), order, true)
				r := checkCall(t, rs)
				if got := recordJSON(t, r); got != ref {
					t.Fatalf("order %v:\n got %s\nwant %s", order, got, ref)
				}
				if st := h.c.Stats(); st.RecordsOf(KindCast, StatusOK) != 0 || st.UnmatchedDeliveries != 0 ||
					st.LateEvents == 0 {
					t.Errorf("order %v: stats %+v", order, st)
				}
			}
		})
	}
}

// A server-side record (the caller is not behind this proxy) is the same whichever of the delivery and the reply
// publish is processed first, and it is not held: the caller's reply queue is not consumed here.
func TestServerSideReplyBeforeDelivery(t *testing.T) {
	var ref string
	for i, order := range [][]int{{0, 1}, {1, 0}} {
		h := newHarness(t, Config{})
		listen := h.conn("nova-scheduler", 5151, "10.0.0.6")
		listen.rpcServer("scheduler", "host1")
		send := h.conn("nova-scheduler", 5151, "10.0.0.6")
		body := callBody("m", "msg1", "u1", reqID, nil)
		steps := []step{
			{"deliver", 0, func() { listen.deliver("1", 1, "nova", "scheduler", callProps(60000), body) }},
			{"reply publish", 3 * time.Millisecond, func() {
				send.publish("", replyQ, true, osloProps, replyBody("msg1", "u2", 1, nil, true))
			}},
		}
		start := h.now
		for _, s := range order {
			h.now = start.Add(steps[s].at)
			steps[s].feed()
			h.flush()
		}
		rs := h.records() // no time passes: final at once
		if len(rs) != 1 || rs[0].Status != StatusOK || rs[0].Delivered == nil || rs[0].Replied == nil ||
			rs[0].Published != nil || rs[0].ServerUS != 3000 {
			t.Fatalf("order %v: %s", order, dump(rs))
		}
		if i == 0 {
			ref = recordJSON(t, rs[0])
		} else if got := recordJSON(t, rs[0]); got != ref {
			t.Fatalf("order %v:\n got %s\nwant %s", order, got, ref)
		}
	}
}

// A reply whose call never comes waits as an orphan for the window, then counts as unmatched.
func TestOrphanExpires(t *testing.T) {
	h := newHarness(t, Config{Reorder: time.Second})
	send := h.conn("nova-scheduler", 5151, "10.0.0.6")
	send.publish("", replyQ, true, osloProps, replyBody("nobody", "u2", 1, nil, true))
	h.flush()
	if st := h.c.Stats(); st.Orphans != 1 || st.UnmatchedReplies != 0 {
		t.Fatalf("before expiry: %+v", st)
	}
	h.advance(999 * time.Millisecond)
	if st := h.c.Stats(); st.Orphans != 1 {
		t.Fatalf("expired early: %+v", st)
	}
	h.advance(time.Millisecond)
	if st := h.c.Stats(); st.Orphans != 0 || st.UnmatchedReplies != 1 || len(h.records()) != 0 {
		t.Fatalf("after expiry: %+v %s", st, dump(h.records()))
	}
}

// A generic message with a correlation_id and no reply_to that no call claims is a cast: it waits out its settle
// time even though its one expected delivery is in (it might have been a reply), then it is emitted.
func TestGenericCastWithCorrelationIDSettles(t *testing.T) {
	h := newHarness(t, Config{Settle: 2 * time.Second})
	client := h.conn("", 0, "10.0.2.1")
	server := h.conn("", 0, "10.0.2.2")
	tag := server.consume("jobs")
	p := wire.Properties{CorrelationID: "job-7", MessageID: "m-7"}
	client.publish("", "jobs", false, p, []byte("{}"))
	server.deliver(tag, 1, "", "jobs", p, []byte("{}"))
	h.advance(1999 * time.Millisecond)
	if rs := h.records(); len(rs) != 0 {
		t.Fatalf("emitted before settle: %s", dump(rs))
	}
	h.advance(time.Millisecond)
	r := h.only()
	if r.Kind != KindCast || r.Status != StatusOK || r.Deliveries != 1 || r.Published == nil || r.Delivered == nil {
		t.Fatalf("got %s", dump([]*Record{r}))
	}
}

// A full window processes its oldest event early (counted) and loses nothing.
func TestReorderOverflow(t *testing.T) {
	h := newHarness(t, Config{ReorderCap: 2, Settle: time.Second})
	api := h.conn("nova-api", 7, "10.0.0.9")
	h.flush()
	for i := range 5 {
		api.publish("nova", "conductor", false, osloProps, castBody("m", fmt.Sprint("u", i), reqID, nil))
	}
	h.advance(time.Minute)
	if st := h.c.Stats(); st.ReorderOverflow != 3 || st.Buffered != 0 || len(h.records()) != 5 {
		t.Fatalf("overflow %d buffered %d records %d", st.ReorderOverflow, st.Buffered, len(h.records()))
	}
}

// A connection's close is processed after the deliveries read before it, even when it reaches the correlator
// first: the delivery is still resolved with the consumer table as it was.
func TestCloseAfterEarlierDeliveries(t *testing.T) {
	h := newHarness(t, Config{})
	server := h.conn("nova-compute", 8, "10.0.0.8")
	server.rpcServer("compute", "h1")
	api := h.conn("nova-api", 7, "10.0.0.9")
	h.flush()
	body := castBody("refresh", "u1", reqID, nil)
	t0 := h.now
	api.publish("nova", "compute", false, osloProps, body)
	h.now = t0.Add(2 * time.Millisecond)
	server.cn.Close("client EOF", nil) // tapped first
	h.now = t0.Add(time.Millisecond)
	server.deliver("1", 1, "nova", "compute", osloProps, body) // read before the close
	h.now = t0.Add(2 * time.Millisecond)
	r := h.only() // the one expected delivery is in
	if r.Queue != "compute" || r.Callee == nil || r.Callee.PID != 8 || r.Deliveries != 1 {
		t.Fatalf("got %s", dump([]*Record{r}))
	}
	if h.c.topoFor("/").consumed("compute") {
		t.Errorf("closed connection's consumers linger")
	}
	api.cn.Close("client EOF", nil)
}

// Under Run, with its real timer on synctest's clock: reads tapped in reverse order within the window give the
// full record once the window has passed and not before; a request tapped later than the window still joins
// its reply (an orphan) instead of leaving it unmatched.
func TestRunReorders(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const window = 500 * time.Millisecond
		h := newLiveHarness(t, Config{Reorder: window})
		c := newCloudOn(h)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- h.c.Run(ctx) }()

		// Call 1: all six reads within 7ms, tapped backwards 10ms after the first read.
		time.Sleep(10 * time.Millisecond)
		start := time.Now().Add(-10 * time.Millisecond)
		steps := osloCallSteps(c)
		for i := len(steps) - 1; i >= 0; i-- {
			h.now = start.Add(steps[i].at)
			steps[i].feed()
		}
		time.Sleep(window - 20*time.Millisecond) // the first read's window has not passed yet
		synctest.Wait()
		if rs := h.emitted(); len(rs) != 0 {
			t.Fatalf("emitted inside the window: %s", dump(rs))
		}
		time.Sleep(20 * time.Millisecond)
		synctest.Wait()
		r := checkCall(t, h.emitted())
		if !r.Published.Equal(start) || r.DurationUS != 7000 || r.Confirmed == nil {
			t.Errorf("call 1: %s", dump([]*Record{r}))
		}

		// Call 2: the reply is read and tapped; its request, read 1ms before it, is tapped a whole window later.
		t2 := time.Now()
		body := callBody("m", "msg2", "u2", reqID, nil)
		reply := replyBody("msg2", "u2r", 1, nil, true)
		h.now = t2.Add(time.Millisecond)
		c.schedSend.publish("", replyQ, true, osloProps, reply)
		time.Sleep(window + 100*time.Millisecond)
		synctest.Wait()
		if st := h.c.Stats(); st.Orphans != 1 {
			t.Fatalf("reply not kept as an orphan: %+v", st)
		}
		h.now = t2
		c.condSend.publish("nova", "scheduler", false, callProps(60000), body)
		h.now = t2.Add(2 * time.Millisecond)
		c.condReply.deliver(c.replyTag, 2, "", replyQ, osloProps, reply)
		time.Sleep(3 * window)
		synctest.Wait()
		rs := h.emitted()
		if len(rs) != 2 || rs[1].MsgID != "msg2" || rs[1].Status != StatusOK || rs[1].Replied == nil ||
			rs[1].ReplyDelivered == nil || rs[1].Published == nil {
			t.Fatalf("call 2: %s", dump(rs))
		}
		st := h.c.Stats()
		if st.LateEvents != 1 || st.OrphansMerged != 1 || st.UnmatchedReplies != 0 || st.Orphans != 0 {
			t.Errorf("stats %+v", st)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

// Under Run, a call's expiry waits for a reply read before it that is still in the window: the reply lands in the
// record (late, within the grace) instead of finding no call.
func TestRunExpiryWaitsForWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const window = 500 * time.Millisecond
		h := newLiveHarness(t, Config{Reorder: window, Grace: time.Second})
		c := newCloudOn(h)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- h.c.Run(ctx) }()

		h.now = time.Now()
		body := callBody("slow", "msg1", "u1", reqID, nil)
		c.condSend.publish("nova", "scheduler", false, callProps(1000), body)
		c.schedListen.deliver("1", 1, "nova", "scheduler", callProps(1000), body)
		// The reply is read 1ms before deadline + grace and tapped at once; expiry is due 1ms later.
		time.Sleep(2*time.Second - time.Millisecond)
		h.now = time.Now()
		reply := replyBody("msg1", "u2", 1, nil, true)
		c.schedSend.publish("", replyQ, true, osloProps, reply)
		c.condReply.deliver(c.replyTag, 1, "", replyQ, osloProps, reply)
		time.Sleep(2 * window)
		synctest.Wait()
		rs := h.emitted()
		if len(rs) != 1 || rs[0].Status != StatusTimeout || !rs[0].LateReply || rs[0].ReplyDelivered == nil {
			t.Fatalf("got %s", dump(rs))
		}
		if st := h.c.Stats(); st.UnmatchedReplies != 0 || st.LateReplies != 1 {
			t.Errorf("stats %+v", st)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

// TestReorderWindowOrder checks the window alone: events come out by order key, then by arrival for equal keys,
// and an event read before one already taken out is late.
func TestReorderWindowOrder(t *testing.T) {
	base := time.Unix(1_700_000_000, 0)
	var w reorderWindow
	in := []struct {
		name string
		at   time.Duration
	}{{"c", 3}, {"a", 1}, {"b1", 2}, {"b2", 2}, {"d", 4}}
	for _, e := range in {
		ev := &event{order: base.Add(e.at), exchange: e.name}
		w.put(ev, int64(e.at))
	}
	if t0, ok := w.oldest(); !ok || !t0.Equal(base.Add(1)) {
		t.Fatalf("oldest = %v, %v; want %v", t0, ok, base.Add(1))
	}
	var got []string
	for w.len() > 2 {
		got = append(got, w.take().exchange)
	}
	if want := []string{"a", "b1", "b2"}; !slices.Equal(got, want) {
		t.Fatalf("took %v, want %v", got, want)
	}
	if !w.late(&event{order: base.Add(1)}) || w.late(&event{order: base.Add(2)}) {
		t.Fatal("an event read before the newest taken one must be late, one read with it must not")
	}
	w.take()
	w.take()
	if _, ok := w.oldest(); ok || w.len() != 0 {
		t.Fatal("window not empty after taking everything")
	}
}

// TestOrphanageLifecycle checks the orphan store alone: claim takes every orphan of a key, a settled orphan is
// skipped by expiry, expiry comes in order and removes the orphan from its key, and the bound holds.
func TestOrphanageLifecycle(t *testing.T) {
	base := time.Unix(1_700_000_000, 0)
	o := orphanage{byKey: make(map[string][]*orphan)}
	a1 := &orphan{key: "a", expireAt: base.Add(1)}
	b := &orphan{key: "b", expireAt: base.Add(2)}
	a2 := &orphan{key: "a", expireAt: base.Add(3)}
	for _, x := range []*orphan{a1, b, a2} {
		o.add(x)
	}
	if o.n != 3 {
		t.Fatalf("n = %d, want 3", o.n)
	}
	if x := o.expired(base, false); x != nil {
		t.Fatalf("expired %v before its time", x.key)
	}
	if x := o.expired(base.Add(1), false); x != a1 || len(o.byKey["a"]) != 1 || o.n != 2 {
		t.Fatalf("first expiry: got %v, a holds %d, n %d", x, len(o.byKey["a"]), o.n)
	}
	claimed := o.claim("a")
	if len(claimed) != 1 || claimed[0] != a2 {
		t.Fatalf("claim(a) = %v, want [a2]", claimed)
	}
	o.settle(a2)
	if x := o.expired(base.Add(10), false); x != b || o.n != 0 {
		t.Fatalf("second expiry: got %v, n %d; want b, 0", x, o.n)
	}
	if x := o.expired(base.Add(10), true); x != nil {
		t.Fatalf("a settled orphan expired again: %v", x.key)
	}
	for i := 0; !o.full(); i++ {
		o.add(&orphan{key: "k", expireAt: base})
		if i > maxOrphans {
			t.Fatal("orphanage never reports full")
		}
	}
	if o.n != maxOrphans {
		t.Fatalf("full at %d, want %d", o.n, maxOrphans)
	}
}

// A replay's reader runs ahead of the correlator: under EventClock the window is kept by the read times taken in,
// so a reply publish that a capture held behind a hole, read after the reply's delivery, is still processed
// before it. By the reader's clock every batch would be processed as it came, and the call would end at the
// delivery without its reply publish.
func TestEventClockKeepsTheWindowWhenTheReaderIsAhead(t *testing.T) {
	for _, eventClock := range []bool{false, true} {
		t.Run(fmt.Sprintf("EventClock=%v", eventClock), func(t *testing.T) {
			h := newHarness(t, Config{EventClock: eventClock, Source: "replay"})
			server := h.conn("nova-conductor", 7, "10.0.0.2")
			server.rpcServer("conductor", "ctl1")
			caller := h.conn("nova-api", 8, "10.0.0.1")
			tag := caller.replyListener(replyQ)
			h.flush()
			t0 := h.now
			ahead := t0.Add(time.Hour) // where the reader is while the correlator takes these in
			at := func(d time.Duration, write func()) {
				h.now = t0.Add(d)
				write()
				h.now = ahead
				h.c.step()
			}
			at(1*time.Millisecond, func() {
				caller.publish("nova", "conductor", false, callProps(30000), callBody("ping", "m1", "u1", "req-1", nil))
			})
			at(2*time.Millisecond, func() {
				server.deliver("1", 1, "nova", "conductor", callProps(30000), callBody("ping", "m1", "u1", "req-1", nil))
			})
			at(4*time.Millisecond, func() { // the caller's side, read first
				caller.deliver(tag, 1, "", replyQ, osloProps, replyBody("m1", "r1", "pong", nil, true))
			})
			at(3*time.Millisecond, func() { // the server's reply publish, held behind a hole
				server.publish("", replyQ, false, osloProps, replyBody("m1", "r1", "pong", nil, true))
			})
			h.advance(time.Minute)
			var call *Record
			for _, r := range h.records() {
				if r.MsgID == "m1" && r.Amends == 0 {
					call = r
				}
			}
			complete := call != nil && call.Replied != nil && call.ReplyDelivered != nil
			if complete != eventClock {
				t.Fatalf("complete record %v, want %v: %s", complete, eventClock, dump(h.records()))
			}
		})
	}
}

// TestEventHeapOrder checks the heap against a sort: random keys with many ties, pushes and pops interleaved, and
// every event comes out by key and then by arrival.
func TestEventHeapOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var h eventHeap
	var seq uint64
	var want []heapSlot
	var got []*event
	for round := range 200 {
		for range r.IntN(300) {
			seq++
			ev := &event{key: int64(r.IntN(50) + round*10), seq: seq}
			h.push(ev)
			want = append(want, heapSlot{key: ev.key, seq: ev.seq, ev: ev})
		}
		// The keys taken so far are below every key pushed later only within a round, as in the window: pop
		// what a sort of everything pushed so far puts first, and compare.
		slices.SortFunc(want, func(a, b heapSlot) int {
			if a.before(&b) {
				return -1
			}
			if b.before(&a) {
				return 1
			}
			return 0
		})
		for k := r.IntN(len(want) + 1); k > 0; k-- {
			got = append(got, h.pop())
			if got[len(got)-1] != want[0].ev {
				t.Fatalf("round %d: popped key %d seq %d, want key %d seq %d", round, got[len(got)-1].key,
					got[len(got)-1].seq, want[0].key, want[0].seq)
			}
			want = want[1:]
		}
	}
	for len(h) > 0 {
		if ev := h.pop(); ev != want[0].ev {
			t.Fatalf("draining: popped key %d seq %d, want key %d seq %d", ev.key, ev.seq, want[0].key, want[0].seq)
		}
		want = want[1:]
	}
	if len(want) != 0 {
		t.Fatalf("%d events never came out", len(want))
	}
}
