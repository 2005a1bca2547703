package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/amqptrace/amqptrace/correlate"
	"github.com/amqptrace/amqptrace/internal/brokertest"
)

// osloProc is one process of testdata/oslo_backlog.py, the real oslo.messaging.
type osloProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdout *tail
	stderr *tail
	done   chan struct{}
	err    error
}

func startOslo(t *testing.T, args ...string) *osloProc {
	t.Helper()
	return startPy(t, "oslo_backlog.py", args...)
}

// startPy runs a script of testdata with Debian's python3 (and its oslo.messaging, kombu and py-amqp).
func startPy(t *testing.T, script string, args ...string) *osloProc {
	t.Helper()
	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		t.Fatalf("%s: %v (make test installs python3-oslo.messaging)", py, err)
	}
	p := &osloProc{t: t, stdout: newTail(64 << 10), stderr: newTail(64 << 10), done: make(chan struct{})}
	p.cmd = exec.Command(py, append([]string{filepath.Join("testdata", script)}, args...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	stdin, err := p.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = stdin.Close()
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("--- %s stderr ---\n%s", args[0], p.stderr.String())
		}
	})
	return p
}

// waitLine waits for a line of the process's standard output that matches.
func (p *osloProc) waitLine(timeout time.Duration, match func(string) bool) string {
	p.t.Helper()
	line, ok := p.stdout.waitLine(timeout, p.done, match)
	if !ok {
		p.t.Fatalf("oslo process: no such line within %v (exited: %v)\nstdout: %s\nstderr: %s", timeout, p.err,
			p.stdout.String(), p.stderr.String())
	}
	return line
}

func (p *osloProc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// getJSON fetches a JSON document from amqptrace's HTTP API.
func getJSON(t *testing.T, client *http.Client, u string, v any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code, body, err := httpGet(ctx, client, u)
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET %s: %d %v", u, code, err)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
}

// osloRig is amqptrace proxying to upstream in a vhost of its own, with the UI and an events file, and the
// arguments that point oslo_backlog.py at it (its own exchange and topic suffix).
type osloRig struct {
	p        *proc
	client   *http.Client
	httpAddr string
	events   string
	suffix   string // appended to every topic and exchange of the scenario
	common   []string
}

func startOsloRig(t *testing.T, name, upstream string, flags ...string) *osloRig {
	t.Helper()
	vh := testVhost(t)
	r := &osloRig{client: &http.Client{}, events: filepath.Join(t.TempDir(), "events.jsonl")}
	args := append([]string{"proxy", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--events", r.events,
		"--upstream", upstream}, flags...)
	r.p = startBin(t, args...)
	var proxyAddr string
	proxyAddr, r.httpAddr = r.p.listening(true)
	waitReady(t, r.p, r.client, r.httpAddr, 30*time.Second)
	url := strings.Replace(vh.url(proxyAddr), "amqp://", "rabbit://", 1)
	r.suffix = "_" + randHex(4)
	r.common = []string{"--url", url, "--exchange", name + r.suffix, "--suffix", r.suffix}
	return r
}

// oslo starts a process of oslo_backlog.py against the rig.
func (r *osloRig) oslo(t *testing.T, role string, args ...string) *osloProc {
	t.Helper()
	return startOslo(t, append(append([]string{role}, args...), r.common...)...)
}

// waitSettled waits, on the live view, until nothing is pending: every record is out.
func (r *osloRig) waitSettled(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var v correlate.InFlight
		getJSON(t, r.client, "http://"+r.httpAddr+"/api/inflight", &v)
		if v.Pending == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still pending: %+v", v)
		}
		time.Sleep(100 * time.Millisecond) // polling the live view for a condition the correlator reaches by itself
	}
}

// stop ends amqptrace with SIGTERM and returns the records it wrote.
func (r *osloRig) stop(t *testing.T) []correlate.Record {
	t.Helper()
	r.p.signal(syscall.SIGTERM)
	if code := r.p.wait(30 * time.Second); code != 0 {
		t.Fatalf("amqptrace exited %d", code)
	}
	return readEvents(t, r.events)
}

