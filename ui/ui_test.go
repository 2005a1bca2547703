package ui

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amqptrace/amqptrace/correlate"
)

// pump does what one tick does, synchronously: publish what Record added since the last one.
func pump(s *Server) { s.flush() }

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// newTestServer returns a Server on a fake clock that started at t0.
func newTestServer(t *testing.T, cfg Config) (*Server, *clock) {
	t.Helper()
	c := &clock{t: time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC)}
	// httptest.NewRequest's Host is example.com; a token-less server answers only names it knows.
	cfg.AllowedHosts = append(cfg.AllowedHosts, "example.com")
	s := New(cfg)
	s.now = c.now
	s.start = c.now()
	s.st.start = s.start
	return s, c
}

func getJSON(t *testing.T, h http.Handler, path string, v any) *http.Response {
	t.Helper()
	req := httptest.NewRequest("GET", path, nil)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if v != nil && w.Code == http.StatusOK {
		if err := json.Unmarshal(w.Body.Bytes(), v); err != nil {
			t.Fatalf("%s: %v: %s", path, err, w.Body.String())
		}
	}
	return w.Result()
}

func TestCallsFilters(t *testing.T) {
	s, _ := newTestServer(t, Config{})
	g := newGen()
	var all []*correlate.Record
	for _, req := range []string{"req-11111111-1111-4111-8111-111111111111", "req-22222222-2222-4222-8222-222222222222"} {
		for _, r := range g.scenario(req) {
			all = append(all, r)
			s.Record(r)
		}
	}
	errRec := g.rec(spec{kind: correlate.KindCall, status: correlate.StatusError, method: "select_destinations",
		topic: "scheduler", caller: novaConductor, callee: novaScheduler, req: "req-err", greq: "req-global-x",
		queue: time.Millisecond, srv: time.Millisecond, errClass: "NoValidHost", errMsg: "No valid host was found."})
	s.Record(errRec)
	all = append(all, errRec)
	pump(s)

	h := s.Handler()
	cases := []struct {
		query string
		want  func(*correlate.Record) bool
	}{
		{"", func(*correlate.Record) bool { return true }},
		{"service=nova-scheduler", func(r *correlate.Record) bool {
			return r.Callee != nil && r.Callee.Service == "nova-scheduler"
		}},
		// A fanout consumer counts as involved even when it is not the first delivery.
		{"service=neutron-openvswitch-agent", func(r *correlate.Record) bool {
			return r.Kind == correlate.KindFanout || r.Caller.Service == "neutron-openvswitch-agent"
		}},
		{"method=select_destinations", func(r *correlate.Record) bool { return r.Method == "select_destinations" }},
		{"topic=compute", func(r *correlate.Record) bool { return r.Topic == "compute" }},
		{"kind=cast", func(r *correlate.Record) bool { return r.Kind == correlate.KindCast }},
		{"status=error", func(r *correlate.Record) bool { return r.Status == correlate.StatusError }},
		{"request_id=req-22222222-2222-4222-8222-222222222222", func(r *correlate.Record) bool {
			return r.RequestID == "req-22222222-2222-4222-8222-222222222222"
		}},
		// request id also matches global_request_id.
		{"request_id=req-global-x", func(r *correlate.Record) bool { return r.ID == errRec.ID }},
		{"kind=call&status=ok&service=nova-conductor", func(r *correlate.Record) bool {
			return r.Kind == correlate.KindCall && r.Status == correlate.StatusOK &&
				(r.Caller.Service == "nova-conductor" || r.Callee != nil && r.Callee.Service == "nova-conductor")
		}},
	}
	for _, tc := range cases {
		var resp callsResponse
		getJSON(t, h, "/api/calls?"+tc.query, &resp)
		var want []uint64
		for i := len(all) - 1; i >= 0; i-- { // newest first
			if tc.want(all[i]) {
				want = append(want, all[i].ID)
			}
		}
		var got []uint64
		for _, r := range resp.Calls {
			got = append(got, r.ID)
		}
		if len(want) == 0 || !equalIDs(got, want) {
			t.Errorf("/api/calls?%s = %v, want %v (non-empty)", tc.query, got, want)
		}
	}
	var lim callsResponse
	getJSON(t, h, "/api/calls?limit=3", &lim)
	if len(lim.Calls) != 3 || lim.Calls[0].ID != errRec.ID {
		t.Errorf("limit=3: got %d calls, first %v", len(lim.Calls), lim.Calls)
	}
}

