package correlate

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Bounds of the correlator's tables (see topology.go for the topology's).
const (
	maxDeclaredPerCon = 64
	maxTracked        = 4096 // unconfirmed publishes kept per channel
	maxTrackedNoConf  = 256  // mandatory publishes kept per channel without confirms (for Basic.Return)
	maxCallees        = 64
	maxHeartbeatTimes = 64
	maxPendingConsume = 64
	maxExclusive      = 256 // exclusive queues remembered per connection, deleted with it
)

// ErrRunning is returned by Run when the Correlator is already running.
var ErrRunning = errors.New("correlate: Run called twice")

// Correlator pairs messages from every connection into records. One goroutine (Run) owns all pairing state; the
// assemblers reach it only through a bounded queue.
type Correlator struct {
	cfg Config
	now func() time.Time
	// newest is the latest read time taken in (admit), the correlator's time under Config.EventClock.
	newest time.Time
	// epoch is the origin of the integer heap keys (sinceEpoch).
	epoch time.Time
	log   *slog.Logger
	sink  Sink
	// panics counts what a panic cost: one event in process, one record in emit, or one tick of Run's loop.
	panics *PanicGuard
	q      chan *event // batches: each element heads a list linked by event.next
	// work parses the bodies that may be slow (compressed, large) away from the forwarding goroutines.
	work *bodyWorkers
	// events recycles processed events for the assemblers (see recycle). Every event in it is zero, which
	// assembler.newEvent relies on: whatever puts one back clears it first.
	events sync.Pool
	// bodies remembers recent publishes' parses for their deliveries (see bodyCache).
	bodies *bodyCache
	// queued counts the events (not batches) in q, so that QueueSize bounds events.
	queued atomic.Int64
	ctr    counters

	// mu guards conns and closedConns: touched at connection open and close, and by Connections.
	mu           sync.Mutex
	conns        map[uint64]*Conn
	closedConns  []*event // evClose events, handed over losslessly (never through the bounded queue)
	closedSignal chan struct{}
	running      atomic.Bool
	inflight     chan inflightReq // InFlight asks the Run goroutine for a view
	topoReqs     chan topologyReq // and so does Topology
	stopped      chan struct{}    // closed when Run returns

	// Everything below belongs to the Run goroutine.
	reorder time.Duration
	window  reorderWindow // events by read time, until they are Reorder old
	orphans orphanage     // replies whose call was not known yet
	table   pendingTable  // every record not yet emitted
	nextID  uint64
	// topos is the topology of each vhost: queue, exchange and binding names are the vhost's own, and a
	// broker (or a capture of several) carries many.
	topos    map[string]*topology
	handling handling
	servers  map[Endpoint]*serverLoad // what the wire shows of each server process's workers
	finished finished                 // calls already emitted, for the replies that come after them
	keyBuf   []byte                   // scratch for reply keys (appendReplyKey)
	// topoSwept is when expire last dropped the queues whose x-expires ran out (see topoSweepEvery).
	topoSwept time.Time
}

// New returns a Correlator; call Run to start pairing.
func New(cfg Config) *Correlator {
	c := &Correlator{
		cfg:          cfg,
		now:          cfg.now(),
		epoch:        cfg.now()(),
		log:          cfg.logger(),
		sink:         cfg.Sink,
		panics:       NewPanicGuard("correlator", cfg.logger()),
		q:            make(chan *event, cfg.queueSize()),
		conns:        make(map[uint64]*Conn),
		closedSignal: make(chan struct{}, 1),
		inflight:     make(chan inflightReq),
		topoReqs:     make(chan topologyReq),
		stopped:      make(chan struct{}),
		bodies:       newBodyCache(),
		work:         newBodyWorkers(),
		topos:        make(map[string]*topology),
		handling:     newHandling(cfg.maxPending()),
		servers:      make(map[Endpoint]*serverLoad),
		finished:     newFinished(),
		reorder:      cfg.reorder(),
		orphans:      orphanage{byKey: make(map[string][]*orphan)},
		table:        newPendingTable(),
	}
	c.events.New = func() any { return new(event) }
	if c.sink == nil {
		c.sink = SinkFunc(func(*Record) {})
	}
	return c
}

// newBodyParser is a parser with this correlator's payload policy and bounds (one per assembler and per worker).
func (c *Correlator) newBodyParser() bodyParser {
	return bodyParser{policy: c.cfg.Payload, red: c.cfg.Redactor, maxPayload: c.cfg.maxPayloadBytes(),
		bodyCap: c.cfg.bodyCap(), inflateFor: maxInflate}
}

// pending is one RPC that is not final yet. Its Record is filled in place and handed to the sink when final.
type pending struct {
	rec       Record
	generic   bool
	uniqueKey string    // key in byUnique, "" if none
	msgKey    string    // key in byMsg, "" if none
	replyQ    string    // where the reply goes (oslo _reply_q, or AMQP reply_to)
	topo      *topology // of the vhost it was published or delivered in

	prev, next *pending
	heapIdx    int
	seq        uint64 // insertion order: ties in the expiry heap go oldest first
	expireAt   time.Time
	expireKey  int64 // expireAt as nanoseconds since the epoch, for the heap (see sinceEpoch)
	deadline   time.Time
	done       bool

	published   bool
	held        bool // final, but waiting a window for a piece this proxy should see (see hold)
	finalSeen   bool // a final reply was published (or delivered) and not returned
	waitConfirm bool // final reply published to a queue nobody here consumes: final at its confirm
	replyUnique string
	hb          []string    // heartbeat _unique_ids seen
	size        int         // estimated bytes held (see account)
	startedAt   time.Time   // a worker took it (proven by its first call-monitor heartbeat); see saturation.go
	monitorS    int         // the caller's call-monitor timeout in seconds (oslo _timeout), 0 if none
	loaded      *serverLoad // the server process it keeps busy while it is handled
	brokerCause string      // the broker closed a connection of the caller or callee while this was pending
	// unacked counts its deliveries whose consumer's answer is awaited (acks.go), the last of them delivered at
	// lastTracked; ackHeld is the end the record was about to come to and defers for those answers (0: none).
	unacked     int
	lastTracked time.Time
	ackHeld     endReason
	expect      expectation // deliveries expected from known bindings and consumers
	gen         *genericReply
	// vals backs the record's pointer fields, and deadline its Deadline: the record is part of the pending, so
	// pointing into it keeps nothing alive that the record did not, and setting a field allocates nothing. Caller
	// and Callee point into the connection's identity snapshot, which is never changed once stored.
	vals struct {
		published, confirmed, delivered, replied, replyDelivered time.Time
		namespace, version, server                               string
	}
}

