package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/amqptrace/amqptrace/capture"
	"github.com/amqptrace/amqptrace/internal/pipeline"
)

// registerCapture adds the flags capture and replay share beyond the sinks.
func (o *options) registerCapture(fs *flag.FlagSet) {
	fs.StringVar(&o.ports, "port", "5672", "broker TCP port(s) to trace, comma-separated")
	fs.DurationVar(&o.gapWait, "gap-timeout", capture.DefaultGapTimeout, "how long (capture time) segments wait behind a lost packet before the hole is given up (counted as a gap)")
}

func parsePorts(s string) ([]uint16, error) {
	var out []uint16
	for _, p := range splitList(s) {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("--port %q: want port numbers (1-65535), comma-separated", s)
		}
		out = append(out, uint16(n))
	}
	if len(out) == 0 {
		return nil, errors.New("--port: no port given")
	}
	return out, nil
}

// passiveApp builds the sinks and a passive pipeline for capture or replay. A replay (fromFile) waits for the
// correlator rather than dropping, and runs the correlator on the file's clock.
func passiveApp(ctx context.Context, o *options, stdout, stderr io.Writer, fromFile bool) (*app, *pipeline.Passive, []uint16, error) {
	if err := o.check(); err != nil {
		return nil, nil, nil, err
	}
	ports, err := parsePorts(o.ports)
	if err != nil {
		return nil, nil, nil, badUsage(err)
	}
	logger, err := newLogger(o.logFormat, o.logLevel, stderr)
	if err != nil {
		return nil, nil, nil, badUsage(err)
	}
	a, core, err := newSinks(ctx, o, logger, stdout, o.source)
	if err != nil {
		return nil, nil, nil, err
	}
	ccfg := core.correlate
	pp := pipeline.NewPassive(pipeline.PassiveConfig{
		Capture:      capture.Config{Ports: ports, GapTimeout: o.gapWait},
		Frames:       core.frames,
		Correlate:    ccfg,
		Sinks:        core.sinks,
		SinkNames:    core.names,
		Logger:       logger,
		Backpressure: fromFile,
		PacketClock:  fromFile,
	})
	a.stats = pp.Stats
	a.inflight = pp.InFlight
	a.topology = pp.Topology
	if err := a.listenHTTP(); err != nil {
		return nil, nil, nil, err
	}
	return a, pp, ports, nil
}

// noAMQP is the error of a capture that saw no AMQP 0-9-1 frame at all on the ports.
func noAMQP(st pipeline.Stats, ports string, where string) error {
	if st.Decode.Client.Frames+st.Decode.Server.Frames > 0 {
		return nil
	}
	c := st.Capture
	switch {
	case c.Conns == 0:
		return fmt.Errorf("no TCP connection on port %s %s (%d packets read): is that the broker's port?", ports, where, c.Packets)
	case c.TLS == c.Conns:
		return fmt.Errorf("the %d connection(s) on port %s %s are TLS (amqps): encrypted, not decodable", c.Conns, ports, where)
	}
	return fmt.Errorf("no AMQP 0-9-1 on port %s %s: %d TCP connection(s), none decoded (%d not AMQP, %d TLS)", ports, where,
		c.Conns, st.Decode.ConnsOff, c.TLS)
}

func runCapture(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("amqptrace capture", flag.ContinueOnError)
	o := options{source: "capture"}
	o.registerSinks(fs, "127.0.0.1:8080")
	o.registerCapture(fs)
	fs.StringVar(&o.iface, "interface", "", "interface to capture on; any: all of them (default: the one the broker's port listens on, else any)")
	fs.IntVar(&o.ringMB, "ring-mb", 64, "size of the kernel's capture ring (MiB); a larger ring rides out longer bursts without drops")
	if err := parseFlags(fs, args, "amqptrace capture: trace RPCs from the packets on the broker's port (AF_PACKET; needs CAP_NET_RAW), without touching transport_url.", stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return badUsage(err)
	}
	a, pp, ports, err := passiveApp(ctx, &o, stdout, stderr, false)
	if err != nil {
		return err
	}
	iface := o.iface
	if iface == "" {
		iface = capture.DefaultInterface(ports)
	}
	a.serve = func(ctx context.Context) error {
		var started atomic.Bool
		err := pp.Run(ctx, func(ctx context.Context, c *capture.Capture) error {
			return capture.Live(ctx, capture.LiveConfig{Interface: iface, Ports: ports, RingBlocks: max(o.ringMB, 1),
				Ready: func() {
					started.Store(true)
					a.log.Info("capturing", "interface", iface, "port", o.ports, "events", o.events, "otlp", a.tracer != nil)
				}}, c)
		})
		if err != nil || !started.Load() {
			return err
		}
		if st := pp.Stats(); st.Capture.Conns > 0 {
			return noAMQP(st, o.ports, "on "+iface)
		}
		return nil
	}
	return a.run(ctx, nil)
}

