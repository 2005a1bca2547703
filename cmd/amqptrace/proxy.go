package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/netutil"

	"github.com/amqptrace/amqptrace/correlate"
	"github.com/amqptrace/amqptrace/frames"
	"github.com/amqptrace/amqptrace/internal/metrics"
	"github.com/amqptrace/amqptrace/internal/pipeline"
	"github.com/amqptrace/amqptrace/tracing"
	"github.com/amqptrace/amqptrace/ui"
)

// options is everything `amqptrace proxy` (and `demo`) can be told.
type options struct {
	listen, upstream, http string
	httpToken, jaegerURL   string
	events                 string
	payload                string
	redactKeys             string
	redactPatterns         string
	httpAllowedHosts       string
	httpMaxConns           int
	otlpEndpoint           string
	otlpInsecure           bool
	sampleRatio            float64
	slowThreshold          time.Duration

	tlsCert, tlsKey            string
	upstreamTLS                bool
	upstreamCA, upstreamServer string
	upstreamInsecure           bool

	dialTimeout, idleTimeout, shutdownGrace time.Duration
	upstreamStrategy, upstreamCheck         string
	upstreamCheckInterval, dialBudget       time.Duration
	upstreamBackoff, upstreamMaxBackoff     time.Duration
	upstreamAwaitAnswer                     bool
	maxConns                                int
	eventLoops                              int
	replyGrace, queueHorizon, ackWait       time.Duration
	maxPending, maxPendingBytes, bodyCap    int
	memoryLimit                             int
	maxFrame                                int
	metricsLimits                           metrics.Limits
	genericCasts                            bool

	logFormat, logLevel string
	fs                  *flag.FlagSet // the command's flags, for what the environment sets that none of them is

	// capture and replay
	source   string // "capture" or "replay": the records' source
	iface    string
	ports    string
	realtime bool
	ringMB   int
	gapWait  time.Duration
}

// register adds every flag of `amqptrace proxy` (and demo): the proxy's own and the sink flags.
func (o *options) register(fs *flag.FlagSet, listen, http string) {
	o.registerProxy(fs, listen)
	o.registerSinks(fs, http)
}

// registerProxy adds the flags of the proxy itself: where it listens, the brokers, TLS, timeouts.
func (o *options) registerProxy(fs *flag.FlagSet, listen string) {
	fs.StringVar(&o.listen, "listen", listen, "address clients connect to (point transport_url here)")
	fs.StringVar(&o.upstream, "upstream", "127.0.0.1:5672", "RabbitMQ address; a comma-separated list is tried in order (a cluster)")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "certificate `file` (PEM): accept amqps from clients")
	fs.StringVar(&o.tlsKey, "tls-key", "", "private key `file` (PEM) for --tls-cert")
	fs.BoolVar(&o.upstreamTLS, "upstream-tls", false, "speak TLS to the broker")
	fs.StringVar(&o.upstreamCA, "upstream-ca", "", "CA bundle `file` (PEM) to verify the broker (default: system roots)")
	fs.StringVar(&o.upstreamServer, "upstream-server-name", "", "server name to verify on the broker's certificate (default: the upstream host)")
	fs.BoolVar(&o.upstreamInsecure, "upstream-insecure-skip-verify", false, "do not verify the broker's certificate (testing only)")
	fs.DurationVar(&o.dialTimeout, "dial-timeout", 5*time.Second, "timeout of each dial to the broker")
	fs.StringVar(&o.upstreamStrategy, "upstream-strategy", "first-healthy", "order of the upstreams for each client: first-healthy (the list's order) or round-robin; down ones are tried last")
	fs.DurationVar(&o.dialBudget, "dial-budget", 0, "time one client's dials to all upstreams may take together (0: twice --dial-timeout)")
	fs.BoolVar(&o.upstreamAwaitAnswer, "upstream-await-answer", true, "send the client's protocol header to each upstream in turn and keep the first that answers (an upstream that accepts and closes costs the client nothing)")
	fs.StringVar(&o.upstreamCheck, "upstream-check", "tcp", "health check of the upstreams at start-up and of a down one when its backoff ends: tcp (connect), amqp (protocol header exchange) or none")
	fs.DurationVar(&o.upstreamCheckInterval, "upstream-check-interval", 0, "also check every upstream on this period, up or down (0: only at start-up and after a failure)")
	fs.DurationVar(&o.upstreamBackoff, "upstream-backoff", time.Second, "how long an upstream is down after a failure; doubles with each further failure")
	fs.DurationVar(&o.upstreamMaxBackoff, "upstream-max-backoff", 30*time.Second, "cap on the upstream backoff")
	fs.DurationVar(&o.idleTimeout, "idle-timeout", 0, "close a connection after this long without a byte either way (0: never; AMQP heartbeats keep live ones busy)")
	fs.IntVar(&o.maxConns, "max-conns", 0, "cap on concurrent client connections (0: none); extra clients are closed at once")
	fs.IntVar(&o.eventLoops, "event-loops", 0, "epoll loops forwarding TCP connections on Linux, amqps clients included (0: GOMAXPROCS-1, at least one; -1: a goroutine pair per connection instead)")
	fs.DurationVar(&o.shutdownGrace, "shutdown-grace", 10*time.Second, "on SIGTERM, how long open connections may go on before they are closed")
}

