package ui

import (
	"math"
	"sort"
	"strings"
	"time"

	"github.com/amqptrace/amqptrace/correlate"
)

// The sliding window: nSlots slots of slotDur each. Counts and latency histograms live per slot, so the window
// slides by whole slots and a rate never needs per-record timestamps.
const (
	slotDur  = 5 * time.Second
	nSlots   = 12
	window   = nSlots * slotDur
	edgeIdle = 5 * time.Minute // an edge without traffic for this long is forgotten
	maxEdges = 4096            // per view (by service, by host); more edges are dropped and counted
)

// Latency histogram: log-scale buckets, histPerOctave per doubling from 1µs, so a percentile read from the bucket's
// geometric middle is within about 6% of the true value. 180 buckets reach 2^30µs (about 18 minutes).
const (
	histPerOctave = 6
	histBuckets   = 180
)

func histBucket(us int64) int {
	if us <= 1 {
		return 0
	}
	b := int(math.Log2(float64(us)) * histPerOctave)
	return min(max(b, 0), histBuckets-1)
}

// histValue is the representative latency of bucket b: the geometric middle of [2^(b/k), 2^((b+1)/k)).
func histValue(b int) int64 {
	return int64(math.Round(math.Pow(2, (float64(b)+0.5)/histPerOctave)))
}

// Edge types. Fanout and notification edges are distinct from point-to-point RPC (calls and casts) because
// they mean different things on a graph: one publish reaching many, and events nobody waits for.
const (
	edgeRPC          = "rpc"
	edgeFanout       = "fanout"
	edgeNotification = "notification"
)

// Phase histograms (queue wait, server time, reply transit) are coarser than the total's: every other bucket of
// the total's scale (3 per doubling, within about 12%), so three of them per slot cost less than two totals.
const (
	phaseQueue = iota
	phaseServer
	phaseTransit
	nPhases
	phaseBuckets = histBuckets / 2
)

func phaseBucket(us int64) int { return histBucket(us) / 2 }

// phaseValue is the representative latency of phase bucket b: the geometric middle of its two total buckets.
func phaseValue(b int) int64 {
	return int64(math.Round(math.Pow(2, (2*float64(b)+1)/histPerOctave)))
}

type slot struct {
	idx                                    int64 // absolute slot number (unix time / slotDur)
	calls, casts, fanouts, notifications   uint64
	errors, timeouts, unroutable, latencyN uint64
	hist                                   *[histBuckets]uint32 // nil until a latency is seen
	phase                                  *[nPhases][phaseBuckets]uint32
	phaseN                                 [nPhases]uint64
}

type edgeKey struct{ from, to, typ string }

type edgeAgg struct {
	key      edgeKey
	slots    [nSlots]slot
	lastSeen time.Time
	fresh    int      // records since the last tick (drives the pulse animation)
	methods  []string // up to maxMethods distinct method names, for the tooltip
	topics   []string // up to maxMethods distinct topics: the topics the consumer serves (its role, its queues)
}

const maxMethods = 6

func (e *edgeAgg) slotAt(now time.Time) *slot {
	idx := now.UnixNano() / int64(slotDur)
	s := &e.slots[idx%nSlots]
	if s.idx != idx {
		h, ph := s.hist, s.phase
		*s = slot{idx: idx}
		// Reuse the histogram arrays: clearing is cheaper than an allocation per slot turn.
		if h != nil {
			clear(h[:])
			s.hist = h
		}
		if ph != nil {
			*ph = [nPhases][phaseBuckets]uint32{}
			s.phase = ph
		}
	}
	return s
}

// nodeInfo is what the graph knows about a node besides its id.
type nodeInfo struct {
	label, service, host, kind string
}

// graphAgg aggregates records into edges for one view (by service, or by service and host).
type graphAgg struct {
	byHost  bool
	edges   map[edgeKey]*edgeAgg
	nodes   map[string]nodeInfo
	dropped uint64 // records' edges not tracked because maxEdges was reached
}

func newGraphAgg(byHost bool) *graphAgg {
	return &graphAgg{byHost: byHost, edges: make(map[edgeKey]*edgeAgg), nodes: make(map[string]nodeInfo)}
}

