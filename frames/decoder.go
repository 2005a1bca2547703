package frames

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxFrameSize is Options.MaxFrameSize's default: 1 MiB. RabbitMQ's default frame_max is 131072 (128 KiB)
// and clients rarely ask for more; before Tune-Ok RabbitMQ itself allows only 8 KiB frames (FRAME_MIN_SIZE).
const DefaultMaxFrameSize = 1 << 20

// protocolHeader is what an AMQP 0-9-1 client sends first (spec 4.2.2).
var protocolHeader = [8]byte{'A', 'M', 'Q', 'P', 0, 0, 9, 1}

// frameEnd is the octet that closes every frame (spec 4.2.3).
const frameEnd = 0xCE

// Options bound the decoder. The zero value works.
type Options struct {
	// MaxFrameSize is the largest total frame (7-byte header + payload + end octet) the decoder accepts, and so the
	// most it ever buffers for one connection direction. It applies before frame_max is negotiated, when the peers
	// negotiate 0 ("no limit"), and as a ceiling over a negotiated frame_max: a connection tuned above it has its
	// decoding switched off at the first larger frame (ErrFrameTooLarge) instead of letting a peer make us buffer
	// megabytes. Zero means DefaultMaxFrameSize.
	MaxFrameSize uint32
	// Logger receives one record when decoding switches off for a connection. Nil means slog.Default().
	Logger *slog.Logger
	// Resync is for bytes that may have holes in them (passive capture, where packets get lost): a framing error
	// (unknown frame type, a frame over the limit, a bad frame-end octet, a method frame without ids) makes that
	// direction hunt for the next frame boundary it can prove (see Decoder.Resync) instead of switching decoding
	// off, and is counted in DirStats.Resyncs. A bad protocol header still switches decoding off: a stream whose
	// start was seen and is not AMQP 0-9-1 is not AMQP. The proxy leaves it off: its bytes have no holes, so a
	// framing error there is a peer's fault or ours, and guessing past it would be wrong.
	Resync bool
}

func (o *Options) maxFrameSize() uint32 {
	if o.MaxFrameSize == 0 {
		return DefaultMaxFrameSize
	}
	return max(o.MaxFrameSize, 8)
}

func (o *Options) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.Default()
	}
	return o.Logger
}

// Conn decodes the two directions of one proxied connection. Each direction has its own Decoder, written by its
// own pump goroutine; they share only what the protocol shares: frame_max (learnt from Tune / Tune-Ok) and the
// on/off switch. Both are atomic, so the two Decoders need no lock.
type Conn struct {
	h    Handler
	opts Options
	// ender is h as a WriteEnder, resolved once here rather than on every write; nil when h is not one.
	ender WriteEnder

	client, server Decoder

	// frameMax is the frame_max from Tune-Ok (client → broker); offer is the one from Tune (broker → client), used
	// until Tune-Ok is seen. tuned says Tune-Ok was seen, so a frameMax of 0 means "no limit".
	frameMax, offer atomic.Uint32
	tuned           atomic.Bool

	// failed holds the first DecodeError; once set, both Decoders only count bytes.
	failed atomic.Pointer[DecodeError]
}

// DirStats counts one direction's traffic. Frames counts the frames handed to the Handler.
type DirStats struct {
	Bytes      uint64
	Frames     uint64
	Methods    uint64
	Headers    uint64
	Bodies     uint64
	Heartbeats uint64
	// Resyncs counts the times this direction lost its place and hunted for a frame boundary (Decoder.Resync, or
	// a framing error under Options.Resync); Skipped counts the bytes passed over while hunting.
	Resyncs uint64
	Skipped uint64
}

// ConnStats is a snapshot of a Conn's counters.
type ConnStats struct {
	Client DirStats // client → broker
	Server DirStats // broker → client
	// Off says decoding was switched off (Conn.Err says why). Bytes keep being counted.
	Off bool
}

// NewConn returns the decoder pair for one proxied connection. h receives the frames of both directions, from the
// two goroutines that write the two Decoders, possibly at the same time.
func NewConn(h Handler, opts Options) *Conn {
	c := &Conn{h: h, opts: opts}
	c.ender, _ = h.(WriteEnder)
	c.client = Decoder{conn: c, dir: ClientToServer}
	c.server = Decoder{conn: c, dir: ServerToClient, protoN: len(protocolHeader)}
	c.client.frame.Dir = ClientToServer
	c.server.frame.Dir = ServerToClient
	return c
}

