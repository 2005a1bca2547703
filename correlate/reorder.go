package correlate

import (
	"slices"
	"strings"
	"time"
)

// Reordering.
//
// The pumps forward a chunk and only then tap it, each connection direction on its own goroutine, so events reach
// the correlator in the order the taps ran, not the order the bytes were read: a server's reply publish can arrive
// before the delivery it answers. Three layers put them back in causal order:
//
//  1. The reorder window (reorderWindow; admit, release): every event waits in a min-heap by its order key (the read
//     time of the frame that completed it) until the key is Config.Reorder old, and is processed then, oldest first.
//     Expiry runs interleaved with the released events, and never past the oldest event still waiting, so a deadline is
//     judged against every event read before it that has reached the correlator.
//  2. Orphans (orphanage; addOrphan, adopt): an event later than the window is processed at once (Stats.LateEvents).
//     If it is a reply (or a generic reply delivery) whose call is not known yet, it waits, bounded, for another
//     Reorder, and joins its call if the call shows up; only an orphan that expires counts as unmatched. A generic
//     publish that looks like a one-way message but carries a correlation_id may be the reply of a call not seen
//     yet: it is a cast that never ends before its settle time (mayBeReply) and turns into the reply if the call
//     shows up (reclassify).
//  3. Holds (hold): a record about to become final while a piece this proxy should see is missing (the caller's
//     publish, the server's delivery or reply publish) waits another Reorder, pending, so a late piece still
//     lands in it; it ends at the end of the hold with whatever came.

// maxOrphans bounds the orphans and the possible replies (generic casts with a correlation_id) kept at once.
// Past it a new orphan is counted unmatched at once.
const maxOrphans = 4096

// eventHeap is the reorder window: a binary min-heap by (key, seq). seq is the arrival order, so events read in
// the same instant keep the order their pump handed them over in. Keys sit in the heap's own array next to the
// event pointer: a window holds tens of thousands of events, and comparing through the pointers (cache misses on
// every step) was most of the correlator's time under load.
type eventHeap []heapSlot

type heapSlot struct {
	key int64
	seq uint64
	ev  *event
}

// before orders slots by key, then by arrival.
func (a *heapSlot) before(b *heapSlot) bool {
	return a.key < b.key || a.key == b.key && a.seq < b.seq
}

// push sifts the new slot up by moving parents down into the hole, one write per level instead of a swap.
func (h *eventHeap) push(ev *event) {
	s := heapSlot{key: ev.key, seq: ev.seq, ev: ev}
	*h = append(*h, s)
	q := *h
	i := len(q) - 1
	for i > 0 {
		parent := (i - 1) / 2
		if !s.before(&q[parent]) {
			break
		}
		q[i] = q[parent]
		i = parent
	}
	q[i] = s
}

// pop takes the oldest event out bottom-up (Floyd's): the hole at the root moves down to a leaf along the smaller
// children, one comparison per level, and the last slot then sifts up from there, which is rarely more than a step
// for a window whose newest arrivals are its latest keys. The usual sift-down compares twice per level all the way
// down, and the window is deep (a few tens of thousands of events).
func (h *eventHeap) pop() *event {
	q := *h
	top := q[0].ev
	n := len(q) - 1
	last := q[n]
	q[n] = heapSlot{}
	q = q[:n]
	*h = q
	if n == 0 {
		return top
	}
	i := 0
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && q[r].before(&q[l]) {
			m = r
		}
		q[i] = q[m]
		i = m
	}
	for i > 0 {
		parent := (i - 1) / 2
		if !last.before(&q[parent]) {
			break
		}
		q[i] = q[parent]
		i = parent
	}
	q[i] = last
	return top
}

// reorderWindow holds events until their order key is Config.Reorder old and hands them out oldest first. It
// knows nothing of what processing an event means: the Correlator decides when to take them (admit, release).
type reorderWindow struct {
	heap eventHeap
	seq  uint64    // arrival count: the tie-break for events read in the same instant
	last time.Time // order key of the newest event taken out, so a later arrival older than it is late
}