// The failure amqptrace exists for: nova-compute is down for 20 s while nova-api casts to it, notifies and calls
// it. The messages wait in RabbitMQ; while they wait, /api/inflight and the /metrics gauges show the backlog
// growing; once a new nova-compute consumes them, each is ONE record with its whole queue wait, its caller and its
// callee, and the call is ok because its deadline allowed it. With the real oslo.messaging, one OS process each.
func TestE2EBacklogWhileTheServerIsDown(t *testing.T) {
	skipShort(t)
	const down = 20 * time.Second
	rig := startOsloRig(t, "e2e_backlog", brokertest.Require(t))
	client, httpAddr, suffix := rig.client, rig.httpAddr, rig.suffix

	// nova-compute starts (its queues are declared and consumed through the proxy), then dies.
	srv := rig.oslo(t, "server")
	srv.waitLine(60*time.Second, func(l string) bool { return l == "READY" })
	srv.kill()

	api := rig.oslo(t, "client")
	api.waitLine(60*time.Second, func(l string) bool { return l == "SENT" })
	sent := time.Now()

	// While nobody consumes, the backlog grows on the wire: the compute queues hold the cast and the call, the
	// notification queue the notification, and their oldest age passes the outage.
	serverQ, topicQ := "compute"+suffix+".host1", "compute"+suffix
	var last correlate.InFlight
	deadline := time.Now().Add(down + time.Minute)
	for {
		getJSON(t, client, "http://"+httpAddr+"/api/inflight", &last)
		depth := map[string]correlate.QueueInFlight{}
		for _, q := range last.Queues {
			depth[q.Queue] = q
		}
		if depth[serverQ].Depth == 1 && depth[topicQ].Depth == 1 && depth[serverQ].OldestAgeMS >= down.Milliseconds() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the backlog never showed in /api/inflight: %+v", last)
		}
		time.Sleep(200 * time.Millisecond) // polling an HTTP API for a condition that takes 20 s to come true
	}
	m := scrapeMetrics(t, client, httpAddr)
	if d := m.sum("amqptrace_queue_wire_depth", map[string]string{"queue": serverQ}); d != 1 {
		t.Errorf("amqptrace_queue_wire_depth{queue=%q} = %v, want 1", serverQ, d)
	}
	if lag := m.sum("amqptrace_queue_wire_lag_seconds", map[string]string{"queue": serverQ}); lag < down.Seconds() {
		t.Errorf("amqptrace_queue_wire_lag_seconds{queue=%q} = %v, want at least %v", serverQ, lag, down.Seconds())
	}
	if n := m.sum("amqptrace_caller_calls_awaiting_reply", map[string]string{"service": "nova-api"}); n != 1 {
		t.Errorf("nova-api's calls awaiting a reply = %v, want 1", n)
	}
	outage := time.Since(sent)

	// nova-compute comes back: the backlog drains and the call returns.
	srv2 := rig.oslo(t, "server")
	srv2.waitLine(60*time.Second, func(l string) bool { return l == "READY" })
	line := api.waitLine(60*time.Second, func(l string) bool { return strings.HasPrefix(l, "{") })
	var out struct {
		PID    int    `json:"pid"`
		Result string `json:"result"`
	}
	if err := json.Unmarshal([]byte(line), &out); err != nil || out.Result != "console of i-backlog" {
		t.Fatalf("the call: %q (%v)", line, err)
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		getJSON(t, client, "http://"+httpAddr+"/api/inflight", &last)
		if last.Pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still pending after the drain: %+v", last)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if m := scrapeMetrics(t, client, httpAddr); m.sum("amqptrace_queue_wire_depth", nil) != 0 {
		t.Errorf("wire depth after the drain: %v", m.sum("amqptrace_queue_wire_depth", nil))
	}

	byKind := map[correlate.Kind][]correlate.Record{}
	for _, r := range rig.stop(t) {
		if r.RequestID == "req-00000000-0000-4000-8000-000000000000" {
			byKind[r.Kind] = append(byKind[r.Kind], r)
		}
	}
	// The clock error: queue_us is measured between two reads of the proxy's monotonic clock, so it is exact to the
	// proxy's scheduling; the bound below is the outage as the test saw it, less a second for the test's own polling.
	minQueue := (outage - time.Second).Microseconds()
	for _, k := range []correlate.Kind{correlate.KindCast, correlate.KindCall, correlate.KindNotification} {
		rs := byKind[k]
		if len(rs) != 1 {
			t.Errorf("%s: %d records, want 1: %+v", k, len(rs), rs)
			continue
		}
		r := rs[0]
		if r.QueueUS < minQueue || r.Caller == nil || r.Callee == nil || r.Caller.Service != "nova-api" ||
			r.Callee.Service != "nova-compute" || r.Callee.PID == 0 || r.Deliveries != 1 {
			t.Errorf("%s: queue_us %d (want ≥ %d), caller %+v, callee %+v, deliveries %d", k, r.QueueUS, minQueue,
				r.Caller, r.Callee, r.Deliveries)
		}
		if k == correlate.KindCall && (r.Status != correlate.StatusOK || r.Caller.PID != out.PID) {
			t.Errorf("call: status %s caller pid %d, want ok from %d", r.Status, r.Caller.PID, out.PID)
		}
		t.Logf("%s %s: queue_us=%d server_us=%d duration_us=%d", k, recordMethod(&r), r.QueueUS, r.ServerUS, r.DurationUS)
	}
}

