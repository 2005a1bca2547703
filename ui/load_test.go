package ui

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/amqptrace/amqptrace/correlate"
	"github.com/amqptrace/amqptrace/internal/browsertest"
	"github.com/chromedp/chromedp"
)

// TestLoad feeds 5,000 records/s (a mix shaped like a busy cloud: 200 compute hosts, report_state, boots,
// fanouts, notifications, errors, timeouts, small redactable args) with one live websocket client, and checks that
// memory stays bounded by the ring and the aggregates. AMQPTRACE_UI_LOAD sets the duration (default 3s; the lead
// runs "60s" for the one-minute figure).
func TestLoad(t *testing.T) {
	dur := loadDuration(t)
	s := New(Config{})
	ts := runServer(t, s)
	c := dialWS(t, wsURL(ts, "/api/ws"), nil)
	msgs := make(chan int, 1)
	go func() {
		n := 0
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				msgs <- n
				return
			}
			n++
		}
	}()

	var ms runtime.MemStats
	heapAfterGC := func() uint64 {
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	base := heapAfterGC()
	var maxHeap uint64
	var samples []string
	fed, elapsed := feedLoad(s, dur, func(el time.Duration) {
		h := heapAfterGC()
		maxHeap = max(maxHeap, h)
		samples = append(samples, fmt.Sprintf("%.0fs:%.1fMiB", el.Seconds(), float64(h)/(1<<20)))
	})
	final := heapAfterGC()
	maxHeap = max(maxHeap, final)
	st := s.Stats()
	s.st.mu.RLock()
	ring, edges, hostEdges := len(s.st.byID), len(s.st.svc.edges), len(s.st.host.edges)
	s.st.mu.RUnlock()
	t.Logf("fed %d records in %v (%.0f/s); received %d, dropped %d; ring %d; edges %d by service, %d by host; "+
		"updates %d", fed, elapsed.Round(time.Millisecond), float64(fed)/elapsed.Seconds(), st.RecordsReceived,
		st.RecordsDropped, ring, edges, hostEdges, st.Seq)
	t.Logf("heap after GC: base %.1f MiB, max %.1f MiB, final %.1f MiB; samples %v", float64(base)/(1<<20),
		float64(maxHeap)/(1<<20), float64(final)/(1<<20), samples)
	if st.RecordsReceived+st.RecordsDropped != uint64(fed) {
		t.Errorf("received %d + dropped %d != fed %d", st.RecordsReceived, st.RecordsDropped, fed)
	}
	if ring > s.cfg.recentSize() {
		t.Errorf("ring holds %d records, cap %d", ring, s.cfg.recentSize())
	}
	// The ring of 10,000 redacted records plus aggregates is a few tens of MiB; 128 MiB of growth means a leak.
	if maxHeap > base+128<<20 {
		t.Errorf("heap grew to %.1f MiB (base %.1f MiB)", float64(maxHeap)/(1<<20), float64(base)/(1<<20))
	}
	if st.Clients != 1 || st.ClientsKicked != 0 {
		t.Errorf("reading client: %+v", st)
	}
	c.Close()
	if n := <-msgs; n < 2 {
		t.Errorf("client got %d messages", n)
	}
}

// loadMix builds n records of a busy cloud's mix. Record copies each one, so reusing them is fine.
func loadMix(n int) []*correlate.Record {
	g := newGen()
	services := []*correlate.Endpoint{novaConductor, novaScheduler, neutronServer, novaAPI}
	out := make([]*correlate.Record, 0, n)
	for i := range n {
		host := fmt.Sprintf("10.0.1.%d", 1+i%200)
		compute := ep("nova-compute", 7000+i%200, host)
		agent := ep("neutron-openvswitch-agent", 8000+i%200, host)
		req := fmt.Sprintf("req-%08x-1111-4111-8111-%012x", i/6, i/6)
		args := json.RawMessage(fmt.Sprintf(`{"instance_uuid":"%08x-3333-4333-8333-333333333333",`+
			`"context":{"auth_token":"gAAAAABm%060d","user":"demo"},"host":"compute-%d"}`, i, i, i%200))
		var r *correlate.Record
		switch i % 10 {
		case 0, 1, 2:
			r = g.rec(spec{kind: correlate.KindCall, method: "report_state", topic: "q-reports-plugin",
				exchange: "neutron", caller: agent, callee: neutronServer, queue: 300 * time.Microsecond,
				srv: time.Duration(1+i%7) * time.Millisecond, transit: 200 * time.Microsecond})
		case 3:
			r = g.rec(spec{kind: correlate.KindCall, method: "select_destinations", topic: "scheduler",
				caller: novaConductor, callee: novaScheduler, req: req, queue: time.Millisecond,
				srv: time.Duration(5+i%50) * time.Millisecond, transit: time.Millisecond})
		case 4:
			r = g.rec(spec{kind: correlate.KindCast, method: "build_and_run_instance", topic: "compute",
				server: host, caller: novaConductor, callee: compute, req: req, queue: time.Millisecond})
		case 5:
			r = g.rec(spec{kind: correlate.KindCall, method: "object_class_action_versions", topic: "conductor",
				caller: compute, callee: novaConductor, req: req, queue: time.Millisecond,
				srv: 2 * time.Millisecond, transit: time.Millisecond})
		case 6:
			r = g.rec(spec{kind: correlate.KindNotification, eventType: "compute.instance.update",
				topic: "notifications", caller: compute, req: req})
		case 7:
			r = g.rec(spec{kind: correlate.KindFanout, method: "port_update", topic: "q-agent-notifier-port-update",
				caller: neutronServer, callees: []correlate.Endpoint{*agent, *ep("neutron-openvswitch-agent", 1, "10.9.9.9")},
				queue: time.Millisecond})
		case 8:
			r = g.rec(spec{kind: correlate.KindCall, status: correlate.StatusError, method: "select_destinations",
				topic: "scheduler", caller: novaConductor, callee: novaScheduler, req: req, queue: time.Millisecond,
				srv: 30 * time.Millisecond, errClass: "NoValidHost", errMsg: "No valid host was found."})
		default:
			r = g.rec(spec{kind: correlate.KindCall, status: correlate.StatusTimeout, method: "get_console_output",
				topic: "compute", server: host, caller: services[i%len(services)], callee: compute, req: req,
				queue: time.Millisecond, timeout: 30 * time.Second})
		}
		r.Args = args
		out = append(out, r)
	}
	return out
}

