package correlate

import (
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/amqptrace/amqptrace/frames"
)

// ConnInfo identifies one proxied TCP connection.
type ConnInfo struct {
	ID       uint64
	Client   string // the client's ip:port
	Upstream string // the broker's address
	Start    time.Time
	// HandshakeUnseen says the connection's handshake was not observed: a packet capture picked it up in the
	// middle. It counts as open from its first frame (the broker accepted its login before we looked), and its
	// caller and callee are known only by their TCP peer, never by connection_name.
	HandshakeUnseen bool
}

// ConnView is what the correlator knows of a live connection, for the UI and API.
type ConnView struct {
	ID       uint64    `json:"id"`
	Client   string    `json:"client"`
	Upstream string    `json:"upstream"`
	Start    time.Time `json:"start"`
	Endpoint Endpoint  `json:"endpoint"`
	Product  string    `json:"product,omitempty"`
	Version  string    `json:"version,omitempty"`
}

// identity is a connection's immutable identity snapshot; a new one replaces it when Start-Ok or Open is seen.
type identity struct {
	ep      Endpoint
	product string
	version string
	proc    string // process key for parent links: service:pid@host, or conn:<id> without a pid
}

// closeInfo is a Connection.Close seen on the wire.
type closeInfo struct {
	code uint16
	text string
	dir  frames.Direction
}

// Conn is the correlator's view of one proxied connection: two assemblers (one per direction) and the identity.
// HandleFrame is called from the connection's two pump goroutines at once; each touches only its own direction's
// assembler, and the few values both sides read (identity, close info) are atomic pointers.
type Conn struct {
	c    *Correlator
	info ConnInfo
	asm  [2]assembler
	id   atomic.Pointer[identity]

	closeSeen atomic.Pointer[closeInfo]
	closed    atomic.Bool
	// work counts this connection's bodies queued for the body workers (bounded by workPerConn).
	work atomic.Int32

	// opened is set once the broker has answered Connection.Open with Open-Ok: the login was accepted. Until then
	// the connection is in its handshake (see handshake) and nothing of what it sends reaches the correlator.
	opened atomic.Bool
	// hs is the handshake state, guarded by hsMu; neither is touched once opened is set.
	hsMu sync.Mutex
	hs   handshake

	// st is the pairing state of this connection (consumers, confirm sequence numbers, declarations). Only the
	// correlator goroutine touches it.
	st connState
}

// event is one assembled message or topology method, handed from an assembler to the correlator goroutine. It owns
// everything it holds.
type event struct {
	kind    evKind
	conn    *Conn
	ident   *identity // the connection's identity when the method was read
	channel uint16
	// at is when the method frame was read: the message's wire timestamp (published, delivered, ...). order is
	// when the frame that completed the message was read (last body frame; header of an empty body; the method
	// of a content-less method): the broker acts on a message only once it has all of it, so causality holds on
	// order, and the correlator processes events by it (then by seq, their arrival order, which keeps each
	// connection direction in wire order).
	at, order time.Time
	seq       uint64
	// key is order as nanoseconds since the correlator's epoch, set when the event enters the reorder window:
	// the heap compares integers instead of calling time.Time's Equal and Before on every step.
	key int64
	// next links the events of one batch: an assembler hands over everything one write completed in a single
	// queue send (see Conn.EndWrite), without allocating a slice for it.
	next *event
	// kept says something holds the event after it was processed (an orphan, a possible generic reply), so it
	// is not recycled.
	kept bool

	exchange, routingKey string
	queue, tag, exType   string
	deliveryTag          uint64
	multiple, mandatory  bool
	noWait, noAck        bool
	rejected, requeue    bool // a consumer's Reject or Nack (evAck), and whether it asked for a requeue
	replyCode            uint16
	replyText            string
	qflags               *queueFlags    // Queue.Declare (not passive)
	xflags               *exchangeFlags // Exchange.Declare (not passive)
	prefetch             uint16         // Basic.Qos prefetch_count
	bodyHash             uint64         // of a whole body (publish, deliver, return): the key of an id-less message
	broker               brokerEvent    // evBroker, and a broker's Basic.Cancel
	redelivered          bool

	// Content (publish, deliver, return).
	correlationID, replyTo, expiration, messageID, amqpType string
	bodySize                                                uint64
	truncated                                               bool
	body                                                    bodyInfo

	// pubSeq is a publish's sequence number on a channel in confirm mode (0 otherwise), and for evPlainPublishes
	// the last of the run's plainRun publishes.
	pubSeq, plainRun uint64
}

type evKind uint8

const (
	evPublish evKind = iota + 1
	evDeliver        // Basic.Deliver or Basic.Get-Ok
	evReturn         // Basic.Return with the returned content
	evConfirm        // Basic.Ack broker → client
	evNack           // Basic.Nack broker → client
	evAck            // a consumer's Basic.Ack, Reject or Nack, client → broker
	evConfirmSelect
	evConsume
	evConsumeOK
	evCancel // broker's Basic.Cancel or Basic.Cancel-Ok
	evQueueDeclare
	evQueueBind
	evQueueDelete
	evExchangeDeclare
	evChannelOpen
	evGet
	evQos
	evClose  // the proxied connection ended (Conn.Close): its consumers go away
	evBroker // the broker blocked, unblocked or closed the connection, or closed a channel
	// evPlainPublishes stands for consecutive plain publishes of a confirm channel (see assembler.plain): their
	// confirms are counted, and nothing else is done with them.
	evPlainPublishes
)