// connState is the correlator-side state of one connection. Only the Run goroutine touches it.
type connState struct {
	topo     *topology // its vhost's, from its first event on (topoOf)
	dead     bool
	chans    map[uint16]*chanState
	declared []string
	// exclusive are the exclusive queues it declared: the broker deletes them when the connection closes.
	exclusive []string
	// consumers counts the consumers tracked over all its channels (at most maxConsumersPerConn).
	consumers int
	// unacked counts the deliveries awaiting an answer over all its channels (at most maxUnackedPerConn).
	unacked int
}

// maxConsumersPerConn bounds the consumer tags one connection can make the correlator keep: an oslo process has a
// handful (topic, topic.host, fanout, reply queue), a client that sends 300,000 no-wait Basic.Consumes must not
// hold 160 MB. Past it a consumer is not tracked (counted): its deliveries do not name their queue.
const maxConsumersPerConn = 4096

type chanState struct {
	confirm        bool
	tracked        []pubEntry // publishes awaiting their confirm (or Return), in publish order
	pendingConsume []consumeReq
	consumers      map[string]consumerRef // by consumer tag
	getQueue       string
	prefetch       int // the last Basic.Qos prefetch_count (0: none seen, unlimited)
	// unacked are the deliveries of one-way records whose consumer's answer is awaited, in delivery-tag order.
	unacked []unackedDelivery
}

// consumerRef is one consumer of a channel: its queue, and the process it counts for in the topology.
type consumerRef struct {
	queue string
	who   Endpoint
	acks  bool // it answers its deliveries (not no-ack): their answers are awaited (acks.go)
}

type consumeReq struct {
	queue, tag string
	acks       bool
}

type pubEntry struct {
	// seq is the publish's sequence number (its assembler numbers a confirm channel's publishes); a run of plain
	// publishes (run > 0) stands for the run publishes up to seq, which have no record and are only counted.
	seq       uint64
	run       uint64
	exchange  string
	rk        string
	mandatory bool
	reply     bool
	returned  bool
	p         *pending
	orphan    *orphan // a reply published before its call was known
}

func (st *connState) channel(ch uint16) *chanState {
	if st.chans == nil {
		st.chans = make(map[uint16]*chanState, 1)
	}
	s := st.chans[ch]
	if s == nil {
		s = &chanState{}
		st.chans[ch] = s
	}
	return s
}

// Run pairs messages until ctx ends. Then it processes what is already queued and waiting, in order, emits every
// pending record as final with what is known (Incomplete set), and returns nil.
func (c *Correlator) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	// The queue is drained on a tick rather than by a receive that wakes this goroutine for every batch: every
	// event waits out the reorder window anyway, so there is nothing to gain from waking at once, and a send to a
	// channel with a parked receiver costs the sending pump a thread wake-up (a futex call) per write, which was
	// the largest single cost of observation under load. A send into the buffer with no receiver waiting is cheap.
	//
	// Releases and expiries run on the same tick, not on a timer armed for the oldest waiting event: under steady
	// traffic that event falls due microseconds after the last release, so such a timer fired thousands of times a
	// second, each time re-arming itself and breaking the runtime's network poller out of its sleep (a write to
	// its eventfd and a thread wake-up). A record is now at most one tick later, within a window of Reorder.
	drain := time.NewTicker(c.tick())
	defer drain.Stop()
	c.work.start(c)
	for {
		select {
		case <-ctx.Done():
			c.work.close()
			c.step() // what the workers finished before they stopped
			c.shutdown()
			close(c.stopped)
			return nil
		case req := <-c.inflight:
			req.resp <- c.inFlightView(req.limit)
		case req := <-c.topoReqs:
			c.answerTopology(req)
		case <-drain.C:
		case <-c.closedSignal:
			c.reapClosed()
		}
		c.step()
	}
}

// step takes in what is queued, then releases and expires what is due. A panic that escapes process (in the
// window or the expiry code) ends this step, counted, and the next tick goes on: the correlator never dies for
// what a connection sent.
func (c *Correlator) step() {
	defer c.panics.Recover(nil)
	// Whatever woke us, take in what is queued before anything is released or expires: an expiry must see every
	// event already handed over (a reply read just before its call's deadline is in the queue, not yet late).
	for n := len(c.q); n > 0; n-- {
		c.admitBatch(<-c.q)
	}
	c.release(c.clock())
}

// clock is the correlator's own time, on its goroutine: Config.Now, or under Config.EventClock the newest read
// time taken in.
func (c *Correlator) clock() time.Time {
	if c.cfg.EventClock {
		return c.newest
	}
	return c.now()
}

// tick is how often Run takes the queued events into the reorder window and releases what is due: drainEvery,
// or a quarter of Config.Reorder when that is shorter (but at least a millisecond). It delays each event by at
// most this much, within the window it waits out anyway, and an expiry by at most this much after its time.
func (c *Correlator) tick() time.Duration { return min(drainEvery, max(c.reorder/4, time.Millisecond)) }

// drainEvery is Run's tick when Config.Reorder is 40ms or more (see tick).
const drainEvery = 10 * time.Millisecond

// admitBatch admits every event of a batch from the queue, in the order its assembler produced them.
func (c *Correlator) admitBatch(ev *event) {
	for ev != nil {
		next := ev.next
		ev.next = nil
		c.queued.Add(-1)
		c.admit(ev)
		ev = next
	}
}

func (c *Correlator) shutdown() {
	defer c.panics.Recover(nil) // what a panic here leaves pending is not flushed; the process lives on
	for n := len(c.q); n > 0; n-- {
		select {
		case ev := <-c.q:
			c.admitBatch(ev)
		default:
			n = 1
		}
	}
	c.reapClosed()
	c.drain()
	c.expireOrphans(time.Time{}, true)
	for c.table.oldest != nil {
		if p := c.table.oldest; p.held {
			c.end(p, endHoldOver) // final already: it only waited for stragglers
		} else {
			c.end(p, endShutdown)
		}
	}
}

