package pipeline

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/amqptrace/amqptrace/capture"
	"github.com/amqptrace/amqptrace/correlate"
	"github.com/amqptrace/amqptrace/frames"
	"github.com/amqptrace/amqptrace/proxy"
)

// DefaultListen is the listen address Run uses when Config.Listen is empty: loopback, the port next to AMQP's.
const DefaultListen = "127.0.0.1:5673"

// DefaultSinkQueue is the per-sink queue length of the Fanout when Config.SinkQueue is zero. A record is a few
// hundred bytes, so 4096 of them bound a stalled sink's backlog to about a megabyte.
const DefaultSinkQueue = 4096

// Config configures a Pipeline. The zero value of every field but Upstreams works; defaults are resolved in
// unexported accessors, never by changing the caller's struct.
type Config struct {
	// Listen is the address Run listens on. Default DefaultListen. Serve ignores it.
	Listen string
	// Upstreams, UpstreamTLS, ClientTLS, DialTimeout, KeepAlive, IdleTimeout, MaxConns, EventLoops and ShutdownGrace are
	// handed to proxy.Config unchanged; see there.
	Upstreams     []string
	Health        Health
	UpstreamTLS   *tls.Config
	ClientTLS     *tls.Config
	DialTimeout   time.Duration
	KeepAlive     time.Duration
	IdleTimeout   time.Duration
	MaxConns      int
	EventLoops    int
	ShutdownGrace time.Duration
	// Frames bounds each connection's decoders. A nil Frames.Logger takes Logger.
	Frames frames.Options
	// Correlate configures the Correlator. Its Sink is filled by the pipeline (the Fanout over Sinks); a Sink set
	// here is kept as one more sink. A nil Correlate.Logger takes Logger.
	Correlate correlate.Config
	// Sinks receive every record, each through its own bounded queue (SinkQueue); a full queue drops and counts.
	// The pipeline does not own them: it never closes them.
	Sinks []correlate.Sink
	// SinkNames names Sinks, in order, in the log line of a sink's first panic (component "sink:<name>"); a
	// missing name is the sink's index.
	SinkNames []string
	// SinkQueue is the queue length per sink. Default DefaultSinkQueue.
	SinkQueue int
	// Logger receives the pipeline's own lines (start, stop) and is the default for the parts. Nil discards.
	Logger *slog.Logger
}

// Health is the upstream health settings, handed to proxy.Config unchanged (the fields of the same names there).
type Health struct {
	Strategy            proxy.Strategy
	AwaitAnswer         bool
	DialBudget          time.Duration
	DownAfter           int
	Backoff, MaxBackoff time.Duration
	Check               proxy.Check
	CheckInterval       time.Duration
}

func (c *Config) listen() string {
	if c.Listen != "" {
		return c.Listen
	}
	return DefaultListen
}

func (c *Config) sinkQueue() int {
	if c.SinkQueue > 0 {
		return c.SinkQueue
	}
	return DefaultSinkQueue
}

func (c *Config) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// ErrServed is returned by Serve and Run on a Pipeline that was already started: the parts are single-use.
var ErrServed = errors.New("pipeline: already started")

// Pipeline is one running amqptrace data path. Create it with New, start it with Run or Serve (once).
type Pipeline struct {
	listen string
	log    *slog.Logger
	fopts  frames.Options
	proxy  *proxy.Proxy
	corr   *correlate.Correlator
	fanout *correlate.Fanout

	started atomic.Bool
	serving atomic.Bool // between Serve's start and the end of its proxy
	addr    atomic.Pointer[net.Addr]
	ready   chan struct{} // closed once Serve has an address

	reg registry
}

// registry is the decoders of live connections plus the final counters of closed ones, so Stats can sum both. Its
// mutex is taken once when a connection opens, once when it closes and by Stats; never per frame.
type registry struct {
	mu     sync.Mutex
	live   map[uint64]*frames.Conn
	closed decodeTotals
}

func (r *registry) add(id uint64, fc *frames.Conn) {
	r.mu.Lock()
	if r.live == nil {
		r.live = make(map[uint64]*frames.Conn)
	}
	r.live[id] = fc
	r.mu.Unlock()
}