// registerSinks adds the flags every tracing command shares (proxy, demo, capture, replay): the sinks (UI and
// /metrics, events file, OTLP), payload policy, correlation bounds, decoding bound and logging.
func (o *options) registerSinks(fs *flag.FlagSet, http string) {
	o.fs = fs
	fs.StringVar(&o.http, "http", http, "address of the UI, API and /metrics; empty disables. Keep it on loopback or set --http-token")
	fs.StringVar(&o.httpToken, "http-token", "", "bearer token required by the UI, the API and /metrics; /healthz and /readyz stay open (needed when --http is not loopback)")
	fs.StringVar(&o.jaegerURL, "jaeger-url", "", "Jaeger UI base URL, e.g. http://127.0.0.1:16686: the UI links each call to its trace")
	fs.StringVar(&o.events, "events", "", "write one JSON line per finished RPC record to `FILE` (- for standard output)")
	fs.StringVar(&o.payload, "payload", "redacted", "keep RPC arguments and results in records: none, redacted (long strings cut) or full (whole); secrets are removed in every mode")
	fs.StringVar(&o.redactKeys, "redact-keys", "", "extra key `names`, comma-separated, whose values are removed (matched inside keys, ignoring case and _ - .)")
	fs.StringVar(&o.redactPatterns, "redact-patterns", "", "extra `regexps` (Go RE2), separated by newlines or ';;', whose matches are removed from every string")
	fs.IntVar(&o.httpMaxConns, "http-max-conns", 64, "cap on concurrent HTTP connections (UI, API, websockets, /metrics); more wait in the kernel's backlog, so the HTTP side never takes the descriptors AMQP clients need (0: no cap)")
	fs.StringVar(&o.httpAllowedHosts, "http-allowed-hosts", "", "host `names`, comma-separated, the token-less UI answers besides loopback and localhost (DNS rebinding guard)")
	fs.StringVar(&o.otlpEndpoint, "otlp-endpoint", "", "OTLP gRPC collector `host:port` (Jaeger: 4317); empty: OTEL_EXPORTER_OTLP_ENDPOINT, else no export")
	fs.BoolVar(&o.otlpInsecure, "otlp-insecure", true, "plain gRPC to the collector (false: TLS; OTEL_EXPORTER_OTLP_CERTIFICATE applies)")
	fs.Float64Var(&o.sampleRatio, "sample-ratio", 1, "fraction of RPCs exported as spans; errors, timeouts and slow calls are always kept")
	fs.DurationVar(&o.slowThreshold, "slow-threshold", time.Second, "calls slower than this are always exported")
	fs.DurationVar(&o.replyGrace, "reply-grace", 5*time.Second, "after a call's deadline, how long a late reply still lands in the same record")
	fs.DurationVar(&o.queueHorizon, "queue-horizon", 10*time.Minute, "how long a cast, fanout or notification queued for a consumer behind this proxy is waited for before its record is emitted without the delivery")
	fs.DurationVar(&o.ackWait, "ack-wait", correlate.DefaultAckWait, "how long a cast, fanout or notification, once delivered, waits for its consumers' acks before its record is emitted without them")
	fs.IntVar(&o.maxPending, "max-pending", 100000, "cap on RPCs awaiting their reply; past it the oldest are expired (counted)")
	fs.IntVar(&o.maxPendingBytes, "max-pending-bytes", 0, "cap on the estimated memory of RPCs awaiting their reply or delivery (bytes; about 1.9 KB per oslo call, 1.6 KB plus its kept arguments and ids); past it the oldest are emitted as they are (counted). 0: a quarter of --memory-limit (64 MiB, about 35,000 calls), since the heap may grow to twice what the table holds")
	fs.IntVar(&o.memoryLimit, "memory-limit", defaultMemoryLimit, "the process's memory budget (bytes): seven eighths of it is Go's soft memory limit, which makes the garbage collector work harder as the process nears it, and the default --max-pending-bytes is a quarter of it. 0: no soft limit; GOMEMLIMIT, when set, applies unless this flag is given")
	fs.IntVar(&o.bodyCap, "body-cap", 1<<20, "bytes of each message body kept for decoding; larger bodies are marked truncated")
	fs.BoolVar(&o.genericCasts, "generic-casts", false, "also record plain (non-oslo) AMQP messages without reply_to or correlation_id; off: they are only counted")
	fs.IntVar(&o.maxFrame, "max-frame", 1<<20, "largest AMQP frame decoded before frame_max is negotiated (bytes)")
	fs.IntVar(&o.metricsLimits.MaxSeries, "metrics-max-series", metrics.DefaultMaxSeries, "cap on distinct (method, topic) label pairs on /metrics; more are folded into \"other\" (counted)")
	fs.IntVar(&o.metricsLimits.MaxServices, "metrics-max-services", metrics.DefaultMaxServices, "cap on distinct caller and callee service names on /metrics; more are folded into \"other\" (counted)")
	fs.IntVar(&o.metricsLimits.MaxExceptions, "metrics-max-exceptions", metrics.DefaultMaxExceptions, "cap on distinct exception classes on /metrics; more are folded into \"other\" (counted)")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
}