// endpointNode names the node of an endpoint.
func (g *graphAgg) endpointNode(e *correlate.Endpoint) (string, nodeInfo) {
	svc := e.Service
	if svc == "" {
		svc = "unknown"
	}
	if g.byHost && e.Host != "" {
		return svc + "@" + e.Host, nodeInfo{label: svc + " @ " + e.Host, service: svc, host: e.Host, kind: "service"}
	}
	return svc, nodeInfo{label: svc, service: svc, kind: "service"}
}

// topicNode is the pseudo-node for a destination nobody behind the proxy consumed from (a notification topic, a
// call that was never delivered): the flow is still worth drawing.
func topicNode(r *correlate.Record) (string, nodeInfo) {
	name := r.Topic
	if name == "" {
		name = r.Exchange
	}
	if name == "" {
		name = r.RoutingKey
	}
	if name == "" {
		name = "(default exchange)"
	}
	return "topic:" + name, nodeInfo{label: name, kind: "topic"}
}

func edgeType(k correlate.Kind) string {
	switch k {
	case correlate.KindFanout:
		return edgeFanout
	case correlate.KindNotification:
		return edgeNotification
	default:
		return edgeRPC
	}
}

// add counts r on every edge it travelled: caller → each consumer.
func (g *graphAgg) add(r *correlate.Record, now time.Time) {
	var from string
	var fromInfo nodeInfo
	if r.Caller != nil {
		from, fromInfo = g.endpointNode(r.Caller)
	} else {
		from, fromInfo = "unseen", nodeInfo{label: "(caller not seen)", kind: "unknown"}
	}
	typ := edgeType(r.Kind)
	// Each distinct consumer node counts once per record: a fanout to three computes on one host view is one edge
	// with one publish, not three.
	type target struct {
		id   string
		info nodeInfo
	}
	var tos [8]target
	targets := tos[:0]
	addTarget := func(id string, info nodeInfo) {
		for _, t := range targets {
			if t.id == id {
				return
			}
		}
		targets = append(targets, target{id, info})
	}
	switch {
	case len(r.Callees) > 0:
		for i := range r.Callees {
			id, info := g.endpointNode(&r.Callees[i])
			addTarget(id, info)
		}
	case r.Callee != nil:
		id, info := g.endpointNode(r.Callee)
		addTarget(id, info)
	default:
		id, info := topicNode(r)
		addTarget(id, info)
	}
	for _, to := range targets {
		g.addEdge(edgeKey{from, to.id, typ}, fromInfo, to.info, r, now)
	}
}

// addEdge counts r on edge k. Nodes are registered only with an edge, so the node map is bounded by the edges.
func (g *graphAgg) addEdge(k edgeKey, fromInfo, toInfo nodeInfo, r *correlate.Record, now time.Time) {
	e := g.edges[k]
	if e == nil {
		if len(g.edges) >= maxEdges {
			g.dropped++
			return
		}
		e = &edgeAgg{key: k}
		g.edges[k] = e
		if _, ok := g.nodes[k.from]; !ok {
			g.nodes[k.from] = fromInfo
		}
		if _, ok := g.nodes[k.to]; !ok {
			g.nodes[k.to] = toInfo
		}
	}
	e.lastSeen = now
	e.fresh++
	e.methods = addDistinct(e.methods, r.Method)
	e.topics = addDistinct(e.topics, r.Topic)
	s := e.slotAt(now)
	switch r.Kind {
	case correlate.KindCall:
		s.calls++
	case correlate.KindCast:
		s.casts++
	case correlate.KindFanout:
		s.fanouts++
	case correlate.KindNotification:
		s.notifications++
	}
	switch r.Status {
	case correlate.StatusError:
		s.errors++
	case correlate.StatusTimeout:
		s.timeouts++
	case correlate.StatusUnroutable:
		s.unroutable++
	}
	// Latency percentiles are over answered calls only: a timeout's duration is the caller's deadline, not a
	// latency, and would drag p99 to the timeout value (timeouts are counted on their own).
	if r.Kind == correlate.KindCall && (r.Status == correlate.StatusOK || r.Status == correlate.StatusError) && r.DurationUS > 0 {
		if s.hist == nil {
			s.hist = new([histBuckets]uint32)
		}
		if b := histBucket(r.DurationUS); s.hist[b] < math.MaxUint32 {
			s.hist[b]++
		}
		s.latencyN++
	}
	// The split that says "broker or server": queue wait for every delivered request, server time and reply
	// transit for answered calls.
	var phases [nPhases]int64
	phases[phaseQueue] = r.QueueUS
	if r.Kind == correlate.KindCall && r.Replied != nil && r.Status != correlate.StatusTimeout {
		phases[phaseServer] = r.ServerUS
		if r.ReplyDelivered != nil {
			phases[phaseTransit] = max(r.ReplyDelivered.Sub(*r.Replied).Microseconds(), 1)
		}
	}
	for p, us := range phases {
		if us <= 0 {
			continue
		}
		if s.phase == nil {
			s.phase = new([nPhases][phaseBuckets]uint32)
		}
		if b := phaseBucket(us); s.phase[p][b] < math.MaxUint32 {
			s.phase[p][b]++
		}
		s.phaseN[p]++
	}
}