// done moves a closed connection's final counters from the live registry to the totals.
func (r *registry) done(id uint64, fc *frames.Conn) {
	st := fc.Stats()
	r.mu.Lock()
	delete(r.live, id)
	r.closed.conns++
	if st.Off {
		r.closed.off++
	}
	if errors.Is(fc.Err(), frames.ErrPanic) {
		r.closed.panics++
	}
	addDir(&r.closed.client, st.Client)
	addDir(&r.closed.server, st.Server)
	r.mu.Unlock()
}

func (r *registry) stats() DecodeStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := DecodeStats{
		ConnsLive:   int64(len(r.live)),
		ConnsClosed: r.closed.conns,
		ConnsOff:    r.closed.off,
		Panics:      r.closed.panics,
		Client:      r.closed.client,
		Server:      r.closed.server,
	}
	for _, fc := range r.live {
		st := fc.Stats()
		if st.Off {
			d.ConnsOff++
		}
		if errors.Is(fc.Err(), frames.ErrPanic) {
			d.Panics++
		}
		addDir(&d.Client, st.Client)
		addDir(&d.Server, st.Server)
	}
	return d
}

// decodeTotals accumulates the final decoder counters of closed connections.
type decodeTotals struct {
	conns, off     int64
	panics         int64
	client, server frames.DirStats
}

// New checks cfg and builds the parts. Nothing runs until Run or Serve.
func New(cfg Config) (*Pipeline, error) {
	if len(cfg.Upstreams) == 0 {
		return nil, errors.New("pipeline: no upstream broker configured")
	}
	for _, u := range cfg.Upstreams {
		if _, _, err := net.SplitHostPort(u); err != nil {
			return nil, fmt.Errorf("pipeline: upstream %q: want host:port: %w", u, err)
		}
	}
	log := cfg.logger()
	p := &Pipeline{
		listen: cfg.listen(),
		log:    log,
		fopts:  cfg.Frames,
		ready:  make(chan struct{}),
	}
	if p.fopts.Logger == nil {
		p.fopts.Logger = log.With("component", "frames")
	}
	p.fanout, p.corr = buildCore(cfg.Correlate, cfg.Sinks, cfg.SinkNames, cfg.sinkQueue(), log)
	p.proxy = proxy.New(proxy.Config{
		Upstreams:     cfg.Upstreams,
		Strategy:      cfg.Health.Strategy,
		AwaitAnswer:   cfg.Health.AwaitAnswer,
		DialBudget:    cfg.Health.DialBudget,
		DownAfter:     cfg.Health.DownAfter,
		Backoff:       cfg.Health.Backoff,
		MaxBackoff:    cfg.Health.MaxBackoff,
		Check:         cfg.Health.Check,
		CheckInterval: cfg.Health.CheckInterval,
		UpstreamTLS:   cfg.UpstreamTLS,
		ClientTLS:     cfg.ClientTLS,
		DialTimeout:   cfg.DialTimeout,
		KeepAlive:     cfg.KeepAlive,
		IdleTimeout:   cfg.IdleTimeout,
		MaxConns:      cfg.MaxConns,
		EventLoops:    cfg.EventLoops,
		ShutdownGrace: cfg.ShutdownGrace,
		Tap:           p.tap,
		Logger:        log.With("component", "proxy"),
	})
	return p, nil
}

// buildCore builds what every source of bytes feeds: the Fanout over the sinks (named for the panic log line) and
// the Correlator that emits into it.
func buildCore(ccfg correlate.Config, sinks []correlate.Sink, names []string, queue int, log *slog.Logger) (*correlate.Fanout, *correlate.Correlator) {
	named := make([]correlate.NamedSink, 0, len(sinks)+1)
	for i, s := range sinks {
		name := strconv.Itoa(i)
		if i < len(names) {
			name = names[i]
		}
		named = append(named, correlate.NamedSink{Name: name, Sink: s})
	}
	if ccfg.Sink != nil {
		named = append(named, correlate.NamedSink{Name: "correlate", Sink: ccfg.Sink})
	}
	fanout := correlate.NewNamedFanout(queue, log.With("component", "sinks"), named...)
	ccfg.Sink = fanout
	if ccfg.Logger == nil {
		ccfg.Logger = log.With("component", "correlate")
	}
	return fanout, correlate.New(ccfg)
}

// Run listens on Config.Listen and serves until ctx ends; see Serve.
func (p *Pipeline) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", p.listen)
	if err != nil {
		return fmt.Errorf("pipeline: listen: %w", err)
	}
	return p.Serve(ctx, ln)
}