// check refuses values that parse but mean nothing, with one line naming the flag, and rewrites --upstream given
// as transport_url-style URLs to the host:port list the proxy dials.
func (o *options) check() error {
	if o.sampleRatio < 0 || o.sampleRatio > 1 {
		return badUsagef("--sample-ratio %v: must be between 0 and 1", o.sampleRatio)
	}
	for name, v := range map[string]int{"--max-conns": o.maxConns, "--body-cap": o.bodyCap, "--memory-limit": o.memoryLimit,
		"--max-pending": o.maxPending, "--max-pending-bytes": o.maxPendingBytes, "--max-frame": o.maxFrame,
		"--http-max-conns": o.httpMaxConns, "--metrics-max-series": o.metricsLimits.MaxSeries,
		"--metrics-max-services": o.metricsLimits.MaxServices, "--metrics-max-exceptions": o.metricsLimits.MaxExceptions} {
		if v < 0 {
			return badUsagef("%s %d: must not be negative", name, v)
		}
	}
	for name, v := range map[string]time.Duration{"--reply-grace": o.replyGrace, "--queue-horizon": o.queueHorizon,
		"--ack-wait": o.ackWait} {
		if v < 0 {
			return badUsagef("%s %v: must not be negative", name, v)
		}
	}
	if err := checkListenAddr("--listen", o.listen); err != nil {
		return err
	}
	if err := checkListenAddr("--http", o.http); err != nil {
		return err
	}
	ups, tls, err := upstreamAddrs(o.upstream)
	if err != nil {
		return err
	}
	if tls {
		o.upstreamTLS = true
	}
	o.upstream = strings.Join(ups, ",")
	return nil
}

// checkListenAddr refuses an address to listen on that is not host:port with a port from 0 to 65535 (0: any free
// port). An empty address passes: it disables what it is for.
func checkListenAddr(flagName, addr string) error {
	if addr == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return badUsagef("%s %q: want host:port, e.g. 127.0.0.1:5673", flagName, addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return badUsagef("%s %q: port %q is not a number from 0 to 65535", flagName, addr, port)
	}
	return nil
}

