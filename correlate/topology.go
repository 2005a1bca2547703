package correlate

import (
	"strings"
	"time"

	"github.com/amqptrace/amqptrace/frames"
)

// Bounds of the topology learned from the wire. They are generous for one cloud and stop a hostile client from
// growing the tables without end; past them, learning stops (pairing still works, splits fall back to dots).
const (
	maxTopics    = 10000
	maxExchanges = 10000
	maxQueues    = 100000
	maxBindings  = 100000
	// maxConsumerProcs bounds the processes told apart among one queue's consumers; past it a consumer is only
	// counted (queueInfo.consumers), not named.
	maxConsumerProcs = 32
	// maxArgLen bounds a string argument kept from a declaration (x-queue-type, x-ha-policy, dead-letter exchange).
	maxArgLen = 64
)

// topology is the broker's routing as the wire showed it: exchanges with their types and flags, queues with the
// flags and arguments they were declared with and who consumes them through this proxy, bindings, and the oslo
// topics learned from declarations. It answers two questions for the pending table: how many deliveries a
// publish can still get (expect), and how a routing key splits into topic and server (splitRPC). Only the
// correlator goroutine touches it.
type topology struct {
	topics    map[string]struct{}
	exchanges map[string]*exchangeInfo
	bindings  map[string]map[string][]string // exchange → binding key → queues
	nbindings int
	queues    map[string]*queueInfo
}

// exchangeInfo is one exchange as declared through this proxy.
type exchangeInfo struct {
	typ                           string
	declared                      bool // seen in a non-passive Exchange.Declare (else its flags are not known)
	durable, autoDelete, internal bool
	owner                         string // service of the connection that declared it first
}

// queueInfo is one queue as declared and consumed through this proxy.
type queueInfo struct {
	declared   bool   // seen in a Queue.Declare (else only consumed: its flags are not known)
	queueFlags        // as declared
	owner      string // service of the connection that declared it first
	consumers  int    // live consumers through this proxy
	consumed   bool   // some connection through this proxy consumed it
	// unusedSince is when it was last declared or lost its last consumer, while nobody here consumes it: with
	// x-expires the broker deletes it that long after (see expireQueues).
	unusedSince time.Time
	// by counts the live consumers per process (at most maxConsumerProcs processes), with the prefetch each
	// consumed with; nil while nobody consumes.
	by map[Endpoint]*consumerCount
}

// consumerCount is one process's live consumers of a queue.
type consumerCount struct {
	n        int
	prefetch int // Basic.Qos prefetch_count on the channel when the last of them subscribed; 0 is unlimited
}

func newTopology() topology {
	return topology{
		topics:    make(map[string]struct{}),
		exchanges: make(map[string]*exchangeInfo),
		bindings:  make(map[string]map[string][]string),
		queues:    make(map[string]*queueInfo),
	}
}

// queue returns the entry of q, creating it unless the table is full (then nil).
func (t *topology) queue(q string) *queueInfo {
	if qi := t.queues[q]; qi != nil {
		return qi
	}
	if len(t.queues) >= maxQueues {
		return nil
	}
	qi := &queueInfo{}
	t.queues[q] = qi
	return qi
}

// holdsMessages says whether the broker keeps messages in q while nobody consumes it, for a consumer that will
// come back: a queue that outlives its consumers and belongs to no single process. Auto-delete and exclusive
// queues go with their consumer; a queue with x-expires is one process's (oslo's fanout and reply queues: a
// restarted server declares a new one, so what waits in the old one is never delivered). A queue consumed but never
// declared through this proxy is judged by oslo's names.
func (qi *queueInfo) holdsMessages(name string) bool {
	if !qi.declared {
		return !strings.Contains(name, "_fanout_") && !strings.HasPrefix(name, "reply_")
	}
	return !qi.autoDelete && !qi.exclusive && !qi.expires
}

// declareExchange records an exchange; f is nil for a passive declaration, which only checks that the exchange
// exists, so it changes nothing already known. owner is the declaring connection's service.
func (t *topology) declareExchange(name, typ string, f *exchangeFlags, owner string) {
	x := t.exchanges[name]
	if x == nil {
		if len(t.exchanges) >= maxExchanges {
			return
		}
		x = &exchangeInfo{owner: owner}
		t.exchanges[name] = x
	}
	if f != nil || !x.declared {
		x.typ = typ
	}
	if f != nil {
		x.declared, x.durable, x.autoDelete, x.internal = true, f.durable, f.autoDelete, f.internal
		if x.owner == "" {
			x.owner = owner
		}
	}
	if typ == "fanout" && strings.HasSuffix(name, "_fanout") {
		t.learnTopic(strings.TrimSuffix(name, "_fanout"))
	}
}