// process is the single entry point of pairing: every event goes through here, on the Run goroutine.
func (c *Correlator) process(ev *event) {
	// A panic loses this one event (counted); the correlator goes on with the next.
	defer c.panics.Recover(nil)
	st := &ev.conn.st
	if st.topo == nil {
		// Connection.Open, which names the vhost, comes before any event (a capture's late one too, see
		// Conn.lateHandshake): the connection stays in its vhost.
		st.topo = c.topoFor(c.vhostOf(ev))
	}
	switch ev.kind {
	case evPublish:
		c.onPublish(ev)
	case evDeliver:
		c.onDeliver(ev)
	case evReturn:
		c.onReturn(ev)
	case evConfirm, evNack:
		c.onConfirm(ev)
	case evAck:
		c.onAck(ev)
	case evConfirmSelect:
		st.channel(ev.channel).confirm = true
	case evPlainPublishes:
		if ch := st.channel(ev.channel); ch.confirm {
			c.track(ch, pubEntry{seq: ev.pubSeq, run: ev.plainRun})
		}
	case evChannelOpen:
		c.resetChannel(st, ev.channel)
	case evClose:
		c.closeConn(st)
	case evBroker:
		c.onBroker(ev)

	case evConsume:
		if st.dead {
			return
		}
		ch := st.channel(ev.channel)
		if ev.tag != "" {
			// A tag the client chose is the consumer's from now on: the broker's Consume-Ok only confirms it
			// (a refusal closes the channel, which drops it), and a capture that lost the Consume-Ok still
			// knows whose deliveries these are.
			c.addConsumer(st.topo, ch, ev, ev.tag, ev.queue, !ev.noAck)
		}
		if !ev.noWait && len(ch.pendingConsume) < maxPendingConsume {
			ch.pendingConsume = append(ch.pendingConsume, consumeReq{queue: ev.queue, tag: ev.tag, acks: !ev.noAck})
		}
	case evConsumeOK:
		ch := st.channel(ev.channel)
		if st.dead {
			return
		}
		// Consume-Oks answer in order; the answer is matched by its tag first, so one that a capture lost does
		// not shift every later consumer onto the wrong queue. The requests before the match went unanswered.
		i := slices.IndexFunc(ch.pendingConsume, func(r consumeReq) bool { return r.tag == ev.tag })
		if i < 0 {
			i = slices.IndexFunc(ch.pendingConsume, func(r consumeReq) bool { return r.tag == "" })
		}
		if i < 0 {
			return
		}
		req := ch.pendingConsume[i]
		ch.pendingConsume = ch.pendingConsume[i+1:]
		if req.tag == "" {
			c.addConsumer(st.topo, ch, ev, ev.tag, req.queue, req.acks) // the broker named it
		}
	case evCancel:
		if ch := st.chans[ev.channel]; ch != nil {
			if ev.broker == brokerCancelledConsumer {
				c.onBroker(ev)
			}
			c.removeConsumer(st, ch, ev.tag)
		}
	case evGet:
		st.channel(ev.channel).getQueue = ev.queue
	case evQos:
		st.channel(ev.channel).prefetch = int(ev.prefetch)
	case evQueueDeclare:
		st.topo.declareQueue(ev.queue, ev.qflags, st.declared, ev.ident.ep.Service)
		st.topo.markUnused(ev.queue, c.clock()) // a declaration restarts an unused queue's x-expires
		if ev.queue != "" && len(st.declared) < maxDeclaredPerCon {
			st.declared = append(st.declared, ev.queue)
		}
		if ev.queue != "" && ev.qflags != nil && ev.qflags.exclusive && len(st.exclusive) < maxExclusive {
			st.exclusive = append(st.exclusive, ev.queue)
		}
	case evQueueDelete:
		st.topo.deleteQueue(ev.queue)
	case evQueueBind:
		st.topo.bind(ev.queue, ev.exchange, ev.routingKey)
	case evExchangeDeclare:
		st.topo.declareExchange(ev.exchange, ev.exType, ev.xflags, ev.ident.ep.Service)
	}
}

// --- topology -------------------------------------------------------------------------------------------------

// maxVhosts bounds the topologies kept: past it, a new vhost shares the topology of the unnamed one (what a
// capture picked up mid-stream uses), so a broker with very many vhosts costs bounded memory.
const maxVhosts = 1000

// vhostOf is the vhost of ev's connection. A capture that lost a connection's Connection.Open (or picked it up
// mid-stream) does not know it: while one vhost is all the wire has named, the connection is taken to be in that
// one (a capture of one cloud); with several, it is in the unnamed vhost of its own.
func (c *Correlator) vhostOf(ev *event) string {
	if v := ev.conn.id.Load().ep.Vhost; v != "" || len(c.topos) != 1 {
		return v
	}
	for v := range c.topos {
		return v
	}
	return ""
}

// topoFor returns vhost's topology, creating it.
func (c *Correlator) topoFor(vhost string) *topology {
	if t := c.topos[vhost]; t != nil {
		return t
	}
	if len(c.topos) >= maxVhosts {
		vhost = ""
		if t := c.topos[vhost]; t != nil {
			return t
		}
	}
	t := newTopology()
	c.topos[vhost] = &t
	return &t
}

// addConsumer subscribes tag to queue for the process of ev's connection, with the channel's prefetch; acks says
// the consumer answers its deliveries (it is not no-ack).
func (c *Correlator) addConsumer(t *topology, ch *chanState, ev *event, tag, queue string, acks bool) {
	if ch.consumers == nil {
		ch.consumers = make(map[string]consumerRef, 4)
	}
	st := &ev.conn.st
	if old, ok := ch.consumers[tag]; ok {
		t.consumerGone(old.queue, old.who)
		t.markUnused(old.queue, c.clock())
	} else {
		if st.consumers >= maxConsumersPerConn {
			c.ctr.consumersUntracked.Add(1)
			return
		}
		st.consumers++
	}
	who := procOf(&ev.ident.ep)
	ch.consumers[tag] = consumerRef{queue: queue, who: who, acks: acks}
	t.consumerAdded(queue, who, ch.prefetch)
}

func (c *Correlator) removeConsumer(st *connState, ch *chanState, tag string) {
	t := st.topo
	if r, ok := ch.consumers[tag]; ok {
		delete(ch.consumers, tag)
		st.consumers--
		t.consumerGone(r.queue, r.who)
		t.markUnused(r.queue, c.clock())
	}
}

func (c *Correlator) resetChannel(st *connState, ch uint16) {
	s := st.chans[ch]
	if s == nil {
		return
	}
	for tag := range s.consumers {
		c.removeConsumer(st, s, tag)
	}
	c.forgetUnacked(st, s)
	delete(st.chans, ch)
}

