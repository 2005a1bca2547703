package ui

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/amqptrace/amqptrace/correlate"
)

// waitFor polls cond until it holds. The deadline is a liveness bound for a broken build, not a timing assertion.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

type wsMsg struct {
	Type  string             `json:"type"`
	Seq   uint64             `json:"seq"`
	Graph Graph              `json:"graph"`
	Calls []correlate.Record `json:"calls"`
}

func dialWS(t *testing.T, url string, hdr http.Header) *websocket.Conn {
	t.Helper()
	c, res, err := websocket.DefaultDialer.Dial(url, hdr)
	if err != nil {
		status := 0
		if res != nil {
			status = res.StatusCode
		}
		t.Fatalf("dial %s: %v (HTTP %d)", url, err, status)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func readMsg(t *testing.T, c *websocket.Conn) wsMsg {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	var m wsMsg
	_, b, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("decode: %v", err)
	}
	return m
}

func TestWebsocketSnapshotThenDeltas(t *testing.T) {
	s := New(Config{UpdateEvery: 10 * time.Millisecond})
	ts := runServer(t, s)
	a := dialWS(t, wsURL(ts, "/api/ws"), nil)
	snap := readMsg(t, a)
	if snap.Type != "snapshot" || len(snap.Calls) != 0 {
		t.Fatalf("first message %s with %d calls, want an empty snapshot", snap.Type, len(snap.Calls))
	}
	g := newGen()
	recs := g.scenario("req-55555555-5555-4555-8555-555555555555")
	for _, r := range recs {
		s.Record(r)
	}
	seen := map[uint64]bool{}
	last := snap.Seq
	var graph Graph
	for len(seen) < len(recs) {
		m := readMsg(t, a)
		if m.Type != "delta" || m.Seq != last+1 {
			t.Fatalf("got %s seq %d after seq %d, want delta %d", m.Type, m.Seq, last, last+1)
		}
		last = m.Seq
		for _, c := range m.Calls {
			seen[c.ID] = true
		}
		graph = m.Graph
	}
	if findEdge(graph, "nova-conductor>nova-scheduler>rpc") == nil {
		t.Errorf("delta graph lacks conductor→scheduler: %v", edgeIDs(graph))
	}
	// A later client starts from a snapshot holding the recent calls and the current sequence number, then
	// continues with the same deltas as everyone else.
	b := dialWS(t, wsURL(ts, "/api/ws"), nil)
	bs := readMsg(t, b)
	if bs.Type != "snapshot" || len(bs.Calls) != len(recs) || bs.Seq < last {
		t.Fatalf("second snapshot: %s seq %d with %d calls, want snapshot seq ≥ %d with %d", bs.Type, bs.Seq,
			len(bs.Calls), last, len(recs))
	}
	if bs.Calls[0].ID != recs[0].ID || bs.Calls[len(bs.Calls)-1].ID != recs[len(recs)-1].ID {
		t.Errorf("snapshot calls not oldest-first")
	}
	for i := range 3 {
		m := readMsg(t, b)
		if m.Type != "delta" || m.Seq != bs.Seq+uint64(i)+1 {
			t.Fatalf("client b: %s seq %d, want delta %d", m.Type, m.Seq, bs.Seq+uint64(i)+1)
		}
	}
	if st := s.Stats(); st.Clients != 2 || st.ClientsTotal != 2 {
		t.Errorf("stats %+v, want 2 clients", st)
	}
}

func TestWebsocketOrigin(t *testing.T) {
	s := New(Config{UpdateEvery: 10 * time.Millisecond, AllowedOrigins: []string{"https://ops.example.org"}})
	ts := runServer(t, s)
	u := wsURL(ts, "/api/ws")
	_, res, err := websocket.DefaultDialer.Dial(u, http.Header{"Origin": {"http://evil.example"}})
	if err == nil || res == nil || res.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign Origin: err %v, response %v; want 403", err, res)
	}
	if got := s.Stats().OriginRejected; got != 1 {
		t.Errorf("origin rejected = %d, want 1", got)
	}
	// Same host, an allowed origin, and no Origin (a non-browser client) are accepted.
	for _, o := range []string{ts.URL, "https://ops.example.org", ""} {
		h := http.Header{}
		if o != "" {
			h.Set("Origin", o)
		}
		c := dialWS(t, u, h)
		if m := readMsg(t, c); m.Type != "snapshot" {
			t.Errorf("origin %q: first message %s", o, m.Type)
		}
	}
}