// assembler turns one direction's frames into events: method → content header → body frames per channel.
type assembler struct {
	conn  *Conn
	dir   frames.Direction
	chans map[uint16]*chanAsm
	// cs is the content state, made at the direction's first content header: an idle connection, or a direction
	// that never carries a message, does not pay for it (a header and a parser are two thirds of an assembler).
	cs *contentState

	// The events completed by the current write, sent as one batch at its end (EndWrite), or earlier once
	// maxBatch are waiting, so that a handler fed without EndWrite still hands its events over.
	head, tail *event
	batched    int
	// last is the channel state lookup found last, lastID its channel.
	last   *chanAsm
	lastID uint16
	// batch numbers the batches sent (flush), so that a channel's plain-publish run is extended only while it is
	// still in the batch being built.
	batch uint64
}

// contentState is what an assembler needs only while it assembles messages.
type contentState struct {
	hdr    frames.ContentHeader
	parser bodyParser
	names  recentNames
	args   frames.MessageArgs
}

// recentNames are the last exchange names, routing keys and consumer tags a direction's messages carried, so that
// a stream of messages to the same queue makes each string once rather than once per message.
type recentNames struct {
	s    [8]string
	next int
}

// get returns b as a string, one of the recent ones when it is.
func (n *recentNames) get(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	for _, s := range n.s {
		if s == string(b) {
			return s
		}
	}
	s := string(b)
	n.s[n.next] = s
	n.next = (n.next + 1) % len(n.s)
	return s
}

// content returns the assembler's content state, making it on first use.
func (a *assembler) content() *contentState {
	if a.cs == nil {
		a.cs = &contentState{parser: a.conn.c.newBodyParser()}
	}
	return a.cs
}

// maxBatch bounds the events an assembler holds before it sends them without waiting for the end of the write.
const maxBatch = 64

// queue adds ev to the current batch.
func (a *assembler) queue(ev *event) {
	if a.tail == nil {
		a.head = ev
	} else {
		a.tail.next = ev
	}
	a.tail = ev
	a.batched++
	if a.batched >= maxBatch {
		a.flush()
	}
}

// flush sends the current batch.
func (a *assembler) flush() {
	if a.head == nil {
		return
	}
	a.conn.c.send(a.head, a.batched)
	a.head, a.tail, a.batched = nil, nil, 0
	a.batch++
}

// chanAsm is the content state of one channel in one direction. ev != nil means a content method is waiting for
// its header (size < 0) or body.
type chanAsm struct {
	ev         *event
	haveHeader bool
	comp       compression
	size, got  uint64
	buf        []byte // whole body (size <= BodyCap) when it spans frames
	head, tail []byte // first and last BodyCap/2 bytes of a larger body
	opaque     bool   // a body over BodyCap that is not a JSON object: none of it is kept
	// keep is what the channel knows beyond the content in progress.
	keep chanKeep
}

// chanKeep is the part of a channel's state that outlives its contents.
type chanKeep struct {
	// answers (client → broker side only) says a consumer of this channel acknowledges deliveries that may be
	// casts, fanouts or notifications: only then are its acks worth an event (see consumerAck).
	answers bool
	// confirm and seq (client → broker) are the channel's publisher-confirm mode and the sequence number of its
	// last publish, numbered here rather than by the correlator so that plain publishes need not reach it (see
	// plain): confirm.select starts the count at zero, channel.open ends the mode.
	confirm bool
	seq     uint64
	// run (client → broker) is the plain-publish run of this channel in the assembler's current batch (while
	// runBatch is the assembler's batch number): later plain publishes of the batch only extend it.
	run      *event
	runBatch uint64
	// plainTag (broker → client) is the consumer tag of the last plain delivery handed over; taught says that one
	// came through the default exchange, which names an unknown consumer's queue. Later plain deliveries of the
	// same consumer tell the correlator nothing more (see plain).
	plainTag string
	taught   bool
}

// endContent forgets the content the channel was assembling; what it knows of its consumers stays.
func (s *chanAsm) endContent() { *s = chanAsm{keep: s.keep} }

// NewConn registers a proxied connection; its HandleFrame is the frames.Handler for both directions.
func (c *Correlator) NewConn(info ConnInfo) *Conn {
	if info.Start.IsZero() {
		info.Start = c.now()
	}
	cn := &Conn{c: c, info: info}
	for d := range cn.asm {
		cn.asm[d] = assembler{conn: cn, dir: frames.Direction(d)}
	}
	host, port, err := net.SplitHostPort(info.Client)
	if err != nil {
		host = info.Client
	}
	pn, _ := strconv.Atoi(port)
	cn.id.Store(&identity{
		ep: cn.vet(Endpoint{Service: "unknown", Host: host, Connection: info.Client, Port: pn,
			Broker: info.Upstream}),
		proc: "conn:" + strconv.FormatUint(info.ID, 10),
	})
	if info.HandshakeUnseen {
		cn.opened.Store(true)
		c.ctr.handshakeUnseen.Add(1)
	}
	c.mu.Lock()
	c.conns[info.ID] = cn
	c.mu.Unlock()
	c.ctr.connections.Add(1)
	return cn
}

// HandleFrame implements frames.Handler. It never blocks: a finished message goes to the correlator queue with a
// non-blocking send, and a full queue drops it (counted).
func (cn *Conn) HandleFrame(f *frames.Frame) {
	if f == nil || f.Dir > frames.ServerToClient {
		return
	}
	if cn.opened.Load() {
		cn.asm[f.Dir].frame(f)
		return
	}
	cn.handshakeFrame(f)
}

