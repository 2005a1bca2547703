package correlate

import (
	"cmp"
	"context"
	"slices"
	"time"
)

// InFlight is what is waiting now, as the wire shows it: the view an operator opens when the cloud is slow, before
// any record of the slow RPCs exists (a record is emitted only once an RPC is final).
type InFlight struct {
	At time.Time `json:"at"`
	// Pending counts the RPCs that are not final yet, by state.
	Pending int `json:"pending"`
	// Queues are the queues holding messages published and not yet delivered (wire depth), deepest first.
	Queues []QueueInFlight `json:"queues"`
	// Servers are the processes handling calls: delivered and not yet answered. With oslo's default prefetch
	// (unlimited) that includes calls the process has taken from the broker but not yet started: waiting for a
	// worker of its executor pool.
	Servers []ProcessInFlight `json:"servers"`
	// Callers are the processes waiting for replies.
	Callers []ProcessInFlight `json:"callers"`
	// Oldest are the RPCs that have waited longest, oldest first (at most the limit asked for).
	Oldest []RPCInFlight `json:"oldest"`
	// Flows count the pending calls by caller and callee process (callee empty: not delivered yet), for the graph.
	Flows []FlowInFlight `json:"flows"`
}

// FlowInFlight is the pending calls from one caller process to one callee process.
type FlowInFlight struct {
	Caller  Endpoint `json:"caller"`
	Callee  Endpoint `json:"callee"`
	Pending int      `json:"pending"`
}

// QueueInFlight is one queue's backlog as seen on the wire.
type QueueInFlight struct {
	Queue string `json:"queue"`
	// Depth is the messages observed published to it and not yet delivered.
	Depth int `json:"depth"`
	// OldestAgeMS is how long the oldest of them has waited (wire lag).
	OldestAgeMS int64 `json:"oldest_age_ms"`
}

// ProcessInFlight is one process's calls in flight.
type ProcessInFlight struct {
	Endpoint
	InFlight    int   `json:"in_flight"`
	OldestAgeMS int64 `json:"oldest_age_ms"`
	// Handling (servers only) counts the monitored calls a worker is known to have taken and not answered: busy
	// workers (see saturation.go; an unmonitored call's start does not show on the wire).
	// PeakHandling is the most at once over the last one to two minutes: a server whose peak stays at the
	// same number while calls wait (in_flight above it) has a full executor pool of that size.
	Handling     int `json:"handling,omitempty"`
	PeakHandling int `json:"peak_handling,omitempty"`
}

// RPCInFlight is one pending RPC.
type RPCInFlight struct {
	Kind     Kind      `json:"kind"`
	State    string    `json:"state"` // one of the State constants
	Method   string    `json:"method,omitempty"`
	Topic    string    `json:"topic,omitempty"`
	Queue    string    `json:"queue,omitempty"`
	MsgID    string    `json:"msg_id,omitempty"`
	UniqueID string    `json:"unique_id,omitempty"`
	Request  string    `json:"request_id,omitempty"`
	Caller   *Endpoint `json:"caller"`
	Callee   *Endpoint `json:"callee"`
	Since    time.Time `json:"since"`
	AgeMS    int64     `json:"age_ms"`
}

// The states of a pending RPC, as the in-flight view names them. Every pending RPC is in exactly one (stateOf);
// it leaves the table through Correlator.end, the one way out.
const (
	StateQueued          = "queued"           // published, not delivered yet: it waits in the broker
	StateHandling        = "handling"         // delivered, no reply yet: it waits in the server
	StateReplied         = "replied"          // the final reply is published: it waits for its delivery
	StateAwaitingConfirm = "awaiting_confirm" // the final reply is published to a queue no one here consumes: it waits for the broker's confirm
	StateFinal           = "final"            // final, waiting one reorder window for a piece this proxy should see
)

// maxInFlightList bounds every list of the view.
const maxInFlightList = 1000

// inflightReq asks the Run goroutine, which owns the pending table, for a view.
type inflightReq struct {
	limit int
	resp  chan InFlight
}

// InFlight returns what is waiting now, with at most limit RPCs in Oldest (and at most 1000 entries in any list).
// It asks the correlator goroutine, so it waits for its next tick (a few milliseconds); it returns an empty view
// when ctx ends first or the correlator is not running.
func (c *Correlator) InFlight(ctx context.Context, limit int) InFlight {
	req := inflightReq{limit: min(max(limit, 0), maxInFlightList), resp: make(chan InFlight, 1)}
	select {
	case c.inflight <- req:
	case <-ctx.Done():
		return InFlight{}
	case <-c.stopped:
		return InFlight{}
	}
	select {
	case v := <-req.resp:
		return v
	case <-ctx.Done():
		return InFlight{}
	}
}