func runProxy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("amqptrace proxy", flag.ContinueOnError)
	var o options
	o.register(fs, "127.0.0.1:5673", "127.0.0.1:8080")
	if err := parseFlags(fs, args, "amqptrace proxy: forward AMQP clients to RabbitMQ, untouched, and trace every RPC.", stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return badUsage(err)
	}
	if err := o.check(); err != nil {
		return err
	}
	logger, err := newLogger(o.logFormat, o.logLevel, stderr)
	if err != nil {
		return badUsage(err)
	}
	a, err := newApp(ctx, &o, logger, stdout)
	if err != nil {
		return err
	}
	return a.run(ctx, nil)
}

// newLogger builds the process logger.
func newLogger(format, level string, w io.Writer) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// app is one running amqptrace: the pipeline (proxy, decoders, correlator), its sinks and the HTTP server.
type app struct {
	o    *options
	log  *slog.Logger
	pipe *pipeline.Pipeline // the proxy's data path (nil for capture and replay)
	// stats reads the data path's counters (metrics, UI headline); serve runs it until ctx ends, and servingAddr
	// is what it serves on (the proxy's listener; empty for capture and replay).
	stats       func() pipeline.Stats
	inflight    func(ctx context.Context, limit int) correlate.InFlight // what waits now (nil: not known)
	topology    func(ctx context.Context, limit int) correlate.Topology // the routing learned (nil: not known)
	serve       func(ctx context.Context) error
	servingAddr string
	tracer      *tracing.Exporter // nil without OTLP export
	ui          *ui.Server
	events      *correlate.JSONLines
	eventsW     io.WriteCloser
	eventsFile  *eventsFile // the --events file (nil for standard output), reopened on SIGHUP
	httpLn      net.Listener
	proxyLn     net.Listener
	handlers    []extraHandler
	registry    *prometheus.Registry
}

type extraHandler struct {
	pattern string
	h       http.Handler
}

func newApp(ctx context.Context, o *options, logger *slog.Logger, stdout io.Writer) (*app, error) {
	clientTLS, upstreamTLS, err := o.tlsConfigs()
	if err != nil {
		return nil, badUsage(err)
	}
	upstreams, health, err := o.upstreamConfig(ctx, logger)
	if err != nil {
		return nil, badUsage(err)
	}
	a, core, err := newSinks(ctx, o, logger, stdout, "")
	if err != nil {
		return nil, err
	}
	a.pipe, err = pipeline.New(pipeline.Config{
		Upstreams:     upstreams,
		Health:        health,
		ClientTLS:     clientTLS,
		UpstreamTLS:   upstreamTLS,
		DialTimeout:   o.dialTimeout,
		IdleTimeout:   o.idleTimeout,
		MaxConns:      o.maxConns,
		EventLoops:    o.eventLoops,
		ShutdownGrace: o.shutdownGrace,
		Frames:        core.frames,
		Correlate:     core.correlate,
		Sinks:         core.sinks,
		SinkNames:     core.names,
		Logger:        logger,
	})
	if err != nil {
		return nil, err
	}
	a.stats = a.pipe.Stats
	a.inflight = a.pipe.InFlight
	a.topology = a.pipe.Topology

	// Listen before anything runs, so that an address in use is a clear error at start-up, not a log line later.
	if a.proxyLn, err = net.Listen("tcp", o.listen); err != nil {
		return nil, fmt.Errorf("--listen: %w (choose another address with --listen or AMQPTRACE_LISTEN; for make demo: make demo DEMOFLAGS='--listen 127.0.0.1:5674')", err)
	}
	if err := a.listenHTTP(); err != nil {
		_ = a.proxyLn.Close()
		return nil, err
	}
	a.serve = func(ctx context.Context) error { return a.pipe.Serve(ctx, a.proxyLn) }
	a.servingAddr = a.proxyLn.Addr().String()
	return a, nil
}

// core is what newSinks prepares for the data path: the sinks in the order their drop counters are named on
// /metrics, and the decoder and correlator settings from the flags.
type core struct {
	sinks     []correlate.Sink
	names     []string
	frames    frames.Options
	correlate correlate.Config
}