// ClientDecoder is the io.Writer for client → broker bytes, starting with the protocol header.
func (c *Conn) ClientDecoder() *Decoder { return &c.client }

// ServerDecoder is the io.Writer for broker → client bytes.
func (c *Conn) ServerDecoder() *Decoder { return &c.server }

// Err returns why decoding was switched off (a *DecodeError), or nil while it is on.
func (c *Conn) Err() error {
	if e := c.failed.Load(); e != nil {
		return e
	}
	return nil
}

// FrameMax returns the frame_max negotiated by Tune-Ok, or 0 before that (or when the peers chose no limit).
func (c *Conn) FrameMax() uint32 { return c.frameMax.Load() }

// Stats returns the counters. It may be called from any goroutine; each direction's counters are published at the
// end of every Write, so a snapshot lags a Write in progress.
func (c *Conn) Stats() ConnStats {
	return ConnStats{Client: c.client.stats.load(), Server: c.server.stats.load(), Off: c.failed.Load() != nil}
}

// limit is the largest total frame size accepted now.
func (c *Conn) limit() uint32 {
	ceiling := c.opts.maxFrameSize()
	fm := c.frameMax.Load()
	if !c.tuned.Load() {
		// Before Tune-Ok, trust the broker's offer if it made one: RabbitMQ will not accept more.
		fm = c.offer.Load()
	}
	if fm == 0 || fm > ceiling {
		return ceiling
	}
	return fm
}

// fail switches decoding off for the whole Conn. The first error wins and is logged once.
func (c *Conn) fail(e *DecodeError) {
	if !c.failed.CompareAndSwap(nil, e) {
		return
	}
	c.opts.logger().Warn("amqp decoding switched off; bytes keep flowing",
		slog.String("direction", e.Dir.String()), slog.Int64("offset", e.Offset), slog.String("state", e.State),
		slog.Int("frame_type", int(e.FrameType)), slog.String("bytes", e.HexSnippet()),
		slog.String("error", e.Err.Error()))
}

// dirCounters are one direction's published counters.
type dirCounters struct {
	bytes, frames, methods, headers, bodies, heartbeats, resyncs, skipped atomic.Uint64
}

func (s *dirCounters) load() DirStats {
	return DirStats{Bytes: s.bytes.Load(), Frames: s.frames.Load(), Methods: s.methods.Load(),
		Headers: s.headers.Load(), Bodies: s.bodies.Load(), Heartbeats: s.heartbeats.Load(),
		Resyncs: s.resyncs.Load(), Skipped: s.skipped.Load()}
}

// Decoder splits one direction's byte stream into frames and hands them to the Conn's Handler. It is an io.Writer
// that never fails, never blocks and never keeps p. Only one goroutine may write a Decoder.
type Decoder struct {
	conn *Conn
	dir  Direction

	// off is the stream offset of the next byte Write will look at.
	off int64
	// protoN counts protocol-header bytes seen; the client direction starts at 0, the server direction at 8.
	protoN int

	// The frame header being assembled when it straddles writes (hdrN > 0), then the header of the frame whose
	// payload is being carried.
	hdr    [7]byte
	hdrN   int
	fstart int64

	// carry collects the payload and end octet of a frame that straddles writes; carryN bytes are filled. It comes
	// from a size-classed pool and goes back as soon as the frame is complete, so an idle connection holds none.
	carry  []byte
	carryN int
	// carryNeed is the straddling frame's whole length (payload and end octet). The buffer grows towards it with
	// the bytes that arrive, not at once: memory follows what a peer sends, not what its frame header announces
	// (2,000 clients each announcing a 1 MiB frame and sending one byte would otherwise hold 2 GB).
	carryNeed int
	carryP    *[]byte // the pooled slice header, kept so Put does not allocate

	frame Frame     // reused for every Handler call
	now   time.Time // read time of the bytes being decoded, for Frame.Time

	// hunting says the decoder lost its place (Resync) and looks for the next provable frame boundary; huntBuf
	// holds the bytes from the first candidate that could not be decided yet (at most a frame's worth).
	hunting bool
	huntBuf []byte

	// Local counters, published to stats once per Write so the hot path does no atomic read-modify-write.
	n     DirStats
	stats dirCounters
}

