package ui

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/amqptrace/amqptrace/correlate"
)

// Config configures a Server. The zero value works: defaults are resolved by the unexported accessors below.
type Config struct {
	// Token, when set, is required on / and /api/* as "Authorization: Bearer <token>", or once as ?token= on the
	// page or websocket URL (bootstrap for a browser), which sets an HttpOnly cookie. Compared in constant time.
	Token string
	// JaegerURL, with TraceID, makes call details link to <JaegerURL>/trace/<trace id>. Only http and https URLs
	// are used: a link is an href, and a javascript: URL there would run in the page.
	JaegerURL string
	// TraceID returns the hex trace id the tracing exporter uses for a record; nil means no Jaeger link.
	TraceID func(*correlate.Record) string
	// Counters returns headline counters from the rest of the system; it is called once per tick, never per
	// record, and must not block.
	Counters func() Counters
	// Upstreams, when set, adds each upstream broker's health to GET /api/stats ("upstreams").
	Upstreams func() []Upstream
	// InFlight, when set, serves GET /api/inflight: what is waiting now (correlate.Correlator.InFlight).
	InFlight func(ctx context.Context, limit int) correlate.InFlight
	// Topology, when set, serves GET /api/topology: the exchanges, queues, bindings and consumers learned from the
	// wire (correlate.Correlator.Topology).
	Topology func(ctx context.Context, limit int) correlate.Topology
	// RecentSize is the ring of recent records behind /api/calls, /api/request and call details (default 10000).
	RecentSize int
	// ClientQueue is the per-websocket-client queue in messages (default 64). A client whose queue is full is
	// disconnected and counted: it resyncs from a snapshot when it reconnects.
	ClientQueue int
	// UpdateEvery is the aggregation tick: how often clients get a delta (default 500ms).
	UpdateEvery time.Duration
	// AllowedOrigins lists the websocket Origins accepted besides the request's own host, as "scheme://host[:port]"
	// or "*" for any (not advised). Requests without an Origin header (non-browser clients) are accepted.
	AllowedOrigins []string
	// AllowedHosts lists the host names (without port) a request's Host header, and a websocket's Origin, may
	// name when there is no Token, besides loopback addresses and "localhost". Anything else is refused (421):
	// a web page on another site that re-binds its name to 127.0.0.1 would otherwise read every record.
	// With a Token the token is the protection and any Host is served.
	AllowedHosts []string
	// Logger receives per-connection and rate-limited messages; nil discards them.
	Logger *slog.Logger
}

func (c *Config) recentSize() int {
	if c.RecentSize > 0 {
		return c.RecentSize
	}
	return 10000
}

func (c *Config) clientQueue() int {
	if c.ClientQueue > 0 {
		return c.ClientQueue
	}
	return 64
}

func (c *Config) updateEvery() time.Duration {
	if c.UpdateEvery > 0 {
		return c.UpdateEvery
	}
	return 500 * time.Millisecond
}

func (c *Config) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// Upstream is one broker's health as /api/stats shows it (cmd fills it from the proxy).
type Upstream struct {
	Addr                string    `json:"addr"`
	State               string    `json:"state"` // up, down or unknown (not checked yet)
	ConsecutiveFailures int       `json:"consecutive_failures"`
	RetryAt             time.Time `json:"retry_at,omitzero"`
	LastError           string    `json:"last_error,omitempty"`
	LastErrorAt         time.Time `json:"last_error_at,omitzero"`
	Downs               int64     `json:"downs_total"`
}

// Counters are the headline numbers the rest of the system reports (the lead wires them in cmd).
type Counters struct {
	ConnectionsOpen  int64  `json:"connections_open"`
	ConnectionsTotal uint64 `json:"connections_total"`
	RecordsDropped   uint64 `json:"records_dropped"`   // dropped before reaching the UI (decoder, correlator queues)
	SpansDropped     uint64 `json:"spans_dropped"`     // OTLP export drops
	UnmatchedReplies uint64 `json:"unmatched_replies"` // replies with no known request
	DecodeErrors     uint64 `json:"decode_errors"`     // connections whose decoding was turned off
}