// reapClosed takes the ended connections into the reorder window.
func (c *Correlator) reapClosed() {
	c.mu.Lock()
	closed := c.closedConns
	c.closedConns = nil
	c.mu.Unlock()
	for _, ev := range closed {
		c.admit(ev)
	}
}

// closeConn drops an ended connection's consumers, so expected-delivery counts stop counting them.
func (c *Correlator) closeConn(st *connState) {
	st.dead = true
	for ch := range st.chans {
		c.resetChannel(st, ch)
	}
	st.declared = nil
	for _, q := range st.exclusive {
		if qi := st.topo.queues[q]; qi != nil && qi.exclusive {
			st.topo.deleteQueue(q)
		}
	}
	st.exclusive = nil
}

// --- pending table ----------------------------------------------------------------------------------------------
//
// The table itself (pendingTable, pending.go) only keeps records and their indexes; what is evicted, and when a
// record is due, is decided here.

func (c *Correlator) insert(p *pending) {
	if c.table.n >= c.cfg.maxPending() && c.table.oldest != nil {
		c.ctr.evicted.Add(1)
		c.end(c.table.oldest, endEvicted)
	}
	c.table.link(p)
	c.ctr.pending.Store(int64(c.table.n))
}

// account adds p's estimated size to the table's, and evicts the oldest pending messages (emitted Incomplete,
// counted) while the table is over Config.MaxPendingBytes: a backlog of large messages is bounded by memory, not
// only by count.
func (c *Correlator) account(p *pending) {
	c.table.charge(p)
	for c.table.bytes > c.cfg.maxPendingBytes() && c.table.oldest != nil && c.table.oldest != p {
		c.ctr.evicted.Add(1)
		c.ctr.evictedBytes.Add(1)
		c.end(c.table.oldest, endEvicted)
	}
	c.ctr.pendingBytes.Store(int64(c.table.bytes))
}

func (c *Correlator) unlink(p *pending) {
	c.table.unlink(p)
	c.ctr.pendingBytes.Store(int64(c.table.bytes))
	c.ctr.pending.Store(int64(c.table.n))
}

func (c *Correlator) schedule(p *pending, at time.Time) { c.table.schedule(p, at, c.sinceEpoch(at)) }

// expire ends every pending RPC, and drops every orphan, whose time has come.
func (c *Correlator) expire(now time.Time) {
	c.expireOrphans(now, false)
	for p := c.table.due(now); p != nil; p = c.table.due(now) {
		if p.held {
			c.end(p, endHoldOver)
		} else {
			c.end(p, endDue)
		}
	}
	if now.Sub(c.topoSwept) >= topoSweepEvery {
		c.topoSwept = now
		for _, t := range c.topos {
			t.expireQueues(now)
		}
	}
}

// topoSweepEvery is how often the topologies drop the queues their x-expires has deleted: each sweep walks every
// queue, so not on every tick.
const topoSweepEvery = time.Minute

// osloKey is an oslo call's key in byMsg: its _msg_id and the queue its reply goes to, so that two callers that
// reuse an id are two calls, and a reply counts for the call it was routed to.
func osloKey(msgID, replyQ string) string { return msgID + "\x00" + replyQueue(replyQ) }

// maxRecordEvents bounds Record.Events.
const maxRecordEvents = 16

// event adds an event to a pending record (bounded: the rest are counted in the last one's Count).
func (p *pending) event(at time.Time, typ, detail string) {
	r := &p.rec
	if n := len(r.Events); n >= maxRecordEvents {
		r.Events[n-1].Count++
		return
	}
	r.Events = append(r.Events, RecordEvent{Time: at, Type: typ, Detail: detail, Count: 1})
}

// foreignReply books a reply with p's _msg_id that was not routed to p's caller: an event on p, never its result.
func (c *Correlator) foreignReply(p *pending, ev *event) {
	c.ctr.foreignReplies.Add(1)
	where := "routing key " + ev.routingKey
	if ev.exchange != "" {
		where = "exchange " + ev.exchange + ", " + where
	}
	if ev.kind == evDeliver {
		where = "delivered to " + ev.ident.ep.Service
	}
	p.event(ev.at, EventForeignReply, where+" (from "+ev.ident.ep.Service+")")
}

// followUp takes a reply whose call is no longer pending (its orphan waited a window for it): the other half of
// a reply already taken goes to the follow-up being built; a reply to a call that timed out starts a follow-up
// record that amends the call's (Record.Amends), since the caller's record said timeout and must stay so. It
// reports whether it took the reply.
func (c *Correlator) followUp(o *orphan) bool {
	key := o.key
	if p := c.table.byMsg[key]; p != nil && p.rec.Amends != 0 {
		c.onReply(p, o.ev, o.delivery, o.confirm)
		return true
	}
	b := &o.ev.body
	if b.hasEnding && !b.ending {
		return false // a heartbeat after the call ended tells nothing new
	}
	t, ok := c.finished.answered(key)
	if !ok {
		return false
	}
	orig := t.rec
	p := &pending{published: true, msgKey: key, replyQ: t.replyQ}
	c.insert(p)
	c.table.byMsg[key] = p
	c.table.byMsgID[orig.MsgID] = p
	r := &p.rec
	r.Kind, r.Protocol, r.Amends = orig.Kind, orig.Protocol, orig.ID
	r.Method, r.Topic, r.Server, r.Exchange, r.RoutingKey = orig.Method, orig.Topic, orig.Server, orig.Exchange, orig.RoutingKey
	r.Namespace, r.Version, r.MsgID, r.UniqueID = orig.Namespace, orig.Version, orig.MsgID, orig.UniqueID
	r.RequestID, r.GlobalRequestID, r.ParentID = orig.RequestID, orig.GlobalRequestID, orig.ParentID
	r.Caller, r.Callee, r.Queue = orig.Caller, orig.Callee, orig.Queue
	r.Published, r.Confirmed, r.Delivered, r.Deliveries = orig.Published, orig.Confirmed, orig.Delivered, orig.Deliveries
	r.TimeoutMS = orig.TimeoutMS
	if orig.Deadline != nil {
		p.deadline = *orig.Deadline
		r.Deadline = &p.deadline
	}
	// The other half of this reply may still come: wait a window for it, as a held record does.
	c.schedule(p, c.clock().Add(c.reorder))
	c.onReply(p, o.ev, o.delivery, o.confirm)
	return true
}

func (c *Correlator) unmatchedReply(msgKey, replyUnique string) {
	if !c.finished.straggler(msgKey, replyUnique) {
		c.ctr.unmatchedReplies.Add(1)
	}
}