func equalIDs(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestRingEvictsOldest(t *testing.T) {
	s, _ := newTestServer(t, Config{RecentSize: 5})
	g := newGen()
	for range 12 {
		s.Record(g.rec(spec{kind: correlate.KindCast, method: "m", topic: "conductor", caller: novaAPI, callee: novaConductor}))
	}
	pump(s)
	var resp callsResponse
	getJSON(t, s.Handler(), "/api/calls?limit=100", &resp)
	if got := []uint64{resp.Calls[0].ID, resp.Calls[len(resp.Calls)-1].ID}; len(resp.Calls) != 5 || got[0] != 12 || got[1] != 8 {
		t.Fatalf("ring: %d calls, newest/oldest %v; want 5, [12 8]", len(resp.Calls), got)
	}
	if res := getJSON(t, s.Handler(), "/api/calls/3", nil); res.StatusCode != http.StatusNotFound {
		t.Errorf("evicted record 3: status %d, want 404", res.StatusCode)
	}
	if len(s.st.byID) != 5 {
		t.Errorf("id index holds %d entries, want 5", len(s.st.byID))
	}
}

func findEdge(g Graph, id string) *GraphEdge {
	for i := range g.Edges {
		if g.Edges[i].ID == id {
			return &g.Edges[i]
		}
	}
	return nil
}

func within(got, want int64, frac float64) bool {
	return math.Abs(float64(got-want)) <= frac*float64(want)
}

func TestGraphAggregation(t *testing.T) {
	s, clk := newTestServer(t, Config{})
	g := newGen()
	clk.add(30 * time.Second) // the window covers 30s of uptime: rates divide by 30
	// 100 answered calls conductor → scheduler with durations 1..100 ms; every tenth is a remote error.
	for i := 1; i <= 100; i++ {
		st := correlate.StatusOK
		if i%10 == 0 {
			st = correlate.StatusError
		}
		d := time.Duration(i) * time.Millisecond
		s.Record(g.rec(spec{kind: correlate.KindCall, status: st, method: "select_destinations", topic: "scheduler",
			caller: novaConductor, callee: novaScheduler, queue: d / 4, srv: d / 2, transit: d - d/4 - d/2,
			errClass: "NoValidHost"}))
	}
	// 5 timeouts on the same edge: counted, but kept out of the latency percentiles.
	for range 5 {
		s.Record(g.rec(spec{kind: correlate.KindCall, status: correlate.StatusTimeout, method: "select_destinations",
			topic: "scheduler", caller: novaConductor, callee: novaScheduler, queue: time.Millisecond}))
	}
	// 30 casts conductor → compute on two hosts.
	for i := range 30 {
		callee := novaCompute1
		if i%2 == 1 {
			callee = novaCompute2
		}
		s.Record(g.rec(spec{kind: correlate.KindCast, method: "build_and_run_instance", topic: "compute",
			caller: novaConductor, callee: callee, queue: time.Millisecond}))
	}
	// One fanout to three agents, one notification nobody consumes behind the proxy.
	s.Record(g.rec(spec{kind: correlate.KindFanout, method: "port_update", topic: "q-agent-notifier-port-update",
		caller: neutronServer, callees: []correlate.Endpoint{*ovsAgent1, *ovsAgent2, *ovsAgent3}}))
	s.Record(g.rec(spec{kind: correlate.KindNotification, eventType: "instance.create.end", topic: "notifications",
		caller: novaCompute1}))
	pump(s)

	var gr Graph
	getJSON(t, s.Handler(), "/api/graph", &gr)
	e := findEdge(gr, "nova-conductor>nova-scheduler>rpc")
	if e == nil {
		t.Fatalf("no conductor→scheduler edge in %+v", gr.Edges)
	}
	if e.Calls != 105 || e.Errors != 10 || e.Timeouts != 5 {
		t.Errorf("calls/errors/timeouts = %d/%d/%d, want 105/10/5", e.Calls, e.Errors, e.Timeouts)
	}
	if math.Abs(e.CallRate-105.0/30) > 1e-9 {
		t.Errorf("call rate %v, want %v", e.CallRate, 105.0/30)
	}
	// Log buckets at 2^(1/6): a percentile is within ~6% of the exact value (50ms, 99ms).
	if !within(e.P50US, 50_000, 0.07) || !within(e.P99US, 99_000, 0.07) {
		t.Errorf("p50/p99 = %dµs/%dµs, want ≈50000/≈99000", e.P50US, e.P99US)
	}
	if math.Abs(e.ErrorRatio-15.0/105) > 1e-9 {
		t.Errorf("error ratio %v, want %v", e.ErrorRatio, 15.0/105)
	}
	c := findEdge(gr, "nova-conductor>nova-compute>rpc")
	if c == nil || c.Casts != 30 || c.Calls != 0 || math.Abs(c.CastRate-1) > 1e-9 || c.P50US != 0 {
		t.Errorf("conductor→compute cast edge = %+v, want 30 casts at 1/s, no latency", c)
	}
	f := findEdge(gr, "neutron-server>neutron-openvswitch-agent>fanout")
	if f == nil || f.Fanouts != 1 || f.Type != edgeFanout {
		t.Errorf("fanout edge = %+v, want one fanout publish", f)
	}
	n := findEdge(gr, "nova-compute>topic:notifications>notification")
	if n == nil || n.Notifications != 1 {
		t.Errorf("notification edge = %+v", n)
	}
	// Roles come from the traffic a node consumes, not its name.
	roles := map[string]string{}
	for _, nd := range gr.Nodes {
		roles[nd.ID] = nd.Role
	}
	for id, want := range map[string]string{"nova-conductor": roleClient, "nova-scheduler": roleServer,
		"nova-compute": roleServer, "neutron-server": roleClient, "neutron-openvswitch-agent": roleAgent,
		"topic:notifications": roleTopic} {
		if roles[id] != want {
			t.Errorf("role of %s = %q, want %q", id, roles[id], want)
		}
	}
	if sch := findNode(gr, "nova-scheduler"); sch == nil || strings.Join(sch.Serves, ",") != "scheduler" {
		t.Errorf("nova-scheduler serves %+v, want [scheduler]", sch)
	}
	// The split of the calls' time: queue wait d/4, server d/2, transit the rest, for d in 1..100 ms (timeouts
	// add 5 queue waits of 1 ms). Phase buckets are within ~12%.
	if !within(e.ServerP50US, 25_000, 0.13) || !within(e.ServerP99US, 49_500, 0.13) {
		t.Errorf("server p50/p99 = %d/%d µs, want ≈25000/≈49500", e.ServerP50US, e.ServerP99US)
	}
	if !within(e.TransitP99US, 25_000, 0.13) || e.QueueP99US == 0 || e.QueueP99US > e.ServerP99US {
		t.Errorf("transit p99 %d µs (want ≈25000), queue p99 %d µs (want ≤ server p99)", e.TransitP99US, e.QueueP99US)
	}
	if math.Abs(e.TimeoutRatio-5.0/105) > 1e-9 {
		t.Errorf("timeout ratio %v, want %v", e.TimeoutRatio, 5.0/105)
	}

	// By host: the fanout reaches three agent nodes, the casts two compute nodes.
	var gh Graph
	getJSON(t, s.Handler(), "/api/graph?by=host", &gh)
	fan := 0
	for _, e := range gh.Edges {
		if e.Type == edgeFanout {
			fan++
		}
	}
	if fan != 3 || findEdge(gh, "nova-conductor@10.0.0.5>nova-compute@10.0.1.2>rpc") == nil {
		t.Errorf("by host: %d fanout edges (want 3), edges %v", fan, edgeIDs(gh))
	}

	// The window slides: after 61s the counts are gone but the edge is remembered (idle); after edgeIdle it is
	// forgotten.
	clk.add(window + time.Second)
	getJSON(t, s.Handler(), "/api/graph", &gr)
	if e := findEdge(gr, "nova-conductor>nova-scheduler>rpc"); e == nil || e.Calls != 0 || e.Rate != 0 || e.P99US != 0 {
		t.Errorf("after the window: edge %+v, want idle with zero counts", e)
	}
	clk.add(edgeIdle)
	getJSON(t, s.Handler(), "/api/graph", &gr)
	if len(gr.Edges) != 0 || len(gr.Nodes) != 0 {
		t.Errorf("after edgeIdle: %d edges, %d nodes, want none", len(gr.Edges), len(gr.Nodes))
	}
}

func edgeIDs(g Graph) []string {
	var ids []string
	for _, e := range g.Edges {
		ids = append(ids, e.ID)
	}
	return ids
}

func findNode(g Graph, id string) *GraphNode {
	for i := range g.Nodes {
		if g.Nodes[i].ID == id {
			return &g.Nodes[i]
		}
	}
	return nil
}

func TestGraphSlidingRate(t *testing.T) {
	s, clk := newTestServer(t, Config{})
	g := newGen()
	clk.add(2 * window) // long uptime: the divisor is the window, not the uptime
	for range 120 {
		s.Record(g.rec(spec{kind: correlate.KindCast, method: "m", topic: "conductor", caller: novaAPI, callee: novaConductor}))
	}
	pump(s)
	gr := s.st.graph(false, clk.now())
	e := findEdge(gr, "nova-api>nova-conductor>rpc")
	secs := covered(clk.now(), s.start)
	if e == nil || secs < (nSlots-1)*slotDur.Seconds() || math.Abs(e.CastRate-120/secs) > 1e-9 {
		t.Fatalf("edge %+v over %vs, want cast rate %v", e, secs, 120/secs)
	}
}

func TestRequestView(t *testing.T) {
	s, _ := newTestServer(t, Config{})
	g := newGen()
	req := "req-33333333-3333-4333-8333-333333333333"
	recs := g.scenario(req)
	other := g.scenario("req-44444444-4444-4444-8444-444444444444")
	// Feed out of publish order: the request view sorts by publish time.
	for i := len(recs) - 1; i >= 0; i-- {
		s.Record(recs[i])
	}
	for _, r := range other {
		s.Record(r)
	}
	pump(s)
	var resp callsResponse
	getJSON(t, s.Handler(), "/api/request/"+req, &resp)
	var want []uint64
	for _, r := range recs {
		if r.RequestID == req {
			want = append(want, r.ID)
		}
	}
	var got []uint64
	for _, r := range resp.Calls {
		got = append(got, r.ID)
	}
	if len(want) != 4 || !equalIDs(got, want) {
		t.Fatalf("request view = %v, want %v", got, want)
	}
}

// The record contract: the Server keeps the record it was given (immutable, already redacted by correlate) and
// shows it as it is: no copy, no second set of rules.
func TestRecordKeptAsGiven(t *testing.T) {
	s, _ := newTestServer(t, Config{})
	g := newGen()
	r := g.rec(spec{kind: correlate.KindCall, status: correlate.StatusError, method: "create_server", topic: "conductor",
		caller: novaAPI, callee: novaConductor, queue: time.Millisecond, srv: time.Millisecond,
		args:     `{"admin_password":"***","context":{"user":"demo"},"n":12345678901234567890}`,
		errClass: "MessagingTimeout", errMsg: "cannot reach rabbit://nova:***@10.0.0.9:5672/"})
	s.Record(r)
	pump(s)
	if got := s.st.get(r.ID); got != r {
		t.Fatalf("the ring holds %p, want the record given %p", got, r)
	}
	res := httptest.NewRecorder()
	s.Handler().ServeHTTP(res, httptest.NewRequest("GET", "/api/calls/"+strconv.FormatUint(r.ID, 10), nil))
	var d struct {
		correlate.Record
	}
	if err := json.Unmarshal(res.Body.Bytes(), &d); err != nil {
		t.Fatal(err)
	}
	if d.Method != "create_server" || string(d.Args) != string(r.Args) || d.Error.Message != r.Error.Message {
		t.Errorf("detail differs from the record: %s", res.Body.String())
	}
}

func TestJaegerLink(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"http://jaeger:16686/", "http://jaeger:16686/trace/0af7651916cd43dd8448eb211c80319c"},
		{"javascript:alert(1)//", ""},
		{"", ""},
	} {
		s, _ := newTestServer(t, Config{JaegerURL: tc.url,
			TraceID: func(*correlate.Record) string { return "0af7651916cd43dd8448eb211c80319c" }})
		s.Record(newGen().rec(spec{kind: correlate.KindCast, method: "m", topic: "t", caller: novaAPI}))
		pump(s)
		var raw map[string]any
		getJSON(t, s.Handler(), "/api/calls/1", &raw)
		if got, _ := raw["trace_url"].(string); got != tc.want {
			t.Errorf("JaegerURL %q: trace_url %q, want %q", tc.url, got, tc.want)
		}
	}
}

