package correlate

import "time"

// handling knows which messages each process is handling now, per request, so that what a process publishes while
// it handles a message of a request can be parented to that message (Record.ParentID). A parent is given only when
// the wire makes it unambiguous: exactly one message of the request is open in the publishing process. A call is
// open from its delivery until its reply is published; a cast, fanout or notification from its delivery until
// DefaultTimeout has passed (the wire does not say when its handler returns: oslo acknowledges a message before it
// dispatches it). When several are open the record gets no parent and names the candidates
// (Record.ParentCandidates): a wrong parent in a waterfall misleads more than a missing one.
//
// Only the correlator goroutine touches it.
type handling struct {
	open  map[handKey][]handEntry
	n     int       // entries in open
	next  time.Time // no entry ends before this (see add)
	limit int
}

type handKey struct{ proc, requestID string }

// handEntry is one message a process is handling.
type handEntry struct {
	id          string // the record's MsgID, else its UniqueID
	from, until time.Time
}

// maxOpenPerRequest bounds the messages of one request open at once in one process; more are not tracked (their
// children then find more than one candidate or none, never a wrong one: a full list makes every lookup ambiguous).
const maxOpenPerRequest = 16

// maxCandidates bounds Record.ParentCandidates.
const maxCandidates = 8

func newHandling(limit int) handling {
	return handling{open: make(map[handKey][]handEntry), limit: limit}
}

// add opens id for proc in request at from, until until. A full table is swept for ended entries, but only once one
// can have ended: a table full of live ones would otherwise be scanned whole at every delivery.
func (h *handling) add(k handKey, id string, from, until time.Time) {
	if h.n >= h.limit {
		if from.Before(h.next) {
			return
		}
		h.sweep(from)
		if h.n >= h.limit {
			return
		}
	}
	es := h.open[k]
	for i := range es {
		if es[i].id == id { // a redelivery, or a fanout's second copy in one process: one entry
			es[i].until = until
			return
		}
	}
	if len(es) >= maxOpenPerRequest {
		es[len(es)-1].until = from // full: the list is marked ambiguous for as long as it is full
		return
	}
	h.open[k] = append(es, handEntry{id: id, from: from, until: until})
	h.n++
	if h.n == 1 || until.Before(h.next) {
		h.next = until
	}
}

// done closes id (a call's reply was published).
func (h *handling) done(k handKey, id string) {
	es := h.open[k]
	for i := range es {
		if es[i].id == id {
			es = append(es[:i], es[i+1:]...)
			h.n--
			if len(es) == 0 {
				delete(h.open, k)
			} else {
				h.open[k] = es
			}
			return
		}
	}
}

// parent returns the message a publish by proc at `at` is a child of, or, when more than one message of the request
// is open, none and the candidates. self is the publish's own id, never its own parent.
func (h *handling) parent(k handKey, at time.Time, self ...string) (string, []string) {
	var found []string
	full := len(h.open[k]) >= maxOpenPerRequest
	for _, e := range h.open[k] {
		if at.Before(e.from) || !at.Before(e.until) || e.id == self[0] || (len(self) > 1 && e.id == self[1]) {
			continue
		}
		found = append(found, e.id)
	}
	switch {
	case len(found) == 1 && !full:
		return found[0], nil
	case len(found) > maxCandidates:
		return "", found[:maxCandidates]
	case len(found) > 1 || full:
		return "", found
	}
	return "", nil
}

// sweep drops the entries that ended by now.
func (h *handling) sweep(now time.Time) {
	var next time.Time
	for k, es := range h.open {
		kept := es[:0]
		for _, e := range es {
			if now.Before(e.until) {
				kept = append(kept, e)
				if next.IsZero() || e.until.Before(next) {
					next = e.until
				}
			} else {
				h.n--
			}
		}
		if len(kept) == 0 {
			delete(h.open, k)
		} else {
			h.open[k] = kept
		}
	}
	h.next = next
}
