package capture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"sync/atomic"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// Direction says which way a connection's bytes flow.
type Direction uint8

// Directions.
const (
	ClientToServer Direction = iota // client → broker
	ServerToClient                  // broker → client
)

// StampedWriter is what a Tap's writers are: bytes and the capture time of the packet that carried them. It has
// the shape of frames.Decoder's WriteStamped (and proxy.StampedWriter), so decoders plug in as they are.
type StampedWriter interface {
	WriteStamped(p []byte, at time.Time) (int, error)
}

// ConnInfo identifies one captured TCP connection.
type ConnInfo struct {
	ID     uint64
	Client netip.AddrPort
	Server netip.AddrPort // the broker side: the port in Config.Ports
	// Start is the capture time of the first packet seen.
	Start time.Time
	// MidStream says the connection's SYN was not seen: the capture started after it opened (or the SYN was
	// lost), so its first bytes are not its first bytes.
	MidStream bool
}

// ConnEnd says how a captured connection ended.
type ConnEnd struct {
	Info   ConnInfo
	Reason string // "fin", "rst", "idle", "evicted", "capture ended"
	TLS    bool   // recognised as TLS: nothing was handed to the writers
}

// Tap receives one connection's byte streams. Any field may be nil.
type Tap struct {
	ClientToServer, ServerToClient StampedWriter
	// Gap is called when bytes of dir are missing before the next bytes written to it: lost is how many, or -1
	// when not known. The writer's state (a frame in progress) is stale.
	Gap func(dir Direction, lost int64)
	// Done is called once, after the last write.
	Done func(ConnEnd)
}

// TapFunc returns the Tap for a new connection.
type TapFunc func(ConnInfo) Tap

// Defaults of Config.
const (
	DefaultGapTimeout  = time.Second
	DefaultIdleTimeout = 10 * time.Minute
	DefaultMaxBuffered = 4 << 20
	DefaultMaxConns    = 100000
)

// Config configures a Capture. The zero value of every field but Ports works.
type Config struct {
	// Ports are the broker ports watched; a connection is captured when one end uses one of them.
	Ports []uint16
	// Tap is asked for a Tap for every new connection. Nil captures nothing.
	Tap TapFunc
	// GapTimeout is how long (in capture time) segments wait ahead of a hole before the hole is declared a gap.
	// Default DefaultGapTimeout.
	GapTimeout time.Duration
	// IdleTimeout ends a connection without a packet for this long (capture time), e.g. one whose FIN was lost.
	// Default DefaultIdleTimeout; AMQP heartbeats keep live connections busy.
	IdleTimeout time.Duration
	// MaxBuffered bounds the bytes one direction holds ahead of a hole; past it the hole is a gap. Default
	// DefaultMaxBuffered.
	MaxBuffered int
	// MaxConns bounds the connections tracked; past it the longest idle one is ended ("evicted", counted).
	// Default DefaultMaxConns.
	MaxConns int
	// OnPanic is told of a panic recovered while handling one packet (the packet is lost, counted in
	// Stats.Panics). cmd passes the process's panic guard here.
	OnPanic func(v any)
	// Logger receives per-connection debug lines. Nil discards.
	Logger *slog.Logger
}

func (c *Config) gapTimeout() time.Duration  { return orDefault(c.GapTimeout, DefaultGapTimeout) }
func (c *Config) idleTimeout() time.Duration { return orDefault(c.IdleTimeout, DefaultIdleTimeout) }
func (c *Config) maxBuffered() int           { return orDefault(c.MaxBuffered, DefaultMaxBuffered) }
func (c *Config) maxConns() int              { return orDefault(c.MaxConns, DefaultMaxConns) }

func orDefault[T int | time.Duration](v, d T) T {
	if v > 0 {
		return v
	}
	return d
}