// Write decodes p as read now. It always returns len(p), nil: decoding problems switch decoding off (see Conn.Err)
// and never reach the caller, whose job is to forward the bytes.
func (d *Decoder) Write(p []byte) (int, error) {
	return d.WriteStamped(p, time.Now())
}

// WriteStamped is Write for bytes that were read from the socket at readAt (the proxy stamps each read before it
// forwards it). Frames completed by p carry readAt as Frame.Time. It implements proxy.StampedWriter.
func (d *Decoder) WriteStamped(p []byte, readAt time.Time) (int, error) {
	d.now = readAt
	d.n.Bytes += uint64(len(p))
	if d.conn.failed.Load() == nil {
		d.decode(p)
		d.endWrite()
	}
	if d.conn.failed.Load() != nil {
		d.releaseCarry()
	}
	d.publish()
	return len(p), nil
}

func (d *Decoder) publish() {
	s := &d.stats
	s.bytes.Store(d.n.Bytes)
	s.frames.Store(d.n.Frames)
	s.methods.Store(d.n.Methods)
	s.headers.Store(d.n.Headers)
	s.bodies.Store(d.n.Bodies)
	s.heartbeats.Store(d.n.Heartbeats)
	s.resyncs.Store(d.n.Resyncs)
	s.skipped.Store(d.n.Skipped)
}

// endWrite tells a WriteEnder handler that this write is done, also after a failure in it (the frames handed over
// before the failure are good), recovering a panic like decode does.
func (d *Decoder) endWrite() {
	we := d.conn.ender
	if we == nil {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			d.conn.fail(&DecodeError{Dir: d.dir, Offset: d.off, State: "end of write",
				Err: panicError(r)})
		}
	}()
	we.EndWrite(d.dir)
}

// panicError wraps ErrPanic with the panic's type, never its value: a panic value made from wire data (a label
// value, a payload) would otherwise reach the log line and the close reason.
func panicError(v any) error { return fmt.Errorf("%w (%T)", ErrPanic, v) }

// decode walks p; a panic in here (ours or the Handler's) is turned into a DecodeError.
func (d *Decoder) decode(p []byte) {
	defer func() {
		if r := recover(); r != nil {
			d.conn.fail(&DecodeError{Dir: d.dir, Offset: d.fstart, FrameType: Type(d.hdr[0]), State: "handler",
				Snippet: append([]byte(nil), d.hdr[:]...), Err: panicError(r)})
		}
	}()
	for len(p) > 0 {
		switch {
		case d.hunting:
			p = d.hunt(p)
		case d.protoN < len(protocolHeader):
			p = d.protocolHeader(p)
		case d.carry != nil:
			if want := min(d.carryNeed, d.carryN+len(p)); want > len(d.carry) {
				d.growCarry(want)
			}
			k := copy(d.carry[d.carryN:], p)
			d.carryN += k
			d.off += int64(k)
			p = p[k:]
			if d.carryN == d.carryNeed {
				err := d.emit(d.carry[:d.carryNeed])
				if d.carry != nil { // a framing error under Options.Resync released it already
					d.releaseCarry()
				}
				if err != nil {
					return
				}
			}
		default:
			var ok bool
			if p, ok = d.frameStart(p); !ok {
				return
			}
		}
		if d.conn.failed.Load() != nil {
			return
		}
	}
}

// protocolHeader checks the client's first eight bytes, however they are split.
func (d *Decoder) protocolHeader(p []byte) []byte {
	for len(p) > 0 && d.protoN < len(protocolHeader) {
		d.hdr[min(d.protoN, len(d.hdr)-1)] = p[0]
		if p[0] != protocolHeader[d.protoN] {
			snip := make([]byte, 0, 8)
			snip = append(snip, protocolHeader[:d.protoN]...)
			snip = append(snip, p[:min(len(p), 8-d.protoN)]...)
			d.conn.fail(&DecodeError{Dir: d.dir, Offset: 0, State: "protocol header", Snippet: snip,
				Err: fmt.Errorf("%w: %s", ErrProtocolHeader, describeHeader(snip))})
			return nil
		}
		d.protoN++
		d.off++
		p = p[1:]
	}
	d.hdr = [7]byte{}
	return p
}