// finalize computes the spans, numbers the record and hands it to the sink. p is dropped afterwards: nothing
// touches the record again, so sinks may keep the pointer (read-only).
func (c *Correlator) finalize(p *pending, status Status) {
	c.unlink(p)
	if l := p.loaded; l != nil {
		l.handling-- // its record is over; a worker still on it shows again when the server answers it
		p.loaded = nil
	}
	p.done = true
	r := &p.rec
	r.Status = status
	r.QueueUS = spanUS(r.Published, r.Delivered)
	r.ServerUS = spanUS(r.Delivered, r.Replied)
	r.AckUS = firstAnswerUS(r)
	switch {
	case r.Published != nil && r.ReplyDelivered != nil:
		r.DurationUS = spanUS(r.Published, r.ReplyDelivered)
	case r.Published != nil && r.Replied != nil:
		r.DurationUS = spanUS(r.Published, r.Replied)
	case r.Delivered != nil && r.ReplyDelivered != nil:
		r.DurationUS = spanUS(r.Delivered, r.ReplyDelivered)
	case r.Replied != nil:
		r.DurationUS = r.ServerUS
	default:
		r.DurationUS = r.QueueUS
	}
	c.nextID++
	r.ID = c.nextID
	r.Source = c.cfg.Source
	if r.Kind == KindCall && status == StatusTimeout && !r.LateReply && !r.Incomplete && r.Amends == 0 && p.msgKey != "" {
		c.finished.timeout(p.msgKey, p.replyQ, r) // a reply may still come, after the record: it amends this one
	}
	c.ctr.records[kindIndex(r.Kind)][statusIndex(status)].Add(1)
	c.ctr.recordsOut.Add(1)
	c.emit(r)
}

// emit cleans and redacts r (Record.edit, one pass over its strings) and hands it to the sink. A sink that panics loses this record (counted).
func (c *Correlator) emit(r *Record) {
	defer c.panics.Recover(nil)
	r.edit(c.cfg.Redactor, editClean|editRedact)
	c.sink.Record(r)
}

func spanUS(a, b *time.Time) int64 {
	if a == nil || b == nil {
		return 0
	}
	return max(b.Sub(*a).Microseconds(), 0)
}

// --- messages ---------------------------------------------------------------------------------------------------

func (c *Correlator) track(ch *chanState, e pubEntry) {
	limit := maxTrackedNoConf
	if ch.confirm {
		limit = maxTracked
	}
	if len(ch.tracked) >= limit {
		ch.tracked = ch.tracked[1:]
	}
	ch.tracked = append(ch.tracked, e)
	// A publish whose body a worker parsed can be processed after later publishes of its channel: the list stays
	// in sequence order, which the confirms' multiple flag relies on.
	for i := len(ch.tracked) - 1; ch.confirm && i > 0 && ch.tracked[i-1].seq > e.seq; i-- {
		ch.tracked[i-1], ch.tracked[i] = ch.tracked[i], ch.tracked[i-1]
	}
}

// legacyReply reads a 2012-era (Folsom) reply: published to, and delivered from, a direct exchange named after the
// call's _msg_id, with that name as its routing key. It becomes an oslo reply of that _msg_id sent to the call's
// reply destination (a Folsom call has no _reply_q, so osloKey(msgID, "")).
func legacyReply(ev *event) {
	b := &ev.body
	if b.kind != mkLegacyReply || ev.exchange == "" || ev.exchange != ev.routingKey {
		return
	}
	b.kind, b.msgID = mkReply, ev.exchange
}

// replyKey is where a reply was sent, as a byMsg key: the default exchange and the routing key for oslo, the
// per-call direct exchange for a Folsom reply, and for a delivery the queue it came from.
// It appends the key to dst, so that the lookup of every reply costs no allocation (a map index by string(bytes)
// does not copy); only a reply that must wait as an orphan makes it a string.
func appendReplyKey(dst []byte, ev *event, queue string, delivery bool) []byte {
	b := &ev.body
	dst = append(append(dst, b.msgID...), 0)
	switch {
	case ev.exchange == b.msgID:
		return dst // Folsom: the call's own exchange, osloKey(msgID, "")
	case delivery:
		return append(dst, replyQueue(queue)...)
	case ev.exchange != "":
		return append(append(dst, "\x00exchange "...), ev.exchange...)
	}
	return append(dst, replyQueue(ev.routingKey)...)
}

func (c *Correlator) onPublish(ev *event) {
	legacyReply(ev)
	ch := ev.conn.st.channel(ev.channel)
	entry := pubEntry{exchange: ev.exchange, rk: ev.routingKey, mandatory: ev.mandatory}
	if ch.confirm {
		entry.seq = ev.pubSeq
	}
	b := &ev.body
	switch {
	case b.kind == mkRequest || b.kind == mkNotification:
		p := c.request(ev, requestKind(ev))
		c.published(p, ev)
		entry.p = p
		c.adopt(p)
	case b.kind == mkReply:
		// An oslo reply goes to the caller's reply queue through the default exchange: only one sent there
		// answers the call. One sent elsewhere with the call's _msg_id (a forged or confused server) is not
		// what the caller got.
		c.keyBuf = appendReplyKey(c.keyBuf[:0], ev, "", false)
		if p := c.table.byMsg[string(c.keyBuf)]; p != nil {
			entry.p, entry.reply = p, true
			c.onReply(p, ev, false, ch.confirm)
		} else if p := c.table.byMsgID[b.msgID]; p != nil {
			c.foreignReply(p, ev)
		} else if key := string(c.keyBuf); !c.finished.straggler(key, b.uniqueID) {
			// Its call may still come (read earlier, tapped later than the window): wait as an orphan.
			entry.orphan, entry.reply = c.addOrphan(key, ev, "", false, ch.confirm), true
		}
	default:
		entry.p, entry.reply = c.genericPublish(ev, ch.confirm)
	}
	if ch.confirm || ev.mandatory {
		c.track(ch, entry)
	}
}

func requestKind(ev *event) Kind {
	switch {
	case ev.body.kind == mkNotification:
		return KindNotification
	case ev.body.msgID != "":
		return KindCall
	case strings.HasSuffix(ev.exchange, "_fanout"):
		return KindFanout
	}
	return KindCast
}

