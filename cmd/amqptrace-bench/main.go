package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// options are the flags; the zero value is not meant to be used, parseOptions fills the defaults.
type options struct {
	amqptrace    string
	rounds       int
	duration     time.Duration
	idleConns    int
	workloads    []string
	json         bool
	otlpEndpoint string
	profile      profile
	tls          bool
	// prefix overrides the per-run name prefix (tests use it to check the cleanup).
	prefix string
}

// devHAProxy is the --amqptrace value that puts haproxy in the amqptrace slot, to develop the bench before
// bin/amqptrace builds.
const devHAProxy = "haproxy"

func parseOptions(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("amqptrace-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.amqptrace, "amqptrace", "", "amqptrace binary to measure (make bench passes bin/amqptrace); \"haproxy\" puts haproxy in its slot (development)")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds; each visits direct, haproxy and amqptrace in turn")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "measurement window per round, path and workload")
	fs.IntVar(&o.idleConns, "idle-conns", 1000, "idle connections opened through each proxy (10000 for the full figure)")
	prof := fs.String("profile", "default", "concurrency of the rpc and throughput workloads: default, or concurrent (8 callers with their own connections, prefetch 256)")
	fs.BoolVar(&o.tls, "tls", false, "the clients speak amqps to haproxy and amqptrace, which terminate TLS (certificates made for the run) and speak plain AMQP to the broker; the direct path stays plain")
	wl := fs.String("workloads", "throughput,rpc,idle,large,capture", "comma-separated subset of throughput, rpc, idle, large, capture")
	fs.BoolVar(&o.json, "json", false, "print the report as JSON on stdout")
	fs.StringVar(&o.otlpEndpoint, "otlp-endpoint", "", "passed to amqptrace as --otlp-endpoint (e.g. an unreachable 127.0.0.1:9 to check that a dead collector costs nothing)")
	fs.StringVar(&o.prefix, "name-prefix", "", "prefix of the queues and exchanges declared (default amqptrace-bench-<pid>-<random>)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	p, err := profileNamed(*prof)
	if err != nil {
		return nil, err
	}
	o.profile = p
	known := []string{"idle", "throughput", "rpc", "large", "capture"}
	for w := range strings.SplitSeq(*wl, ",") {
		w = strings.TrimSpace(w)
		if w == "" {
			continue
		}
		if !slices.Contains(known, w) {
			return nil, fmt.Errorf("--workloads: unknown workload %q (known: %s)", w, strings.Join(known, ", "))
		}
		if !slices.Contains(o.workloads, w) {
			o.workloads = append(o.workloads, w)
		}
	}
	switch {
	case len(o.workloads) == 0:
		return nil, errors.New("--workloads: none selected")
	case o.amqptrace == "":
		return nil, fmt.Errorf("--amqptrace is required: the amqptrace binary (make build writes bin/amqptrace), or %q to develop without it", devHAProxy)
	case o.rounds < 1:
		return nil, errors.New("--rounds must be at least 1")
	case o.duration <= 0:
		return nil, errors.New("--duration must be positive")
	case o.idleConns < 0 || o.idleConns > 100000:
		return nil, errors.New("--idle-conns must be between 0 and 100000")
	}
	return o, nil
}

// run is the whole command; it returns the exit code: 0, 1 when a round failed, 2 for bad usage, 130 when
// interrupted (after cleaning up and printing what was measured).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseOptions(args, stderr)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, "amqptrace-bench:", err)
		}
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	rep := &report{Config: runConfig{Rounds: o.rounds, Duration: o.duration.String(), Workloads: o.workloads,
		IdleConnsRequested: o.idleConns, Amqptrace: o.amqptrace, OTLPEndpoint: o.otlpEndpoint,
		Profile: o.profile.name, TLS: o.tls,
		DevHAProxyAsTrace: o.amqptrace == devHAProxy}}
	note := func(format string, a ...any) {
		msg := fmt.Sprintf(format, a...)
		rep.Notes = append(rep.Notes, msg)
		log.Warn(msg)
	}
	fail := func(err error) int {
		fmt.Fprintln(stderr, "amqptrace-bench:", err)
		return 1
	}

	brokerURL := os.Getenv("AMQP_URL")
	if brokerURL == "" {
		brokerURL = defaultBrokerURL
	}
	upstream, err := brokerAddr(brokerURL)
	if err != nil {
		return fail(err)
	}
	rep.Config.Broker = upstream
	if !isLoopbackHost(upstream) {
		return fail(fmt.Errorf("broker %s is not on loopback: the bench keeps all traffic on this machine", upstream))
	}
	amqptraceBin := o.amqptrace
	if amqptraceBin != devHAProxy {
		if amqptraceBin, err = exec.LookPath(o.amqptrace); err != nil {
			return fail(fmt.Errorf("--amqptrace %s: %w (run make build first)", o.amqptrace, err))
		}
	}
	haproxyBin, err := ensureHAProxy(ctx, log)
	if err != nil {
		return fail(err)
	}
	if c, err := dialAMQP(brokerURL, "amqptrace-bench:"+fmt.Sprint(os.Getpid())+":check", nil); err != nil {
		return fail(fmt.Errorf("cannot reach RabbitMQ at %s (scripts/ensure-rabbitmq.sh starts it): %w", upstream, err))
	} else {
		_ = c.Close()
	}

	var certs *benchTLS
	if o.tls {
		if certs, err = newBenchTLS(); err != nil {
			return fail(fmt.Errorf("--tls: %w", err))
		}
		defer certs.cleanup()
	}
	e := &env{duration: o.duration, warmup: min(o.duration/5, time.Second), idleConns: o.idleConns, log: log,
		profile: o.profile}
	rep.Config.Warmup = e.warmup.String()
	if slices.Contains(o.workloads, "idle") && o.idleConns > 0 {
		// Each proxied idle connection is two sockets in the proxy and one in this process.
		if got, err := raiseNoFile(uint64(2*o.idleConns + 4096)); err != nil {
			note("file limit: %v; idle connections past about %d will fail", err, got/2)
		}
		e.idleConns = checkBrokerCapacity(ctx, o.idleConns, note)
	}
	rep.Config.IdleConns = e.idleConns

	e.prefix = o.prefix
	if e.prefix == "" {
		e.prefix = fmt.Sprintf("amqptrace-bench-%d-%s", os.Getpid(), randHex(4))
	}
	e.reg = newRegistry(brokerURL)
	defer func() {
		if err := e.reg.cleanup(); err != nil {
			log.Error("cleanup: some queues or exchanges were not deleted (they expire after 10 min unused)", "err", err)
		}
	}()

	res := results{}
	failures := 0
	// stop ends a path's proxy process and adds what amqptrace says it observed and dropped to the report.
	stop := func(t *target, round string) {
		if t.proc == nil {
			return
		}
		// amqptrace gives open connections --shutdown-grace (10 s); ours are all closed by now.
		t.proc.stop(15 * time.Second)
		if t.proc.kind != "amqptrace" {
			return
		}
		obs, ok := parseStopLine(t.proc.output.String())
		if !ok {
			obs = observation{Missing: 1}
			note("%s: amqptrace did not log its totals at exit; what it dropped is unknown", round)
		}
		if rep.Observation == nil {
			rep.Observation = &observation{}
		}
		rep.Observation.add(obs)
	}
	perPath := slices.ContainsFunc(workloads, func(w workload) bool { return slices.Contains(o.workloads, w.name) })