// addDistinct appends v to list unless it is empty, already there, or the list holds maxMethods.
func addDistinct(list []string, v string) []string { return addDistinctN(list, v, maxMethods) }

// Graph is the JSON shape of /api/graph and of the graph in websocket messages.
type Graph struct {
	By      string      `json:"by"` // "service" or "host"
	WindowS float64     `json:"window_s"`
	Nodes   []GraphNode `json:"nodes"`
	Edges   []GraphEdge `json:"edges"`
}

// GraphNode is one service (or service on a host), or a pseudo-node for an unconsumed topic or an unseen caller.
type GraphNode struct {
	ID      string `json:"id"`
	Label   string `json:"label"`
	Service string `json:"service,omitempty"`
	Host    string `json:"host,omitempty"`
	Kind    string `json:"kind"` // service, topic, unknown
	// Role is what the wire says the node does (roleOf): client (only calls out), server (consumes RPC topics),
	// agent (consumes fanouts only), listener (consumes notifications only), topic, unknown.
	Role string `json:"role"`
	// Serves are the topics others published to it (up to six per edge), the wire's name for its role.
	Serves  []string `json:"serves,omitempty"`
	InRate  float64  `json:"in_rate"`
	OutRate float64  `json:"out_rate"`
	Errors  uint64   `json:"errors"`
	// Live, from the correlator's in-flight view: calls the service has in hand (delivered, not answered), the
	// monitored ones a worker is known to have taken, and calls it awaits replies to.
	InFlight int `json:"in_flight"`
	Handling int `json:"handling,omitempty"`
	Awaiting int `json:"awaiting"`
	// PeakHandling is the most calls a worker of one of its processes had at once lately; Saturated marks a
	// server one of whose processes has every worker it was seen to have busy while more calls wait in it.
	PeakHandling int  `json:"peak_handling,omitempty"`
	Saturated    bool `json:"saturated,omitempty"`
	// QueueDepth and QueueOldestMS are the backlog of the queues of the topics it serves: published, not
	// delivered yet (wire depth), and how long the oldest has waited.
	QueueDepth    int   `json:"queue_depth,omitempty"`
	QueueOldestMS int64 `json:"queue_oldest_ms,omitempty"`
}

// GraphEdge is one flow caller → consumer of one type, with counts over the window.
type GraphEdge struct {
	ID            string    `json:"id"`
	From          string    `json:"from"`
	To            string    `json:"to"`
	Type          string    `json:"type"` // rpc, fanout, notification
	Rate          float64   `json:"rate"` // all records per second
	CallRate      float64   `json:"call_rate"`
	CastRate      float64   `json:"cast_rate"`
	Calls         uint64    `json:"calls"`
	Casts         uint64    `json:"casts"`
	Fanouts       uint64    `json:"fanouts"`
	Notifications uint64    `json:"notifications"`
	Errors        uint64    `json:"errors"`
	Timeouts      uint64    `json:"timeouts"`
	Unroutable    uint64    `json:"unroutable"`
	ErrorRatio    float64   `json:"error_ratio"`   // (errors+timeouts+unroutable)/records
	TimeoutRatio  float64   `json:"timeout_ratio"` // timeouts/calls
	P50US         int64     `json:"p50_us"`
	P99US         int64     `json:"p99_us"`
	New           int       `json:"new"` // records since the previous update
	LastSeen      time.Time `json:"last_seen"`
	Methods       []string  `json:"methods,omitempty"`
	Topics        []string  `json:"topics,omitempty"`
	InFlight      int       `json:"in_flight"` // calls along this edge waiting for their reply now
	// The split of a call's time: waiting in the broker's queue (published → delivered), in the server
	// (delivered → replied) and on the way back (replied → reply delivered), p50 and p99 of each.
	QueueP50US   int64 `json:"queue_p50_us"`
	QueueP99US   int64 `json:"queue_p99_us"`
	ServerP50US  int64 `json:"server_p50_us"`
	ServerP99US  int64 `json:"server_p99_us"`
	TransitP50US int64 `json:"transit_p50_us"`
	TransitP99US int64 `json:"transit_p99_us"`
	// Now against the edge's own baseline: the last recentSlots slots against the rest of the window. A base of
	// zero means the edge has no history to compare with yet.
	RecentP99US      int64   `json:"recent_p99_us"`
	BaseP99US        int64   `json:"base_p99_us"`
	RecentErrorRatio float64 `json:"recent_error_ratio"`
	BaseErrorRatio   float64 `json:"base_error_ratio"`
}