// request finds or creates the pending record of an oslo request (by _unique_id): its publish and its deliveries
// meet there in whatever order the queue brings them.
func (c *Correlator) request(ev *event, kind Kind) *pending {
	b := &ev.body
	key := b.uniqueID
	switch {
	case key != "":
	case b.messageID != "":
		key = "nid\x00" + b.messageID // a notification without _unique_id: its message_id is as unique
	case b.msgID != "":
		key = "msg\x00" + b.msgID // a 2012-era call: no _unique_id, its _msg_id is as unique
	case ev.bodyHash != 0:
		// A 2012-era cast: nothing in it is unique but the body, which its deliveries carry unchanged.
		key = "body\x00" + strconv.FormatUint(ev.bodyHash, 16)
	}
	if p := c.table.byUnique[key]; key != "" && p != nil {
		return p
	}
	p := &pending{}
	c.insert(p)
	if key != "" {
		p.uniqueKey = key
		c.table.byUnique[key] = p
	}
	r := &p.rec
	r.Kind, r.Protocol = kind, "oslo"
	r.Exchange, r.RoutingKey = ev.exchange, ev.routingKey
	r.Method, r.MsgID, r.UniqueID = b.method, b.msgID, b.uniqueID
	r.RequestID, r.GlobalRequestID, r.MessageID = b.requestID, b.globalRequestID, b.messageID
	if b.hasNamespace {
		p.vals.namespace = b.namespace
		r.Namespace = &p.vals.namespace
	}
	if b.hasVersion {
		p.vals.version = b.version
		r.Version = &p.vals.version
	}
	r.Args = tight(b.args) // the redactor sizes its output for the input: a pending message keeps only what it holds
	r.RequestBytes = int(min(ev.bodySize, 1<<40))
	r.Truncated = ev.truncated
	switch kind {
	case KindFanout:
		r.Topic = strings.TrimSuffix(ev.exchange, "_fanout")
	case KindNotification:
		r.EventType, r.PublisherID, r.Priority = b.eventType, b.publisherID, b.priority
		if i := strings.LastIndexByte(ev.routingKey, '.'); i > 0 {
			r.Topic = ev.routingKey[:i]
			if r.Priority == "" {
				r.Priority = strings.ToUpper(ev.routingKey[i+1:])
			}
		} else {
			r.Topic = ev.routingKey
		}
	default:
		topic, server := ev.conn.st.topo.splitRPC(ev.routingKey)
		r.Topic = topic
		if server != "" {
			p.vals.server = server
			r.Server = &p.vals.server
		}
	}
	p.topo = ev.conn.st.topo
	p.expect = p.topo.expect(ev.exchange, ev.routingKey)
	if kind == KindCall {
		p.replyQ, p.monitorS = b.replyQ, b.monitorS
		if b.msgID != "" {
			p.msgKey = osloKey(b.msgID, b.replyQ)
			c.table.byMsg[p.msgKey] = p
			c.table.byMsgID[b.msgID] = p
		}
		if ev.kind != evPublish { // a publish sets it in published, from the same time
			c.setDeadline(p, ev.at, ev.expiration)
		}
	} else {
		c.schedule(p, ev.at.Add(c.oneWayWait(p, ev)))
	}
	c.account(p)
	return p
}

// oneWayWait is how long a cast, fanout or notification waits for its deliveries, from its first sighting. One
// that a consumer behind this proxy is expected to receive is queued, not lost, until it is delivered: it waits
// up to QueueHorizon, or until its queue's TTL or its own expiration drops it. Others settle.
func (c *Correlator) oneWayWait(p *pending, ev *event) time.Duration {
	if p.expect.total() == 0 {
		return c.cfg.settle()
	}
	d := c.cfg.queueHorizon()
	if ttl := p.expect.ttl; ttl > 0 {
		d = min(d, ttl+c.cfg.settle())
	}
	if ms, err := strconv.ParseInt(ev.expiration, 10, 64); err == nil && ms >= 0 {
		d = min(d, time.Duration(ms)*time.Millisecond+c.cfg.settle())
	}
	return max(d, c.cfg.settle())
}

// setDeadline sets a call's deadline from the expiration property (the caller's timeout in ms) measured from t.
func (c *Correlator) setDeadline(p *pending, t time.Time, expiration string) {
	d := c.cfg.defaultTimeout()
	if ms, err := strconv.ParseInt(expiration, 10, 64); err == nil && ms >= 0 && ms < int64(365*24*time.Hour/time.Millisecond) {
		d = time.Duration(ms) * time.Millisecond
		p.rec.TimeoutMS = ms
	}
	p.deadline = t.Add(d)
	p.rec.Deadline = &p.deadline
	if !p.held { // a held call ends at the end of its hold, whatever its deadline
		c.schedule(p, p.deadline.Add(c.cfg.grace()))
	}
}

// published takes the caller's side of a request.
func (c *Correlator) published(p *pending, ev *event) {
	if p.published {
		return
	}
	p.published = true
	r := &p.rec
	at := ev.at
	p.vals.published = at
	r.Published = &p.vals.published
	id := ev.ident
	r.Caller = &id.ep
	if r.Kind == KindCall {
		c.setDeadline(p, at, ev.expiration) // measured from the publish, not from an earlier-seen delivery
	}
	if r.RequestID != "" {
		r.ParentID, r.ParentCandidates = c.handling.parent(handKey{id.proc, r.RequestID}, at, r.MsgID, r.UniqueID)
	}
}

func (c *Correlator) onDeliver(ev *event) {
	legacyReply(ev)
	ch := ev.conn.st.channel(ev.channel)
	queue, acks := ch.getQueue, false
	if ev.tag != "" {
		cr := ch.consumers[ev.tag]
		queue, acks = cr.queue, cr.acks
		if queue == "" && ev.exchange == "" && ev.routingKey != "" {
			// The default exchange routes by queue name: a consumer whose Basic.Consume a capture lost is named
			// by its first such delivery (a reply queue's always are). Whether it answers is not known.
			queue = ev.routingKey
			c.addConsumer(ev.conn.st.topo, ch, ev, ev.tag, queue, false)
		}
	}
	b := &ev.body
	switch {
	case b.kind == mkRequest || b.kind == mkNotification:
		p := c.request(ev, requestKind(ev))
		if acks {
			c.awaitAnswer(ch, p, ev)
		}
		c.delivered(p, ev, queue)
		c.adopt(p)
	case b.kind == mkReply:
		// What the caller received is a reply delivered from its reply queue; when the consumer's queue is not
		// known (its Basic.Consume was not seen), the _msg_id alone has to do.
		c.keyBuf = appendReplyKey(c.keyBuf[:0], ev, queue, true)
		p := c.table.byMsg[string(c.keyBuf)]
		if p == nil && queue == "" {
			p = c.table.byMsgID[b.msgID]
		}
		switch {
		case p != nil:
			c.onReply(p, ev, true, false)
		case c.table.byMsgID[b.msgID] != nil:
			c.foreignReply(c.table.byMsgID[b.msgID], ev)
		case !c.finished.straggler(string(c.keyBuf), b.uniqueID):
			c.addOrphan(string(c.keyBuf), ev, queue, true, false)
		}
	default:
		c.genericDeliver(ev, ch, queue, acks)
	}
}