func TestSecurityHeadersAndPage(t *testing.T) {
	s, _ := newTestServer(t, Config{})
	h := s.Handler()
	for _, p := range []string{"/", "/js/main.js", "/style.css", "/api/calls", "/api/graph", "/healthz"} {
		res := getJSON(t, h, p, nil)
		if res.StatusCode != 200 {
			t.Errorf("%s: status %d", p, res.StatusCode)
		}
		c := res.Header.Get("Content-Security-Policy")
		if !strings.Contains(c, "script-src 'self'") || !strings.Contains(c, "connect-src 'self'") ||
			!strings.Contains(c, "default-src 'none'") || strings.Contains(c, "unsafe") {
			t.Errorf("%s: CSP %q", p, c)
		}
		if res.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: no nosniff", p)
		}
	}
	// The page has no inline script or style for the CSP to block, and the code never builds HTML from strings.
	page, _ := webFS.ReadFile("web/index.html")
	if m := regexp.MustCompile(`<script(?:[^>]*)>`).FindAllString(string(page), -1); len(m) != 1 || !strings.Contains(m[0], `type="module" src="js/main.js"`) {
		t.Errorf("index.html scripts: %v", m)
	}
	if regexp.MustCompile(`\sstyle=|<style|\son[a-z]+=`).Match(page) {
		t.Error("index.html has inline style or event handlers")
	}
	mods, _ := fs.Glob(webFS, "web/js/*.js")
	vendor, _ := fs.Glob(webFS, "web/vendor/*.js")
	if len(mods) < 5 || len(vendor) != 1 {
		t.Fatalf("modules %v, vendored %v", mods, vendor)
	}
	for _, f := range append(mods, vendor...) {
		js, _ := webFS.ReadFile(f)
		code := regexp.MustCompile(`(?m)^\s*//.*$`).ReplaceAll(js, nil) // util.js's header comment names the banned APIs
		if regexp.MustCompile(`innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function|Function\(`).Match(code) {
			t.Errorf("%s uses an HTML-string or eval API", f)
		}
		if regexp.MustCompile(`from\s*"(https?:)?//`).Match(js) {
			t.Errorf("%s imports from another origin", f)
		}
	}
}