// Stats counts what a Capture saw and lost. Kernel* are set by Live (PACKET_STATISTICS).
type Stats struct {
	Packets   uint64 // packets handed to Packet
	Bytes     uint64 // their captured bytes
	Ignored   uint64 // not TCP to a watched port (other protocols, fragments, bad headers, unsupported link)
	Truncated uint64 // packets cut short by the snap length (their missing bytes become a gap)
	Payload   uint64 // TCP payload bytes delivered to taps, both directions

	Conns     uint64 // connections seen
	ConnsOpen int64  // gauge
	MidStream uint64 // connections picked up without their SYN
	TLS       uint64 // connections recognised as TLS: counted, not decodable
	Evicted   uint64 // connections ended because MaxConns were tracked

	Gaps          uint64 // holes declared in a direction's stream
	GapBytes      uint64 // bytes known to be missing in them (holes of unknown size count 0)
	Retransmitted uint64 // payload bytes seen twice (retransmissions, overlaps), not delivered again
	Panics        uint64

	KernelPackets uint64 // packets the kernel passed the filter (live only)
	KernelDrops   uint64 // packets the kernel dropped because the ring was full (live only)
	KernelFreezes uint64 // ring queue freezes (live only)
}

type counters struct {
	packets, bytes, ignored, truncated, payload atomic.Uint64
	conns, midStream, tls, evicted              atomic.Uint64
	connsOpen                                   atomic.Int64
	gaps, gapBytes, retrans, panics             atomic.Uint64
	kPackets, kDrops, kFreezes                  atomic.Uint64
}

// Capture reassembles the TCP connections of the packets it is given. One goroutine drives it; Stats is safe from
// any. Build it with New.
type Capture struct {
	cfg   Config
	ports map[uint16]bool
	log   *slog.Logger
	conns map[flowKey]*conn
	next  uint64
	ctr   counters
	last  atomic.Int64 // capture time of the last packet, UnixNano

	// Decoding scratch, reused for every packet (gopacket's layers decode in place).
	ip4 layers.IPv4
	ip6 layers.IPv6
	tcp layers.TCP

	lastTick time.Time
	// ended remembers, for timeWait of capture time, the connections that closed (FIN or RST), so late copies of
	// their last packets start no new connection.
	ended map[flowKey]time.Time
}

// timeWait is how long a closed connection's endpoints are remembered (see Capture.ended).
const timeWait = 5 * time.Second