// EndWrite implements frames.WriteEnder: the decoder has handed over every frame of one write, so the events they
// completed go to the correlator in one queue send instead of one each.
func (cn *Conn) EndWrite(dir frames.Direction) {
	if dir > frames.ServerToClient {
		return
	}
	if cn.opened.Load() {
		cn.asm[dir].flush()
		return
	}
	// Open-Ok may be replaying held frames into this assembler from the other direction's goroutine right now.
	cn.hsMu.Lock()
	cn.asm[dir].flush()
	cn.hsMu.Unlock()
}

// handshake is what a connection does before the broker accepts its login. Only the methods the handshake needs
// are decoded: Start-Ok (the client's identity and user name, never its response), Open (the vhost), Open-Ok and
// Close. Everything else is dropped (counted), so a client that RabbitMQ will refuse, or one that never finishes
// logging in, reaches neither the correlator nor the body parsers and inflaters nor any sink, whatever it sends.
//
// One exception keeps a legitimate first publish: a client may send its next frames as soon as it reads Open-Ok,
// and the proxy forwards Open-Ok before the broker → client tap decodes it, so frames the client sends after
// Connection.Open can reach this side first. Those are held, copied and bounded (maxHeld bytes), and replayed
// when Open-Ok arrives; a Close or the end of the connection discards them undecoded.
type handshake struct {
	openSent bool           // the client sent Connection.Open
	held     []frames.Frame // copies of client → broker frames after Open, before Open-Ok
	heldLen  int
}

// maxHeld bounds the frames held between Connection.Open and Open-Ok. A real client sends at most a channel open
// and a publish or two in that window; more than this is dropped (counted) rather than buffered.
const maxHeld = 64 << 10

// handshakeFrame handles one frame of a connection that is not open yet (see handshake).
func (cn *Conn) handshakeFrame(f *frames.Frame) {
	cn.hsMu.Lock()
	defer cn.hsMu.Unlock()
	if cn.opened.Load() {
		cn.asm[f.Dir].frame(f) // Open-Ok came while this goroutine waited for the lock
		return
	}
	c := cn.c
	hs := &cn.hs
	if f.Type == frames.TypeMethod {
		k := uint32(f.ClassID)<<16 | uint32(f.MethodID)
		switch {
		case f.Dir == frames.ClientToServer && k == 10<<16|11: // Start-Ok
			if m, err := frames.DecodeConnectionStartOK(f.Payload, identityField); err == nil {
				cn.startOK(m)
			} else {
				c.ctr.decodeFailures.Add(1)
			}
			return
		case f.Dir == frames.ClientToServer && k == 10<<16|40: // Open
			if m, err := frames.DecodeMethod(f.Payload); err == nil {
				cn.open(m.(*frames.ConnectionOpen).VirtualHost)
				hs.openSent = true
			} else {
				c.ctr.decodeFailures.Add(1)
			}
			return
		case k == 10<<16|50: // Close, either way
			if f.Dir == frames.ClientToServer && hs.openSent {
				// A client that closes right after its first publish may be read before the Open-Ok that let it
				// publish: its Close waits with its other frames for the broker's answer.
				break
			}
			// The broker refused the login, or the client gave up before asking to open.
			if m, err := frames.DecodeMethod(f.Payload); err == nil {
				m := m.(*frames.ConnectionClose)
				cn.closeSeen.CompareAndSwap(nil, &closeInfo{code: m.ReplyCode, text: CleanString(m.ReplyText, maxMessageLen), dir: f.Dir})
			}
			c.ctr.preOpen.Add(uint64(len(hs.held)))
			hs.held, hs.heldLen = nil, 0
			return
		case f.Dir == frames.ServerToClient && k == 10<<16|41: // Open-Ok
			cn.openOK()
			return
		case f.ClassID == 10: // Start, Secure, Tune and their answers: the handshake itself, nothing to count
			return
		}
	}
	if f.Type == frames.TypeHeartbeat {
		return
	}
	if f.Dir == frames.ClientToServer && hs.openSent && hs.heldLen+len(f.Payload) <= maxHeld {
		h := *f
		h.Payload = append([]byte(nil), f.Payload...)
		hs.held = append(hs.held, h)
		hs.heldLen += len(f.Payload)
		return
	}
	c.ctr.preOpen.Add(1)
}

// lateHandshake reads a Start-Ok or Open that came after the connection was taken as open: a capture that lost
// bytes before them opens the connection at the hole (Resync), or its Open-Ok arrives while they are held behind
// one. They still name the connection and its vhost. Only the writing goroutine of the client direction calls it,
// only while the vhost is unknown (the proxy always reads Open before Open-Ok, so it never gets here).
func (cn *Conn) lateHandshake(f *frames.Frame) {
	switch uint32(f.ClassID)<<16 | uint32(f.MethodID) {
	case 10<<16 | 11, 10<<16 | 40:
	default:
		return
	}
	m, err := frames.DecodeMethod(f.Payload)
	if err != nil {
		cn.c.ctr.decodeFailures.Add(1)
		return
	}
	switch m := m.(type) {
	case *frames.ConnectionStartOK:
		cn.startOK(m)
	case *frames.ConnectionOpen:
		cn.open(m.VirtualHost)
	}
}

// openOK opens the connection: the held client frames go through the client → broker assembler, in their order,
// then every later frame takes the fast path. The caller holds hsMu.
func (cn *Conn) openOK() {
	a := &cn.asm[frames.ClientToServer]
	for i := range cn.hs.held {
		a.frame(&cn.hs.held[i])
	}
	a.flush()
	cn.hs = handshake{}
	cn.opened.Store(true)
}

