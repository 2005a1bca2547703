package ui

import (
	"context"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/amqptrace/amqptrace/correlate"
)

//go:embed web
var webFS embed.FS

// tokenCookie carries the token after a ?token= bootstrap, so the page's own requests (fetch, websocket) are
// authenticated without the token ever being visible to its JavaScript (HttpOnly).
const tokenCookie = "amqptrace_token"

// csp forbids everything the page does not need: no inline script or style (all code is in the ES modules under
// js/ and the vendored dagre under vendor/, all style in style.css), no third-party origin, no framing. connect-src 'self' covers same-origin ws:// and wss://.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler returns the UI's HTTP handler: "/", "/api/calls", "/api/calls/{id}", "/api/request/{id}",
// "/api/graph", "/api/stats", "/api/inflight", "/api/topology", "/api/ws" and "/healthz". With a Token every path but /healthz needs it.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(webFS, "web")
	files := http.FileServerFS(static)
	mux.Handle("GET /{$}", s.auth(files, true))
	mux.Handle("GET /js/{file}", s.auth(files, false))
	mux.Handle("GET /vendor/{file}", s.auth(files, false))
	mux.Handle("GET /style.css", s.auth(files, false))
	mux.Handle("GET /favicon.svg", s.auth(files, false))
	mux.Handle("GET /api/calls", s.auth(http.HandlerFunc(s.serveCalls), false))
	mux.Handle("GET /api/calls/{id}", s.auth(http.HandlerFunc(s.serveCall), false))
	mux.Handle("GET /api/request/{id}", s.auth(http.HandlerFunc(s.serveRequest), false))
	mux.Handle("GET /api/graph", s.auth(http.HandlerFunc(s.serveGraph), false))
	mux.Handle("GET /api/stats", s.auth(http.HandlerFunc(s.serveStats), false))
	mux.Handle("GET /api/inflight", s.auth(http.HandlerFunc(s.serveInFlight), false))
	mux.Handle("GET /api/topology", s.auth(http.HandlerFunc(s.serveTopology), false))
	mux.Handle("GET /api/ws", s.auth(http.HandlerFunc(s.serveWS), true))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	return s.Guard(s.recoverHTTP(mux))
}

// Guard is what every path of the HTTP server goes through, the UI's and the ones cmd adds (/metrics, /readyz):
// the security headers, and without a Token the Host check against DNS rebinding (see Config.AllowedHosts).
func (s *Server) Guard(next http.Handler) http.Handler {
	return securityHeaders(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.Token == "" && !s.hostAllowed(r.Host) {
			s.hostRejected.Add(1)
			http.Error(w, "unknown host: amqptrace answers only loopback names without --http-token "+
				"(add the name with --http-allowed-hosts)", http.StatusMisdirectedRequest)
			return
		}
		next.ServeHTTP(w, r)
	}))
}

// RequireToken is auth for a path cmd adds (/metrics): with a Token it needs the same bearer token or cookie as
// the API; without one it is open (on loopback, behind Guard).
func (s *Server) RequireToken(next http.Handler) http.Handler { return s.auth(next, false) }

// hostAllowed says whether a Host header (or an Origin's host) names this server for a token-less UI: a loopback
// address, "localhost" (and *.localhost, which resolvers must keep on loopback), or Config.AllowedHosts.
func (s *Server) hostAllowed(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	if host == "" {
		return false
	}
	lower := strings.ToLower(host)
	if lower == "localhost" || strings.HasSuffix(lower, ".localhost") {
		return true
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return true
	}
	for _, a := range s.cfg.AllowedHosts {
		if strings.EqualFold(strings.TrimSpace(a), host) {
			return true
		}
	}
	return false
}

// recoverHTTP answers 500 to a request whose handler panicked, counted like every other panic of the UI. net/http
// would recover it too, but it logs the panic's value, which here may be made of wire data.
func (s *Server) recoverHTTP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.panics.Caught(v)
				http.Error(w, "internal error", http.StatusInternalServerError)
			}
		}()
		next.ServeHTTP(w, r)
	})
}

func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