// Stats are the Server's own counters.
type Stats struct {
	Clients         int    `json:"clients"`          // websocket clients connected now
	ClientsTotal    uint64 `json:"clients_total"`    // websocket clients accepted since start
	ClientsKicked   uint64 `json:"clients_kicked"`   // disconnected because their queue was full
	OriginRejected  uint64 `json:"origin_rejected"`  // websocket upgrades refused for their Origin
	HostRejected    uint64 `json:"host_rejected"`    // requests refused for their Host (no token: DNS rebinding)
	AuthRejected    uint64 `json:"auth_rejected"`    // requests refused for a missing or wrong token
	RecordsReceived uint64 `json:"records_received"` // accepted by Record
	RecordsDropped  uint64 `json:"records_dropped"`  // records Record could not add (it panicked on them)
	EdgesDropped    uint64 `json:"edges_dropped"`    // graph edges not tracked because of the edge cap
	Seq             uint64 `json:"seq"`              // sequence number of the last published update
	Panics          uint64 `json:"panics"`           // panics recovered in aggregation and publishing (each cost a record or an update)
}

// Headline is the counters block of every websocket message: what the top bar shows.
type Headline struct {
	Counters
	CallsPerSec   float64 `json:"calls_per_sec"`
	CastsPerSec   float64 `json:"casts_per_sec"`
	ErrorsWindow  uint64  `json:"errors_window"`
	TimeoutsWin   uint64  `json:"timeouts_window"`
	Totals        totals  `json:"totals"`
	UIDropped     uint64  `json:"ui_dropped"`
	Clients       int     `json:"clients"`
	WindowSeconds float64 `json:"window_s"`
}

// Server is the UI: create it with New, start Run, serve Handler.
type Server struct {
	cfg   Config
	log   *slog.Logger
	st    *store
	hub   *hub
	now   func() time.Time // injectable clock for tests
	ran   atomic.Bool
	start time.Time
	// instance identifies this Server in websocket messages (see update.Instance).
	instance string

	received, dropped, authRejected, originRejected, hostRejected atomic.Uint64
	// panics guards the aggregator: a record it cannot add is dropped (counted), an update it cannot build is skipped.
	panics *correlate.PanicGuard
}

// maxBatch bounds the records kept between two ticks for the next delta (they are all in the ring already); past
// it they are counted as skipped in that delta, as the ones over maxCallsPerMessage are.
const maxBatch = 20000

// maxCallsPerMessage bounds the calls carried by one websocket update (a few a second). At thousands of records a
// second nobody reads the rows as they scroll by, and building hundreds of table rows per update is what slowed a
// browser under load (about one update a second instead of two at 5,000 records/s); the newest 100 keep the table
// live, the rest are counted as skipped, and every record stays in /api/calls and the request view.
const maxCallsPerMessage = 100

// snapshotCalls is how many recent calls a new client gets.
const snapshotCalls = 300

// New returns a Server. Nothing runs until Run.
func New(cfg Config) *Server {
	s := &Server{cfg: cfg, log: cfg.logger(), now: time.Now}
	s.panics = correlate.NewPanicGuard("ui", s.log)
	s.start = s.now()
	s.instance = strconv.FormatInt(s.start.UnixNano(), 36) + "-" + strconv.FormatUint(rand.Uint64()&0xffffff, 36)
	s.st = newStore(cfg.recentSize(), s.start)
	s.hub = newHub(s)
	return s
}

// Record implements correlate.Sink. It adds r to the ring and the graph aggregates under the store's lock, on the
// caller's goroutine (the Fanout's goroutine for this sink: its queue is the only one in front of the UI), and
// keeps r as it is: a record is immutable once emitted and already redacted (correlate's record contract), so the
// ring shares it with every other sink. A panic while adding costs that record, counted in RecordsDropped.
func (s *Server) Record(r *correlate.Record) {
	if r == nil {
		return
	}
	defer s.panics.Recover(&s.dropped)
	now := s.now()
	st := s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	st.addLocked(r, now)
	if len(st.batch) < maxBatch {
		st.batch = append(st.batch, r)
	} else {
		st.batchSkipped++
	}
	s.received.Add(1)
}

// Run publishes updates until ctx ends, then closes every websocket and waits for their writer goroutines. It
// returns nil on a clean stop. Run must be called once.
func (s *Server) Run(ctx context.Context) error {
	if !s.ran.CompareAndSwap(false, true) {
		return errors.New("ui: Run called twice")
	}
	tick := time.NewTicker(s.cfg.updateEvery())
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			s.hub.closeAll()
			return nil
		case <-tick.C:
			s.flush()
		}
	}
}