// describeHeader names what a wrong first packet most likely is, so the log line explains itself.
func describeHeader(b []byte) string {
	switch {
	case len(b) >= 5 && string(b[:4]) == "AMQP" && b[4] != 0:
		return "AMQP 1.0 or another AMQP version"
	case len(b) >= 7 && string(b[:4]) == "AMQP":
		return fmt.Sprintf("AMQP version %d-%d-%d", b[5], b[6], b[min(len(b)-1, 7)])
	case len(b) >= 1 && b[0] == 0x16:
		return "looks like a TLS handshake (is the client using amqps against a plain listener?)"
	case len(b) >= 3 && (string(b[:3]) == "GET" || string(b[:3]) == "POS" || string(b[:3]) == "PUT" || string(b[:3]) == "HEA"):
		return "looks like HTTP"
	}
	return "unrecognised bytes"
}

// frameStart reads a frame header (from p, or assembled across writes), checks its size, then either hands the
// whole frame over as a sub-slice of p or starts carrying it. It returns the rest of p and false if decoding
// stopped.
func (d *Decoder) frameStart(p []byte) ([]byte, bool) {
	var h []byte
	if d.hdrN == 0 && len(p) >= len(d.hdr) {
		// Fast path: the header is in p.
		d.fstart = d.off
		h, p = p[:7], p[7:]
	} else {
		if d.hdrN == 0 {
			d.fstart = d.off
		}
		k := copy(d.hdr[d.hdrN:], p)
		d.hdrN += k
		p = p[k:]
		if d.hdrN < len(d.hdr) {
			d.off += int64(k)
			return p, true
		}
		// Earlier writes advanced off past their header bytes; rewind to the frame start, and the common path below
		// advances it over the whole header.
		d.off = d.fstart
		d.hdrN = 0
		h = d.hdr[:]
	}
	d.off += 7
	typ, size := Type(h[0]), binary.BigEndian.Uint32(h[3:7])
	switch typ {
	case TypeMethod, TypeHeader, TypeBody, TypeHeartbeat:
	default:
		state, err := "frame header", fmt.Errorf("%w: unknown frame type %d", ErrMalformed, typ)
		if d.dir == ServerToClient && d.fstart == 0 && string(h[:4]) == "AMQP" {
			// The broker refuses a protocol header by sending its own and closing (spec 4.2.2).
			state, err = "protocol header", fmt.Errorf("%w: the broker answered with its protocol header, so it refused the client's", ErrProtocolHeader)
		}
		if d.framingError(h, state, err) {
			return p, true
		}
		return nil, false
	}
	// frame_max counts the 7-byte header and the end octet: payload ≤ frame_max − 8 (pitfall 4.7).
	if limit := d.conn.limit(); uint64(size)+8 > uint64(limit) {
		if d.framingError(h, "frame header", fmt.Errorf("%w: %d-byte payload, limit %d bytes in total (frame_max %d, MaxFrameSize %d)",
			ErrFrameTooLarge, size, limit, d.conn.frameMax.Load(), d.conn.opts.maxFrameSize())) {
			return p, true
		}
		return nil, false
	}
	d.frame.Type = typ
	d.frame.Channel = binary.BigEndian.Uint16(h[1:3])
	if h2 := &d.hdr; &h[0] != &h2[0] {
		copy(h2[:], h)
	}
	need := int(size) + 1
	if len(p) >= need {
		d.off += int64(need)
		if err := d.emit(p[:need]); err != nil {
			return nil, false
		}
		return p[need:], true
	}
	d.carryNeed = need
	d.carryP = getCarry(min(need, max(2*len(p), minCarry)))
	d.carry = (*d.carryP)[:min(need, cap(*d.carryP))]
	d.carryN = copy(d.carry, p)
	d.off += int64(d.carryN)
	return nil, true
}

// minCarry is the first carry buffer's size for a frame that straddles writes (then it doubles as bytes come).
const minCarry = 4 << 10

// growCarry makes the carry buffer hold at least want bytes (at most carryNeed), doubling, from the pool.
func (d *Decoder) growCarry(want int) {
	n := min(d.carryNeed, max(want, 2*len(d.carry)))
	np := getCarry(n)
	nb := (*np)[:min(d.carryNeed, cap(*np))]
	copy(nb, d.carry[:d.carryN])
	putCarry(d.carryP)
	d.carryP, d.carry = np, nb
}

