package pipeline

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/amqptrace/amqptrace/capture"
	"github.com/amqptrace/amqptrace/correlate"
	"github.com/amqptrace/amqptrace/frames"
)

// PassiveConfig configures a Passive pipeline: the same decoders, correlator and sinks as Config, fed by a packet
// capture instead of the proxy.
type PassiveConfig struct {
	// Capture configures the reassembly; its Tap and OnPanic are filled by the pipeline.
	Capture capture.Config
	// Frames bounds each connection's decoders; Resync is always set (captured bytes can have holes).
	Frames frames.Options
	// Correlate, Sinks, SinkNames, SinkQueue and Logger are as in Config.
	Correlate correlate.Config
	Sinks     []correlate.Sink
	SinkNames []string
	SinkQueue int
	Logger    *slog.Logger
	// Backpressure makes the source wait (Passive.Pace) while the correlator's queue is over half full, instead of
	// letting it drop: for a file replay, which can read faster than anything can correlate. A live capture
	// leaves it off: the kernel ring must be drained.
	Backpressure bool
	// PacketClock makes the correlator's clock the capture time of the last packet read (time.Now before the
	// first), so deadlines, grace and reorder windows pass in the capture's time: a file replayed in a second
	// that spans an hour expires its calls as they expired then, not all at once. A live capture leaves it off.
	PacketClock bool
}

// Passive is amqptrace without the proxy: a packet source (capture.Live, capture.ReadFile) drives the Capture,
// whose tap feeds every captured connection's frames decoders and correlate.Conn exactly as the proxy's tap does,
// with frames stamped by packet capture time.
type Passive struct {
	log    *slog.Logger
	fopts  frames.Options
	cap    *capture.Capture
	corr   *correlate.Correlator
	fanout *correlate.Fanout
	queue  int
	back   bool
	guard  *correlate.PanicGuard

	started atomic.Bool

	reg registry
}

// NewPassive builds the parts; nothing runs until Run.
func NewPassive(cfg PassiveConfig) *Passive {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Passive{log: log, fopts: cfg.Frames, back: cfg.Backpressure,
		guard: correlate.NewPanicGuard("capture", log)}
	p.fopts.Resync = true
	if p.fopts.Logger == nil {
		p.fopts.Logger = log.With("component", "frames")
	}
	q := cfg.SinkQueue
	if q <= 0 {
		q = DefaultSinkQueue
	}
	ccorr := cfg.Correlate
	if ccorr.Reorder <= 0 {
		// Bytes behind a lost packet wait up to the capture's gap timeout before they are delivered: the reorder
		// window must cover that wait as well as the usual lag, or what they carry is processed after the events
		// read after it (a delivery after its call's record was emitted would make a second record).
		gt := cfg.Capture.GapTimeout
		if gt <= 0 {
			gt = capture.DefaultGapTimeout
		}
		ccorr.Reorder = correlate.DefaultReorder + gt
	}
	if cfg.PacketClock {
		// The reader runs ahead of the correlator by up to its queue: the correlator keeps its own time by the
		// packets it has taken in, so the reorder window is as wide in a replay as it is live.
		ccorr.EventClock, ccorr.InlineBodies = true, true
	}
	if cfg.PacketClock && ccorr.Now == nil {
		ccorr.Now = func() time.Time {
			if p.cap == nil { // correlate.New reads the clock once, before the capture exists
				return time.Now()
			}
			if t := p.cap.LastPacketTime(); !t.IsZero() {
				return t
			}
			return time.Now()
		}
	}
	p.fanout, p.corr = buildCore(ccorr, cfg.Sinks, cfg.SinkNames, q, log)
	p.queue = cfg.Correlate.QueueSize
	if p.queue <= 0 {
		p.queue = correlate.DefaultQueueSize
	}
	ccfg := cfg.Capture
	ccfg.Tap = p.tap
	ccfg.OnPanic = p.guard.Caught
	if ccfg.Logger == nil {
		ccfg.Logger = log.With("component", "capture")
	}
	p.cap = capture.New(ccfg)
	return p
}

// Capture is the reassembler the source drives.
func (p *Passive) Capture() *capture.Capture { return p.cap }

// Panics counts panics recovered in the capture (each cost one packet).
func (p *Passive) Panics() uint64 { return p.guard.Count() }

// Pace waits while the correlator's queue is over half full (when Backpressure is set), so a replay does not
// outrun correlation; it returns when ctx ends.
func (p *Passive) Pace(ctx context.Context) {
	if !p.back {
		return
	}
	for p.corr.Stats().Queued > int64(p.queue/2) && ctx.Err() == nil {
		time.Sleep(time.Millisecond) // the correlator drains on a 10ms tick; nothing to wait on but time
	}
}