// Serve runs the pipeline on ln until ctx ends, then shuts down in data-flow order (see the package doc) and
// returns once every goroutine it started has returned and every record has reached the sinks (or was counted as
// dropped). It closes ln. The error is the proxy's listener error, if any, joined with the parts' errors; a
// shutdown by ctx returns nil.
func (p *Pipeline) Serve(ctx context.Context, ln net.Listener) error {
	if !p.started.CompareAndSwap(false, true) {
		_ = ln.Close()
		return ErrServed
	}
	addr := ln.Addr()
	p.addr.Store(&addr)
	close(p.ready)

	p.log.Info("pipeline serving", "listen", addr.String())
	start := time.Now()
	var proxyErr error
	p.serving.Store(true)
	partsErr := runAround(ctx, p.corr, p.fanout, func() {
		proxyErr = p.proxy.Serve(ctx, ln)
		p.serving.Store(false)
	})

	st := p.Stats()
	// What observation saw and what it lost, once: an operator (and make bench) reads it from the last line.
	p.log.Info("pipeline stopped", "uptime", time.Since(start).Round(time.Millisecond),
		"connections", st.Proxy.ConnsTotal, "messages", st.Correlate.MessagesIn,
		"messages_dropped", st.Correlate.QueueDrops, "records", st.Correlate.RecordsOut,
		"records_dropped", st.RecordsDropped(), "decode_off", st.Decode.ConnsOff)
	if proxyErr != nil {
		return errors.Join(fmt.Errorf("pipeline: proxy: %w", proxyErr), partsErr)
	}
	return partsErr
}

// runAround runs the correlator and the fan-out around source, the part that feeds them (the proxy, or a
// capture), and stops them in data-flow order once source has returned: the correlator first, so that it takes in
// what the last connections said and flushes its pending records into the fan-out, then the fan-out, which
// delivers what its queues hold. Both outlive ctx for that. It returns their errors (a stop by cancellation is
// none).
func runAround(ctx context.Context, corr *correlate.Correlator, fanout *correlate.Fanout, source func()) error {
	corrCtx, stopCorr := context.WithCancel(context.WithoutCancel(ctx))
	defer stopCorr()
	fanCtx, stopFan := context.WithCancel(context.WithoutCancel(ctx))
	defer stopFan()
	corrDone := make(chan error, 1)
	fanDone := make(chan error, 1)
	go runPart(fanout.Run, fanCtx, fanDone)
	go runPart(corr.Run, corrCtx, corrDone)

	source()
	// Every connection has ended and closed its correlate.Conn: nothing more can reach the correlator.
	stopCorr()
	corrErr := <-corrDone
	stopFan()
	fanErr := <-fanDone
	fanout.Stop() // nothing should come now; if it does, it is counted, not queued forever
	var err error
	if corrErr != nil && !errors.Is(corrErr, context.Canceled) {
		err = errors.Join(err, fmt.Errorf("pipeline: correlate: %w", corrErr))
	}
	if fanErr != nil && !errors.Is(fanErr, context.Canceled) {
		err = errors.Join(err, fmt.Errorf("pipeline: fanout: %w", fanErr))
	}
	return err
}

// runPart runs one long-lived part; a named function so a goroutine dump says which part is which.
func runPart(run func(context.Context) error, ctx context.Context, done chan<- error) {
	done <- run(ctx)
}

// Addr returns the listening address, or nil before Serve started.
func (p *Pipeline) Addr() net.Addr {
	if a := p.addr.Load(); a != nil {
		return *a
	}
	return nil
}

// Readiness reports whether the pipeline can take clients now: Serve is running and an upstream is healthy. When
// it cannot, why says so (with every upstream's state and last error).
func (p *Pipeline) Readiness() (ok bool, why string) {
	if !p.serving.Load() {
		if p.started.Load() {
			return false, "the proxy has stopped"
		}
		return false, "the proxy is not serving yet"
	}
	return p.proxy.Healthy()
}

// HealthChanged is closed at the next change of an upstream's health (proxy.Proxy.HealthChanged).
func (p *Pipeline) HealthChanged() <-chan struct{} { return p.proxy.HealthChanged() }

// Ready is closed once Serve has its listener, so Addr is set.
func (p *Pipeline) Ready() <-chan struct{} { return p.ready }

// tap is the proxy.TapFunc: one decoder pair and one correlator connection per proxied connection.
// The decoders are handed to the proxy as they are, so the proxy sees their WriteStamped and frames carry the time
// each chunk was read (the correlator orders events by it). Wrapping them would silently lose that.
var _ proxy.StampedWriter = (*frames.Decoder)(nil)