// Resync implements frames.Resyncer: the decoder of dir lost its place (bytes missing from a capture), so every
// message dir was assembling is abandoned (counted as a channel reset) rather than completed with frames from
// after the hole. A connection still in its handshake then counts as picked up mid-stream (HandshakeUnseen): the
// frames that would have opened it may be the ones lost, and what the broker does next shows it accepted them.
// Only the goroutine writing dir calls it; the proxy never does.
func (cn *Conn) Resync(dir frames.Direction) {
	if dir > frames.ServerToClient {
		return
	}
	a := &cn.asm[dir]
	for _, s := range a.chans {
		if s.ev != nil {
			a.reset(s)
		}
	}
	if cn.opened.Load() {
		return
	}
	cn.hsMu.Lock()
	defer cn.hsMu.Unlock()
	if !cn.opened.Load() {
		cn.openOK()
		cn.c.ctr.handshakeUnseen.Add(1)
	}
}

// Close ends the connection: it logs the connection's identity and close reason once and lets the correlator drop
// the connection's consumers (in order with the connection's other events). Calls after the first do nothing.
func (cn *Conn) Close(reason string, err error) {
	if cn.closed.Swap(true) {
		return
	}
	c := cn.c
	if !cn.opened.Load() {
		// The login never completed: what the client sent after Connection.Open is discarded undecoded.
		cn.hsMu.Lock()
		c.ctr.preOpen.Add(uint64(len(cn.hs.held)))
		cn.hs = handshake{}
		cn.hsMu.Unlock()
	}
	// The close goes through the reorder window like every other event, so the connection's consumers are
	// dropped after the deliveries read before the close, not before they are processed. It does not go through
	// the bounded queue: a close is never dropped.
	now := c.now()
	c.mu.Lock()
	delete(c.conns, cn.info.ID)
	c.closedConns = append(c.closedConns, &event{kind: evClose, conn: cn, at: now, order: now})
	c.mu.Unlock()
	c.ctr.connections.Add(-1)
	select {
	case c.closedSignal <- struct{}{}:
	default:
	}
	id := cn.id.Load()
	attrs := []any{
		slog.Uint64("conn", cn.info.ID), slog.String("client", cn.info.Client),
		slog.String("service", id.ep.Service), slog.Int("pid", id.ep.PID),
		slog.String("connection_name", id.ep.Connection), slog.String("user", id.ep.User),
		slog.String("vhost", id.ep.Vhost), slog.String("product", id.product), slog.String("product_version", id.version),
		slog.String("reason", reason), slog.Duration("age", c.now().Sub(cn.info.Start)),
	}
	if ci := cn.closeSeen.Load(); ci != nil {
		by := "client"
		if ci.dir == frames.ServerToClient {
			by = "broker"
		}
		attrs = append(attrs, slog.String("closed_by", by), slog.Int("reply_code", int(ci.code)),
			slog.String("reply_text", ci.text))
	}
	if err != nil && !errors.Is(err, net.ErrClosed) {
		attrs = append(attrs, slog.String("error", err.Error()))
	}
	c.log.Debug("amqp connection closed", attrs...)
}

// View returns the connection's current identity.
func (cn *Conn) View() ConnView {
	id := cn.id.Load()
	return ConnView{ID: cn.info.ID, Client: cn.info.Client, Upstream: cn.info.Upstream, Start: cn.info.Start,
		Endpoint: id.ep, Product: id.product, Version: id.version}
}

// Connections returns the live connections' identities.
func (c *Correlator) Connections() []ConnView {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]ConnView, 0, len(c.conns))
	for _, cn := range c.conns {
		out = append(out, cn.View())
	}
	return out
}

// interesting says whether a method is needed at all, from its ids, before anything is decoded (consumer acks
// are read before, in place: see consumerAck). Basic.Qos comes once per channel: it gives the topology view its
// consumers' prefetch.
func interesting(dir frames.Direction, class, method uint16) bool {
	k := uint32(class)<<16 | uint32(method)
	if dir == frames.ClientToServer {
		switch k {
		case 10<<16 | 50, 20<<16 | 10, 40<<16 | 10, 50<<16 | 10, 50<<16 | 20, 50<<16 | 40,
			60<<16 | 10, 60<<16 | 20, 60<<16 | 40, 60<<16 | 70, 85<<16 | 10:
			return true
		}
		return false
	}
	switch k {
	case 10<<16 | 50, 10<<16 | 60, 10<<16 | 61, 20<<16 | 40, 60<<16 | 21, 60<<16 | 30, 60<<16 | 31, 60<<16 | 50, 60<<16 | 60, 60<<16 | 71, 60<<16 | 80,
		60<<16 | 120:
		return true
	}
	return false
}

// isConsumerAck says whether a client's method frame answers a delivery: Basic.Ack (60,80), Reject (60,90) or
// Nack (60,120).
func isConsumerAck(f *frames.Frame) bool {
	return f.ClassID == 60 && (f.MethodID == 80 || f.MethodID == 90 || f.MethodID == 120)
}

// consumerAck reads a consumer's answer in place. One comes with nearly every delivery, so it is not decoded into
// a method value (an allocation each): its arguments are a delivery tag and one octet of bits (multiple, requeue;
// Reject has requeue alone). Only a channel whose consumer may be delivered a one-way message passes its answers
// on: a reply queue's (a caller's half of every RPC) only ever gets replies, and the correlator awaits no answer
// for those, nor for any consumer whose Basic.Consume it did not see.
func (a *assembler) consumerAck(f *frames.Frame) {
	if s := a.lookup(f.Channel); s == nil || !s.keep.answers {
		return
	}
	ev, bits := a.ackEvent(f, evAck)
	if ev == nil {
		return
	}
	switch f.MethodID {
	case 80:
		ev.multiple = bits&1 != 0
	case 90:
		ev.rejected, ev.requeue = true, bits&1 != 0
	case 120:
		ev.rejected, ev.multiple, ev.requeue = true, bits&1 != 0, bits&2 != 0
	}
	a.queue(ev)
}