// A reply 10 s after a 2 s timeout, with a 1 s grace: the call's record is a timeout, and a follow-up record names
// it, with the reply and how late it was. With the real oslo.messaging: the caller keeps consuming its reply queue,
// so the late reply is delivered to it (oslo drops it there, as it should).
func TestE2ELateReplyAmendsTheTimedOutCall(t *testing.T) {
	skipShort(t)
	rig := startOsloRig(t, "e2e_late", brokertest.Require(t), "--reply-grace", "1s")
	client, httpAddr := rig.client, rig.httpAddr
	srv := rig.oslo(t, "server")
	srv.waitLine(60*time.Second, func(l string) bool { return l == "READY" })
	api := rig.oslo(t, "late", "--seconds", "10", "--timeout", "2")
	api.waitLine(60*time.Second, func(l string) bool { return strings.HasSuffix(l, "TIMED OUT") })

	var calls struct {
		Calls []correlate.Record `json:"calls"`
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		getJSON(t, client, "http://"+httpAddr+"/api/calls?method=slow", &calls)
		if len(calls.Calls) >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no follow-up of the timed-out call: %+v", calls.Calls)
		}
		time.Sleep(200 * time.Millisecond) // polling the API for a reply the server sends 10 s after the call
	}
	var call, follow *correlate.Record
	recs := rig.stop(t)
	for i := range recs {
		switch r := &recs[i]; {
		case r.Method == "slow" && r.Amends == 0:
			call = r
		case r.Method == "slow":
			follow = r
		}
	}
	if call == nil || follow == nil {
		t.Fatalf("want the call and its follow-up: %+v", recs)
	}
	if call.Status != correlate.StatusTimeout || call.TimeoutMS != 2000 || call.LateReply {
		t.Errorf("the call's record: status %s timeout_ms %d late %v, want a plain timeout of 2000 ms",
			call.Status, call.TimeoutMS, call.LateReply)
	}
	// The server slept 10 s; the caller gave up after 2: the reply came about 8 s after the deadline.
	if follow.Amends != call.ID || follow.Status != correlate.StatusOK || string(follow.Result) == "" ||
		follow.LateByUS < (7*time.Second).Microseconds() || follow.ReplyDelivered == nil || follow.MsgID != call.MsgID {
		t.Errorf("the follow-up: amends %d (call %d) status %s result %s late_by_us %d reply_delivered %v",
			follow.Amends, call.ID, follow.Status, follow.Result, follow.LateByUS, follow.ReplyDelivered)
	}
	t.Logf("call %d: timeout; follow-up %d: %s, late_by_us=%d, duration_us=%d", call.ID, follow.ID, follow.Status,
		follow.LateByUS, follow.DurationUS)
}