// New returns a Capture.
func New(cfg Config) *Capture {
	c := &Capture{cfg: cfg, ports: map[uint16]bool{}, conns: map[flowKey]*conn{}, log: cfg.Logger,
		ended: map[flowKey]time.Time{}}
	for _, p := range cfg.Ports {
		c.ports[p] = true
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return c
}

// Stats returns the counters.
func (c *Capture) Stats() Stats {
	k := &c.ctr
	return Stats{Packets: k.packets.Load(), Bytes: k.bytes.Load(), Ignored: k.ignored.Load(),
		Truncated: k.truncated.Load(), Payload: k.payload.Load(),
		Conns: k.conns.Load(), ConnsOpen: k.connsOpen.Load(), MidStream: k.midStream.Load(), TLS: k.tls.Load(),
		Evicted: k.evicted.Load(), Gaps: k.gaps.Load(), GapBytes: k.gapBytes.Load(), Retransmitted: k.retrans.Load(),
		Panics: k.panics.Load(), KernelPackets: k.kPackets.Load(), KernelDrops: k.kDrops.Load(),
		KernelFreezes: k.kFreezes.Load()}
}

// LastPacketTime is the capture time of the last packet handed to Packet (zero before the first). A replay
// gives it to the correlator as its clock.
func (c *Capture) LastPacketTime() time.Time {
	n := c.last.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// ErrNoCapability means the process may not open a packet socket: it needs CAP_NET_RAW.
var ErrNoCapability = errors.New("live capture needs CAP_NET_RAW to open an AF_PACKET socket: run it as root, or grant the binary the capability (setcap cap_net_raw+ep amqptrace)")

// ErrLinkType means a packet's link type is not one Capture decodes.
var ErrLinkType = errors.New("capture: unsupported link type")

// SupportedLinkType says whether Packet decodes lt.
func SupportedLinkType(lt layers.LinkType) bool {
	switch lt {
	case layers.LinkTypeEthernet, layers.LinkTypeLinuxSLL, layers.LinkTypeLinuxSLL2, layers.LinkTypeRaw,
		layers.LinkTypeIPv4, layers.LinkTypeIPv6, layers.LinkTypeNull, layers.LinkTypeLoop, linkTypeRawOpenBSD:
		return true
	}
	return false
}

// linkTypeRawOpenBSD is DLT_RAW's value on some systems (12), which pcap files also carry.
const linkTypeRawOpenBSD layers.LinkType = 12

// network strips the link header: the IP version (4, 6) and the IP packet, or 0.
func network(lt layers.LinkType, b []byte) (int, []byte) {
	var etype uint16
	switch lt {
	case layers.LinkTypeEthernet:
		if len(b) < 14 {
			return 0, nil
		}
		etype, b = binary.BigEndian.Uint16(b[12:14]), b[14:]
		for (etype == 0x8100 || etype == 0x88a8) && len(b) >= 4 {
			etype, b = binary.BigEndian.Uint16(b[2:4]), b[4:]
		}
	case layers.LinkTypeLinuxSLL:
		if len(b) < 16 {
			return 0, nil
		}
		etype, b = binary.BigEndian.Uint16(b[14:16]), b[16:]
	case layers.LinkTypeLinuxSLL2:
		if len(b) < 20 {
			return 0, nil
		}
		etype, b = binary.BigEndian.Uint16(b[0:2]), b[20:]
	case layers.LinkTypeNull, layers.LinkTypeLoop:
		if len(b) < 4 {
			return 0, nil
		}
		b = b[4:] // the address family, in either byte order: read the IP version instead
	case layers.LinkTypeRaw, linkTypeRawOpenBSD, layers.LinkTypeIPv4, layers.LinkTypeIPv6:
	default:
		return 0, nil
	}
	switch etype {
	case 0x0800:
		return 4, b
	case 0x86dd:
		return 6, b
	case 0:
		if len(b) > 0 {
			switch b[0] >> 4 {
			case 4:
				return 4, b
			case 6:
				return 6, b
			}
		}
	}
	return 0, nil
}

// Packet takes one captured packet: its link type, its captured bytes (borrowed for the call), its length on the
// wire (0: as captured) and its capture time. It returns ErrLinkType for a link type Capture does not decode.
func (c *Capture) Packet(lt layers.LinkType, data []byte, wireLen int, at time.Time) (err error) {
	c.ctr.packets.Add(1)
	c.ctr.bytes.Add(uint64(len(data)))
	if !SupportedLinkType(lt) {
		c.ctr.ignored.Add(1)
		return fmt.Errorf("%w %d (%s)", ErrLinkType, int(lt), lt)
	}
	// The clock moves on only after everything up to this packet was handed over: holes given up because of
	// it (tick) and its own bytes. A correlator on this clock (a replay) then never expires a call whose reply was
	// waiting behind a hole.
	defer func() {
		if at.UnixNano() > c.last.Load() {
			c.last.Store(at.UnixNano())
		}
	}()
	defer func() {
		if v := recover(); v != nil {
			c.ctr.panics.Add(1)
			if c.cfg.OnPanic != nil {
				c.cfg.OnPanic(v)
			}
		}
	}()
	if at.Sub(c.lastTick) >= 100*time.Millisecond || at.Before(c.lastTick) {
		c.tick(at)
	}
	c.packet(lt, data, wireLen, at)
	return nil
}

func (c *Capture) packet(lt layers.LinkType, data []byte, wireLen int, at time.Time) {
	v, ipb := network(lt, data)
	var src, dst netip.Addr
	var seg []byte
	nf := gopacket.NilDecodeFeedback
	switch v {
	case 4:
		if c.ip4.DecodeFromBytes(ipb, nf) != nil || c.ip4.Protocol != layers.IPProtocolTCP ||
			c.ip4.Flags&layers.IPv4MoreFragments != 0 || c.ip4.FragOffset != 0 {
			c.ctr.ignored.Add(1)
			return
		}
		src, _ = netip.AddrFromSlice(c.ip4.SrcIP.To4())
		dst, _ = netip.AddrFromSlice(c.ip4.DstIP.To4())
		seg = c.ip4.Payload
	case 6:
		if c.ip6.DecodeFromBytes(ipb, nf) != nil || c.ip6.NextHeader != layers.IPProtocolTCP {
			c.ctr.ignored.Add(1)
			return
		}
		src, _ = netip.AddrFromSlice(c.ip6.SrcIP)
		dst, _ = netip.AddrFromSlice(c.ip6.DstIP)
		seg = c.ip6.Payload
	default:
		c.ctr.ignored.Add(1)
		return
	}
	if c.tcp.DecodeFromBytes(seg, nf) != nil {
		c.ctr.ignored.Add(1)
		return
	}
	t := &c.tcp
	sp, dp := uint16(t.SrcPort), uint16(t.DstPort)
	if !c.ports[sp] && !c.ports[dp] {
		c.ctr.ignored.Add(1)
		return
	}
	// A packet cut by the snap length carries less payload than its headers announce: the rest is a gap.
	missing := 0
	if wireLen > len(data) {
		missing = wireLen - len(data)
		c.ctr.truncated.Add(1)
	}
	a, b := netip.AddrPortFrom(src, sp), netip.AddrPortFrom(dst, dp)
	key := keyOf(a, b)
	cn := c.conns[key]
	if cn == nil {
		if t.RST || (t.FIN && len(t.Payload) == 0) {
			return // the end of a connection we never saw: nothing to pick up
		}
		if ended, ok := c.ended[key]; ok && !t.SYN && at.Sub(ended) < timeWait {
			// A late copy of a connection that just ended (a capture of several interfaces sees each packet on
			// each, not always in order): not a new connection picked up mid-stream.
			c.ctr.retrans.Add(uint64(len(t.Payload)))
			return
		}
		cn = c.open(key, a, b, t, at)
	}
	cn.lastSeen = at
	dir := ClientToServer
	if a != cn.info.Client {
		dir = ServerToClient
	}
	h := &cn.half[dir]
	switch {
	case t.SYN && !h.valid:
		h.nextSeq, h.valid = t.Seq+1, true
	case t.SYN:
		// A copy of the SYN after the stream began (retransmitted, or the same packet seen on a second
		// interface, whose copies can come later in the file): starting over would deliver the stream's first
		// bytes again.
	case !h.valid:
		// The first segment seen of this direction (mid-stream, or its SYN was lost): its data starts the stream.
		h.nextSeq, h.valid = t.Seq, true
		if !cn.info.MidStream {
			c.gap(cn, dir, -1)
		}
	}
	if len(t.Payload) > 0 || missing > 0 {
		c.segment(cn, dir, t.Seq, t.Payload, missing, at)
	}
	if t.FIN {
		h.fin, h.finSeq = true, t.Seq+uint32(len(t.Payload)+missing)
	}
	if t.RST {
		c.end(key, cn, "rst")
		return
	}
	if cn.half[0].fin && cn.half[1].fin && len(cn.half[0].ooo) == 0 && len(cn.half[1].ooo) == 0 {
		c.end(key, cn, "fin")
	}
}

// flowKey identifies a connection by its two endpoints, in a canonical order.
type flowKey struct{ lo, hi netip.AddrPort }

func keyOf(a, b netip.AddrPort) flowKey {
	if a.Compare(b) > 0 {
		a, b = b, a
	}
	return flowKey{a, b}
}

// conn is one tracked connection.
type conn struct {
	info     ConnInfo
	tap      Tap
	half     [2]half
	lastSeen time.Time
	tls      bool
	started  [2]bool // a byte of the direction was delivered (TLS detection looks at the first)
}

// half is one direction's reassembly state.
type half struct {
	valid    bool
	nextSeq  uint32
	ooo      []segment // ahead of nextSeq, by sequence
	oooBytes int
	holeAt   time.Time // when the first segment ahead of a hole arrived
	fin      bool
	finSeq   uint32
}

type segment struct {
	seq     uint32
	data    []byte
	missing int // bytes cut by the snap length after data
	at      time.Time
}

// open starts tracking a connection. The broker is the destination of a SYN; otherwise the end on a watched port
// (the lower port when both are).
func (c *Capture) open(key flowKey, a, b netip.AddrPort, t *layers.TCP, at time.Time) *conn {
	if len(c.conns) >= c.cfg.maxConns() {
		c.evictIdlest()
	}
	client, server := a, b
	synSeen := t.SYN
	switch {
	case t.SYN && !t.ACK:
	case t.SYN && t.ACK:
		client, server = b, a
	case c.ports[a.Port()] && (!c.ports[b.Port()] || a.Port() < b.Port()):
		client, server = b, a
	}
	c.next++
	cn := &conn{info: ConnInfo{ID: c.next, Client: client, Server: server, Start: at, MidStream: !synSeen}}
	c.ctr.conns.Add(1)
	c.ctr.connsOpen.Add(1)
	if cn.info.MidStream {
		c.ctr.midStream.Add(1)
	}
	if c.cfg.Tap != nil {
		cn.tap = c.cfg.Tap(cn.info)
	}
	c.conns[key] = cn
	return cn
}

// segment places one segment's payload (data, then missing bytes cut by the snap length) in dir's stream, then
// delivers what was held behind it.
func (c *Capture) segment(cn *conn, dir Direction, seq uint32, data []byte, missing int, at time.Time) {
	if c.place(cn, dir, seq, data, missing, at) {
		c.drain(cn, dir)
	}
}

// place delivers a segment that starts at or before the stream's next byte (trimming what was delivered
// already) and returns true, or holds one that starts after it and returns false.
func (c *Capture) place(cn *conn, dir Direction, seq uint32, data []byte, missing int, at time.Time) bool {
	h := &cn.half[dir]
	diff := int32(seq - h.nextSeq)
	if diff > 0 {
		c.hold(cn, dir, seq, data, missing, at)
		return false
	}
	if diff < 0 {
		over := int(-diff)
		if over >= len(data)+missing {
			c.ctr.retrans.Add(uint64(len(data) + missing))
			return true
		}
		if over >= len(data) {
			missing -= over - len(data)
			c.ctr.retrans.Add(uint64(len(data)))
			data = nil
		} else {
			c.ctr.retrans.Add(uint64(over))
			data = data[over:]
		}
	}
	c.deliver(cn, dir, data, missing, at)
	return true
}

// deliver hands in-sequence bytes to the tap and advances the direction.
func (c *Capture) deliver(cn *conn, dir Direction, data []byte, missing int, at time.Time) {
	h := &cn.half[dir]
	h.nextSeq += uint32(len(data) + missing)
	if len(data) > 0 {
		c.write(cn, dir, data, at)
	}
	if missing > 0 {
		c.gap(cn, dir, int64(missing))
	}
}

// drain delivers the held segments that the stream has now reached.
func (c *Capture) drain(cn *conn, dir Direction) {
	h := &cn.half[dir]
	for len(h.ooo) > 0 {
		s := h.ooo[0]
		diff := int32(s.seq - h.nextSeq)
		if diff > 0 {
			h.holeAt = s.at // a new hole: its wait starts with the segment right after it
			return
		}
		h.ooo = h.ooo[1:]
		h.oooBytes -= len(s.data)
		if len(h.ooo) == 0 {
			h.ooo, h.holeAt = nil, time.Time{}
		}
		c.place(cn, dir, s.seq, s.data, s.missing, s.at)
	}
}

// hold keeps a segment that arrived ahead of a hole (a copy: data is borrowed). Past MaxBuffered the hole is given
// up at once.
func (c *Capture) hold(cn *conn, dir Direction, seq uint32, data []byte, missing int, at time.Time) {
	h := &cn.half[dir]
	if len(h.ooo) == 0 {
		h.holeAt = at
	}
	s := segment{seq: seq, data: append([]byte(nil), data...), missing: missing, at: at}
	i := sort.Search(len(h.ooo), func(i int) bool { return int32(h.ooo[i].seq-seq) >= 0 })
	h.ooo = append(h.ooo, segment{})
	copy(h.ooo[i+1:], h.ooo[i:])
	h.ooo[i] = s
	h.oooBytes += len(data)
	if h.oooBytes > c.cfg.maxBuffered() {
		c.giveUp(cn, dir)
	}
}

// giveUp declares the hole before the first held segment a gap and delivers what follows it.
func (c *Capture) giveUp(cn *conn, dir Direction) {
	h := &cn.half[dir]
	if len(h.ooo) == 0 {
		return
	}
	lost := int64(h.ooo[0].seq - h.nextSeq)
	h.nextSeq = h.ooo[0].seq
	c.gap(cn, dir, lost)
	c.drain(cn, dir)
}

// gap tells the tap that bytes of dir are missing.
func (c *Capture) gap(cn *conn, dir Direction, lost int64) {
	c.ctr.gaps.Add(1)
	if lost > 0 {
		c.ctr.gapBytes.Add(uint64(lost))
	}
	if cn.tls || cn.tap.Gap == nil {
		return
	}
	cn.tap.Gap(dir, lost)
}

// write hands bytes to the tap's writer of dir, after a look at the stream's first bytes for TLS.
func (c *Capture) write(cn *conn, dir Direction, p []byte, at time.Time) {
	c.ctr.payload.Add(uint64(len(p)))
	if !cn.started[dir] {
		cn.started[dir] = true
		if !cn.tls && looksTLS(p, cn.info.MidStream, dir) {
			cn.tls = true
			c.ctr.tls.Add(1)
			c.log.Debug("TLS connection: counted, not decoded", "client", cn.info.Client, "server", cn.info.Server)
		}
	}
	if cn.tls {
		return
	}
	w := cn.tap.ClientToServer
	if dir == ServerToClient {
		w = cn.tap.ServerToClient
	}
	if w != nil {
		_, _ = w.WriteStamped(p, at)
	}
}

// looksTLS says whether the first bytes of a direction are a TLS record header: content type handshake (a new
// connection's ClientHello) or, mid-stream, any TLS content type (20-23), then version 3.x and a record length a
// TLS record can have. AMQP starts with "AMQP" or a frame type (1, 2, 3, 8), never with these.
func looksTLS(p []byte, midStream bool, dir Direction) bool {
	if len(p) < 5 || p[1] != 3 || p[2] > 4 {
		return false
	}
	n := int(binary.BigEndian.Uint16(p[3:5]))
	if n == 0 || n > 1<<14+2048 {
		return false
	}
	if midStream {
		return p[0] >= 20 && p[0] <= 23
	}
	return p[0] == 22 || (dir == ServerToClient && p[0] == 21)
}

// Tick declares the gaps whose holes have waited GapTimeout and ends connections idle for IdleTimeout, both in
// capture time. Packet calls it as capture time advances; a live capture calls it when no packet comes.
func (c *Capture) Tick(now time.Time) {
	defer func() {
		if v := recover(); v != nil {
			c.ctr.panics.Add(1)
			if c.cfg.OnPanic != nil {
				c.cfg.OnPanic(v)
			}
		}
	}()
	c.tick(now)
}

func (c *Capture) tick(now time.Time) {
	c.lastTick = now
	gt, it := c.cfg.gapTimeout(), c.cfg.idleTimeout()
	for k, at := range c.ended {
		if now.Sub(at) >= timeWait {
			delete(c.ended, k)
		}
	}
	for key, cn := range c.conns {
		for d := range cn.half {
			if h := &cn.half[d]; len(h.ooo) > 0 && now.Sub(h.holeAt) >= gt {
				c.giveUp(cn, Direction(d))
			}
		}
		if now.Sub(cn.lastSeen) >= it {
			c.end(key, cn, "idle")
		}
	}
}

// evictIdlest ends the connection that has been quiet longest.
func (c *Capture) evictIdlest() {
	var key flowKey
	var idlest *conn
	for k, cn := range c.conns {
		if idlest == nil || cn.lastSeen.Before(idlest.lastSeen) {
			key, idlest = k, cn
		}
	}
	if idlest != nil {
		c.ctr.evicted.Add(1)
		c.end(key, idlest, "evicted")
	}
}

// end delivers what is held (the holes before it become gaps) and ends the connection.
func (c *Capture) end(key flowKey, cn *conn, reason string) {
	for d := range cn.half {
		for len(cn.half[d].ooo) > 0 {
			c.giveUp(cn, Direction(d))
		}
	}
	delete(c.conns, key)
	if reason == "fin" || reason == "rst" {
		c.ended[key] = cn.lastSeen
	}
	c.ctr.connsOpen.Add(-1)
	c.log.Debug("captured connection ended", "client", cn.info.Client, "server", cn.info.Server, "reason", reason,
		"mid_stream", cn.info.MidStream, "tls", cn.tls)
	if cn.tap.Done != nil {
		cn.tap.Done(ConnEnd{Info: cn.info, Reason: reason, TLS: cn.tls})
	}
}

// Close ends every connection still tracked ("capture ended"), delivering what they hold.
func (c *Capture) Close() {
	defer func() {
		if v := recover(); v != nil {
			c.ctr.panics.Add(1)
			if c.cfg.OnPanic != nil {
				c.cfg.OnPanic(v)
			}
		}
	}()
	keys := make([]flowKey, 0, len(c.conns))
	for k := range c.conns {
		keys = append(keys, k)
	}
	// In order of their ids, so a replay ends its connections the same way every time.
	sort.Slice(keys, func(i, j int) bool { return c.conns[keys[i]].info.ID < c.conns[keys[j]].info.ID })
	for _, k := range keys {
		c.end(k, c.conns[k], "capture ended")
	}
}