// newEvent is an event of frame f's method, from the pool: every event there is zero (recycle and plain clear
// what they put back, and the pool makes new ones zero), so only what every event has is set, instead of clearing
// its 600-odd bytes once more.
func (a *assembler) newEvent(f *frames.Frame) *event {
	at := a.conn.c.stamp(f)
	ev := a.conn.c.events.Get().(*event)
	ev.conn, ev.ident, ev.channel, ev.at, ev.order = a.conn, a.conn.id.Load(), f.Channel, at, at
	return ev
}

// ackEvent is the event of a Basic.Ack, Reject or Nack, read in place: a delivery tag, then the octet of bits
// (multiple, requeue; Reject has requeue alone) it returns too. A payload too short for them is counted and nil.
func (a *assembler) ackEvent(f *frames.Frame, kind evKind) (*event, byte) {
	c := a.conn.c
	const args = 4 // class and method ids
	if len(f.Payload) < args+9 {
		c.ctr.decodeFailures.Add(1)
		return nil, 0
	}
	ev := a.newEvent(f)
	ev.kind, ev.deliveryTag = kind, binary.BigEndian.Uint64(f.Payload[args:])
	return ev, f.Payload[args+8]
}

// confirm reads a broker's Basic.Ack or Nack of publishes in place, as consumerAck does a consumer's.
func (a *assembler) confirm(f *frames.Frame) {
	kind := evConfirm
	if f.MethodID == 120 {
		kind = evNack
	}
	if ev, bits := a.ackEvent(f, kind); ev != nil {
		ev.multiple = bits&1 != 0
		a.queue(ev)
	}
}

// message reads the Basic.Publish or Basic.Deliver that starts a message, in place: one comes with every message,
// and its strings are the assembler's recent ones when they match.
func (a *assembler) message(f *frames.Frame) {
	c := a.conn.c
	cs := a.content()
	m := &cs.args
	if err := frames.DecodeMessageArgs(f.Payload, m); err != nil {
		c.ctr.decodeFailures.Add(1)
		return
	}
	ev := a.newEvent(f)
	ev.exchange, ev.routingKey = cs.names.get(m.Exchange), cs.names.get(m.RoutingKey)
	s := a.channel(f.Channel)
	s.ev = ev
	if m.MethodID == 40 {
		ev.kind, ev.mandatory = evPublish, m.Mandatory
		if s.keep.confirm {
			s.keep.seq++
			ev.pubSeq = s.keep.seq
		}
	} else {
		ev.kind, ev.tag, ev.deliveryTag, ev.redelivered = evDeliver, cs.names.get(m.ConsumerTag), m.DeliveryTag, m.Redelivered
	}
	*m = frames.MessageArgs{} // holds no frame past this call
}

// channel returns channel ch's state, making it on first use.
func (a *assembler) channel(ch uint16) *chanAsm {
	if s := a.lookup(ch); s != nil {
		return s
	}
	if a.chans == nil {
		a.chans = make(map[uint16]*chanAsm, 1)
	}
	s := &chanAsm{}
	a.chans[ch] = s
	a.last, a.lastID = s, ch
	return s
}

// lookup returns channel ch's state, nil if it has none. Every frame of a message looks its channel up, and most
// connections use one channel: the last one found answers without hashing (a channel's state is never removed).
func (a *assembler) lookup(ch uint16) *chanAsm {
	if a.last != nil && a.lastID == ch {
		return a.last
	}
	s := a.chans[ch]
	if s != nil {
		a.last, a.lastID = s, ch
	}
	return s
}

func (a *assembler) frame(f *frames.Frame) {
	switch f.Type {
	case frames.TypeMethod:
		a.method(f)
	case frames.TypeHeader:
		a.header(f)
	case frames.TypeBody:
		a.body(f)
	}
}

// reset abandons a content in progress on a channel (counted).
func (a *assembler) reset(s *chanAsm) {
	a.conn.c.ctr.channelResets.Add(1)
	s.endContent()
}

