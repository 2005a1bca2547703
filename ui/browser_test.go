package ui

import (
	"context"
	"fmt"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/amqptrace/amqptrace/correlate"
	"github.com/amqptrace/amqptrace/internal/browsertest"
)

// step runs browser actions with a liveness bound.
func step(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(sctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitJS waits until the expression is truthy in the page.
func waitJS(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(20*time.Millisecond),
		chromedp.WithPollingTimeout(45*time.Second))
}

// liveUI is a Server plus an HTTP server on a fixed address that can be restarted.
type liveUI struct {
	t      *testing.T
	addr   string
	s      *Server
	ts     *httptest.Server
	cancel context.CancelFunc
	done   chan error
}

func startUI(t *testing.T, addr string) *liveUI { return startUIWith(t, addr, nil, nil) }

// startUIWith is startUI with a change to the Config (an in-flight view, for instance) and, when now is set, the
// Server on that clock (set before Run starts).
func startUIWith(t *testing.T, addr string, change func(*Config), now func() time.Time) *liveUI {
	t.Helper()
	var ln net.Listener
	var err error
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	cfg := Config{UpdateEvery: 100 * time.Millisecond, JaegerURL: "http://jaeger.example:16686",
		TraceID: func(r *correlate.Record) string { return fmt.Sprintf("%032x", r.ID) },
		Counters: func() Counters {
			return Counters{ConnectionsOpen: 42, RecordsDropped: 0, SpansDropped: 3}
		}}
	if change != nil {
		change(&cfg)
	}
	s := New(cfg)
	if now != nil {
		s.now = now
		s.start = now()
		s.st.start = s.start
	}
	ctx, cancel := context.WithCancel(context.Background())
	u := &liveUI{t: t, addr: ln.Addr().String(), s: s, cancel: cancel, done: make(chan error, 1)}
	go func() { u.done <- s.Run(ctx) }()
	u.ts = httptest.NewUnstartedServer(s.Handler())
	u.ts.Listener.Close()
	u.ts.Listener = ln
	u.ts.Start()
	return u
}

// stop ends Run first (which closes the websockets: the HTTP server does not track hijacked connections), then
// the HTTP server.
func (u *liveUI) stop() {
	u.cancel()
	if err := <-u.done; err != nil {
		u.t.Errorf("Run: %v", err)
	}
	u.ts.Close()
}

const xssMethod = `<img src=x onerror=window.__xss=1>`
const xssArg = `<script>window.__xss=2</script>`

func TestBrowserLiveUI(t *testing.T) {
	ctx := browsertest.Start(t)
	ui := startUI(t, "")
	stopped := false
	defer func() {
		if !stopped {
			ui.stop()
		}
	}()

	step(t, ctx, "open page", chromedp.Navigate(ui.ts.URL+"/"),
		chromedp.WaitVisible(chromedp.CSS("#graph")),
		waitJS(`document.getElementById("conn").dataset.state === "live"`))

	// Feed a live stream: three boots, background neutron traffic, an error, a timeout.
	g := newGen()
	reqs := []string{"req-aaaaaaaa-1111-4111-8111-111111111111", "req-bbbbbbbb-2222-4222-8222-222222222222",
		"req-cccccccc-3333-4333-8333-333333333333"}
	total := 0
	for _, req := range reqs {
		for _, r := range g.scenario(req) {
			ui.s.Record(r)
			total++
		}
	}
	ui.s.Record(g.rec(spec{kind: correlate.KindCall, status: correlate.StatusError, method: "select_destinations",
		topic: "scheduler", caller: novaConductor, callee: novaScheduler, req: reqs[0], greq: reqs[0],
		queue: 2 * time.Millisecond, srv: 40 * time.Millisecond, transit: time.Millisecond, errClass: "NoValidHost",
		errMsg: "No valid host was found. There are not enough hosts available."}))
	ui.s.Record(g.rec(spec{kind: correlate.KindCall, status: correlate.StatusTimeout, method: "prep_resize",
		topic: "compute", server: "host2", caller: novaConductor, callee: novaCompute2, req: reqs[0], greq: reqs[0],
		queue: time.Millisecond, timeout: 60 * time.Millisecond}))
	total += 2

	// The graph shows the services and edges, queried by data attributes.
	for _, n := range []string{"nova-api", "nova-conductor", "nova-scheduler", "nova-compute", "neutron-server",
		"neutron-openvswitch-agent", "topic:notifications"} {
		step(t, ctx, "node "+n, chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`#graph g[data-node=%q]`, n))))
	}
	for _, e := range []string{"nova-api>nova-conductor>rpc", "nova-conductor>nova-scheduler>rpc",
		"nova-conductor>nova-compute>rpc", "neutron-server>neutron-openvswitch-agent>fanout",
		"nova-compute>topic:notifications>notification", "neutron-openvswitch-agent>neutron-server>rpc"} {
		step(t, ctx, "edge "+e, chromedp.WaitReady(chromedp.CSS(fmt.Sprintf(`#graph g[data-edge=%q] path.line[d]`, e))))
	}
	if dash := eval[string](t, ctx, `document.querySelector('#graph g[data-type="fanout"] path.line').getAttribute("stroke-dasharray")`); dash == "none" || dash == "" {
		t.Errorf("fanout edge not dashed: %q", dash)
	}
	if red := eval[string](t, ctx, `document.querySelector('#graph g[data-edge="nova-conductor>nova-scheduler>rpc"] path.line').getAttribute("stroke")`); red != "#f85149" {
		t.Errorf("edge with errors has colour %q, want red", red)
	}

	// The call table fills live.
	step(t, ctx, "table fills", waitJS(fmt.Sprintf(`document.querySelectorAll("#calls tbody tr").length === %d`, total)))
	if got := eval[string](t, ctx, `document.getElementById("c-conns").textContent`); got != "42" {
		t.Errorf("connections counter %q, want 42", got)
	}
	browsertest.Screenshot(t, ctx, "ui-live")

	// The filter narrows the table (the calls view).
	step(t, ctx, "calls view", chromedp.Click(chromedp.CSS(`#tabs a[data-view="calls"]`)),
		chromedp.WaitVisible(chromedp.CSS("#filter")))
	step(t, ctx, "filter", chromedp.SendKeys(chromedp.CSS("#filter"), "method:select_destinations"),
		waitJS(`document.querySelectorAll("#calls tbody tr:not(.hidden)").length === 4`))
	visible := eval[[]string](t, ctx, `[...document.querySelectorAll("#calls tbody tr:not(.hidden) td:nth-child(6)")].map(td => td.textContent)`)
	for _, m := range visible {
		if m != "select_destinations" {
			t.Errorf("filtered row shows method %q", m)
		}
	}
	step(t, ctx, "filter status", typeFilter("status:timeout"),
		waitJS(`document.querySelectorAll("#calls tbody tr:not(.hidden)").length === 1`))
	step(t, ctx, "clear filter", typeFilter(""),
		waitJS(fmt.Sprintf(`document.querySelectorAll("#calls tbody tr:not(.hidden)").length === %d`, total)))

	// Request view: paste a request id; the waterfall shows every RPC of it with shaded phases.
	step(t, ctx, "request view", chromedp.SendKeys(chromedp.CSS("#reqinput"), reqs[0]),
		chromedp.Evaluate[chromedp.Void](`document.getElementById("reqform").requestSubmit()`),
		waitJS(`document.querySelectorAll("#panelbody .wf-row").length === 6`))
	segs := eval[[]string](t, ctx, `[...new Set([...document.querySelectorAll("#panelbody .wf-seg")].map(s => s.dataset.seg))].sort()`)
	if strings.Join(segs, ",") != "cast,queue,server,timeout,transit" {
		t.Errorf("waterfall segment kinds %v, want cast, queue, server, timeout, transit", segs)
	}
	browsertest.Screenshot(t, ctx, "ui-request")

	// Call detail from a row: timestamps, the remote exception, a Jaeger link.
	errID := eval[int](t, ctx, `Number(document.querySelector('#calls tbody tr[data-status="error"]').dataset.id)`)
	step(t, ctx, "call detail", chromedp.Click(chromedp.CSS("#panelclose")), chromedp.Click(chromedp.CSS(fmt.Sprintf(`#calls tbody tr[data-id="%d"] td:nth-child(6)`, errID))),
		waitJS(fmt.Sprintf(`document.getElementById("panelbody").dataset.call === "%d"`, errID)))
	detail := eval[string](t, ctx, `document.getElementById("panelbody").textContent`)
	for _, want := range []string{"NoValidHost", "No valid host was found", "published", "reply delivered", "nova-scheduler"} {
		if !strings.Contains(detail, want) {
			t.Errorf("call detail lacks %q", want)
		}
	}
	if href := eval[string](t, ctx, `document.getElementById("jaegerlink").getAttribute("href")`); href != fmt.Sprintf("http://jaeger.example:16686/trace/%032x", errID) {
		t.Errorf("jaeger link %q", href)
	}
	browsertest.Screenshot(t, ctx, "ui-detail")

	// Pause holds new rows back (the graph keeps moving); resume shows them.
	step(t, ctx, "pause", chromedp.Click(chromedp.CSS("#panelclose")), chromedp.Click(chromedp.CSS("#pause")))
	seq := eval[string](t, ctx, `document.body.dataset.seq`)
	ui.s.Record(g.rec(spec{kind: correlate.KindCast, method: "while_paused", topic: "conductor", caller: novaAPI,
		callee: novaConductor, queue: time.Millisecond}))
	step(t, ctx, "paused row buffered", waitJS(`document.getElementById("pause").textContent === "Resume (1 new)"`))
	if n := eval[int](t, ctx, `document.querySelectorAll("#calls tbody tr").length`); n != total {
		t.Errorf("paused table has %d rows, want %d", n, total)
	}
	if now := eval[string](t, ctx, `document.body.dataset.seq`); now == seq {
		t.Errorf("no update arrived while paused (seq %s)", now)
	}
	step(t, ctx, "resume", chromedp.Click(chromedp.CSS("#pause")),
		waitJS(`[...document.querySelectorAll("#calls tbody tr td:nth-child(6)")].some(td => td.textContent === "while_paused")`))

	// A notification's detail tells how long each listener held it, and what it answered.
	note := g.rec(spec{kind: correlate.KindNotification, eventType: "compute.instance.slow", topic: "notifications",
		caller: novaCompute1, callees: []correlate.Endpoint{{Service: "ceilometer-agent-notification", Host: "ctl1"},
			{Service: "aodh-listener", Host: "ctl2"}}, queue: time.Millisecond, req: reqs[0]})
	note.Acks = []correlate.Ack{{Callee: 1, Delivered: *note.Delivered, At: note.Delivered.Add(1500 * time.Millisecond),
		Outcome: correlate.AckRequeued}}
	note.AckUS = 0 // the first listener's answer was not seen
	ui.s.Record(note)
	step(t, ctx, "notification row", waitJS(fmt.Sprintf(`!!document.querySelector('#calls tbody tr[data-id="%d"]')`, note.ID)))
	step(t, ctx, "notification detail", chromedp.Click(chromedp.CSS(fmt.Sprintf(`#calls tbody tr[data-id="%d"] td:nth-child(6)`, note.ID))),
		waitJS(fmt.Sprintf(`document.getElementById("panelbody").dataset.call === "%d"`, note.ID)))
	detail = eval[string](t, ctx, `document.getElementById("panelbody").textContent`)
	if !strings.Contains(detail, "Consumers' answers") || !strings.Contains(detail, "aodh-listener@ctl2") ||
		!strings.Contains(detail, "requeue after 1.50 s") || strings.Contains(detail, "held by its consumer") {
		t.Errorf("notification detail: %q", detail)
	}
	// In its request's waterfall, a one-way message answered by its first consumer shows how long it was held.
	held := g.rec(spec{kind: correlate.KindCast, method: "held_cast", topic: "compute", caller: novaConductor,
		callee: novaCompute1, queue: 2 * time.Millisecond, req: reqs[0]})
	held.Acks = []correlate.Ack{{Callee: 0, Delivered: *held.Delivered, At: held.Delivered.Add(40 * time.Millisecond),
		Outcome: correlate.AckAccepted}}
	ui.s.Record(held)
	step(t, ctx, "request with a held cast", chromedp.Click(chromedp.CSS("#panelclose")),
		chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`document.getElementById("reqinput").value = %q; document.getElementById("reqform").requestSubmit()`, reqs[0])),
		waitJS(fmt.Sprintf(`!!document.querySelector('#panelbody .wf-row[data-id="%d"]')`, held.ID)))
	heldMS := eval[[]float64](t, ctx, fmt.Sprintf(`[...document.querySelectorAll('#panelbody .wf-row[data-id="%d"] .wf-seg[data-seg="held"]')].map(s => s.dataset.b - s.dataset.a)`, held.ID))
	if len(heldMS) != 1 || heldMS[0] < 39.9 || heldMS[0] > 40.1 {
		t.Errorf("held cast's 'held' segments %v ms, want one of 40 ms", heldMS)
	}
	step(t, ctx, "close the request", chromedp.Click(chromedp.CSS("#panelclose")))

	// Server restart on the same address: the page reconnects by itself and resumes with new records.
	addr := ui.addr
	ui.stop()
	stopped = true
	step(t, ctx, "page notices the restart", waitJS(`document.getElementById("conn").dataset.state !== "live"`))
	ui = startUI(t, addr)
	stopped = false
	// The new process numbers its records from 1 again: the page must not confuse them with the old ones.
	ui.s.Record(newGen().rec(spec{kind: correlate.KindCall, method: "after_restart", topic: "conductor",
		caller: novaCompute1, callee: novaConductor, queue: time.Millisecond, srv: time.Millisecond, transit: time.Millisecond}))
	step(t, ctx, "resumed", waitJS(`document.getElementById("conn").dataset.state === "live"`),
		waitJS(`[...document.querySelectorAll("#calls tbody tr td:nth-child(6)")].some(td => td.textContent === "after_restart")`),
		waitJS(`document.querySelectorAll("#calls tbody tr").length === 1`),
		chromedp.WaitReady(chromedp.CSS(`#graph g[data-edge="nova-compute>nova-conductor>rpc"]`)))
	browsertest.Screenshot(t, ctx, "ui-after-restart")
}