// delivered takes one delivery of a request: the delivering connection is the server that got it (round robin on
// shared topic queues, one per server for fanouts).
func (c *Correlator) delivered(p *pending, ev *event, queue string) {
	r := &p.rec
	r.Deliveries++
	if ev.redelivered {
		c.redelivered(p, ev.at, queue)
	}
	id := ev.ident
	if r.Delivered == nil {
		p.vals.delivered = ev.at
		r.Delivered = &p.vals.delivered
		r.Callee = &id.ep
		r.Queue = queue
	}
	if len(r.Callees) < maxCallees {
		r.Callees = append(r.Callees, id.ep)
	}
	if r.RequestID != "" {
		c.setHandling(handKey{id.proc, r.RequestID}, p, ev.at)
	}
	// A generic message that may yet turn out to be a reply (gen) waits out its settle time in any case.
	if r.Kind != KindCall && p.expect.total() > 0 && r.Deliveries >= p.expect.total() && p.gen == nil {
		c.end(p, endFinal)
	}
}

func (c *Correlator) setHandling(k handKey, p *pending, at time.Time) {
	id, until := p.rec.UniqueID, at.Add(c.cfg.defaultTimeout())
	if p.rec.Kind == KindCall {
		id = p.rec.MsgID
		if !p.deadline.IsZero() {
			until = p.deadline.Add(c.cfg.grace())
		}
	}
	c.handling.add(k, id, at, until)
}

// onReply takes a reply publish (delivery=false) or reply delivery of call p.
func (c *Correlator) onReply(p *pending, ev *event, delivery, confirmChannel bool) {
	r := &p.rec
	b := &ev.body
	at := ev.at
	if !p.generic && b.hasEnding && !b.ending {
		// A call-monitor heartbeat: count each one once (its publish and its delivery share a _unique_id).
		for _, u := range p.hb {
			if u == b.uniqueID {
				return
			}
		}
		if len(p.hb) < maxHeartbeatTimes {
			p.hb = append(p.hb, b.uniqueID)
			r.HeartbeatTimes = append(r.HeartbeatTimes, at)
		}
		if len(p.hb) == 1 {
			c.heartbeatStart(p, ev) // the first one (its publish, or its delivery when that is read first)
		}
		r.Heartbeats++
		c.ctr.heartbeats.Add(1)
		return
	}
	if b.result != nil {
		r.Result = b.result
	}
	if b.failure != nil {
		r.Error = b.failure
	}
	if !p.generic && !b.hasEnding {
		// The older two-message reply: {result, failure} then {ending: true}. Only the second one ends the call.
		return
	}
	r.ReplyBytes = int(min(ev.bodySize, 1<<40))
	p.replyUnique = b.uniqueID
	if delivery {
		if r.ReplyDelivered == nil {
			p.vals.replyDelivered = at
			r.ReplyDelivered = &p.vals.replyDelivered
		}
		c.end(p, endFinal)
		return
	}
	p.vals.replied = at
	r.Replied = &p.vals.replied
	r.Replies++
	p.finalSeen = true
	c.answered(p, at)
	id := ev.ident
	if r.Callee == nil {
		r.Callee = &id.ep
	}
	if r.RequestID != "" {
		c.handling.done(handKey{id.proc, r.RequestID}, r.MsgID)
	}
	switch {
	case ev.conn.st.topo.consumed(replyQueue(ev.routingKey)):
		// The caller's reply connection is behind this proxy: the call ends at the reply's delivery.
	case confirmChannel:
		p.waitConfirm = true // ends at the broker's confirm, unless the broker returns the reply first
	default:
		c.end(p, endFinal)
	}
}

func (c *Correlator) onReturn(ev *event) {
	c.ctr.unroutable.Add(1)
	ch := ev.conn.st.channel(ev.channel)
	var p *pending
	reply := false
	// Basic.Return comes before the confirm of the publish it returns, so the returned publish is the oldest
	// unconfirmed one to the same exchange and routing key on this channel.
	for i := range ch.tracked {
		e := &ch.tracked[i]
		if e.run == 0 && !e.returned && e.exchange == ev.exchange && e.rk == ev.routingKey {
			e.returned = true
			p, reply = c.entryTarget(e)
			break
		}
	}
	if p == nil {
		switch b := &ev.body; b.kind {
		case mkReply:
			p, reply = c.table.byMsg[osloKey(b.msgID, ev.routingKey)], true
		case mkRequest, mkNotification:
			p = c.table.byUnique[b.uniqueID]
		}
	}
	if p == nil || p.done {
		return
	}
	if reply {
		p.rec.ReplyReturns++
		p.finalSeen, p.waitConfirm = false, false
		return
	}
	p.rec.ReturnCode, p.rec.ReturnText = int(ev.replyCode), truncate(ev.replyText, maxMessageLen)
	c.end(p, endReturned)
}