func (a *assembler) method(f *frames.Frame) {
	if s := a.lookup(f.Channel); s != nil {
		if s.ev != nil {
			a.reset(s) // a method frame in the middle of a content: the content is lost
		}
		if a.dir == frames.ServerToClient && (f.ClassID != 60 || f.MethodID != 60) {
			// Consumers may have changed (Consume-Ok, Cancel, a channel closed or opened): the next plain delivery
			// goes to the correlator again.
			s.keep.plainTag, s.keep.taught = "", false
		}
	}
	if a.dir == frames.ClientToServer && isConsumerAck(f) {
		a.consumerAck(f)
		return
	}
	if !interesting(a.dir, f.ClassID, f.MethodID) {
		if a.dir == frames.ClientToServer && f.ClassID == 10 && a.conn.id.Load().ep.Vhost == "" {
			a.conn.lateHandshake(f)
		}
		return
	}
	switch k := uint32(f.ClassID)<<16 | uint32(f.MethodID); {
	case k == 60<<16|40 && a.dir == frames.ClientToServer, k == 60<<16|60 && a.dir == frames.ServerToClient:
		a.message(f)
		return
	case (k == 60<<16|80 || k == 60<<16|120) && a.dir == frames.ServerToClient:
		a.confirm(f)
		return
	}
	c := a.conn.c
	m, err := frames.DecodeMethod(f.Payload)
	if err != nil {
		c.ctr.decodeFailures.Add(1)
		return
	}
	ev := a.newEvent(f)
	switch m := m.(type) {
	case *frames.ConnectionClose:
		a.conn.closeSeen.CompareAndSwap(nil, &closeInfo{code: m.ReplyCode, text: CleanString(m.ReplyText, maxMessageLen), dir: a.dir})
		if a.dir == frames.ClientToServer {
			return
		}
		ev.kind, ev.broker, ev.replyCode, ev.replyText = evBroker, brokerClosedConnection, m.ReplyCode, m.ReplyText
	case *frames.ChannelClose:
		ev.kind, ev.broker, ev.replyCode, ev.replyText = evBroker, brokerClosedChannel, m.ReplyCode, m.ReplyText
	case *frames.ConnectionBlocked:
		ev.kind, ev.broker, ev.replyText = evBroker, brokerBlocked, m.Reason
	case *frames.ConnectionUnblocked:
		ev.kind, ev.broker = evBroker, brokerUnblocked
	case *frames.ChannelOpen:
		ev.kind = evChannelOpen
		if s := a.lookup(f.Channel); s != nil {
			s.keep.confirm, s.keep.seq, s.keep.run = false, 0, nil // as the correlator's resetChannel
		}
	case *frames.ExchangeDeclare:
		ev.kind, ev.exchange, ev.exType = evExchangeDeclare, m.Exchange, m.Type
		if !m.Passive {
			ev.xflags = &exchangeFlags{durable: m.Durable, autoDelete: m.AutoDelete, internal: m.Internal}
		}
	case *frames.BasicQos:
		ev.kind, ev.prefetch = evQos, m.PrefetchCount
	case *frames.QueueDeclare:
		ev.kind, ev.queue = evQueueDeclare, m.Queue
		if !m.Passive {
			ev.qflags = flagsOf(m)
		}
	case *frames.QueueDelete:
		ev.kind, ev.queue = evQueueDelete, m.Queue
	case *frames.QueueBind:
		ev.kind, ev.queue, ev.exchange, ev.routingKey = evQueueBind, m.Queue, m.Exchange, m.RoutingKey
	case *frames.BasicConsume:
		ev.kind, ev.queue, ev.tag, ev.noWait, ev.noAck = evConsume, m.Queue, m.ConsumerTag, m.NoWait, m.NoAck
		if !m.NoAck && !privateName(m.Queue) && m.Queue != directReplyTo {
			a.channel(f.Channel).keep.answers = true
		}
	case *frames.BasicConsumeOK:
		ev.kind, ev.tag = evConsumeOK, m.ConsumerTag
	case *frames.BasicCancel:
		// Only the broker's is decoded (a client's is not interesting): its queue was deleted or its node failed.
		ev.kind, ev.tag, ev.broker = evCancel, m.ConsumerTag, brokerCancelledConsumer
	case *frames.BasicCancelOK:
		ev.kind, ev.tag = evCancel, m.ConsumerTag
	case *frames.BasicGet:
		ev.kind, ev.queue = evGet, m.Queue
	case *frames.ConfirmSelect:
		ev.kind = evConfirmSelect
		if k := &a.channel(f.Channel).keep; !k.confirm {
			k.confirm, k.seq, k.run = true, 0, nil
		}
	case *frames.BasicGetOK:
		ev.kind, ev.deliveryTag, ev.exchange, ev.routingKey = evDeliver, m.DeliveryTag, m.Exchange, m.RoutingKey
		a.channel(f.Channel).ev = ev
		return
	case *frames.BasicReturn:
		ev.kind, ev.replyCode, ev.replyText = evReturn, m.ReplyCode, m.ReplyText
		ev.exchange, ev.routingKey = m.Exchange, m.RoutingKey
		a.channel(f.Channel).ev = ev
		return
	default:
		return
	}
	a.queue(ev)
}

func (a *assembler) header(f *frames.Frame) {
	s := a.lookup(f.Channel)
	if s == nil || s.ev == nil || s.haveHeader {
		if s != nil {
			a.reset(s)
		} else {
			a.conn.c.ctr.channelResets.Add(1)
		}
		return
	}
	cs := a.content()
	if err := frames.DecodeContentHeader(f.Payload, &cs.hdr); err != nil {
		a.conn.c.ctr.decodeFailures.Add(1)
		s.endContent()
		return
	}
	p := &cs.hdr.Properties
	ev := s.ev
	ev.correlationID = truncate(p.CorrelationID, maxIDLen)
	ev.replyTo = truncate(p.ReplyTo, maxIDLen)
	ev.expiration = truncate(p.Expiration, 32)
	ev.messageID = truncate(p.MessageID, maxIDLen)
	ev.amqpType = truncate(p.Type, maxIDLen)
	ev.bodySize = cs.hdr.BodySize
	var hc string
	if v, ok := p.Headers["compression"].(string); ok {
		hc = v
	}
	s.comp = compressionOf(p.ContentEncoding, hc)
	s.haveHeader, s.size, s.got = true, cs.hdr.BodySize, 0
	if s.size == 0 {
		a.finish(s, nil, f)
	}
}