// newSinks builds every sink the flags ask for (metrics always; events, OTLP, UI), shared by every command that
// traces (proxy, demo, capture, replay). source goes into every record (correlate.Config.Source). The caller
// builds the data path with what it returns, sets a.stats, a.serve and a.servingAddr, and calls a.listenHTTP.
func newSinks(ctx context.Context, o *options, logger *slog.Logger, stdout io.Writer, source string) (*app, core, error) {
	a := &app{o: o, log: logger}
	var c core
	if o.fs != nil {
		for _, v := range unknownEnv(o.fs, os.Environ()) {
			logger.Warn("environment variable sets no flag of this command; ignored", "variable", v[0], "did_you_mean", v[1])
		}
	}
	payload, err := correlate.ParsePayloadPolicy(o.payload)
	if err != nil {
		return nil, c, badUsagef("--payload: %v", err)
	}
	redactor, err := correlate.NewRedactor(correlate.RedactRules{Keys: splitList(o.redactKeys),
		Patterns: splitPatterns(o.redactPatterns)})
	if err != nil {
		return nil, c, badUsagef("--redact-patterns: %v", err)
	}
	if o.http != "" && o.httpToken == "" && !isLoopback(o.http) {
		return nil, c, badUsagef("--http %s is not a loopback address: set --http-token (or AMQPTRACE_HTTP_TOKEN) so the UI is not open to everyone", o.http)
	}

	pendingBytes := o.applyMemoryLimit(logger)

	src := metrics.Sources{Pipeline: func() pipeline.Stats { return a.stats() }, Logger: logger.With("component", "metrics")}
	var records *metrics.Records
	a.registry, records = metrics.NewRegistry(&src, o.metricsLimits)
	a.registry.MustRegister(redactionCollector{redactor})
	c.sinks, c.names = append(c.sinks, records), append(c.names, "metrics")
	if o.events != "" {
		if o.events == "-" {
			a.eventsW = nopCloser{stdout}
		} else {
			f, cut, err := openEventsFile(o.events, nil)
			if err != nil {
				return nil, c, fmt.Errorf("--events: %w", err)
			}
			if cut > 0 {
				logger.Warn("the events file ended in a partial line (a crash mid-write); cut it back to the last whole line",
					"file", o.events, "bytes_cut", cut)
			}
			a.eventsW, a.eventsFile = f, f
		}
		a.events = correlate.NewJSONLines(a.eventsW)
		c.sinks, c.names = append(c.sinks, a.events), append(c.names, "events")
	}
	endpoint := o.otlpEndpoint
	if endpoint == "" {
		endpoint = firstEnv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
	}
	if endpoint != "" {
		a.tracer, err = tracing.New(ctx, tracing.Config{
			Endpoint:      o.otlpEndpoint,
			Insecure:      o.otlpInsecure,
			SampleRatio:   o.sampleRatio,
			SlowThreshold: o.slowThreshold,
			Logger:        logger.With("component", "tracing"),
		})
		if err != nil {
			return nil, c, fmt.Errorf("tracing: %w", err)
		}
		c.sinks, c.names = append(c.sinks, a.tracer), append(c.names, "tracing")
		src.Tracing = a.tracer.Stats
	}
	if o.http != "" {
		cfg := ui.Config{
			Token:        o.httpToken,
			AllowedHosts: splitList(o.httpAllowedHosts),
			JaegerURL:    o.jaegerURL,
			Logger:       logger.With("component", "ui"),
			Counters:     a.counters,
			Upstreams:    a.upstreams,
			InFlight:     a.inFlight,
			Topology:     a.topologyView,
		}
		if a.tracer != nil || o.jaegerURL != "" {
			cfg.TraceID = tracing.TraceIDHex
		}
		a.ui = ui.New(cfg)
		c.sinks, c.names = append(c.sinks, a.ui), append(c.names, "ui")
		src.UI = a.ui.Stats
	}
	src.SinkNames = c.names
	src.InFlight = a.inFlight
	c.frames = frames.Options{MaxFrameSize: uint32(o.maxFrame), Logger: logger.With("component", "frames")}
	c.correlate = correlate.Config{
		Grace:           o.replyGrace,
		QueueHorizon:    o.queueHorizon,
		AckWait:         o.ackWait,
		MaxPending:      o.maxPending,
		MaxPendingBytes: pendingBytes,
		BodyCap:         o.bodyCap,
		Payload:         payload,
		Redactor:        redactor,
		GenericCasts:    o.genericCasts,
		Logger:          logger.With("component", "correlate"),
		Source:          source,
	}
	return a, c, nil
}