func (c *Correlator) onConfirm(ev *event) {
	ch := ev.conn.st.chans[ev.channel]
	if ch == nil || !ch.confirm {
		return
	}
	nack := ev.kind == evNack
	count := func(n uint64) {
		if nack {
			c.ctr.nacks.Add(n)
		} else {
			c.ctr.confirms.Add(n)
		}
	}
	take := func(e *pubEntry) {
		if e.run > 0 {
			count(e.run) // plain publishes: nothing but the count
			return
		}
		count(1)
		if o := e.orphan; o != nil && o.into == nil {
			o.acked = !nack && !e.returned // the reply's call is not known yet: it ends at its merge
			return
		}
		p, reply := c.entryTarget(e)
		if p == nil || p.done {
			return
		}
		if reply {
			if p.waitConfirm && !e.returned && !nack {
				c.end(p, endFinal)
			}
			return
		}
		if p.rec.Confirmed == nil {
			p.vals.confirmed = ev.at
			p.rec.Confirmed = &p.vals.confirmed
		}
		if nack {
			p.rec.Nacked = true
			p.event(ev.at, EventNacked, "")
		}
	}
	tag := ev.deliveryTag
	if ev.multiple {
		n := 0
		for n < len(ch.tracked) && ch.tracked[n].seq <= tag {
			take(&ch.tracked[n])
			n++
		}
		ch.tracked = ch.tracked[n:]
		if len(ch.tracked) > 0 {
			if e := &ch.tracked[0]; e.run > 0 && e.seq-e.run < tag {
				count(tag - (e.seq - e.run)) // the front of a run: what is left of it waits
				e.run = e.seq - tag
			}
		}
		return
	}
	for i := range ch.tracked {
		e := &ch.tracked[i]
		if e.seq < tag {
			continue
		}
		if e.seq != tag && (e.run == 0 || e.seq-e.run >= tag) {
			return // not tracked (the list is in sequence order)
		}
		switch {
		case e.run <= 1: // a publish, or a run of one
			take(e)
			ch.tracked = append(ch.tracked[:i], ch.tracked[i+1:]...)
		case e.seq == tag: // the end of a run
			count(1)
			e.seq--
			e.run--
		default: // inside a run: it splits in two around tag
			count(1)
			front := pubEntry{seq: tag - 1, run: e.run - (e.seq - tag) - 1}
			e.run = e.seq - tag
			if front.run > 0 {
				ch.tracked = slices.Insert(ch.tracked, i, front)
			}
		}
		return
	}
}

// --- generic AMQP RPC -------------------------------------------------------------------------------------------

// directReplyTo is RabbitMQ's pseudo-queue: the caller consumes "amq.rabbitmq.reply-to" (no_ack), the server sees
// reply_to "amq.rabbitmq.reply-to.<opaque>" and publishes the reply there.
const directReplyTo = "amq.rabbitmq.reply-to"

func genericKey(id, replyTo string) string {
	return "amqp\x00" + id + "\x00" + replyQueue(replyTo)
}

func (c *Correlator) genericPublish(ev *event, confirmChannel bool) (*pending, bool) {
	if ev.body.parsed && ev.body.kind == mkUnknown && ev.replyTo == "" && ev.correlationID == "" {
		c.ctr.unknown.Add(1)
	}
	if ev.replyTo == "" && ev.correlationID == "" && !c.cfg.GenericCasts {
		c.ctr.plain.Add(1) // not an RPC: counted, no record (its confirm finds no record and is only counted)
		return nil, false
	}
	replyLike := ev.replyTo == "" && ev.correlationID != ""
	var key string
	if replyLike {
		key = genericKey(ev.correlationID, ev.routingKey)
		if p := c.table.byMsg[key]; p != nil && p.generic {
			c.onReply(p, ev, false, confirmChannel)
			return p, true
		}
	}
	p := c.genericRequest(ev)
	c.published(p, ev)
	if replyLike {
		// A cast by its looks, but its call may be read before it and tapped later than the window.
		c.mayBeReply(p, key, ev, confirmChannel)
	} else {
		c.adopt(p)
	}
	return p, false
}

func (c *Correlator) genericDeliver(ev *event, ch *chanState, queue string, acks bool) {
	if ev.replyTo == "" && ev.correlationID != "" {
		key := genericKey(ev.correlationID, ev.routingKey)
		if p := c.table.byMsg[key]; p != nil && p.generic {
			c.onReply(p, ev, true, false)
			return
		}
		if m := c.table.maybeReply[key]; m != nil {
			c.delivered(m, ev, queue)
			if m.gen.deliv == nil {
				ev.kept = true
				m.gen.deliv, m.gen.queue = ev, queue
			}
			return
		}
		// A reply whose call (or publish) is not known yet: wait as an orphan.
		c.addOrphan(key, ev, queue, true, false)
		return
	}
	if ev.replyTo == "" && !c.cfg.GenericCasts {
		c.ctr.plain.Add(1)
		return
	}
	if ev.replyTo == "" && ev.messageID == "" {
		c.ctr.unmatchedDeliveries.Add(1)
		return
	}
	p := c.genericRequest(ev)
	if acks {
		c.awaitAnswer(ch, p, ev)
	}
	c.delivered(p, ev, queue)
	c.adopt(p)
}

// genericRequest finds or creates the record of a non-oslo publish: an RPC when it has reply_to (keyed by
// correlation_id, else message_id, plus the reply destination), else a one-way message keyed by message_id.
func (c *Correlator) genericRequest(ev *event) *pending {
	id := ev.correlationID
	if id == "" {
		id = ev.messageID
	}
	call := ev.replyTo != "" && id != ""
	var key string
	switch {
	case call:
		key = genericKey(id, ev.replyTo)
		if p := c.table.byMsg[key]; p != nil {
			return p
		}
	case ev.messageID != "":
		key = "mid\x00" + ev.messageID
		if p := c.table.byUnique[key]; p != nil {
			return p
		}
	}
	p := &pending{generic: true}
	c.insert(p)
	r := &p.rec
	r.Protocol = "amqp"
	r.Exchange, r.RoutingKey, r.Topic = ev.exchange, ev.routingKey, ev.routingKey
	r.Method = ev.amqpType
	if r.Method == "" {
		r.Method = ev.routingKey
	}
	r.MessageID = ev.messageID
	r.RequestBytes = int(min(ev.bodySize, 1<<40))
	r.Truncated = ev.truncated
	p.topo = ev.conn.st.topo
	p.expect = p.topo.expect(ev.exchange, ev.routingKey)
	if call {
		r.Kind = KindCall
		r.MsgID = id
		p.msgKey, p.replyQ = key, ev.replyTo
		c.table.byMsg[key] = p
		if ev.kind != evPublish { // a publish sets it in published, from the same time
			c.setDeadline(p, ev.at, ev.expiration)
		}
	} else {
		r.Kind = KindCast
		if key != "" {
			p.uniqueKey = key
			c.table.byUnique[key] = p
		}
		c.schedule(p, ev.at.Add(c.cfg.settle()))
	}
	c.account(p)
	return p
}

// tight returns b in an allocation of its own size when its capacity is much larger: what a pending message keeps
// for minutes must not pin the buffer it was cut from.
func tight(b []byte) []byte {
	if cap(b)-len(b) <= len(b)/4 {
		return b
	}
	return append(make([]byte, 0, len(b)), b...)
}
