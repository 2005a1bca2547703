package ui

import (
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/amqptrace/amqptrace/correlate"
)

// store is the ring of recent records plus the graph aggregates. Record is its only writer (under mu, one record
// at a time); the tick takes the batch and renders under mu; HTTP handlers read it under the read lock. Records in
// the ring are shared with the other sinks and never modified (correlate's record contract).
type store struct {
	mu     sync.RWMutex
	ring   []*correlate.Record // fixed capacity; next is the slot to overwrite
	next   int
	full   bool
	byID   map[uint64]*correlate.Record
	svc    *graphAgg // by service: published to clients every tick
	host   *graphAgg // by service and host: rendered on request
	start  time.Time
	totals totals
	// batch holds the records added since the last tick, for the next websocket delta; batchSkipped counts the
	// ones over maxBatch.
	batch        []*correlate.Record
	batchSkipped int
}

// totals are counts since start, for the headline counters.
type totals struct {
	Records  uint64 `json:"records"`
	Errors   uint64 `json:"errors"`
	Timeouts uint64 `json:"timeouts"`
}

func newStore(size int, start time.Time) *store {
	return &store{
		ring:  make([]*correlate.Record, size),
		byID:  make(map[uint64]*correlate.Record, size),
		svc:   newGraphAgg(false),
		host:  newGraphAgg(true),
		start: start,
	}
}

// addLocked puts r in the ring (evicting the oldest) and into both graph views. The caller holds mu.
func (st *store) addLocked(r *correlate.Record, now time.Time) {
	if old := st.ring[st.next]; old != nil && st.byID[old.ID] == old {
		delete(st.byID, old.ID)
	}
	st.ring[st.next] = r
	st.byID[r.ID] = r
	st.next++
	if st.next == len(st.ring) {
		st.next = 0
		st.full = true
	}
	if r.Amends != 0 {
		return // a follow-up: listed and searchable, but the call was counted in the record it amends
	}
	st.svc.add(r, now)
	st.host.add(r, now)
	st.totals.Records++
	switch r.Status {
	case correlate.StatusError:
		st.totals.Errors++
	case correlate.StatusTimeout:
		st.totals.Timeouts++
	}
}

// each calls f on records from newest to oldest until f returns false. The caller holds mu (read).
func (st *store) eachLocked(f func(*correlate.Record) bool) {
	n := st.next
	if st.full {
		n = len(st.ring)
	}
	for i := 0; i < n; i++ {
		j := st.next - 1 - i
		if j < 0 {
			j += len(st.ring)
		}
		if !f(st.ring[j]) {
			return
		}
	}
}

// filter selects records for /api/calls. Empty fields match everything. Matching is exact except service, which
// matches the caller, the callee or any fanout consumer.
type filter struct {
	service, method, topic, kind, status, requestID string
	limit                                           int
	// before, when set, keeps only records older than the record with this id (ids grow in emission order, the
	// ring's order): the next page of /api/calls.
	before uint64
}

func (f *filter) match(r *correlate.Record) bool {
	if f.before != 0 && r.ID >= f.before {
		return false
	}
	if f.method != "" && r.Method != f.method {
		return false
	}
	if f.topic != "" && r.Topic != f.topic {
		return false
	}
	if f.kind != "" && string(r.Kind) != f.kind {
		return false
	}
	if f.status != "" && string(r.Status) != f.status {
		return false
	}
	if f.requestID != "" && r.RequestID != f.requestID && r.GlobalRequestID != f.requestID {
		return false
	}
	if f.service != "" && !involves(r, f.service) {
		return false
	}
	return true
}

func involves(r *correlate.Record, svc string) bool {
	if r.Caller != nil && r.Caller.Service == svc || r.Callee != nil && r.Callee.Service == svc {
		return true
	}
	for i := range r.Callees {
		if r.Callees[i].Service == svc {
			return true
		}
	}
	return false
}

// query returns up to f.limit matching records, newest first.
func (st *store) query(f filter) []*correlate.Record {
	st.mu.RLock()
	defer st.mu.RUnlock()
	out := make([]*correlate.Record, 0, min(f.limit, 256))
	st.eachLocked(func(r *correlate.Record) bool {
		if f.match(r) {
			out = append(out, r)
		}
		return len(out) < f.limit
	})
	return out
}

// request returns every record of one request id (request_id or global_request_id) in publish order: the
// waterfall of one OpenStack request.
func (st *store) request(id string) []*correlate.Record {
	recs := st.query(filter{requestID: id, limit: len(st.ring)})
	sort.SliceStable(recs, func(i, j int) bool { return startOf(recs[i]).Before(startOf(recs[j])) })
	return recs
}

func startOf(r *correlate.Record) time.Time {
	for _, t := range []*time.Time{r.Published, r.Delivered, r.Replied, r.ReplyDelivered} {
		if t != nil {
			return *t
		}
	}
	return time.Time{}
}

func (st *store) get(id uint64) *correlate.Record {
	st.mu.RLock()
	defer st.mu.RUnlock()
	return st.byID[id]
}

func (st *store) graph(byHost bool, now time.Time) Graph {
	// view prunes idle edges, so it needs the write lock even for a read-only request.
	st.mu.Lock()
	defer st.mu.Unlock()
	if byHost {
		return st.host.view(now, st.start, false)
	}
	return st.svc.view(now, st.start, false)
}

// parseFilter reads /api/calls query parameters.
func parseFilter(get func(string) string, defLimit, maxLimit int) filter {
	f := filter{
		service:   strings.TrimSpace(get("service")),
		method:    strings.TrimSpace(get("method")),
		topic:     strings.TrimSpace(get("topic")),
		kind:      strings.TrimSpace(get("kind")),
		status:    strings.TrimSpace(get("status")),
		requestID: strings.TrimSpace(get("request_id")),
		limit:     defLimit,
	}
	if f.requestID == "" {
		f.requestID = strings.TrimSpace(get("request"))
	}
	if n, ok := atoiPositive(get("limit")); ok {
		f.limit = n
	}
	if b, err := strconv.ParseUint(strings.TrimSpace(get("before")), 10, 64); err == nil {
		f.before = b
	}
	f.limit = min(f.limit, maxLimit)
	return f
}

func atoiPositive(s string) (int, bool) {
	if s == "" || len(s) > 9 {
		return 0, false
	}
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, n > 0
}