// auth enforces Config.Token. bootstrap marks the endpoints a browser opens by URL (the page, the websocket): there
// ?token= is accepted once and turned into an HttpOnly cookie. The page is then redirected to drop the token from
// the address bar (and from history).
func (s *Server) auth(next http.Handler, bootstrap bool) http.Handler {
	if s.cfg.Token == "" {
		return next
	}
	want := []byte(s.cfg.Token)
	ok := func(got string) bool { return got != "" && subtle.ConstantTimeCompare([]byte(got), want) == 1 }
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := r.Header.Get("Authorization"); strings.HasPrefix(h, "Bearer ") && ok(strings.TrimPrefix(h, "Bearer ")) {
			next.ServeHTTP(w, r)
			return
		}
		if c, err := r.Cookie(tokenCookie); err == nil && ok(c.Value) {
			next.ServeHTTP(w, r)
			return
		}
		if q := r.URL.Query().Get("token"); bootstrap && ok(q) {
			http.SetCookie(w, &http.Cookie{Name: tokenCookie, Value: s.cfg.Token, Path: "/", HttpOnly: true,
				Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
			if r.URL.Path == "/" {
				clean := *r.URL
				v := clean.Query()
				v.Del("token")
				clean.RawQuery = v.Encode()
				http.Redirect(w, r, clean.RequestURI(), http.StatusSeeOther)
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		s.authRejected.Add(1)
		w.Header().Set("WWW-Authenticate", `Bearer realm="amqptrace"`)
		http.Error(w, "unauthorized", http.StatusUnauthorized)
	})
}

// checkOrigin accepts requests without Origin (non-browser clients), AllowedOrigins, and the request's own host -
// which, without a Token, must also pass hostAllowed.
func (s *Server) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	for _, a := range s.cfg.AllowedOrigins {
		if a == "*" || strings.EqualFold(strings.TrimSuffix(a, "/"), origin) {
			return true
		}
	}
	if s.cfg.Token == "" && !s.hostAllowed(u.Host) {
		return false // a page served from another name, even one that re-binds to us (its Host matches its Origin)
	}
	return strings.EqualFold(u.Host, r.Host)
}

func (s *Server) jaegerEnabled() bool {
	return s.cfg.TraceID != nil && s.traceBase() != ""
}

// traceBase returns JaegerURL without a trailing slash when it is an http(s) URL, else "".
func (s *Server) traceBase() string {
	u, err := url.Parse(s.cfg.JaegerURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return ""
	}
	return strings.TrimRight(s.cfg.JaegerURL, "/")
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}

// callsResponse is the body of /api/calls and /api/request/{id}.
type callsResponse struct {
	Calls []*correlate.Record `json:"calls"`
	Count int                 `json:"count"`
	// NextBefore, on a full page of /api/calls, is the before= of the next page (the oldest record's id).
	NextBefore uint64 `json:"next_before,omitempty"`
}

// maxCallsPage bounds one /api/calls answer, so that concurrent requests cannot each build a response the size of
// the whole ring (a few MiB per thousand records with payloads kept); older records are paged with before=.
const maxCallsPage = 1000

// serveCalls answers the newest records matching the filters, newest first: ?limit= (default 100, at most
// maxCallsPage) and ?before=<id> for the page after the one whose next_before was id.
func (s *Server) serveCalls(w http.ResponseWriter, r *http.Request) {
	f := parseFilter(r.URL.Query().Get, 100, min(s.cfg.recentSize(), maxCallsPage))
	recs := s.st.query(f)
	resp := callsResponse{Calls: recs, Count: len(recs)}
	if len(recs) == f.limit && len(recs) > 0 {
		resp.NextBefore = recs[len(recs)-1].ID
	}
	writeJSON(w, resp)
}

// detail is a record with its Jaeger link.
type detail struct {
	*correlate.Record
	TraceURL string `json:"trace_url,omitempty"`
}

func (s *Server) serveCall(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil {
		http.Error(w, "bad id", http.StatusBadRequest)
		return
	}
	rec := s.st.get(id)
	if rec == nil {
		http.Error(w, "no such record (it may have left the ring)", http.StatusNotFound)
		return
	}
	d := detail{Record: rec}
	if s.jaegerEnabled() {
		if tid := s.cfg.TraceID(rec); isHex(tid) {
			d.TraceURL = s.traceBase() + "/trace/" + tid
		}
	}
	writeJSON(w, d)
}

func isHex(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

func (s *Server) serveRequest(w http.ResponseWriter, r *http.Request) {
	id := strings.TrimSpace(r.PathValue("id"))
	if id == "" || len(id) > 256 {
		http.Error(w, "bad request id", http.StatusBadRequest)
		return
	}
	recs := s.st.request(id)
	writeJSON(w, callsResponse{Calls: recs, Count: len(recs)})
}

func (s *Server) serveGraph(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, s.withInFlight(s.st.graph(r.URL.Query().Get("by") == "host", s.now())))
}

// serveStats answers the Server's own counters and, when Config.Upstreams is set, each upstream's health.
func (s *Server) serveStats(w http.ResponseWriter, _ *http.Request) {
	var v struct {
		Stats
		Upstreams []Upstream `json:"upstreams,omitempty"`
	}
	v.Stats = s.Stats()
	if s.cfg.Upstreams != nil {
		v.Upstreams = s.cfg.Upstreams()
	}
	writeJSON(w, v)
}

// serveInFlight answers what is waiting now: queues by wire depth, servers and callers by calls in flight, and the
// oldest pending RPCs (?limit=, default 100, at most 1000).
func (s *Server) serveInFlight(w http.ResponseWriter, r *http.Request) {
	if s.cfg.InFlight == nil {
		http.Error(w, "no in-flight view here", http.StatusNotFound)
		return
	}
	limit, ok := limitParam(w, r, 100, 1000)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	writeJSON(w, s.cfg.InFlight(ctx, limit))
}

// serveTopology answers the routing learned from the wire: every vhost's exchanges, queues with their flags,
// consumers and prefetch, and bindings, with reply queues counted per service (?limit= entries of each list,
// default and most 2000).
func (s *Server) serveTopology(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Topology == nil {
		http.Error(w, "no topology view here", http.StatusNotFound)
		return
	}
	limit, ok := limitParam(w, r, 2000, 2000)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	writeJSON(w, s.cfg.Topology(ctx, limit))
}

// limitParam reads ?limit= (def when absent, at most most); it answers 400 itself for a bad one.
func limitParam(w http.ResponseWriter, r *http.Request, def, most int) (int, bool) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return def, true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		http.Error(w, "limit: want a number from 0 to "+strconv.Itoa(most), http.StatusBadRequest)
		return 0, false
	}
	return min(n, most), true
}