// BenchmarkRecord measures the sink's hot path (adding to the ring and the aggregates under the store's lock),
// with a tick taking the batch now and then as Run would.
func BenchmarkRecord(b *testing.B) {
	s := New(Config{})
	recs := loadMix(1000)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		s.Record(recs[i%len(recs)])
		if i%5000 == 4999 {
			s.flush()
		}
	}
}

// TestLoadPageKeepsUpdating opens the page in headless Chromium while the server is fed 5,000 records/s, and
// checks once a second that the page applied a newer update (its sequence number moved) and that its call table
// stays bounded. AMQPTRACE_UI_LOAD sets the duration, as for TestLoad.
func TestLoadPageKeepsUpdating(t *testing.T) {
	dur := loadDuration(t)
	ctx := browsertest.Start(t)
	s := New(Config{})
	ts := runServer(t, s)
	step(t, ctx, "open", chromedp.Navigate(ts.URL+"/"), waitJS(`document.getElementById("conn").dataset.state === "live"`))

	seqAt := func() (int, int) {
		v := eval[[]int](t, ctx, `[Number(document.body.dataset.seq || 0), document.querySelectorAll("#calls tbody tr").length]`)
		return v[0], v[1]
	}
	lastSeq, _ := seqAt()
	checks, advanced, maxRows := 0, 0, 0
	fed, elapsed := feedLoad(s, dur, func(time.Duration) {
		seq, rows := seqAt()
		if seq > lastSeq {
			advanced++
		}
		lastSeq, maxRows = seq, max(maxRows, rows)
		checks++
	})
	firstSeq := lastSeq
	// Liveness, not speed: once the feed stops the page must still catch up to the server's last update.
	step(t, ctx, "page catches up", waitJS(fmt.Sprintf(`Number(document.body.dataset.seq) >= %d`, s.Stats().Seq)))
	st := s.Stats()
	t.Logf("fed %d records in %v; page checked %d times, moved on in %d of them; page at update %d when the feed "+
		"stopped, server at %d; at most %d table rows; dropped %d, clients kicked %d", fed,
		elapsed.Round(time.Millisecond), checks, advanced, firstSeq, st.Seq, maxRows, st.RecordsDropped, st.ClientsKicked)
	if checks > 0 && advanced == 0 {
		t.Errorf("the page applied no update in %d checks under load", checks)
	}
	if maxRows > 500 {
		t.Errorf("the table grew to %d rows, cap 500", maxRows)
	}
	if st.ClientsKicked != 0 {
		t.Errorf("the browser was cut off as a slow client %d times", st.ClientsKicked)
	}
}

// loadDuration is how long the load tests feed: AMQPTRACE_UI_LOAD (e.g. "60s" for the one-minute figure), else 3s.
func loadDuration(t *testing.T) time.Duration {
	v := os.Getenv("AMQPTRACE_UI_LOAD")
	if v == "" {
		return 3 * time.Second
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("AMQPTRACE_UI_LOAD: %v", err)
	}
	return d
}

// feedLoad feeds s 5,000 records/s of loadMix for dur, catching up when a tick is late so the rate holds, and calls
// everySecond (with the time elapsed) once a second. It returns how many records it fed and for how long.
func feedLoad(s *Server, dur time.Duration, everySecond func(elapsed time.Duration)) (int, time.Duration) {
	const perSec = 5000
	recs := loadMix(2000)
	start := time.Now()
	next := start.Add(time.Second)
	fed := 0
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for now := range tick.C {
		el := now.Sub(start)
		if el >= dur {
			break
		}
		for target := int(el.Seconds() * perSec); fed < target; fed++ {
			r := *recs[fed%len(recs)] // a record is immutable once handed over: each one fed is a new record
			r.ID = uint64(fed + 1)
			s.Record(&r)
		}
		if now.After(next) {
			everySecond(el)
			next = next.Add(time.Second)
		}
	}
	return fed, time.Since(start)
}