// inFlight is the data path's view of what waits now, for the UI and /metrics (empty before it is built).
func (a *app) inFlight(ctx context.Context, limit int) correlate.InFlight {
	if a.inflight == nil {
		return correlate.InFlight{}
	}
	return a.inflight(ctx, limit)
}

// topologyView is the data path's view of the routing learned from the wire, for the UI (empty before it is
// built).
func (a *app) topologyView(ctx context.Context, limit int) correlate.Topology {
	if a.topology == nil {
		return correlate.Topology{Vhosts: []correlate.VhostTopology{}}
	}
	return a.topology(ctx, limit)
}

// listenHTTP opens the --http listener (when set), so an address in use is an error at start-up.
func (a *app) listenHTTP() error {
	if a.o.http == "" {
		return nil
	}
	var err error
	if a.httpLn, err = net.Listen("tcp", a.o.http); err != nil {
		return fmt.Errorf("--http: %w (choose another address with --http or AMQPTRACE_HTTP; for make demo: make demo DEMOFLAGS='--http 127.0.0.1:8081')", err)
	}
	return nil
}

// upstreams feeds /api/stats: each upstream's health (none for capture and replay).
func (a *app) upstreams() []ui.Upstream {
	if a.stats == nil {
		return nil
	}
	var out []ui.Upstream
	for _, u := range a.stats().Proxy.Upstreams {
		out = append(out, ui.Upstream{Addr: u.Addr, State: string(u.State), ConsecutiveFailures: u.ConsecutiveFailures,
			RetryAt: u.RetryAt, LastError: u.LastError, LastErrorAt: u.LastErrAt, Downs: u.Downs})
	}
	return out
}

// counters feeds the UI's headline.
func (a *app) counters() ui.Counters {
	st := a.stats()
	c := ui.Counters{
		ConnectionsOpen: st.Proxy.ConnsOpen,
		RecordsDropped:  st.RecordsDropped(),
	}
	if a.tracer != nil {
		c.SpansDropped = a.tracer.Stats().SpansDropped
	}
	return c
}

// run serves until ctx ends, then shuts down in order: stop accepting and give connections the grace (pipeline),
// flush the correlator's pending records through the sinks, flush spans and the events file, stop HTTP.
// started, when set, runs once the pipeline is serving (the demo runs its cloud there); when it returns, the
// pipeline shuts down as if ctx had ended.
func (a *app) run(ctx context.Context, started func(ctx context.Context, proxyAddr string) error) error {
	// Sinks outlive the pipeline: they must receive what the correlator flushes at shutdown.
	sinkCtx, stopSinks := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSinks()
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	if a.tracer != nil {
		wg.Go(func() { errc <- a.tracer.Run(sinkCtx) })
	}
	if a.events != nil {
		var hup chan os.Signal
		if a.eventsFile != nil {
			// Registered before the start-up log lines, so a SIGHUP sent once they are out never kills the process.
			hup = make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
		}
		wg.Go(func() { a.flushEvents(sinkCtx, hup) })
	}
	var srv *http.Server
	if a.ui != nil {
		wg.Go(func() { errc <- a.ui.Run(sinkCtx) })
		// Budgets, so that the HTTP side cannot starve the data path: a client gets 10 s to send its headers and a
		// kept-alive connection is closed after a minute without a request; past --http-max-conns the listener
		// stops accepting, so further clients wait in the kernel's backlog and hold no descriptor of ours (the
		// proxy's clients need those). Websockets are long-lived by design: no read or write timeout.
		srv = &http.Server{Handler: a.httpHandler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute,
			MaxHeaderBytes: 64 << 10}
		ln := a.httpLn
		if a.o.httpMaxConns > 0 {
			ln = netutil.LimitListener(ln, a.o.httpMaxConns)
		}
		wg.Go(func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("http: %w", err)
			}
		})
		a.log.Info("UI and API listening", "url", "http://"+a.httpLn.Addr().String()+"/")
	}
	if a.proxyLn != nil {
		a.log.Info("proxy listening", "listen", a.proxyLn.Addr().String(), "upstream", a.o.upstream,
			"otlp", a.tracer != nil, "events", a.o.events)
	}

	pipeCtx, stopPipe := context.WithCancel(ctx)
	defer stopPipe()
	pipeDone := make(chan error, 1)
	go func() { pipeDone <- a.serve(pipeCtx) }()

	var runErr error
	if started != nil {
		if err := started(pipeCtx, a.servingAddr); err != nil && ctx.Err() == nil {
			runErr = err
		}
		stopPipe()
	}
	select {
	case err := <-pipeDone:
		pipeDone <- err
	case err := <-errc:
		runErr = errors.Join(runErr, err)
		stopPipe()
	}
	if err := <-pipeDone; err != nil {
		name := "proxy"
		if a.proxyLn == nil {
			name = a.o.source
		}
		runErr = errors.Join(runErr, fmt.Errorf("%s: %w", name, err))
	}

	// The pipeline has flushed its records into the sinks; now drain them.
	flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if a.tracer != nil {
		if err := a.tracer.Shutdown(flushCtx); err != nil {
			a.log.Warn("flushing spans", "err", err)
		}
	}
	if a.events != nil {
		// Close flushes and closes the file (standard output is wrapped so that it stays open).
		// A disk still full at exit costs the buffered records (counted); it is not a failure of the run.
		if err := a.events.Close(); err != nil {
			a.log.Error("closing the events file; its buffered records are lost", "file", a.o.events, "err", err,
				"records_dropped", a.events.Dropped())
		}
	}
	if srv != nil {
		_ = srv.Shutdown(flushCtx)
	}
	stopSinks()
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil && !errors.Is(err, context.Canceled) {
			runErr = errors.Join(runErr, err)
		}
	}
	if a.tracer != nil {
		ts := a.tracer.Stats()
		a.log.Info("span export stopped", "spans_exported", ts.SpansExported, "spans_dropped", ts.SpansDropped,
			"records_dropped", ts.RecordsDropped, "export_errors", ts.ExportErrors)
	}
	return runErr
}