// declareQueue records q's flags, and learns RPC topics: an RPC server declares T and T.<server> on one
// connection, and its fanout queue is T_fanout_<id>. Server names and topics may both hold dots, so only this
// tells where one ends. declared is the connection's earlier declarations; owner is its service.
func (t *topology) declareQueue(q string, m *queueFlags, declared []string, owner string) {
	if q == "" {
		return
	}
	if qi := t.queue(q); qi != nil && m != nil {
		qi.declared = true
		qi.queueFlags = *m
		if qi.owner == "" {
			qi.owner = owner
		}
	}
	if i := strings.Index(q, "_fanout_"); i > 0 {
		t.learnTopic(q[:i])
	}
	for _, d := range declared {
		switch {
		case strings.HasPrefix(q, d) && len(q) > len(d) && q[len(d)] == '.':
			t.learnTopic(d)
		case strings.HasPrefix(d, q) && len(d) > len(q) && d[len(q)] == '.':
			t.learnTopic(q)
		}
	}
}

// deleteQueue forgets q: what was published to it is not delivered any more. Its bindings go with it, and so does
// an auto-delete exchange that loses its last binding (as the broker deletes it).
func (t *topology) deleteQueue(q string) {
	delete(t.queues, q)
	for ex, keys := range t.bindings {
		unbound := false
		for k, qs := range keys {
			for i, x := range qs {
				if x == q {
					keys[k] = append(qs[:i:i], qs[i+1:]...)
					t.nbindings--
					unbound = true
					break
				}
			}
			if len(keys[k]) == 0 {
				delete(keys, k)
			}
		}
		if len(keys) == 0 {
			delete(t.bindings, ex)
			if x := t.exchanges[ex]; unbound && x != nil && x.autoDelete {
				delete(t.exchanges, ex)
			}
		}
	}
}

func (t *topology) bind(queue, exchange, key string) {
	if strings.HasSuffix(exchange, "_fanout") && key != "" {
		t.learnTopic(key)
	}
	keys := t.bindings[exchange]
	if keys == nil {
		if t.nbindings >= maxBindings {
			return
		}
		keys = make(map[string][]string)
		t.bindings[exchange] = keys
	}
	for _, q := range keys[key] {
		if q == queue {
			return
		}
	}
	if t.nbindings >= maxBindings {
		return
	}
	keys[key] = append(keys[key], queue)
	t.nbindings++
}

func (t *topology) learnTopic(name string) {
	if name == "" {
		return
	}
	if _, ok := t.topics[name]; !ok && len(t.topics) < maxTopics {
		t.topics[name] = struct{}{}
	}
}

// consumerAdded and consumerGone count q's consumers through this proxy, per process (who, see procOf) with the
// prefetch it subscribed with. An auto-delete queue goes with its last consumer.
func (t *topology) consumerAdded(q string, who Endpoint, prefetch int) {
	qi := t.queue(q)
	if qi == nil {
		return
	}
	qi.consumers++
	qi.consumed = true
	qi.unusedSince = time.Time{}
	if qi.by == nil {
		qi.by = make(map[Endpoint]*consumerCount, 1)
	}
	cc := qi.by[who]
	if cc == nil {
		if len(qi.by) >= maxConsumerProcs {
			return
		}
		cc = &consumerCount{}
		qi.by[who] = cc
	}
	cc.n++
	cc.prefetch = prefetch
}

func (t *topology) consumerGone(q string, who Endpoint) {
	qi := t.queues[q]
	if qi == nil {
		return
	}
	if cc := qi.by[who]; cc != nil {
		if cc.n--; cc.n <= 0 {
			delete(qi.by, who)
		}
	}
	if qi.consumers--; qi.consumers <= 0 {
		qi.consumers = 0
		if qi.declared && qi.autoDelete {
			t.deleteQueue(q)
		}
	}
}

// markUnused restarts q's x-expires clock at now while nobody here consumes it.
func (t *topology) markUnused(q string, now time.Time) {
	if qi := t.queues[q]; qi != nil && qi.consumers == 0 {
		qi.unusedSince = now
	}
}

// expireQueues forgets the queues the broker has deleted by their x-expires: unused here (no consumer, no
// declaration) for that long. A client consuming it past this proxy keeps it alive at the broker, and is not
// seen: such a queue comes back with its next declaration or consumer here. Without this, the reply and fanout
// queues of every process that ever crashed would fill the table (oslo's carry x-expires for that reason).
func (t *topology) expireQueues(now time.Time) {
	for q, qi := range t.queues {
		if qi.expiresAfter > 0 && qi.consumers == 0 && !qi.unusedSince.IsZero() && now.Sub(qi.unusedSince) >= qi.expiresAfter {
			t.deleteQueue(q)
		}
	}
}

// consumed says whether q has a consumer through this proxy now.
func (t *topology) consumed(q string) bool {
	qi := t.queues[q]
	return qi != nil && qi.consumers > 0
}