func TestWebsocketToken(t *testing.T) {
	s := New(Config{UpdateEvery: 10 * time.Millisecond, Token: "tok"})
	ts := runServer(t, s)
	if _, res, err := websocket.DefaultDialer.Dial(wsURL(ts, "/api/ws"), nil); err == nil || res.StatusCode != 401 {
		t.Fatalf("no token: %v %v, want 401", err, res)
	}
	c := dialWS(t, wsURL(ts, "/api/ws")+"?token=tok", nil)
	if m := readMsg(t, c); m.Type != "snapshot" {
		t.Fatalf("with token: %s", m.Type)
	}
	c2 := dialWS(t, wsURL(ts, "/api/ws"), http.Header{"Authorization": {"Bearer tok"}})
	if m := readMsg(t, c2); m.Type != "snapshot" {
		t.Fatalf("with bearer: %s", m.Type)
	}
}

// A client that never reads must not slow Record or the other clients: its queue fills, it is disconnected and
// counted, and a reading client keeps getting every update in sequence.
func TestSlowClientKicked(t *testing.T) {
	s := New(Config{UpdateEvery: 10 * time.Millisecond})
	ts := runServer(t, s)
	// The slow client asks for a tiny receive buffer so the server's writes back up sooner; it never reads.
	slowDialer := websocket.Dialer{NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(4096)
		}
		return c, err
	}}
	slow, _, err := slowDialer.Dial(wsURL(ts, "/api/ws"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()

	fast := dialWS(t, wsURL(ts, "/api/ws"), nil)
	var fastSeq atomic.Uint64
	fastErr := make(chan error, 1)
	go func() {
		var last uint64
		first := true
		for {
			_, b, err := fast.ReadMessage()
			if err != nil {
				fastErr <- err
				return
			}
			var m wsMsg
			if err := json.Unmarshal(b, &m); err != nil {
				fastErr <- err
				return
			}
			if !first && m.Seq != last+1 {
				fastErr <- errors.New("fast client saw a sequence gap")
				return
			}
			first, last = false, m.Seq
			fastSeq.Store(m.Seq)
		}
	}()

	g := newGen()
	pad := strings.Repeat("x", 600) // rows of about 1.5 KB: a tick carries ~75 KB
	fed := 0
	for s.Stats().ClientsKicked == 0 {
		seq := s.Stats().Seq
		for range 50 {
			s.Record(g.rec(spec{kind: correlate.KindCall, method: "select_destinations", topic: "scheduler",
				caller: novaConductor, callee: novaScheduler, req: "req-" + pad, queue: time.Millisecond,
				srv: time.Millisecond, transit: time.Millisecond}))
			fed++
		}
		waitFor(t, "the next tick", func() bool { return s.Stats().Seq > seq })
		if fed > 2_000_000 {
			t.Fatal("slow client never kicked")
		}
	}
	kickedAt := s.Stats().Seq
	waitFor(t, "the fast client to get updates after the kick", func() bool {
		select {
		case err := <-fastErr:
			t.Fatalf("fast client: %v", err)
		default:
		}
		return fastSeq.Load() > kickedAt+2
	})
	st := s.Stats()
	if st.ClientsKicked != 1 || st.Clients != 1 {
		t.Errorf("stats %+v, want exactly the slow client kicked and the fast one connected", st)
	}
	t.Logf("fed %d records; kicked at seq %d; fast client at seq %d; %d records dropped", fed, kickedAt,
		fastSeq.Load(), st.RecordsDropped)
}

func TestShutdownClosesWebsockets(t *testing.T) {
	s := New(Config{UpdateEvery: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	ts := newHTTPTest(s)
	defer ts.Close()
	c := dialWS(t, wsURL(ts, "/api/ws"), nil)
	readMsg(t, c)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	for {
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, _, err := c.ReadMessage()
		if err == nil {
			continue // deltas queued before the shutdown
		}
		if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
			t.Fatalf("read after shutdown: %v, want close 1001 going away", err)
		}
		break
	}
	// After Run, a new websocket is refused cleanly and Run cannot be restarted.
	c2 := dialWS(t, wsURL(ts, "/api/ws"), nil)
	_ = c2.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, _, err := c2.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseTryAgainLater) {
		t.Errorf("websocket after Run: %v, want close 1013", err)
	}
	if err := s.Run(context.Background()); err == nil {
		t.Error("second Run succeeded")
	}
}

// DNS rebinding: a token-less server on loopback refuses a foreign Host on every path (the page of evil.example,
// re-bound to 127.0.0.1, sends Host: evil.example) and a websocket whose Origin and Host are both foreign; the
// loopback names and the configured ones are served.
func TestForeignHostRefusedWithoutToken(t *testing.T) {
	s := New(Config{UpdateEvery: 10 * time.Millisecond, AllowedHosts: []string{"amqptrace.internal"}})
	ts := runServer(t, s)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(ts.URL, "http://"))
	get := func(path, host string) int {
		req, err := http.NewRequest("GET", ts.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode
	}
	for _, path := range []string{"/", "/js/main.js", "/api/calls", "/api/calls/1", "/api/request/req-1", "/api/graph",
		"/api/stats", "/api/ws", "/healthz"} {
		for _, host := range []string{"evil.example", "evil.example:" + port, "127.0.0.1.evil.example", "10.0.0.1"} {
			if code := get(path, host); code != http.StatusMisdirectedRequest {
				t.Errorf("GET %s Host %s: %d, want 421", path, host, code)
			}
		}
	}
	for _, host := range []string{"127.0.0.1:" + port, "localhost:" + port, "[::1]:" + port, "amqptrace.internal:" + port,
		"ui.localhost"} {
		if code := get("/api/calls", host); code != http.StatusOK {
			t.Errorf("GET /api/calls Host %s: %d, want 200", host, code)
		}
	}
	// The websocket of a re-bound page: Origin and Host both evil.example.
	dialer := websocket.Dialer{NetDial: func(network, _ string) (net.Conn, error) {
		return net.Dial(network, strings.TrimPrefix(ts.URL, "http://"))
	}}
	_, res, err := dialer.Dial("ws://evil.example:"+port+"/api/ws", http.Header{"Origin": {"http://evil.example:" + port}})
	if err == nil || res == nil || res.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("re-bound websocket: err %v, response %v; want 421", err, res)
	}
	// A foreign Origin on a loopback Host (a page elsewhere that knows the port) is refused too.
	_, res, err = websocket.DefaultDialer.Dial(wsURL(ts, "/api/ws"), http.Header{"Origin": {"http://evil.example:" + port}})
	if err == nil || res == nil || res.StatusCode != http.StatusForbidden {
		t.Errorf("foreign Origin: err %v, response %v; want 403", err, res)
	}
	if st := s.Stats(); st.HostRejected < 37 || st.OriginRejected != 1 {
		t.Errorf("host rejected %d (want 37), origin rejected %d (want 1)", st.HostRejected, st.OriginRejected)
	}
}