// Run starts the correlator and the fan-out, runs source (which drives Capture until it returns; it must end
// with Capture().Close(), as capture.Live does), then stops the correlator (flushing what is pending) and the
// fan-out, logs the stop line, and returns source's error. Like Pipeline.Serve, when it returns every record
// has reached every sink or was counted as dropped.
func (p *Passive) Run(ctx context.Context, source func(ctx context.Context, c *capture.Capture) error) error {
	if !p.started.CompareAndSwap(false, true) {
		return ErrServed
	}
	start := time.Now()
	var srcErr error
	partsErr := runAround(ctx, p.corr, p.fanout, func() { srcErr = source(ctx, p.cap) })

	st := p.Stats()
	c := st.Capture
	if srcErr != nil && c.Packets == 0 {
		return srcErr // it never started (no capability, not a capture file): the error says it all, in one line
	}
	p.log.Info("capture stopped", "uptime", time.Since(start).Round(time.Millisecond),
		"packets", c.Packets, "connections", c.Conns, "mid_stream", c.MidStream, "tls", c.TLS,
		"kernel_drops", c.KernelDrops, "gaps", c.Gaps, "gap_bytes", c.GapBytes, "resyncs",
		st.Decode.Client.Resyncs+st.Decode.Server.Resyncs, "messages", st.Correlate.MessagesIn,
		"messages_dropped", st.Correlate.QueueDrops, "records", st.Correlate.RecordsOut,
		"records_dropped", st.RecordsDropped(), "decode_off", st.Decode.ConnsOff)
	return errors.Join(srcErr, partsErr)
}

// tap is the capture.TapFunc: a decoder pair in resynchronising mode and a correlator connection per captured
// connection. A connection picked up mid-stream starts both decoders hunting and is open in correlate without its
// handshake; a gap sends that direction's decoder back to hunting (frames.Decoder.Resync, which tells the
// correlate.Conn to abandon what it was assembling).
func (p *Passive) tap(info capture.ConnInfo) capture.Tap {
	cc := p.corr.NewConn(correlate.ConnInfo{
		ID:              info.ID,
		Client:          info.Client.String(),
		Upstream:        info.Server.String(),
		Start:           info.Start,
		HandshakeUnseen: info.MidStream,
	})
	fc := frames.NewConn(cc, p.fopts)
	if info.MidStream {
		fc.ClientDecoder().Resync(0)
		fc.ServerDecoder().Resync(0)
	}
	p.reg.add(info.ID, fc)
	return capture.Tap{
		ClientToServer: fc.ClientDecoder(),
		ServerToClient: fc.ServerDecoder(),
		Gap: func(dir capture.Direction, lost int64) {
			if dir == capture.ClientToServer {
				fc.ClientDecoder().Resync(lost)
			} else {
				fc.ServerDecoder().Resync(lost)
			}
		},
		Done: func(end capture.ConnEnd) { p.connDone(end, fc, cc) },
	}
}

func (p *Passive) connDone(end capture.ConnEnd, fc *frames.Conn, cc *correlate.Conn) {
	fc.ClientDecoder().End()
	fc.ServerDecoder().End()
	reason := end.Reason
	if end.TLS {
		reason += "; TLS, not decodable"
	}
	if err := fc.Err(); err != nil {
		reason += "; decode switched off: " + err.Error()
	}
	cc.Close(reason, nil)
	p.reg.done(end.Info.ID, fc)
}

// InFlight is the correlator's view of what is waiting now (correlate.Correlator.InFlight).
func (p *Passive) InFlight(ctx context.Context, limit int) correlate.InFlight {
	return p.corr.InFlight(ctx, limit)
}

// Topology is the correlator's view of the routing learned from the wire (correlate.Correlator.Topology).
func (p *Passive) Topology(ctx context.Context, limit int) correlate.Topology {
	return p.corr.Topology(ctx, limit)
}

// Stats returns the counters, in the Pipeline's shape: Proxy holds the captured connections and bytes, Capture
// the packet counters.

func (p *Passive) Stats() Stats {
	cs := p.cap.Stats()
	s := Stats{Correlate: p.corr.Stats(), SinkDrops: p.fanout.Dropped(), SinkPanics: p.fanout.Panics(), Capture: &cs}
	s.Proxy.ConnsOpen = cs.ConnsOpen
	s.Proxy.ConnsTotal = int64(cs.Conns)
	d := p.reg.stats()
	s.Decode = d
	s.Proxy.BytesClientToServer = int64(d.Client.Bytes)
	s.Proxy.BytesServerToClient = int64(d.Server.Bytes)
	return s
}