// late says whether ev was read before an event already taken out of the window.
func (w *reorderWindow) late(ev *event) bool { return ev.order.Before(w.last) }

func (w *reorderWindow) len() int { return len(w.heap) }

// put adds ev with key (its order key as sinceEpoch gives it).
func (w *reorderWindow) put(ev *event, key int64) {
	w.seq++
	ev.seq = w.seq
	ev.key = key
	w.heap.push(ev)
}

// take removes and returns the oldest event.
func (w *reorderWindow) take() *event {
	ev := w.heap.pop()
	if ev.order.After(w.last) {
		w.last = ev.order
	}
	return ev
}

// oldest is the order key of the oldest event waiting; ok is false when the window is empty.
func (w *reorderWindow) oldest() (t time.Time, ok bool) {
	if len(w.heap) == 0 {
		return time.Time{}, false
	}
	return w.heap[0].ev.order, true
}

// sinceEpoch turns t into an integer heap key. Sub uses the monotonic clock when both times carry it (as the
// proxy's read stamps and the epoch do), exactly like Before, so the order is the one Before would give.
func (c *Correlator) sinceEpoch(t time.Time) int64 { return int64(t.Sub(c.epoch)) }

// admit takes an event into the reorder window. An event read before one already processed from the window is
// late: processing it at once is the nearest we can still get to its place.
func (c *Correlator) admit(ev *event) {
	if ev.order.After(c.newest) {
		c.newest = ev.order
	}
	if c.window.late(ev) {
		c.ctr.late.Add(1)
		c.process(ev)
		c.recycle(ev)
		return
	}
	if c.window.len() >= c.cfg.reorderCap() {
		c.ctr.reorderOverflow.Add(1)
		c.processNext()
	}
	c.window.put(ev, c.sinceEpoch(ev.order))
	c.ctr.buffered.Store(int64(c.window.len()))
}

// processNext processes the oldest event in the window, after everything due before it was read.
func (c *Correlator) processNext() {
	ev := c.window.take()
	c.ctr.buffered.Store(int64(c.window.len()))
	c.expire(ev.order)
	c.process(ev)
	c.recycle(ev)
}

// recycle returns a processed event to the assemblers' pool unless something kept it. Every message makes an event
// that lives through the window and dies at its processing: recycling them spares the allocator and the GC most
// of the correlator's garbage. Records never point into an event (they copy what they take), so only orphans and
// possible generic replies, which mark the event kept, hold one afterwards.
func (c *Correlator) recycle(ev *event) {
	if ev.kept {
		return
	}
	*ev = event{} // a free event pins no connection, strings or payload
	c.events.Put(ev)
}

// release processes every event whose window has passed at now, then expires what is due, but not past the
// oldest event still waiting: it may be the reply that saves a call from its deadline.
func (c *Correlator) release(now time.Time) {
	mark := now.Add(-c.reorder)
	for {
		t, ok := c.window.oldest()
		if !ok || t.After(mark) {
			break
		}
		c.processNext()
	}
	limit := now
	if t, ok := c.window.oldest(); ok && !t.After(limit) {
		limit = t.Add(-1)
	}
	c.expire(limit)
}

// drain processes every event in the window, in order (shutdown, and tests that play a zero-lag tap).
func (c *Correlator) drain() {
	for c.window.len() > 0 {
		c.processNext()
	}
}

// --- orphans ----------------------------------------------------------------------------------------------------

// orphan is a reply (oslo publish or delivery, generic delivery) whose call was not known when it was processed.
type orphan struct {
	ev       *event
	key      string // _msg_id, or genericKey
	queue    string // deliveries: the queue the consumer tag named
	delivery bool
	confirm  bool // published on a confirm channel
	acked    bool // the broker confirmed it before its call was known
	done     bool // merged, or expired
	into     *pending
	expireAt time.Time
}

// orphanage holds the orphans: by key, for the call that may still show up, and by expiry. It is bounded by
// maxOrphans; what an orphan's fate means (merged, unmatched) is the Correlator's business.
type orphanage struct {
	byKey map[string][]*orphan
	queue []*orphan // by expiry: orphans are processed a window after they were read, so expiry times come in order
	n     int       // waiting, neither merged nor expired
}