// With a token every path needs it but /healthz, whatever the Host; the token opens them all.
func TestTokenRequiredPerPath(t *testing.T) {
	s := New(Config{UpdateEvery: 10 * time.Millisecond, Token: "tok"})
	ts := runServer(t, s)
	open := map[string]bool{"/healthz": true}
	for _, path := range []string{"/", "/js/main.js", "/style.css", "/favicon.svg", "/api/calls", "/api/calls/1",
		"/api/request/req-1", "/api/graph", "/api/stats", "/api/ws", "/healthz"} {
		for _, auth := range []string{"", "Bearer tok"} {
			req, _ := http.NewRequest("GET", ts.URL+path, nil)
			req.Host = "evil.example" // the token is the protection: any Host is served with it
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			want := http.StatusUnauthorized
			if auth != "" || open[path] {
				want = http.StatusOK
				if path == "/api/calls/1" {
					want = http.StatusNotFound // authorized; there is no record 1
				}
				if path == "/api/ws" {
					want = http.StatusBadRequest // authorized; not a websocket handshake
				}
			}
			if res.StatusCode != want {
				t.Errorf("GET %s (%q): %d, want %d", path, auth, res.StatusCode, want)
			}
			if res.Header.Get("Content-Security-Policy") == "" || res.Header.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("GET %s: security headers missing", path)
			}
		}
	}
}