func (a *assembler) body(f *frames.Frame) {
	s := a.lookup(f.Channel)
	if s == nil || s.ev == nil || !s.haveHeader {
		if s != nil {
			a.reset(s)
		} else {
			a.conn.c.ctr.channelResets.Add(1)
		}
		return
	}
	p := f.Payload
	off := s.got
	s.got += uint64(len(p))
	if s.got > s.size {
		a.reset(s) // more body than the header announced
		return
	}
	bodyCap := uint64(a.content().parser.bodyCap)
	switch {
	case s.size <= bodyCap && off == 0 && s.got == s.size:
		// The whole body in one frame (the common case): parse it in place, copy nothing but what is kept.
		a.finish(s, p, f)
		return
	case s.size <= bodyCap:
		// Grown by what arrives (append doubles), not reserved at the announced size: 2,047 channels each
		// announcing a 1 MiB body and sending a byte must not hold 2 GB.
		if s.buf == nil {
			s.buf = make([]byte, 0, min(s.size, uint64(max(2*len(p), 4<<10))))
		}
		s.buf = append(s.buf, p...)
	default:
		// Over BodyCap: keep its head and its tail, where an oslo message has its method and its ids. A body that
		// does not start as a JSON object (and is not compressed) cannot be one, so nothing of it is copied: an
		// 8 MiB binary message cost a megabyte of copies and a search of its tail for every id key.
		if off == 0 && s.comp == compNone && !startsObject(p) {
			s.opaque = true
		}
		if s.opaque {
			break
		}
		half := bodyCap / 2
		tailStart := s.size - half
		if off < half {
			if s.head == nil {
				s.head = make([]byte, 0, min(half, uint64(max(2*len(p), 4<<10))))
			}
			n := min(uint64(len(p)), half-off)
			s.head = append(s.head, p[:n]...)
		}
		if end := off + uint64(len(p)); end > tailStart {
			if s.tail == nil {
				s.tail = make([]byte, 0, min(half, uint64(max(2*len(p), 4<<10))))
			}
			from := uint64(0)
			if off < tailStart {
				from = tailStart - off
			}
			s.tail = append(s.tail, p[from:]...)
		}
	}
	if s.got == s.size {
		a.finish(s, s.buf, f)
	}
}

// finish parses the completed content and hands the event on. body is the whole body (nil when truncated or
// empty); it may be borrowed from the frame. last is the frame that completed the content: its read time is the
// event's order key.
func (a *assembler) finish(s *chanAsm, body []byte, last *frames.Frame) {
	ev := s.ev
	c := a.conn.c
	ev.order = c.stamp(last)
	truncated := s.head != nil || s.tail != nil || s.opaque
	head, tail := s.head, s.tail
	// A whole body is looked up in (deliveries) or added to (publishes) the cache of recent publishes' parses. A
	// plain body that cannot hold JSON (the parser reads nothing from it, and nothing keys a record by it) is not
	// hashed: a stream of plain 1 KiB messages spent more on hashing them twice than on the rest of their decoding.
	var key bodyKey
	reuse, remember := false, false
	if !truncated && len(body) > 0 && (s.comp != compNone || mayBeJSONObject(body)) {
		switch {
		case a.dir == frames.ServerToClient && (ev.kind == evDeliver || ev.kind == evReturn):
			key, reuse = c.bodies.key(body, s.comp), true
		case a.dir == frames.ClientToServer && ev.kind == evPublish:
			key, remember = c.bodies.key(body, s.comp), true
		}
		ev.bodyHash = key.hash
	}
	if reuse {
		if failed, ok := c.bodies.load(key, &ev.body); ok {
			c.ctr.bodiesReused.Add(1)
			a.done(s, ev, failed)
			return
		}
	}
	if !c.cfg.InlineBodies && (s.comp != compNone || len(body) > offloadMin || len(head)+len(tail) > offloadMin) {
		// Slow to parse, or maybe: a body worker does it (see bodywork.go). The job owns its bytes: a body that
		// spans frames is this channel's own buffer, one frame's is borrowed from the decoder and copied.
		j := bodyJob{ev: ev, body: body, head: head, tail: tail, truncated: truncated, comp: s.comp, key: key,
			remember: remember}
		if len(body) > 0 && (len(s.buf) == 0 || &s.buf[0] != &body[0]) {
			j.body = append([]byte(nil), body...)
		}
		j.size = int64(len(j.body) + len(head) + len(tail))
		s.endContent()
		if c.work.submit(a.conn, j) {
			c.ctr.bodiesOffloaded.Add(1)
			return
		}
		c.ctr.bodiesShed.Add(1) // not parsed: the event goes on without the body's ids
		a.queue(ev)
		return
	}
	failed := parseContent(c, &a.content().parser, ev, body, head, tail, truncated, s.comp)
	if remember && !truncated {
		c.bodies.store(key, &ev.body, failed)
	}
	a.done(s, ev, failed)
}

// mayBeJSONObject says whether body starts, after white space, with the '{' that every body the parser reads does.
func mayBeJSONObject(body []byte) bool {
	i := skipWS(body, 0)
	return i < len(body) && body[i] == '{'
}

// done hands a finished content's event on and clears the channel.
func (a *assembler) done(s *chanAsm, ev *event, parseFailed bool) {
	if parseFailed {
		a.conn.c.ctr.parseFailures.Add(1)
	}
	s.endContent()
	if a.plain(s, ev) {
		return
	}
	a.queue(ev)
}