rounds:
	for round := 1; perPath && round <= o.rounds; round++ {
		for _, p := range paths {
			if ctx.Err() != nil {
				break rounds
			}
			t, err := startPath(ctx, p, o, amqptraceBin, haproxyBin, upstream, brokerURL, e.idleConns, certs)
			if err != nil {
				if ctx.Err() == nil {
					failures++
					note("round %d, %s: %v", round, p, err)
				}
				continue
			}
			for _, w := range workloads {
				if !slices.Contains(o.workloads, w.name) {
					continue
				}
				if ctx.Err() != nil {
					break
				}
				log.Info("running", "round", fmt.Sprintf("%d/%d", round, o.rounds), "path", p, "workload", w.name)
				m, err := w.run(ctx, e, t)
				if err != nil {
					if ctx.Err() != nil {
						break
					}
					failures++
					note("round %d, %s, %s: %v", round, p, w.name, err)
					if errors.Is(err, errProxyDied) {
						break
					}
					continue
				}
				res.add(w.name, p, m)
				log.Info("done", "round", fmt.Sprintf("%d/%d", round, o.rounds), "path", p, "workload", w.name,
					"result", summary(w.name, m))
			}
			stop(t, fmt.Sprintf("round %d", round))
		}
	}
	for _, w := range slicedWorkloads {
		if !slices.Contains(o.workloads, w.name) || ctx.Err() != nil {
			continue
		}
		var targets []*target
		for _, p := range paths {
			t, err := startPath(ctx, p, o, amqptraceBin, haproxyBin, upstream, brokerURL, e.idleConns, certs)
			if err != nil {
				if ctx.Err() == nil {
					failures++
					note("%s, %s: %v", w.name, p, err)
				}
				break
			}
			targets = append(targets, t)
		}
		if len(targets) == len(paths) {
			log.Info("running", "workload", w.name, "paths", strings.Join(paths, ","), "rounds", o.rounds,
				"slice", w.slice.String())
			err := interleave(ctx, e, w, targets, o.rounds, func(round int, p string, m metrics) {
				res.add(w.name, p, m)
				log.Info("done", "round", fmt.Sprintf("%d/%d", round, o.rounds), "path", p, "workload", w.name,
					"result", summary(w.name, m))
			})
			if err != nil && ctx.Err() == nil {
				failures++
				note("%s: %v", w.name, err)
			}
		}
		for _, t := range targets {
			stop(t, w.name)
		}
	}
	if slices.Contains(o.workloads, "capture") && ctx.Err() == nil {
		if amqptraceBin == devHAProxy {
			note("capture: not measured in DEV MODE (--amqptrace haproxy): it needs the amqptrace binary")
		} else {
			log.Info("running", "workload", "capture", "rounds", o.rounds)
			if err := runCaptureWorkload(ctx, e, o.rounds, amqptraceBin, brokerURL, upstream, res, note); err != nil && ctx.Err() == nil {
				failures++
				note("capture: %v", err)
			}
		}
	}
	interrupted := ctx.Err() != nil
	if interrupted {
		note("interrupted: the figures below cover the rounds completed before Ctrl-C")
	}
	if rep.Config.DevHAProxyAsTrace {
		note("DEV MODE (--amqptrace haproxy): the amqptrace column measures a second haproxy; PASS/MISS say nothing about amqptrace")
	}
	rep.Rows = buildRows(res, o.workloads, o.tls)
	if obs := rep.Observation; obs != nil && obs.MessagesDropped+obs.RecordsDropped > 0 {
		note("amqptrace dropped %d messages and %d records: its figures above leave out the work it skipped",
			obs.MessagesDropped, obs.RecordsDropped)
	}
	if o.json {
		err = rep.writeJSON(stdout)
	} else {
		err = rep.writeTable(stdout)
	}
	switch {
	case err != nil:
		return fail(err)
	case interrupted:
		return 130
	case failures > 0:
		return 1
	}
	return 0
}