// A saturated server is told from a slow one: nova-compute with executor_thread_pool_size 1, then 4, gets 8
// monitored report_state calls at once (call_monitor_timeout 2), each handled in 1.5 s. A monitored call's first
// heartbeat says when a worker took it, so the calls that waited for a worker carry server_wait_us and the first
// ones do not, and the workers known busy peak at the pool size. With the real oslo.messaging.
func TestE2ESaturatedServer(t *testing.T) {
	skipShort(t)
	for _, pool := range []int{1, 4} {
		t.Run(fmt.Sprintf("pool %d", pool), func(t *testing.T) {
			const calls = 8
			rig := startOsloRig(t, "e2e_pool", brokertest.Require(t))
			client, httpAddr := rig.client, rig.httpAddr
			srv := rig.oslo(t, "server", "--pool", fmt.Sprint(pool))
			srv.waitLine(60*time.Second, func(l string) bool { return l == "READY" })
			burst := rig.oslo(t, "burst", "--calls", fmt.Sprint(calls), "--seconds", "1.5")
			// While the burst is handled, the server's busy workers never exceed the pool.
			peak := 0
			done := false
			for !done {
				var v correlate.InFlight
				getJSON(t, client, "http://"+httpAddr+"/api/inflight", &v)
				for _, s := range v.Servers {
					if s.Service == "nova-compute" {
						peak = max(peak, s.Handling, s.PeakHandling)
					}
				}
				select {
				case <-burst.done:
					done = true
				case <-time.After(100 * time.Millisecond): // sampling the live view while the burst runs
				}
			}
			// oslo's caller gives a monitored call up when no heartbeat comes within call_monitor_timeout, and a call
			// queued behind a full pool has none yet: with a pool of one some callers may give up (a real outcome of
			// saturation). The server handles every call all the same; wait until it has answered them all.
			deadline := time.Now().Add(60 * time.Second)
			for {
				var v correlate.InFlight
				getJSON(t, client, "http://"+httpAddr+"/api/inflight", &v)
				busy := 0
				for _, s := range v.Servers {
					busy += s.InFlight
				}
				if busy == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the server never answered every call: %+v", v.Servers)
				}
				time.Sleep(100 * time.Millisecond) // polling the live view until the server is done
			}
			srv.kill() // every call is answered; a clean oslo stop only costs the test time
			recs := rig.stop(t)
			if peak != pool {
				t.Errorf("peak handling %d, want the pool size %d", peak, pool)
			}
			var waits []int64
			for _, r := range recs {
				if r.Method != "report_state" {
					continue
				}
				if r.Replied == nil || r.ServerWaitUS >= r.ServerUS {
					t.Errorf("call %s: status %s replied %v server_wait_us %d server_us %d", r.MsgID, r.Status,
						r.Replied, r.ServerWaitUS, r.ServerUS)
				}
				waits = append(waits, r.ServerWaitUS)
			}
			waited := 0
			for _, w := range waits {
				if w > 0 {
					waited++
				}
			}
			if len(waits) != calls || waited != calls-pool {
				t.Errorf("%d calls, %d with server_wait_us, want %d and %d: %v", len(waits), waited, calls, calls-pool, waits)
			}
			t.Logf("pool %d: peak handling %d; server_wait_us %v", pool, peak, waits)
		})
	}
}

// Parents that are never wrong, with the real oslo.messaging: 50 times, one nova-compute (a pool of 4) handles two
// calls of one request at once, and each handler casts a child while both are open. The wire cannot tell whose
// child each cast is: none may get a parent, and each names both calls as candidates. A call handled alone still
// parents its child.
func TestE2EParentsAreNeverAGuess(t *testing.T) {
	skipShort(t)
	const runs = 50
	rig := startOsloRig(t, "e2e_parents", brokertest.Require(t))
	srv := rig.oslo(t, "server", "--pool", "4")
	srv.waitLine(60*time.Second, func(l string) bool { return l == "READY" })
	api := rig.oslo(t, "parents", "--runs", fmt.Sprint(runs))
	api.waitLine(5*time.Minute, func(l string) bool { return l == "DONE" })
	// The last child is cast before its call returns; give the correlator the reorder window, via its live view.
	rig.waitSettled(t)
	srv.kill()
	recs := rig.stop(t)
	// The truth is in the arguments (kept, redacted, by default): a call's "n" and its child's "of".
	arg := func(r correlate.Record, key string) string {
		var m map[string]any
		_ = json.Unmarshal(r.Args, &m)
		v, _ := m[key].(string)
		return v
	}
	callN := map[string]string{} // msg_id → n
	for _, r := range recs {
		if r.Method == "handle" {
			callN[r.MsgID] = arg(r, "n")
		}
	}
	wrong, ambiguous, parented, none, children := 0, 0, 0, 0, 0
	for _, r := range recs {
		if r.Method != "child" {
			continue
		}
		children++
		switch {
		case r.ParentID != "" && callN[r.ParentID] != arg(r, "of"):
			wrong++
			t.Errorf("child of %s got parent %s (call %s)", arg(r, "of"), r.ParentID, callN[r.ParentID])
		case r.ParentID != "":
			parented++
		case len(r.ParentCandidates) > 0:
			ambiguous++
		default:
			none++
		}
	}
	if children != 2*runs+1 || wrong != 0 || parented < 1 {
		t.Errorf("%d children (want %d), %d wrong parents (want 0), %d parented (want at least the call alone's)",
			children, 2*runs+1, wrong, parented)
	}
	t.Logf("%d runs: %d children, %d wrong parents, %d ambiguous (candidates named), %d parented, %d with neither",
		runs, children, wrong, ambiguous, parented, none)
}