// recentSlots is what "now" means against an edge's baseline: the current slot and the two before it (10-15 s).
const recentSlots = 3

// covered is the span of time the window really covers at now: the full window, or less when the server started
// recently (dividing by 60s a few seconds after start would understate every rate).
func covered(now, started time.Time) float64 {
	cur := now.UnixNano() % int64(slotDur)
	c := time.Duration(cur) + (nSlots-1)*slotDur
	if up := now.Sub(started); up < c {
		c = up
	}
	return max(c.Seconds(), 1)
}

// view computes the graph at now and forgets edges idle for longer than edgeIdle. It resets each edge's fresh
// count when resetFresh is set (the tick), so "new" means since the previous published update.
func (g *graphAgg) view(now, started time.Time, resetFresh bool) Graph {
	out := Graph{By: "service", WindowS: window.Seconds(), Nodes: []GraphNode{}, Edges: []GraphEdge{}}
	if g.byHost {
		out.By = "host"
	}
	secs := covered(now, started)
	nowIdx := now.UnixNano() / int64(slotDur)
	nodeIdx := make(map[string]int)
	var recent, base [histBuckets]uint64
	var phase [nPhases][phaseBuckets]uint64
	for k, e := range g.edges {
		if now.Sub(e.lastSeen) > edgeIdle {
			delete(g.edges, k)
			continue
		}
		ge := GraphEdge{ID: k.from + ">" + k.to + ">" + k.typ, From: k.from, To: k.to, Type: k.typ,
			New: e.fresh, LastSeen: e.lastSeen, Methods: append([]string(nil), e.methods...),
			Topics: append([]string(nil), e.topics...)}
		if resetFresh {
			e.fresh = 0
		}
		clear(recent[:])
		clear(base[:])
		phase = [nPhases][phaseBuckets]uint64{}
		var recentN, baseN, phaseN [nPhases]uint64
		var recentRecs, recentBad, baseRecs, baseBad uint64
		for i := range e.slots {
			s := &e.slots[i]
			if s.idx <= nowIdx-nSlots || s.idx > nowIdx {
				continue
			}
			ge.Calls += s.calls
			ge.Casts += s.casts
			ge.Fanouts += s.fanouts
			ge.Notifications += s.notifications
			ge.Errors += s.errors
			ge.Timeouts += s.timeouts
			ge.Unroutable += s.unroutable
			recs, bad := s.calls+s.casts+s.fanouts+s.notifications, s.errors+s.timeouts+s.unroutable
			isRecent := s.idx > nowIdx-recentSlots
			h := &base
			if isRecent {
				h = &recent
				recentRecs, recentBad = recentRecs+recs, recentBad+bad
				recentN[0] += s.latencyN
			} else {
				baseRecs, baseBad = baseRecs+recs, baseBad+bad
				baseN[0] += s.latencyN
			}
			if s.hist != nil {
				for b, n := range s.hist {
					h[b] += uint64(n)
				}
			}
			if s.phase != nil {
				for p := range s.phase {
					for b, n := range s.phase[p] {
						phase[p][b] += uint64(n)
					}
					phaseN[p] += s.phaseN[p]
				}
			}
		}
		total := ge.Calls + ge.Casts + ge.Fanouts + ge.Notifications
		ge.Rate = float64(total) / secs
		ge.CallRate = float64(ge.Calls) / secs
		ge.CastRate = float64(ge.Casts+ge.Fanouts) / secs
		if total > 0 {
			ge.ErrorRatio = float64(ge.Errors+ge.Timeouts+ge.Unroutable) / float64(total)
		}
		if ge.Calls > 0 {
			ge.TimeoutRatio = float64(ge.Timeouts) / float64(ge.Calls)
		}
		if recentRecs > 0 {
			ge.RecentErrorRatio = float64(recentBad) / float64(recentRecs)
		}
		if baseRecs > 0 {
			ge.BaseErrorRatio = float64(baseBad) / float64(baseRecs)
		}
		ge.RecentP99US = percentile(recent[:], recentN[0], 0.99, histValue)
		ge.BaseP99US = percentile(base[:], baseN[0], 0.99, histValue)
		if latN := recentN[0] + baseN[0]; latN > 0 {
			for b := range recent {
				recent[b] += base[b]
			}
			ge.P50US = percentile(recent[:], latN, 0.50, histValue)
			ge.P99US = percentile(recent[:], latN, 0.99, histValue)
		}
		ge.QueueP50US = percentile(phase[phaseQueue][:], phaseN[phaseQueue], 0.50, phaseValue)
		ge.QueueP99US = percentile(phase[phaseQueue][:], phaseN[phaseQueue], 0.99, phaseValue)
		ge.ServerP50US = percentile(phase[phaseServer][:], phaseN[phaseServer], 0.50, phaseValue)
		ge.ServerP99US = percentile(phase[phaseServer][:], phaseN[phaseServer], 0.99, phaseValue)
		ge.TransitP50US = percentile(phase[phaseTransit][:], phaseN[phaseTransit], 0.50, phaseValue)
		ge.TransitP99US = percentile(phase[phaseTransit][:], phaseN[phaseTransit], 0.99, phaseValue)
		out.Edges = append(out.Edges, ge)
		for _, id := range []string{k.from, k.to} {
			if _, ok := nodeIdx[id]; !ok {
				info := g.nodes[id]
				nodeIdx[id] = len(out.Nodes)
				out.Nodes = append(out.Nodes, GraphNode{ID: id, Label: info.label, Service: info.service,
					Host: info.host, Kind: info.kind})
			}
		}
		out.Nodes[nodeIdx[k.from]].OutRate += ge.Rate
		to := &out.Nodes[nodeIdx[k.to]]
		to.InRate += ge.Rate
		to.Errors += ge.Errors + ge.Timeouts
	}
	assignRoles(&out)
	// Forget nodes no edge mentions any more, so the node map stays bounded by the live edges.
	for id := range g.nodes {
		if _, ok := nodeIdx[id]; !ok {
			delete(g.nodes, id)
		}
	}
	// Sorted output keeps JSON stable between updates (the page lays out by order within a layer).
	sort.Slice(out.Nodes, func(i, j int) bool { return out.Nodes[i].ID < out.Nodes[j].ID })
	sort.Slice(out.Edges, func(i, j int) bool { return out.Edges[i].ID < out.Edges[j].ID })
	return out
}