// splitRPC splits an RPC routing key into topic and server: the longest learned topic that is the key or a dotted
// prefix of it wins; with none learned, the first dot (right for Nova, Neutron, Cinder; wrong for Ironic's dotted
// topics, which the declarations teach us).
func (t *topology) splitRPC(rk string) (topic, server string) {
	if _, ok := t.topics[rk]; ok {
		return rk, ""
	}
	for i := len(rk) - 1; i > 0; i-- {
		if rk[i] == '.' {
			if _, ok := t.topics[rk[:i]]; ok {
				return rk[:i], rk[i+1:]
			}
		}
	}
	if i := strings.IndexByte(rk, '.'); i > 0 {
		return rk[:i], rk[i+1:]
	}
	return rk, ""
}

// expectation is what the topology says a publish will get: deliveries expected through this proxy, and how long
// one of them may wait in its queue.
type expectation struct {
	// now counts the queues it reaches that a connection through this proxy consumes now; queued the queues
	// that hold messages for a consumer that has gone (see holdsMessages) and was seen here before. Deliveries
	// from both are waited for; a queue never consumed through this proxy is not (partial visibility).
	now, queued int
	// ttl is the shortest x-message-ttl of those queues (0: none): past it the broker drops the message.
	ttl time.Duration
}

func (e expectation) total() int { return e.now + e.queued }

// expect returns the deliveries a publish to exchange with routing key rk can get through this proxy.
func (t *topology) expect(exchange, rk string) expectation {
	var e expectation
	add := func(q string) {
		qi := t.queues[q]
		switch {
		case qi == nil:
			return
		case qi.consumers > 0:
			e.now++
		case qi.consumed && qi.holdsMessages(q):
			e.queued++
		default:
			return
		}
		if qi.ttl > 0 && (e.ttl == 0 || qi.ttl < e.ttl) {
			e.ttl = qi.ttl
		}
	}
	if exchange == "" {
		add(rk)
		return e
	}
	keys := t.bindings[exchange]
	if x := t.exchanges[exchange]; x != nil && x.typ == "fanout" || strings.HasSuffix(exchange, "_fanout") {
		for _, qs := range keys {
			for _, q := range qs {
				add(q)
			}
		}
		return e
	}
	for _, q := range keys[rk] {
		add(q)
	}
	return e
}

// queueFlags are the properties of a Queue.Declare: those that decide whether a queue keeps messages for a
// consumer that comes back (auto-delete, exclusive, x-expires), and those an operator reads in the topology view.
type queueFlags struct {
	autoDelete, exclusive, expires bool
	durable                        bool
	ttl                            time.Duration // x-message-ttl
	expiresAfter                   time.Duration // x-expires, when it is a number
	maxLength                      int64         // x-max-length, 0 if none
	// queueType is x-queue-type (classic, quorum, stream), haPolicy x-ha-policy (classic mirroring, RabbitMQ
	// before 4), deadLetter x-dead-letter-exchange; each cut at maxArgLen.
	queueType, haPolicy, deadLetter string
}

// flagsOf reads them from a declaration.
func flagsOf(m *frames.QueueDeclare) *queueFlags {
	f := &queueFlags{autoDelete: m.AutoDelete, exclusive: m.Exclusive, durable: m.Durable}
	if v, ok := m.Arguments["x-expires"]; ok {
		f.expires = true
		if ms, ok := tableInt(v); ok && ms >= 0 {
			f.expiresAfter = time.Duration(ms) * time.Millisecond
		}
	}
	if ms, ok := tableInt(m.Arguments["x-message-ttl"]); ok && ms >= 0 {
		f.ttl = time.Duration(ms) * time.Millisecond
	}
	if n, ok := tableInt(m.Arguments["x-max-length"]); ok && n >= 0 {
		f.maxLength = n
	}
	f.queueType = tableString(m.Arguments["x-queue-type"])
	f.haPolicy = tableString(m.Arguments["x-ha-policy"])
	f.deadLetter = tableString(m.Arguments["x-dead-letter-exchange"])
	return f
}

// exchangeFlags are the properties of a non-passive Exchange.Declare.
type exchangeFlags struct{ durable, autoDelete, internal bool }

// tableString reads a string field-table value (long string or bytes), cut at maxArgLen.
func tableString(v any) string {
	switch s := v.(type) {
	case string:
		return truncate(s, maxArgLen)
	case []byte:
		return string(s[:min(len(s), maxArgLen)])
	}
	return ""
}

// tableInt reads an integer field-table value of any width.
func tableInt(v any) (int64, bool) {
	switch n := v.(type) {
	case int8:
		return int64(n), true
	case uint8:
		return int64(n), true
	case int16:
		return int64(n), true
	case uint16:
		return int64(n), true
	case int32:
		return int64(n), true
	case uint32:
		return int64(n), true
	case int64:
		return n, true
	}
	return 0, false
}
