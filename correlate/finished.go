package correlate

// finished remembers calls whose records were emitted, for the replies that come after them:
//   - the other half of a final reply (its publish read after its delivery, or the reverse) is a straggler, not
//     an unmatched reply;
//   - a reply to a call that timed out without one amends that call's record (a follow-up record that names it)
//     instead of vanishing as unmatched.
//
// Both are rings: the first of the last recentFinals finals, the second of the last recentTimeouts timeouts, which
// are rarer and whose late replies can come long after (a reply ten seconds after a two-second timeout is what a
// saturated server gives). Only the correlator goroutine touches it.
type finished struct {
	finals   ring[string] // msg key → final reply's _unique_id
	timeouts ring[timedOut]
}

// timedOut is a call emitted as a timeout: its record, and where its reply goes.
type timedOut struct {
	rec    *Record
	replyQ string
}

const (
	recentFinals   = 4096
	recentTimeouts = 16384
)

func newFinished() finished {
	return finished{finals: newRing[string](recentFinals), timeouts: newRing[timedOut](recentTimeouts)}
}

// final remembers the final reply of a call that ended with one.
func (f *finished) final(msgKey, replyUnique string) {
	f.finals.put(msgKey, replyUnique)
	f.timeouts.remove(msgKey)
}

// timeout remembers the record of a call that ended without a reply.
func (f *finished) timeout(msgKey, replyQ string, r *Record) {
	f.timeouts.put(msgKey, timedOut{rec: r, replyQ: replyQ})
}

// straggler says whether a reply is the other half of the final reply of a call that already ended.
func (f *finished) straggler(msgKey, replyUnique string) bool {
	u, ok := f.finals.get(msgKey)
	return ok && u != "" && u == replyUnique
}

// answered returns the record of a timed-out call that a late reply answers, and forgets it: one follow-up each.
func (f *finished) answered(msgKey string) (timedOut, bool) {
	t, ok := f.timeouts.get(msgKey)
	if ok {
		f.timeouts.remove(msgKey)
	}
	return t, ok
}

// ring is a map with a bound: past n entries the oldest is forgotten.
type ring[V any] struct {
	m    map[string]ringEntry[V]
	keys []string
	pos  int
}

type ringEntry[V any] struct {
	v    V
	slot int // where the key stands in keys, so that a reused slot forgets only its own entry
}

func newRing[V any](n int) ring[V] {
	return ring[V]{m: make(map[string]ringEntry[V]), keys: make([]string, n)}
}

func (r *ring[V]) put(k string, v V) {
	if e, ok := r.m[k]; ok {
		e.v = v
		r.m[k] = e
		return
	}
	if old := r.keys[r.pos]; old != "" {
		if e, ok := r.m[old]; ok && e.slot == r.pos {
			delete(r.m, old)
		}
	}
	r.keys[r.pos] = k
	r.m[k] = ringEntry[V]{v: v, slot: r.pos}
	r.pos = (r.pos + 1) % len(r.keys)
}

func (r *ring[V]) get(k string) (V, bool) {
	e, ok := r.m[k]
	return e.v, ok
}

// remove forgets k; its slot in the ring is reused in turn.
func (r *ring[V]) remove(k string) { delete(r.m, k) }