func TestTokenAuth(t *testing.T) {
	s, _ := newTestServer(t, Config{Token: "s3cret-token"})
	h := s.Handler()
	do := func(path string, mod func(*http.Request)) *http.Response {
		req := httptest.NewRequest("GET", path, nil)
		if mod != nil {
			mod(req)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Result()
	}
	bearer := func(tok string) func(*http.Request) {
		return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
	}
	paths := []string{"/", "/api/calls", "/api/graph", "/api/calls/1", "/api/request/req-1", "/api/inflight",
		"/api/topology", "/js/main.js", "/api/ws"}
	for _, p := range paths {
		if res := do(p, nil); res.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s without token: %d, want 401", p, res.StatusCode)
		}
		if res := do(p, bearer("wrong")); res.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s wrong token: %d, want 401", p, res.StatusCode)
		}
	}
	if res := do("/api/calls", bearer("s3cret-token")); res.StatusCode != 200 {
		t.Errorf("bearer: %d", res.StatusCode)
	}
	// ?token= is not accepted on the API (it would end up in logs and history); only on the bootstrap URLs.
	if res := do("/api/calls?token=s3cret-token", nil); res.StatusCode != http.StatusUnauthorized {
		t.Errorf("?token= on API: %d, want 401", res.StatusCode)
	}
	res := do("/?token=s3cret-token", nil)
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/" {
		t.Fatalf("bootstrap: %d to %q, want 303 to /", res.StatusCode, res.Header.Get("Location"))
	}
	var ck *http.Cookie
	for _, c := range res.Cookies() {
		if c.Name == tokenCookie {
			ck = c
		}
	}
	if ck == nil || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode {
		t.Fatalf("bootstrap cookie %+v, want HttpOnly SameSite=Strict", ck)
	}
	if res := do("/api/graph", func(r *http.Request) { r.AddCookie(ck) }); res.StatusCode != 200 {
		t.Errorf("cookie: %d", res.StatusCode)
	}
	if res := do("/healthz", nil); res.StatusCode != 200 {
		t.Errorf("/healthz must stay open: %d", res.StatusCode)
	}
	// Two per path, and the ?token= on the API.
	if got, want := s.Stats().AuthRejected, uint64(2*len(paths)+1); got != want {
		t.Errorf("auth rejected = %d, want %d", got, want)
	}
}