func runReplay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("amqptrace replay", flag.ContinueOnError)
	o := options{source: "replay"}
	o.registerSinks(fs, "")
	o.registerCapture(fs)
	fs.BoolVar(&o.realtime, "realtime", false, "replay at the speed the packets were captured (default: as fast as it can)")
	var files []string
	fs.Usage = nil
	if err := parseReplayFlags(fs, args, &files, stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return badUsage(err)
	}
	a, pp, _, err := passiveApp(ctx, &o, stdout, stderr, true)
	if err != nil {
		return err
	}
	var total int64
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil {
			total += fi.Size()
		}
	}
	var read atomic.Int64
	a.serve = func(ctx context.Context) error {
		stopProgress := progress(stderr, &read, total, pp)
		err := pp.Run(ctx, func(ctx context.Context, c *capture.Capture) error {
			defer c.Close()
			for _, f := range files {
				if _, err := capture.ReadFile(ctx, f, c, capture.ReadOptions{Realtime: o.realtime, Pace: pp.Pace,
					Read: &read}); err != nil {
					return err
				}
			}
			return nil
		})
		stopProgress()
		if err == nil && ctx.Err() == nil {
			err = noAMQP(pp.Stats(), o.ports, "in "+strings.Join(files, ", "))
		}
		if err != nil || a.ui == nil || ctx.Err() != nil {
			return err
		}
		a.log.Info("replay done; the UI keeps serving until interrupted", "url", "http://"+a.httpLn.Addr().String()+"/")
		<-ctx.Done()
		return nil
	}
	return a.run(ctx, nil)
}

// parseReplayFlags parses flags and FILE arguments in any order.
func parseReplayFlags(fs *flag.FlagSet, args []string, files *[]string, stdout io.Writer) error {
	var flags []string
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "--":
			*files = append(*files, args[i+1:]...)
			i = len(args)
		case strings.HasPrefix(a, "-") && a != "-":
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if f := fs.Lookup(name); f != nil && !strings.Contains(a, "=") {
				if _, isBool := f.Value.(interface{ IsBoolFlag() bool }); !isBool && i+1 < len(args) {
					i++
					flags = append(flags, args[i])
				}
			}
		default:
			*files = append(*files, a)
		}
	}
	if err := parseFlags(fs, flags, "amqptrace replay FILE...: trace the RPCs in pcap or pcapng files (tcpdump -w, tshark -w, dumpcap), then exit; with --http the UI stays up until interrupted.", stdout); err != nil {
		return err
	}
	if len(*files) == 0 {
		return errors.New("replay: name at least one pcap or pcapng file")
	}
	return nil
}

// progress prints bytes read and records to a terminal twice a second, once the replay has run for two seconds
// (short ones print nothing). The returned function stops it and ends the line.
func progress(w io.Writer, read *atomic.Int64, total int64, pp *pipeline.Passive) func() {
	f, ok := w.(*os.File)
	if !ok {
		return func() {}
	}
	if fi, err := f.Stat(); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return func() {}
	}
	return progressLine(w, read, total, func() uint64 { return pp.Stats().Correlate.RecordsOut })
}

// progressLine is progress on any writer, with the record count from records.
func progressLine(w io.Writer, read *atomic.Int64, total int64, records func() uint64) func() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	printed := false
	wg.Go(func() {
		start := time.Now()
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				if printed {
					fmt.Fprintln(w)
				}
				return
			case <-t.C:
				if time.Since(start) < 2*time.Second {
					continue
				}
				printed = true
				fmt.Fprintf(w, "\rreplay: %.1f of %.1f MB, %d records", float64(read.Load())/1e6, float64(total)/1e6,
					records())
			}
		}
	})
	return func() { close(done); wg.Wait() }
}