// checkFolsomTopology: the topology view lists the topic queue and exchange, and the per-call reply queues and
// direct exchanges (named after each _msg_id, auto-delete) are gone once each call's consumer was cancelled, as
// the broker deletes them, instead of piling up. The client cancels both before it casts, and the correlator
// takes events in read order: once the cast's record is out, the cancels were taken in.
func checkFolsomTopology(t *testing.T, rig *osloRig, queue, exchange string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var calls struct {
			Count int `json:"count"`
		}
		getJSON(t, rig.client, "http://"+rig.httpAddr+"/api/calls?method=run_instance", &calls)
		if calls.Count == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the cast's record never came")
		}
		time.Sleep(100 * time.Millisecond) // polling the live view for what the correlator reaches by itself
	}
	var v correlate.Topology
	getJSON(t, rig.client, "http://"+rig.httpAddr+"/api/topology", &v)
	if len(v.Vhosts) != 1 {
		t.Fatalf("vhosts: %+v", v.Vhosts)
	}
	vt := v.Vhosts[0]
	private := 0
	for _, p := range vt.Private {
		private += p.Queues + p.Exchanges
	}
	hasQ := slices.ContainsFunc(vt.Queues, func(q correlate.QueueView) bool { return q.Name == queue && q.Consumers == 1 })
	hasX := slices.ContainsFunc(vt.Exchanges, func(x correlate.ExchangeView) bool {
		return x.Name == exchange && x.Type == "topic" && x.Declared && !x.Durable && !x.AutoDelete
	})
	if private != 0 || !hasQ || !hasX {
		t.Errorf("topology: queue %s listed %v, exchange %s listed %v, per-call objects left %d: %+v", queue, hasQ,
			exchange, hasX, private, vt)
	}
}

// 2012-era nova rpc, written with kombu the way Folsom's impl_kombu did it: no oslo envelope, no _unique_id, no
// _reply_q, replies to a direct exchange named after the call's _msg_id. Each call is one record with its result or
// its remote error, and the cast is one record.
func TestE2EFolsomRPC(t *testing.T) {
	skipShort(t)
	rig := startOsloRig(t, "e2e_folsom", brokertest.Require(t))
	amqpURL := strings.Replace(rig.common[1], "rabbit://", "amqp://", 1)
	common := []string{"--url", amqpURL, "--exchange", "e2e_folsom" + rig.suffix, "--topic", "compute" + rig.suffix + ".host1"}
	srv := startPy(t, "folsom_rpc.py", append([]string{"server"}, common...)...)
	srv.waitLine(60*time.Second, func(l string) bool { return l == "READY" })
	api := startPy(t, "folsom_rpc.py", append([]string{"client"}, common...)...)
	line := api.waitLine(60*time.Second, func(l string) bool { return strings.HasPrefix(l, "{") })
	var out map[string]struct {
		MsgID   string           `json:"msg_id"`
		Replies []map[string]any `json:"replies"`
	}
	if err := json.Unmarshal([]byte(line), &out); err != nil || len(out["get_info"].Replies) != 2 {
		t.Fatalf("the Folsom client: %q (%v)", line, err)
	}
	// The cast settles once its delivery is in; wait on the live view, then stop.
	rig.waitSettled(t)
	checkFolsomTopology(t, rig, "compute"+rig.suffix+".host1", "e2e_folsom"+rig.suffix)
	srv.kill()
	by := map[string][]correlate.Record{}
	for _, r := range rig.stop(t) {
		by[r.Method] = append(by[r.Method], r)
	}
	if rs := by["get_info"]; len(rs) != 1 || rs[0].Status != correlate.StatusOK || rs[0].MsgID != out["get_info"].MsgID ||
		string(rs[0].Result) != `"info of i-1"` || rs[0].Callee == nil {
		t.Errorf("the answered call: %+v", rs)
	}
	if rs := by["fail"]; len(rs) != 1 || rs[0].Status != correlate.StatusError || rs[0].Error == nil ||
		rs[0].Error.Class != "InstanceNotFound" {
		t.Errorf("the failing call: %+v", rs)
	}
	if rs := by["run_instance"]; len(rs) != 1 || rs[0].Kind != correlate.KindCast || rs[0].Deliveries != 1 ||
		rs[0].Caller == nil || rs[0].Callee == nil {
		t.Errorf("the cast: %+v", rs)
	}
}