// typeFilter replaces the filter box's text the way typing does (an input event).
func typeFilter(text string) chromedp.Action[chromedp.Void] {
	return chromedp.Evaluate[chromedp.Void](fmt.Sprintf(
		`(() => { const f = document.getElementById("filter"); f.value = %q; f.dispatchEvent(new Event("input")); })()`, text))
}

func TestBrowserXSS(t *testing.T) {
	ctx := browsertest.Start(t)
	ui := startUI(t, "")
	defer ui.stop()
	step(t, ctx, "open page", chromedp.Navigate(ui.ts.URL+"/#/calls"),
		waitJS(`document.getElementById("conn").dataset.state === "live"`))
	evil := &correlate.Endpoint{Service: `<svg onload=window.__xss=4>`, PID: 1, Host: `<b>h</b>`}
	g := newGen()
	r := g.rec(spec{kind: correlate.KindCall, status: correlate.StatusError, method: xssMethod, topic: "conductor",
		caller: evil, callee: novaConductor, req: `req-<i>x</i>`, queue: time.Millisecond, srv: time.Millisecond,
		transit: time.Millisecond, errClass: `<img src=x onerror=window.__xss=5>`, errMsg: xssArg,
		args: `{"note":"<script>window.__xss=2</script>","html":"<img src=x onerror=window.__xss=3>"}`})
	ui.s.Record(r)
	step(t, ctx, "row", waitJS(`document.querySelectorAll("#calls tbody tr").length === 1`),
		chromedp.WaitReady(chromedp.CSS(`#graph g[data-node]`)))
	if got := eval[string](t, ctx, `document.querySelector("#calls tbody tr td:nth-child(6)").textContent`); got != xssMethod {
		t.Errorf("method cell text %q, want the literal %q", got, xssMethod)
	}
	step(t, ctx, "detail", chromedp.Click(chromedp.CSS(`#calls tbody tr td:nth-child(6)`)),
		chromedp.WaitVisible(chromedp.CSS("#detail-args")))
	args := eval[string](t, ctx, `document.getElementById("detail-args").textContent`)
	if !strings.Contains(args, xssArg) || !strings.Contains(args, `<img src=x onerror=window.__xss=3>`) {
		t.Errorf("args not shown as text: %q", args)
	}
	// The request id link in the detail (the row's own link is under the open panel).
	step(t, ctx, "request view", chromedp.Click(chromedp.CSS(`#panelbody [data-req]`)),
		waitJS(`document.querySelectorAll("#panelbody .wf-row").length === 1`))
	browsertest.Screenshot(t, ctx, "ui-xss")
	if got := eval[string](t, ctx, `typeof window.__xss`); got != "undefined" {
		t.Fatalf("window.__xss is %s: markup from the wire was executed", got)
	}
	if n := eval[int](t, ctx, `document.querySelectorAll("img, script:not([src]), svg svg, b, i").length`); n != 0 {
		t.Errorf("%d elements were created from wire strings", n)
	}
}