// plain keeps a plain message (not oslo, no reply_to, no correlation_id: what the correlator only counts, see
// genericPublish and genericDeliver) out of the correlator's queue and reorder window, and reports whether it
// did. It counts the message as the correlator would have, and as taken in (Stats.MessagesIn).
//   - A publish on a channel without confirms is dropped here, unless it is mandatory (a Basic.Return names the
//     oldest unconfirmed publish to its exchange and routing key, which must be tracked). On a confirm channel
//     its confirm must still be counted: consecutive plain publishes of one batch are handed over as one
//     evPlainPublishes event, the first one's, which the following ones extend (their sequence numbers are
//     consecutive only while no other publish came between).
//   - A delivery is handed over when it is its channel's first plain one of a consumer tag since the broker
//     last spoke of the channel's consumers, or the first through the default exchange (the correlator learns
//     a consumer whose Basic.Consume it did not see from such a delivery); later ones tell it nothing more.
func (a *assembler) plain(s *chanAsm, ev *event) bool {
	c := a.conn.c
	if c.cfg.GenericCasts || ev.body.kind != mkUnknown || ev.replyTo != "" || ev.correlationID != "" {
		return false
	}
	k := &s.keep
	switch ev.kind {
	case evPublish:
		if ev.mandatory {
			return false
		}
		c.ctr.plain.Add(1)
		if ev.body.parsed {
			c.ctr.unknown.Add(1)
		}
		if ev.pubSeq != 0 {
			if r := k.run; r != nil && k.runBatch == a.batch && r.pubSeq+1 == ev.pubSeq {
				r.pubSeq++
				r.plainRun++
				c.ctr.messagesIn.Add(1)
				break
			}
			*ev = event{kind: evPlainPublishes, conn: ev.conn, ident: ev.ident, channel: ev.channel, at: ev.at,
				order: ev.order, pubSeq: ev.pubSeq, plainRun: 1}
			k.run, k.runBatch = ev, a.batch
			a.queue(ev)
			return true
		}
		c.ctr.messagesIn.Add(1)
	case evDeliver:
		learns := ev.exchange == "" && ev.routingKey != ""
		if ev.tag != "" && (ev.tag != k.plainTag || learns && !k.taught) {
			k.plainTag, k.taught = ev.tag, learns
			return false
		}
		c.ctr.plain.Add(1)
		c.ctr.messagesIn.Add(1)
	default:
		return false
	}
	*ev = event{}
	c.events.Put(ev)
	return true
}

// stamp is when a frame's bytes were read: the proxy's stamp, else (a decoder fed without one) now.
func (c *Correlator) stamp(f *frames.Frame) time.Time {
	if !f.Time.IsZero() {
		return f.Time
	}
	return c.now()
}

// send hands a batch of n linked events to the correlator without blocking; a full queue drops the batch, and
// every event in it is counted.
func (c *Correlator) send(head *event, n int) {
	// The bound is in events, not batches: a batch holds up to maxBatch of them.
	if c.queued.Add(int64(n)) > int64(c.cfg.queueSize()) {
		c.queued.Add(-int64(n))
		c.ctr.queueDrops.Add(uint64(n))
		return
	}
	select {
	case c.q <- head:
		c.ctr.messagesIn.Add(uint64(n))
	default:
		c.queued.Add(-int64(n))
		c.ctr.queueDrops.Add(uint64(n))
	}
}

// startOK takes the client's identity from Connection.Start-Ok (client → broker goroutine).
// identityField says which client properties startOK reads; Start-Ok is decoded with only these, so a handshake
// does not build a map of every property (and the capabilities table) to throw away.
func identityField(name []byte) bool {
	switch string(name) {
	case "product", "product_version", "connection_name":
		return true
	}
	return false
}

func (cn *Conn) startOK(m *frames.ConnectionStartOK) {
	old := cn.id.Load()
	id := *old
	str := func(k string) string {
		switch v := m.ClientProperties[k].(type) {
		case string:
			return v
		case []byte:
			return string(v)
		}
		return ""
	}
	// The identity goes into every record and log line of this connection: mend it once, here.
	id.product, id.version = CleanString(str("product"), maxIDLen), CleanString(str("product_version"), maxIDLen)
	id.ep.User = CleanString(m.User, maxIDLen)
	if name := CleanString(str("connection_name"), maxIDLen); name != "" {
		id.ep.Connection = name
		id.ep.Service, id.ep.PID = splitConnectionName(name)
	} else if id.product != "" {
		id.ep.Service = id.product
	}
	id.ep = cn.vet(id.ep)
	if id.ep.PID > 0 {
		id.proc = id.ep.Service + ":" + strconv.Itoa(id.ep.PID) + "@" + id.ep.Host
	}
	cn.id.Store(&id)
}

// open takes the vhost from Connection.Open.
func (cn *Conn) open(vhost string) {
	id := *cn.id.Load()
	id.ep.Vhost = vhost
	id.ep = cn.vet(id.ep)
	cn.id.Store(&id)
}

// vet mends and redacts an identity's strings (CleanString, then the Redactor's value rules): every record of the
// connection shares its endpoint, and every log line names it, so this is the one place they are made safe.
func (cn *Conn) vet(e Endpoint) Endpoint { return cn.c.cfg.Redactor.endpoint(e.cleaned()) }

// splitConnectionName reads oslo's "<program>:<pid>:<uuid>". The program name may itself hold colons, so the pid
// is the second field from the right. A name of another shape is the service name as it is.
func splitConnectionName(name string) (string, int) {
	last := strings.LastIndexByte(name, ':')
	if last <= 0 {
		return name, 0
	}
	prev := strings.LastIndexByte(name[:last], ':')
	if prev <= 0 {
		return name, 0
	}
	pid, err := strconv.Atoi(name[prev+1 : last])
	if err != nil || pid <= 0 {
		return name, 0
	}
	return name[:prev], pid
}

// startsObject reports whether the first byte of b that is not JSON whitespace is '{' (true when there is none yet:
// the next frame decides nothing, so the body is kept).
func startsObject(b []byte) bool {
	if i := skipWS(b, 0); i < len(b) {
		return b[i] == '{'
	}
	return true
}