// inFlightView walks the pending table (oldest first) once.
func (c *Correlator) inFlightView(limit int) InFlight {
	now := c.clock()
	// Empty lists, not nulls: the API's readers iterate them.
	v := InFlight{At: now, Queues: []QueueInFlight{}, Servers: []ProcessInFlight{}, Callers: []ProcessInFlight{},
		Oldest: []RPCInFlight{}, Flows: []FlowInFlight{}}
	queues := map[string]*QueueInFlight{}
	servers := map[Endpoint]*ProcessInFlight{}
	flows := map[[2]Endpoint]int{}
	callers := map[Endpoint]*ProcessInFlight{}
	age := func(t time.Time) int64 { return max(now.Sub(t).Milliseconds(), 0) }
	var last struct { // the queue the last queued message waits in, and what it was found from
		exchange, routingKey string
		topo                 *topology
		q                    *QueueInFlight
	}
	for p := c.table.oldest; p != nil; p = p.next {
		if p.rec.Amends != 0 {
			continue // a follow-up: the call it amends is over
		}
		v.Pending++
		r := &p.rec
		state, since := c.stateOf(p)
		if state == StateQueued {
			// A backlog is mostly one queue's messages in a row: the queue of the message before is taken again
			// without finding it again (two map lookups and a cleaning per message). The walk runs on the
			// correlator's goroutine once per UI tick and /metrics scrape (BenchmarkInFlightView).
			e := last.q
			if e == nil || r.Exchange != last.exchange || r.RoutingKey != last.routingKey || p.topo != last.topo {
				// A pending record is not cleaned yet (Record.edit runs at emit): the view leaves correlate, so
				// its strings follow the same rule as a record's.
				q := CleanString(targetQueue(p), maxIDLen)
				if e = queues[q]; e == nil {
					e = &QueueInFlight{Queue: q}
					queues[q] = e
				}
				last.exchange, last.routingKey, last.topo, last.q = r.Exchange, r.RoutingKey, p.topo, e
			}
			e.Depth++
			e.OldestAgeMS = max(e.OldestAgeMS, age(since))
		}
		if r.Kind == KindCall && state == StateHandling && r.Callee != nil {
			e := addProcess(servers, *r.Callee, age(since))
			if p.loaded != nil {
				e.Handling++
			}
		}
		if r.Kind == KindCall && r.Caller != nil && r.Published != nil {
			addProcess(callers, *r.Caller, age(*r.Published))
			var callee Endpoint
			if r.Callee != nil {
				callee = procOf(r.Callee)
			}
			if k := [2]Endpoint{procOf(r.Caller), callee}; len(flows) < maxInFlightList || flows[k] > 0 {
				flows[k]++
			}
		}
		if len(v.Oldest) < limit {
			v.Oldest = append(v.Oldest, RPCInFlight{Kind: r.Kind, State: state, Method: CleanString(r.Method, maxIDLen),
				Topic: CleanString(r.Topic, maxIDLen), Queue: CleanString(r.Queue, maxIDLen),
				MsgID: CleanString(r.MsgID, maxIDLen), UniqueID: CleanString(r.UniqueID, maxIDLen),
				Request: CleanString(r.RequestID, maxIDLen), Caller: r.Caller, Callee: r.Callee, Since: since,
				AgeMS: age(since)})
		}
	}
	for _, e := range queues {
		v.Queues = append(v.Queues, *e)
	}
	slices.SortFunc(v.Queues, func(a, b QueueInFlight) int {
		return cmp.Or(cmp.Compare(b.Depth, a.Depth), cmp.Compare(a.Queue, b.Queue))
	})
	v.Queues = v.Queues[:min(len(v.Queues), maxInFlightList)]
	for k, e := range servers {
		if l := c.servers[k]; l != nil {
			e.PeakHandling = max(l.peak, l.peakPrev)
		}
	}
	v.Servers = sortedProcesses(servers)
	for k, n := range flows {
		v.Flows = append(v.Flows, FlowInFlight{Caller: k[0], Callee: k[1], Pending: n})
	}
	slices.SortFunc(v.Flows, func(a, b FlowInFlight) int {
		return cmp.Or(cmp.Compare(b.Pending, a.Pending), cmp.Compare(a.Caller.Service, b.Caller.Service),
			cmp.Compare(a.Callee.Service, b.Callee.Service))
	})
	v.Callers = sortedProcesses(callers)
	// Insertion order is first-sighting order; the view is by how long each has waited in its state.
	slices.SortStableFunc(v.Oldest, func(a, b RPCInFlight) int { return a.Since.Compare(b.Since) })
	return v
}

// stateOf names where a pending RPC waits, and since when.
func (c *Correlator) stateOf(p *pending) (string, time.Time) {
	r := &p.rec
	switch {
	case p.held:
		return StateFinal, c.clock()
	case p.waitConfirm && r.Replied != nil:
		return StateAwaitingConfirm, *r.Replied
	case r.Replied != nil:
		return StateReplied, *r.Replied
	case r.Delivered != nil && (r.Kind == KindCall || r.Deliveries >= p.expect.total()):
		return StateHandling, *r.Delivered
	case r.Published != nil:
		return StateQueued, *r.Published
	case r.Delivered != nil:
		return StateHandling, *r.Delivered
	}
	return StateQueued, c.clock()
}

// targetQueue names the queue a published, undelivered message waits in: the first queue the topology binds its
// routing key to, else the routing key (oslo binds each topic queue by its own name), else the exchange.
func targetQueue(p *pending) string {
	r := &p.rec
	if r.Exchange == "" {
		return r.RoutingKey
	}
	if p.topo != nil {
		if qs := p.topo.bindings[r.Exchange][r.RoutingKey]; len(qs) > 0 {
			return qs[0]
		}
	}
	if r.RoutingKey != "" {
		return r.RoutingKey
	}
	return r.Exchange
}

func addProcess(m map[Endpoint]*ProcessInFlight, ep Endpoint, ageMS int64) *ProcessInFlight {
	key := procOf(&ep)
	e := m[key]
	if e == nil {
		e = &ProcessInFlight{Endpoint: key}
		m[key] = e
	}
	e.InFlight++
	e.OldestAgeMS = max(e.OldestAgeMS, ageMS)
	return e
}

func sortedProcesses(m map[Endpoint]*ProcessInFlight) []ProcessInFlight {
	out := make([]ProcessInFlight, 0, len(m))
	for _, e := range m {
		out = append(out, *e)
	}
	slices.SortFunc(out, func(a, b ProcessInFlight) int {
		return cmp.Or(cmp.Compare(b.InFlight, a.InFlight), cmp.Compare(a.Service, b.Service), cmp.Compare(a.PID, b.PID))
	})
	return out[:min(len(out), maxInFlightList)]
}