// startPath starts the proxy of path p (none for direct) and returns the target the workloads use.
func startPath(ctx context.Context, p string, o *options, amqptraceBin, haproxyBin, upstream, brokerURL string, idleConns int, certs *benchTLS) (*target, error) {
	maxconn := idleConns + 1000
	var (
		proc *proxyProc
		err  error
	)
	switch {
	case p == pathDirect:
		return &target{path: p, url: brokerURL}, nil
	case p == pathHAProxy, p == pathAmqptrace && amqptraceBin == devHAProxy:
		proc, err = startHAProxy(ctx, haproxyBin, upstream, brokerURL, maxconn, certs)
	default:
		proc, err = startAmqptrace(ctx, amqptraceBin, upstream, brokerURL, o.otlpEndpoint, certs)
	}
	if err != nil {
		return nil, err
	}
	t := &target{path: p, url: urlVia(brokerURL, proc.addr), proc: proc}
	if certs != nil {
		t.url, t.tls = amqpsURL(t.url), certs.client
	}
	return t, nil
}

// checkBrokerCapacity returns how many idle connections to open: want, or fewer when a local broker cannot take
// them, which it says through note.
func checkBrokerCapacity(ctx context.Context, want int, note func(string, ...any)) int {
	used, limit, err := brokerSockets(ctx)
	if err != nil {
		note("could not read the broker's socket limit (%v); if idle connections fail, run scripts/ensure-rabbitmq.sh --nofile 20000", err)
		return want
	}
	avail := idleCapacity(want, used, limit)
	if avail == want {
		return want
	}
	note("the broker may open %d sockets and %d are in use, so it cannot take %d idle connections: measuring with %d. "+
		"Raise its limit with scripts/ensure-rabbitmq.sh --nofile 20000 (make bench does) for the full figure", limit, used, want, avail)
	return avail
}

// idleCapacity is how many of want idle connections a broker with used of limit sockets can take, leaving room for
// the other workloads' connections and for anyone else using the broker.
func idleCapacity(want, used, limit int) int {
	const margin = 64
	return min(want, max(limit-used-margin, 0))
}