// framingError handles a stream that is out of step: under Options.Resync the direction starts hunting for the
// next frame boundary and framingError returns true (go on with the bytes after the bad frame); otherwise decoding
// switches off and it returns false.
func (d *Decoder) framingError(h []byte, state string, err error) bool {
	if !d.conn.opts.Resync {
		d.failHeader(h, state, err)
		return false
	}
	d.lostSync(0)
	return true
}

func (d *Decoder) failHeader(h []byte, state string, err error) {
	d.conn.fail(&DecodeError{Dir: d.dir, Offset: d.fstart, FrameType: Type(h[0]), State: state,
		Snippet: append([]byte(nil), h...), Err: err})
}

// emit checks the end octet of a complete frame (payload followed by the end octet) and hands it to the Handler.
func (d *Decoder) emit(b []byte) error {
	payload, end := b[:len(b)-1], b[len(b)-1]
	if end != frameEnd {
		err := fmt.Errorf("%w: got 0x%02x after a %d-byte payload", ErrFrameEnd, end, len(payload))
		if d.framingError(d.hdr[:], "frame end", err) {
			return nil
		}
		return err
	}
	f := &d.frame
	f.Payload = payload
	f.Offset = d.fstart
	f.Time = d.now
	f.ClassID, f.MethodID = 0, 0
	switch f.Type {
	case TypeMethod:
		if len(payload) < 4 {
			err := fmt.Errorf("%w: %d-byte method frame has no class and method ids", ErrMalformed, len(payload))
			if d.framingError(d.hdr[:], "frame", err) {
				return nil
			}
			return err
		}
		f.ClassID = binary.BigEndian.Uint16(payload)
		f.MethodID = binary.BigEndian.Uint16(payload[2:])
		d.n.Methods++
		// A direction that lost its place (a capture picked up mid-stream, or a hole) believes no Tune: a real one
		// comes only at the start of a connection, and one found in garbage would set a frame_max that no real
		// frame fits, so the direction would never find its frames again.
		if f.ClassID == ClassConnection && (f.MethodID == 30 || f.MethodID == 31) && len(payload) >= 10 && d.n.Resyncs == 0 {
			// Tune / Tune-Ok: channel-max(2) frame-max(4) heartbeat(2). Read in place: this is the one method the
			// decoder needs for itself.
			fm := binary.BigEndian.Uint32(payload[6:10])
			if f.MethodID == 30 && d.dir == ServerToClient {
				d.conn.offer.Store(fm)
			} else if f.MethodID == 31 && d.dir == ClientToServer {
				d.conn.frameMax.Store(fm)
				d.conn.tuned.Store(true)
			}
		}
	case TypeHeader:
		d.n.Headers++
	case TypeBody:
		d.n.Bodies++
	case TypeHeartbeat:
		d.n.Heartbeats++
	}
	d.n.Frames++
	d.conn.h.HandleFrame(f)
	f.Payload = nil
	return nil
}

func (d *Decoder) releaseCarry() {
	if d.carry != nil {
		putCarry(d.carryP)
		d.carry, d.carryN, d.carryP, d.carryNeed = nil, 0, nil, 0
	}
}

// Carry buffers come from power-of-two size classes, 512 B to 16 MiB; bigger ones (only with a MaxFrameSize above
// 16 MiB) are allocated and dropped. Pooling matters because with 32 KiB reads nearly every 128 KiB body frame
// straddles writes.
const (
	minCarryShift = 9
	maxCarryShift = 24
)

var carryPools [maxCarryShift - minCarryShift + 1]sync.Pool

func carryClass(n int) int {
	if n <= 1<<minCarryShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minCarryShift
}

func getCarry(n int) *[]byte {
	c := carryClass(n)
	if c >= len(carryPools) {
		b := make([]byte, n)
		return &b
	}
	if v, ok := carryPools[c].Get().(*[]byte); ok {
		return v
	}
	b := make([]byte, 1<<(c+minCarryShift))
	return &b
}

func putCarry(p *[]byte) {
	c := carryClass(cap(*p))
	if c >= len(carryPools) || cap(*p) != 1<<(c+minCarryShift) {
		return
	}
	carryPools[c].Put(p)
}