func (o *orphanage) full() bool { return o.n >= maxOrphans }

func (o *orphanage) add(x *orphan) {
	o.byKey[x.key] = append(o.byKey[x.key], x)
	o.queue = append(o.queue, x)
	o.n++
}

// claim removes and returns the orphans waiting under key; each must then be settled (settle).
func (o *orphanage) claim(key string) []*orphan {
	xs := o.byKey[key]
	delete(o.byKey, key)
	return xs
}

// settle marks x as no longer waiting: merged into a record, or counted unmatched.
func (o *orphanage) settle(x *orphan) {
	x.done = true
	o.n--
}

// expired removes and returns the next orphan whose time has come at now (any orphan when all), or nil.
func (o *orphanage) expired(now time.Time, all bool) *orphan {
	for len(o.queue) > 0 && (all || !o.queue[0].expireAt.After(now)) {
		x := o.queue[0]
		o.queue[0] = nil
		o.queue = o.queue[1:]
		if x.done {
			continue // merged: only the expiry queue still held it
		}
		o.settle(x)
		if xs := slices.DeleteFunc(o.byKey[x.key], func(y *orphan) bool { return y == x }); len(xs) > 0 {
			o.byKey[x.key] = xs
		} else {
			delete(o.byKey, x.key)
		}
		return x
	}
	return nil
}

// addOrphan keeps a reply until its call shows up or Reorder passes. It returns nil, counting the reply as
// unmatched, when maxOrphans are already waiting.
func (c *Correlator) addOrphan(key string, ev *event, queue string, delivery, confirm bool) *orphan {
	if c.orphans.full() {
		c.countUnmatched(&orphan{ev: ev, key: key})
		return nil
	}
	// An orphan is processed a window after it was read; its call, read earlier still, may be up to another
	// window later than that.
	ev.kept = true
	o := &orphan{ev: ev, key: key, queue: queue, delivery: delivery, confirm: confirm,
		expireAt: c.clock().Add(c.reorder)}
	c.orphans.add(o)
	c.ctr.orphans.Store(int64(c.orphans.n))
	return o
}

// expireOrphans drops the orphans whose time has come (all of them at shutdown), counting each as unmatched.
func (c *Correlator) expireOrphans(now time.Time, all bool) {
	for o := c.orphans.expired(now, all); o != nil; o = c.orphans.expired(now, all) {
		c.ctr.orphans.Store(int64(c.orphans.n))
		c.countUnmatched(o)
	}
}

// countUnmatched books an orphan that never found its call. A generic delivery with a message_id becomes the
// one-way record it would have been without the window.
func (c *Correlator) countUnmatched(o *orphan) {
	ev := o.ev
	switch {
	case ev.body.kind == mkReply && c.followUp(o):
	case ev.body.kind == mkReply:
		c.unmatchedReply(o.key, ev.body.uniqueID)
	case ev.messageID != "":
		p := c.genericRequest(ev)
		c.delivered(p, ev, o.queue)
	default:
		c.ctr.unmatchedDeliveries.Add(1)
	}
}

// adopt joins to p what arrived before it: orphan replies of its _msg_id (or generic key) and a generic reply
// first taken for a cast. It is called once a request's publish or delivery has been taken in.
func (c *Correlator) adopt(p *pending) {
	if p.done || p.msgKey == "" {
		return
	}
	if m := c.table.maybeReply[p.msgKey]; m != nil && p.generic && p.rec.Kind == KindCall {
		c.reclassify(m, p)
	}
	os := c.orphans.claim(p.msgKey)
	if len(os) == 0 {
		return
	}
	slices.SortStableFunc(os, func(a, b *orphan) int { return a.ev.order.Compare(b.ev.order) })
	for _, o := range os {
		c.orphans.settle(o)
		if p.done {
			// The call ended on an earlier orphan (its final reply): the rest are its stragglers.
			c.countUnmatched(o)
			continue
		}
		o.into = p
		c.ctr.orphansMerged.Add(1)
		c.onReply(p, o.ev, o.delivery, o.confirm)
		if o.acked && p.waitConfirm && !p.done {
			c.end(p, endFinal)
		}
	}
	c.ctr.orphans.Store(int64(c.orphans.n))
}