// runServer starts s.Run and an httptest server; cleanup stops both and checks Run's result.
func runServer(t *testing.T, s *Server) *httptest.Server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		ts.Close()
	})
	return ts
}

func wsURL(ts *httptest.Server, path string) string {
	u, _ := url.Parse(ts.URL)
	u.Scheme = "ws"
	u.Path = path
	return u.String()
}

func TestPageServed(t *testing.T) {
	s, _ := newTestServer(t, Config{})
	ts := runServer(t, s)
	res, err := http.Get(ts.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(b), `id="graph"`) || res.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Errorf("page: %s %q", res.Header.Get("Content-Type"), b)
	}
}

func newHTTPTest(s *Server) *httptest.Server { return httptest.NewServer(s.Handler()) }

// /api/calls pages: a page is at most maxCallsPage records, next_before on a full page leads to the next one, and
// following it walks every matching record exactly once, newest first, with the filters kept.
func TestCallsPaging(t *testing.T) {
	s, _ := newTestServer(t, Config{RecentSize: 3000})
	g := newGen()
	var want []uint64
	for i := range 2500 {
		r := g.rec(spec{kind: correlate.KindCast, method: "m", topic: "conductor", caller: novaAPI, callee: novaConductor})
		if i%2 == 0 {
			r = g.rec(spec{kind: correlate.KindCast, method: "other", topic: "conductor", caller: novaAPI, callee: novaConductor})
		}
		s.Record(r)
		if r.Method == "m" {
			want = append([]uint64{r.ID}, want...) // newest first
		}
	}
	pump(s)
	var big callsResponse
	getJSON(t, s.Handler(), "/api/calls?limit=100000", &big)
	if len(big.Calls) != maxCallsPage || big.NextBefore != big.Calls[len(big.Calls)-1].ID {
		t.Fatalf("limit=100000: %d calls, next_before %d; want a page of %d", len(big.Calls), big.NextBefore, maxCallsPage)
	}
	var got []uint64
	q := "/api/calls?method=m&limit=300"
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("paging does not end")
		}
		var resp callsResponse
		getJSON(t, s.Handler(), q, &resp)
		for _, r := range resp.Calls {
			if r.Method != "m" {
				t.Fatalf("page %d holds method %q: the filter was lost", pages, r.Method)
			}
			got = append(got, r.ID)
		}
		if resp.NextBefore == 0 {
			break
		}
		q = fmt.Sprintf("/api/calls?method=m&limit=300&before=%d", resp.NextBefore)
	}
	if !equalIDs(got, want) {
		t.Errorf("paged %d records (first %v), want %d", len(got), got[:min(3, len(got))], len(want))
	}
}