func (p *Pipeline) tap(info proxy.ConnInfo) proxy.Tap {
	client := ""
	if info.Client != nil {
		client = info.Client.String()
	}
	cc := p.corr.NewConn(correlate.ConnInfo{
		ID:       info.ID,
		Client:   client,
		Upstream: info.Upstream,
		Start:    info.Start,
	})
	fc := frames.NewConn(cc, p.fopts)
	p.reg.add(info.ID, fc)
	return proxy.Tap{
		ClientToServer: fc.ClientDecoder(),
		ServerToClient: fc.ServerDecoder(),
		Done:           func(end proxy.ConnEnd) { p.connDone(end, fc, cc) },
	}
}

// connDone runs once per connection, after its last tap write: it closes the correlator's view of the connection
// with the proxy's reason and moves the decoder's final counters from the live registry to the totals.
func (p *Pipeline) connDone(end proxy.ConnEnd, fc *frames.Conn, cc *correlate.Conn) {
	reason := closeReason(end, fc.Err())
	cc.Close(reason, end.Err)

	p.reg.done(end.Info.ID, fc)
}

// closeReason is the proxy's close reason, plus what observation gave up on: the decoder (framing error) or the
// tap as a whole (a writer panicked). Forwarding went on in both cases, which is why it is an annotation.
func closeReason(end proxy.ConnEnd, decodeErr error) string {
	reason := string(end.Reason)
	if decodeErr != nil {
		reason += "; decode switched off: " + decodeErr.Error()
	}
	if end.TapDisabled {
		reason += "; tap disabled"
	}
	return reason
}

func addDir(dst *frames.DirStats, s frames.DirStats) {
	dst.Bytes += s.Bytes
	dst.Frames += s.Frames
	dst.Methods += s.Methods
	dst.Headers += s.Headers
	dst.Bodies += s.Bodies
	dst.Heartbeats += s.Heartbeats
	dst.Resyncs += s.Resyncs
	dst.Skipped += s.Skipped
}

// Stats is a snapshot of every part's counters.
type Stats struct {
	Proxy     proxy.Stats
	Decode    DecodeStats
	Correlate correlate.Stats
	// SinkDrops counts, per sink in Config.Sinks order (then Config.Correlate.Sink), the records dropped
	// because that sink's queue was full or the sink panicked on them.
	SinkDrops []uint64
	// SinkPanics counts, in the same order, the records each sink panicked on (also in SinkDrops).
	SinkPanics []uint64
	// Capture is set for a passive pipeline (amqptrace capture, replay): what the packet capture saw and lost.
	// Proxy then holds the connection and byte counts of the captured connections.
	Capture *capture.Stats
}

// DecodeStats sums the decoders of live and closed connections. Client counts client → broker traffic, Server
// broker → client.
type DecodeStats struct {
	ConnsLive   int64 // connections with a decoder now
	ConnsClosed int64 // connections whose decoder's counters were folded into the totals
	ConnsOff    int64 // connections (live or closed) whose decoding was switched off
	Panics      int64 // connections whose decoding was switched off by a panic (in frames or the correlator's assembler)
	Client      frames.DirStats
	Server      frames.DirStats
}

// RecordsDropped sums SinkDrops: records that missed a sink (one record missing two sinks counts twice).
func (s Stats) RecordsDropped() uint64 {
	var n uint64
	for _, d := range s.SinkDrops {
		n += d
	}
	return n
}

// InFlight is the correlator's view of what is waiting now (correlate.Correlator.InFlight).
func (p *Pipeline) InFlight(ctx context.Context, limit int) correlate.InFlight {
	return p.corr.InFlight(ctx, limit)
}

// Topology is the correlator's view of the routing learned from the wire (correlate.Correlator.Topology).
func (p *Pipeline) Topology(ctx context.Context, limit int) correlate.Topology {
	return p.corr.Topology(ctx, limit)
}

// Stats returns the counters. It is safe to call from any goroutine, before, during and after Serve.
func (p *Pipeline) Stats() Stats {
	s := Stats{Proxy: p.proxy.Stats(), Correlate: p.corr.Stats(), SinkDrops: p.fanout.Dropped(),
		SinkPanics: p.fanout.Panics()}
	s.Decode = p.reg.stats()
	return s
}