// update is one websocket message.
type update struct {
	Type     string            `json:"type"` // snapshot or delta
	Seq      uint64            `json:"seq"`
	Time     time.Time         `json:"time"`
	Graph    json.RawMessage   `json:"graph"`
	Headline json.RawMessage   `json:"headline"`
	Calls    []json.RawMessage `json:"calls"`   // newest last
	Skipped  int               `json:"skipped"` // calls in this update not sent (over maxCallsPerMessage)
	Jaeger   bool              `json:"jaeger"`  // call details can link to Jaeger
	// Instance changes when the process restarts. Record ids are unique only within one process, so a page that
	// reconnects to a new instance drops the rows (and ids) it got from the old one.
	Instance string `json:"instance"`
}

// flush takes the records added since the last tick, renders the graph and headline once, and publishes one
// delta. A panic while rendering skips this update (counted); the next tick renders from the store again.
func (s *Server) flush() {
	defer s.panics.Recover(nil)
	now := s.now()
	batch, skipped, g, tot := s.take(now)
	g = s.withInFlight(g)
	hl := s.headline(g, tot)
	graphJSON, err1 := json.Marshal(g)
	hlJSON, err2 := json.Marshal(hl)
	if err := errors.Join(err1, err2); err != nil {
		s.log.Error("ui: encode update", "err", err)
		return
	}
	if len(batch) > maxCallsPerMessage {
		skipped += len(batch) - maxCallsPerMessage
		batch = batch[len(batch)-maxCallsPerMessage:]
	}
	calls := make([]json.RawMessage, 0, len(batch))
	for _, r := range batch {
		if b, err := rowJSON(r); err == nil {
			calls = append(calls, b)
		}
	}
	s.hub.publish(graphJSON, hlJSON, calls, skipped, now)
}

// take hands over the records added since the last tick and renders the service graph, under the store's lock.
func (s *Server) take(now time.Time) (batch []*correlate.Record, skipped int, g Graph, tot totals) {
	st := s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	batch, skipped = st.batch, st.batchSkipped
	st.batch, st.batchSkipped = nil, 0
	g = st.svc.view(now, s.start, true)
	st.host.prune(now)
	return batch, skipped, g, st.totals
}

func (s *Server) headline(g Graph, tot totals) Headline {
	var h Headline
	if s.cfg.Counters != nil {
		h.Counters = s.cfg.Counters()
	}
	for _, e := range g.Edges {
		h.CallsPerSec += e.CallRate
		h.CastsPerSec += e.CastRate
		h.ErrorsWindow += e.Errors
		h.TimeoutsWin += e.Timeouts
	}
	h.Totals = tot
	h.UIDropped = s.dropped.Load()
	h.Clients = s.hub.count()
	h.WindowSeconds = g.WindowS
	return h
}

// rowJSON encodes a record for the live table: everything but args and result, which only the call detail
// (/api/calls/{id}) carries, so live messages stay small.
func rowJSON(r *correlate.Record) (json.RawMessage, error) {
	c := *r
	c.Args, c.Result = nil, nil
	return json.Marshal(&c)
}

// Stats returns the Server's counters.
func (s *Server) Stats() Stats {
	s.st.mu.RLock()
	edges := s.st.svc.dropped + s.st.host.dropped
	s.st.mu.RUnlock()
	clients, total, kicked, seq := s.hub.stats()
	return Stats{
		Clients:         clients,
		ClientsTotal:    total,
		ClientsKicked:   kicked,
		OriginRejected:  s.originRejected.Load(),
		HostRejected:    s.hostRejected.Load(),
		AuthRejected:    s.authRejected.Load(),
		RecordsReceived: s.received.Load(),
		RecordsDropped:  s.dropped.Load(),
		EdgesDropped:    edges,
		Seq:             seq,
		Panics:          s.panics.Count(),
	}
}

// recentRows returns up to n recent records as table rows, oldest first (the order deltas use).
func (s *Server) recentRows(n int) []json.RawMessage {
	recs := s.st.query(filter{limit: n})
	out := make([]json.RawMessage, 0, len(recs))
	for i := len(recs) - 1; i >= 0; i-- {
		if b, err := rowJSON(recs[i]); err == nil {
			out = append(out, b)
		}
	}
	return out
}

// lifecycle guard shared by hub and handlers.
var _ correlate.Sink = (*Server)(nil)

// wgGo runs f in a goroutine tracked by wg.
func wgGo(wg *sync.WaitGroup, f func()) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		f()
	}()
}

// withInFlight adds the live in-flight counts to a graph, when the data path gives them (Config.InFlight); it waits
// at most a second for the correlator.
func (s *Server) withInFlight(g Graph) Graph {
	if s.cfg.InFlight == nil {
		return g
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return g.withInFlight(s.cfg.InFlight(ctx, 0))
}
