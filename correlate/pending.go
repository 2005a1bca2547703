package correlate

import (
	"container/heap"
	"time"
)

// pendingTable holds every record the correlator has not emitted yet, in insertion order (for eviction), by
// expiry (for deadlines, settle times and holds) and under the keys its later pieces look it up by. It keeps the
// indexes consistent and counts what it holds, in records and estimated bytes; the Correlator decides what to evict
// and when a record ends (insert, account, expire, end).
type pendingTable struct {
	byUnique   map[string]*pending // requests by _unique_id (generic one-way: "mid\x00"+message_id)
	byMsg      map[string]*pending // calls by osloKey (_msg_id and reply queue; generic RPC: genericKey)
	byMsgID    map[string]*pending // oslo calls by _msg_id alone: to tell a reply sent elsewhere (foreign)
	maybeReply map[string]*pending // generic casts that may be replies of a call not seen yet, by genericKey

	oldest, newest *pending // insertion order
	n              int
	bytes          int    // estimated bytes held (see charge)
	seq            uint64 // insertion count: the expiry tie-break
	expiry         expiryHeap
}

func newPendingTable() pendingTable {
	return pendingTable{byUnique: make(map[string]*pending), byMsg: make(map[string]*pending),
		byMsgID: make(map[string]*pending), maybeReply: make(map[string]*pending)}
}

// link appends p to the insertion order, unscheduled.
func (t *pendingTable) link(p *pending) {
	p.heapIdx = -1
	t.seq++
	p.seq = t.seq
	p.prev = t.newest
	if t.newest != nil {
		t.newest.next = p
	} else {
		t.oldest = p
	}
	t.newest = p
	t.n++
}

// pendingBase is what one pending message costs before its payload and ids: the record, the table entries, the
// expiry slot, the index maps' entries and their growth. The bound trusts the estimate, so it errs high:
// TestBacklogMemoryIsBounded checks the heap it holds against it.
const pendingBase = 1600

// charge adds p's estimated size, from what it holds now, to the table's bytes.
func (t *pendingTable) charge(p *pending) {
	r := &p.rec
	p.size = pendingBase + cap(r.Args) + len(r.Method) + len(r.Topic) + len(r.RoutingKey) + len(r.Exchange) +
		len(r.MsgID) + len(r.UniqueID) + len(r.MessageID) + len(r.RequestID) + len(r.GlobalRequestID) +
		len(p.replyQ) + len(r.EventType) + len(r.PublisherID)
	t.bytes += p.size
}

// unlink removes p from the insertion order, every index that still points at it, and the expiry heap.
func (t *pendingTable) unlink(p *pending) {
	t.bytes -= p.size
	if p.prev != nil {
		p.prev.next = p.next
	} else {
		t.oldest = p.next
	}
	if p.next != nil {
		p.next.prev = p.prev
	} else {
		t.newest = p.prev
	}
	p.prev, p.next = nil, nil
	t.n--
	if p.uniqueKey != "" && t.byUnique[p.uniqueKey] == p {
		delete(t.byUnique, p.uniqueKey)
	}
	if p.msgKey != "" && t.byMsg[p.msgKey] == p {
		delete(t.byMsg, p.msgKey)
	}
	if id := p.rec.MsgID; id != "" && t.byMsgID[id] == p {
		delete(t.byMsgID, id)
	}
	if p.heapIdx >= 0 {
		heap.Remove(&t.expiry, p.heapIdx)
	}
	if p.gen != nil && t.maybeReply[p.gen.key] == p {
		delete(t.maybeReply, p.gen.key)
	}
}

// schedule sets (or moves) p's expiry to at; key is at as the correlator's integer clock (sinceEpoch).
func (t *pendingTable) schedule(p *pending, at time.Time, key int64) {
	p.expireAt = at
	p.expireKey = key
	if p.heapIdx >= 0 {
		heap.Fix(&t.expiry, p.heapIdx)
	} else {
		heap.Push(&t.expiry, p)
	}
}

// due returns the record whose expiry is earliest and not after now, or nil. It stays in the table: ending it
// (Correlator.end) unlinks it.
func (t *pendingTable) due(now time.Time) *pending {
	if len(t.expiry) == 0 || t.expiry[0].expireAt.After(now) {
		return nil
	}
	return t.expiry[0]
}

// --- expiry heap ------------------------------------------------------------------------------------------------

type expiryHeap []*pending

func (h expiryHeap) Len() int { return len(h) }
func (h expiryHeap) Less(i, j int) bool {
	if h[i].expireKey != h[j].expireKey {
		return h[i].expireKey < h[j].expireKey
	}
	return h[i].seq < h[j].seq
}
func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx = i
	h[j].heapIdx = j
}
func (h *expiryHeap) Push(x any) {
	p := x.(*pending)
	p.heapIdx = len(*h)
	*h = append(*h, p)
}
func (h *expiryHeap) Pop() any {
	old := *h
	p := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	p.heapIdx = -1
	return p
}