// flushEvents pushes the events buffer out every second (so `tail -f` shows records as they finish) until ctx
// ends, and reopens the file on each signal from hup (SIGHUP: logrotate). A failing write is logged when it starts and when writing
// works again, not at every retry; the records it costs are counted (dropped_total{stage="sink:events"}).
func (a *app) flushEvents(ctx context.Context, hup <-chan os.Signal) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	failing := false
	flush := func() {
		err := a.events.Flush()
		switch {
		case err != nil && !failing:
			a.log.Error("writing events failed; records are kept for a retry every second, and dropped (counted) once the buffer is full",
				"file", a.o.events, "err", err)
		case err == nil && failing:
			a.log.Info("writing events works again", "file", a.o.events, "records_dropped", a.events.Dropped())
		}
		failing = err != nil
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			flush()
		case <-hup:
			flush() // what is buffered belongs to the file that was rotated
			if _, err := a.eventsFile.Reopen(); err != nil {
				a.log.Error("reopening the events file on SIGHUP; still writing the old one", "file", a.o.events, "err", err)
				continue
			}
			a.log.Info("events file reopened", "file", a.o.events)
		}
	}
}

// httpHandler is every HTTP path: the UI's (ui.Handler), /metrics (needs --http-token when one is set), /readyz
// (always open, like /healthz), and the demo's extra handlers. All of them go through ui.Guard: the same
// security headers, and without a token the Host check against DNS rebinding.
func (a *app) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", a.ui.RequireToken(metrics.Handler(a.registry)))
	mux.Handle("/readyz", http.HandlerFunc(a.readyz))
	for _, h := range a.handlers {
		mux.Handle(h.pattern, h.h)
	}
	mux.Handle("/", a.ui.Handler())
	return a.ui.Guard(mux)
}

// readyz answers 200 while the proxy serves and an upstream is healthy, else 503 with the reason (every
// upstream's state and last error), so that a load balancer or Kubernetes stops routing clients to a proxy
// that would refuse them. Capture and replay have no upstream: ready once they run. /healthz is liveness only.
func (a *app) readyz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if a.pipe != nil {
		if ok, why := a.pipe.Readiness(); !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, "not ready: "+why+"\n")
			return
		}
	}
	_, _ = io.WriteString(w, "ready\n")
}