// prune forgets edges idle for longer than edgeIdle and the nodes no edge mentions. The published (service) view
// prunes as it renders; the host view, rendered only on request, is pruned by the tick through this.
func (g *graphAgg) prune(now time.Time) {
	for k, e := range g.edges {
		if now.Sub(e.lastSeen) > edgeIdle {
			delete(g.edges, k)
		}
	}
	if len(g.nodes) <= 2*len(g.edges) {
		return
	}
	used := make(map[string]struct{}, 2*len(g.edges))
	for k := range g.edges {
		used[k.from] = struct{}{}
		used[k.to] = struct{}{}
	}
	for id := range g.nodes {
		if _, ok := used[id]; !ok {
			delete(g.nodes, id)
		}
	}
}

// percentile reads the p-quantile from a merged histogram of n values: the bucket that holds the ceil(p*n)-th
// value, as value(bucket). Zero when n is zero.
func percentile(h []uint64, n uint64, p float64, value func(int) int64) int64 {
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(p * float64(n)))
	if rank == 0 {
		rank = 1
	}
	var seen uint64
	for b, c := range h {
		seen += c
		if seen >= rank {
			return value(b)
		}
	}
	return value(len(h) - 1)
}

// The roles a node can have, from what the wire shows of it (assignRoles).
const (
	roleClient   = "client"   // publishes only: nobody behind the proxy sends it anything
	roleServer   = "server"   // consumes calls or casts on topics it serves
	roleAgent    = "agent"    // consumes fanouts (and no point-to-point RPC): one of many per topic
	roleListener = "listener" // consumes notifications only
	roleTopic    = "topic"    // a destination nobody behind the proxy consumed
	roleUnknown  = "unknown"  // the caller of records whose publisher was not seen
)