// An edge's last 10-15 s are compared with the rest of its window: calls that got slower and started failing show
// a recent p99 and error ratio above the edge's own baseline.
func TestGraphBaseline(t *testing.T) {
	s, clk := newTestServer(t, Config{})
	g := newGen()
	call := func(d time.Duration, st correlate.Status) {
		s.Record(g.rec(spec{kind: correlate.KindCall, status: st, method: "m", topic: "conductor", caller: novaAPI,
			callee: novaConductor, queue: time.Millisecond, srv: d, transit: time.Millisecond, errClass: "E"}))
	}
	for range 6 { // 30 s of fast calls, one error in ten
		for i := range 10 {
			st := correlate.StatusOK
			if i == 0 {
				st = correlate.StatusError
			}
			call(10*time.Millisecond, st)
		}
		clk.add(slotDur)
	}
	for i := range 10 { // now: slow, half failing
		st := correlate.StatusOK
		if i%2 == 0 {
			st = correlate.StatusError
		}
		call(400*time.Millisecond, st)
	}
	pump(s)
	var gr Graph
	getJSON(t, s.Handler(), "/api/graph", &gr)
	e := findEdge(gr, "nova-api>nova-conductor>rpc")
	if e == nil {
		t.Fatal("no edge")
	}
	if !within(e.BaseP99US, 12_000, 0.1) || !within(e.RecentP99US, 402_000, 0.1) {
		t.Errorf("p99 base %d µs recent %d µs, want ≈12000 and ≈402000", e.BaseP99US, e.RecentP99US)
	}
	// Recent is the current slot and the two before it: 1+1+5 errors in 30 calls; the base 4 in 40.
	if math.Abs(e.BaseErrorRatio-0.1) > 1e-9 || math.Abs(e.RecentErrorRatio-7.0/30) > 1e-9 {
		t.Errorf("error ratio base %v recent %v, want 0.1 and 7/30", e.BaseErrorRatio, e.RecentErrorRatio)
	}
}