// genericReply is what a generic one-way record that may be a reply keeps to turn into one (reclassify).
type genericReply struct {
	key     string
	pub     *event
	confirm bool
	deliv   *event // its first delivery
	queue   string
	into    *pending // the call it turned out to answer
}

// mayBeReply marks a generic one-way publish with a correlation_id as a possible reply: it does not end before
// its settle time, and takes the deliveries that came before it.
func (c *Correlator) mayBeReply(p *pending, key string, ev *event, confirm bool) {
	if p.gen != nil || c.table.maybeReply[key] != nil || len(c.table.maybeReply) >= maxOrphans {
		return
	}
	ev.kept = true
	p.gen = &genericReply{key: key, pub: ev, confirm: confirm}
	c.table.maybeReply[key] = p
	for _, o := range c.orphans.claim(key) {
		c.orphans.settle(o)
		o.into = p
		c.delivered(p, o.ev, o.queue)
		if p.gen.deliv == nil {
			p.gen.deliv, p.gen.queue = o.ev, o.queue
		}
	}
	c.ctr.orphans.Store(int64(c.orphans.n))
}

// reclassify turns the possible reply m into the reply of the generic call p: m's record is dropped unseen, and
// its publish, confirm and first delivery are taken again as p's reply.
func (c *Correlator) reclassify(m, p *pending) {
	g := m.gen
	c.unlink(m)
	m.done, g.into = true, p
	c.ctr.orphansMerged.Add(1)
	c.onReply(p, g.pub, false, g.confirm)
	if !p.done && p.waitConfirm && m.rec.Confirmed != nil && !m.rec.Nacked {
		c.end(p, endFinal)
	}
	if !p.done && g.deliv != nil {
		c.onReply(p, g.deliv, true, false)
	}
}

// entryTarget resolves a tracked publish to the record its confirm or return belongs to, following orphans and
// possible replies to the call they joined.
func (c *Correlator) entryTarget(e *pubEntry) (*pending, bool) {
	p, reply := e.p, e.reply
	if p == nil && e.orphan != nil {
		p = e.orphan.into
	}
	if p != nil && p.gen != nil && p.gen.into != nil {
		p, reply = p.gen.into, true
	}
	return p, reply
}

// --- holds ------------------------------------------------------------------------------------------------------

// hold says whether a record that is final now should wait a window first, and starts the wait. It waits when a
// piece this proxy should see is missing, because that piece may be later than the window:
//   - the caller's publish, when the record began at a delivery and the caller is behind this proxy (its reply
//     queue is consumed here; a one-way message always waits, we cannot tell);
//   - the server's delivery, when a consumer behind this proxy should have got it;
//   - the server's reply publish, when the server's delivery was seen.
//
// A held record ends when the hold ends (endHoldOver), not earlier: a late publisher confirm still lands too.
func (c *Correlator) hold(p *pending) bool {
	if p.held {
		return true
	}
	r := &p.rec
	switch {
	case !p.published:
		if r.Kind == KindCall && (p.topo == nil || !p.topo.consumed(replyQueue(p.replyQ))) {
			return false
		}
	case p.expect.total() > 0 && r.Deliveries == 0:
	case r.Kind == KindCall && r.Deliveries > 0 && r.Replied == nil:
	default:
		return false
	}
	p.held = true
	c.ctr.holds.Add(1)
	c.schedule(p, c.clock().Add(c.reorder))
	return true
}

// replyQueue names the queue a reply destination is consumed as: direct reply-to destinations all belong to the
// pseudo-queue the caller consumes.
func replyQueue(q string) string {
	if strings.HasPrefix(q, directReplyTo) {
		return directReplyTo
	}
	return q
}