// assignRoles sets each node's role and the topics it serves from the edges into it: the kind of traffic it
// consumes, never its name.
func assignRoles(g *Graph) {
	in := make(map[string]*[3]bool, len(g.Nodes)) // rpc, fanout, notification received
	serves := make(map[string][]string)
	for _, e := range g.Edges {
		f := in[e.To]
		if f == nil {
			f = new([3]bool)
			in[e.To] = f
		}
		switch e.Type {
		case edgeRPC:
			f[0] = true
		case edgeFanout:
			f[1] = true
		case edgeNotification:
			f[2] = true
		}
		if e.Type != edgeNotification {
			for _, t := range e.Topics {
				serves[e.To] = addDistinctN(serves[e.To], t, 2*maxMethods)
			}
		}
	}
	for i := range g.Nodes {
		n := &g.Nodes[i]
		f := in[n.ID]
		switch {
		case n.Kind == "topic":
			n.Role = roleTopic
		case n.Kind == "unknown":
			n.Role = roleUnknown
		case f == nil:
			n.Role = roleClient
		case f[0]:
			n.Role = roleServer
		case f[1]:
			n.Role = roleAgent
		default:
			n.Role = roleListener
		}
		n.Serves = serves[n.ID]
		sort.Strings(n.Serves)
	}
}

func addDistinctN(list []string, v string, n int) []string {
	if v == "" || len(list) >= n {
		return list
	}
	for _, m := range list {
		if m == v {
			return list
		}
	}
	return append(list, v)
}

// withInFlight adds what waits now (correlate.InFlight) to the graph's nodes and edges. A waiting call whose callee
// is not known yet (still queued) counts on its caller only.
func (g Graph) withInFlight(v correlate.InFlight) Graph {
	byHost := g.By == "host"
	id := func(e correlate.Endpoint) string {
		svc := e.Service
		if svc == "" {
			svc = "unknown"
		}
		if byHost && e.Host != "" {
			return svc + "@" + e.Host
		}
		return svc
	}
	nodes := make(map[string]*GraphNode, len(g.Nodes))
	for i := range g.Nodes {
		nodes[g.Nodes[i].ID] = &g.Nodes[i]
	}
	for _, s := range v.Servers {
		if n := nodes[id(s.Endpoint)]; n != nil {
			n.InFlight += s.InFlight
			n.Handling += s.Handling
			n.PeakHandling = max(n.PeakHandling, s.PeakHandling)
			if saturated(s) {
				n.Saturated = true
			}
		}
	}
	// A queue's backlog counts on the nodes serving its topic: oslo names a topic's queues "<topic>" and
	// "<topic>.<server>".
	servedBy := make(map[string][]*GraphNode)
	for i := range g.Nodes {
		for _, t := range g.Nodes[i].Serves {
			servedBy[t] = append(servedBy[t], &g.Nodes[i])
		}
	}
	for _, q := range v.Queues {
		ns := servedBy[q.Queue]
		if topic, _, ok := strings.Cut(q.Queue, "."); ok && ns == nil {
			ns = servedBy[topic]
		}
		for _, n := range ns {
			n.QueueDepth += q.Depth
			n.QueueOldestMS = max(n.QueueOldestMS, q.OldestAgeMS)
		}
	}
	for _, c := range v.Callers {
		if n := nodes[id(c.Endpoint)]; n != nil {
			n.Awaiting += c.InFlight
		}
	}
	edges := make(map[string]*GraphEdge, len(g.Edges))
	for i := range g.Edges {
		edges[g.Edges[i].ID] = &g.Edges[i]
	}
	for _, f := range v.Flows {
		if f.Callee.Service == "" {
			continue
		}
		if e := edges[id(f.Caller)+">"+id(f.Callee)+">"+edgeRPC]; e != nil {
			e.InFlight += f.Pending
		}
	}
	return g
}

// saturated says whether a server process has every worker it was seen to have busy while more calls wait in it:
// the executor pool is full (correlate's PeakHandling is the most it had busy at once lately).
func saturated(p correlate.ProcessInFlight) bool {
	return p.PeakHandling > 0 && p.Handling >= p.PeakHandling && p.InFlight > p.Handling
}