func (o *options) tlsConfigs() (client, upstream *tls.Config, err error) {
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return nil, nil, errors.New("--tls-cert and --tls-key go together")
	}
	if o.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey)
		if err != nil {
			return nil, nil, fmt.Errorf("--tls-cert/--tls-key: %v", err)
		}
		client = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if o.upstreamTLS || o.upstreamCA != "" || o.upstreamServer != "" || o.upstreamInsecure {
		upstream = &tls.Config{ServerName: o.upstreamServer, InsecureSkipVerify: o.upstreamInsecure, MinVersion: tls.VersionTLS12} //nolint:gosec // opt-in flag
		if o.upstreamCA != "" {
			pem, err := os.ReadFile(o.upstreamCA)
			if err != nil {
				return nil, nil, fmt.Errorf("--upstream-ca: %v", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, nil, fmt.Errorf("--upstream-ca %s: no PEM certificate found", o.upstreamCA)
			}
			upstream.RootCAs = pool
		}
	}
	return client, upstream, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// splitPatterns splits --redact-patterns at newlines and ";;" (a comma may well be part of a regexp).
func splitPatterns(s string) []string {
	var out []string
	for _, line := range strings.Split(strings.ReplaceAll(s, ";;", "\n"), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	return out
}

// redactionCollector exports the Redactor's counts as amqptrace_redactions_total{rule}.
type redactionCollector struct{ r *correlate.Redactor }

var redactionsDesc = prometheus.NewDesc("amqptrace_redactions_total",
	"Secret values removed from payloads, exception messages and records, by rule.", []string{"rule"}, nil)

func (c redactionCollector) Describe(ch chan<- *prometheus.Desc) { ch <- redactionsDesc }

func (c redactionCollector) Collect(ch chan<- prometheus.Metric) {
	for rule, n := range c.r.Counts() {
		ch <- prometheus.MustNewConstMetric(redactionsDesc, prometheus.CounterValue, float64(n), rule)
	}
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func firstEnv(names ...string) string {
	for _, n := range names {
		if v := os.Getenv(n); v != "" {
			return v
		}
	}
	return ""
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// defaultMemoryLimit is --memory-limit's default: the process budget TestE2EMemory holds amqptrace proxy to.
const defaultMemoryLimit = 256 << 20

// setMemoryLimit is debug.SetMemoryLimit; a test of the flags replaces it, since the limit is the whole process's.
var setMemoryLimit = debug.SetMemoryLimit

// applyMemoryLimit sets Go's soft memory limit from --memory-limit and returns the pending table's byte cap:
// --max-pending-bytes, or a quarter of the limit. The soft limit is seven eighths of the flag's value: it counts
// the memory the Go runtime holds, and the resident size has the binary's code besides, and the runtime returns
// memory a little after the limit asked. The quarter is what keeps the process within the limit without making
// the garbage collector run constantly: it lets the heap grow to twice what is live before it runs (GOGC=100),
// and besides the pending table the live heap holds the UI's ring of recent records, the connections' buffers and
// the queues between the stages. GOMEMLIMIT from the environment wins over the default, not over the flag.
func (o *options) applyMemoryLimit(logger *slog.Logger) int {
	limit := int64(o.memoryLimit)
	if os.Getenv("GOMEMLIMIT") != "" && !o.given("memory-limit") {
		limit = setMemoryLimit(-1) // the runtime's, from GOMEMLIMIT
		if limit == math.MaxInt64 {
			limit = 0
		}
	} else if limit > 0 {
		setMemoryLimit(limit - limit/8)
	}
	pending := o.maxPendingBytes
	if pending == 0 {
		pending = int(limit / 4) // 0 without a limit: the correlator's default
	} else if limit > 0 && int64(pending) > limit/2 {
		logger.Warn("--max-pending-bytes is over half of --memory-limit: a full pending table keeps the garbage collector running, or takes the process past the limit",
			"max_pending_bytes", pending, "memory_limit", limit)
	}
	if pending == 0 {
		pending = correlate.DefaultMaxPendingBytes
	}
	logger.Debug("memory bounds", "memory_limit", limit, "max_pending_bytes", pending)
	return pending
}

// given says whether flag name was set on the command line or from the environment.
func (o *options) given(name string) bool {
	set := false
	if o.fs != nil {
		o.fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	}
	return set
}
