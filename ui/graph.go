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

type slot struct {
	idx                                    int64 // absolute slot number (unix time / slotDur)
	calls, casts, fanouts, notifications   uint64
	errors, timeouts, unroutable, latencyN uint64
	hist                                   *[histBuckets]uint32 // nil until a latency is seen
}

type edgeKey struct{ from, to, typ string }

type edgeAgg struct {
	key      edgeKey
	slots    [nSlots]slot
	lastSeen time.Time
	fresh    int      // records since the last tick (drives the pulse animation)
	methods  []string // up to maxMethods distinct method names, for the tooltip
}

const maxMethods = 6

func (e *edgeAgg) slotAt(now time.Time) *slot {
	idx := now.UnixNano() / int64(slotDur)
	s := &e.slots[idx%nSlots]
	if s.idx != idx {
		h := s.hist
		*s = slot{idx: idx}
		if h != nil {
			// Reuse the histogram array: clearing is cheaper than a 720-byte allocation per slot turn.
			clear(h[:])
			s.hist = h
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
	if r.Method != "" && len(e.methods) < maxMethods {
		known := false
		for _, m := range e.methods {
			if m == r.Method {
				known = true
				break
			}
		}
		if !known {
			e.methods = append(e.methods, r.Method)
		}
	}
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
}

// Graph is the JSON shape of /api/graph and of the graph in websocket messages.
type Graph struct {
	By      string      `json:"by"` // "service" or "host"
	WindowS float64     `json:"window_s"`
	Nodes   []GraphNode `json:"nodes"`
	Edges   []GraphEdge `json:"edges"`
}

// GraphNode is one service (or service on a host), or a pseudo-node for an unconsumed topic or an unseen caller.
type GraphNode struct {
	ID      string  `json:"id"`
	Label   string  `json:"label"`
	Service string  `json:"service,omitempty"`
	Host    string  `json:"host,omitempty"`
	Kind    string  `json:"kind"`  // service, topic, unknown
	Layer   int     `json:"layer"` // 0 api, 1 conductor/server, 2 scheduler, 3 compute/agents, 4 sinks
	InRate  float64 `json:"in_rate"`
	OutRate float64 `json:"out_rate"`
	Errors  uint64  `json:"errors"`
	// Live, from the correlator's in-flight view: calls the service has in hand (delivered, not answered), the
	// monitored ones a worker is known to have taken, and calls it awaits replies to.
	InFlight int `json:"in_flight"`
	Handling int `json:"handling,omitempty"`
	Awaiting int `json:"awaiting"`
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
	ErrorRatio    float64   `json:"error_ratio"` // (errors+timeouts+unroutable)/records
	P50US         int64     `json:"p50_us"`
	P99US         int64     `json:"p99_us"`
	New           int       `json:"new"` // records since the previous update
	LastSeen      time.Time `json:"last_seen"`
	Methods       []string  `json:"methods,omitempty"`
	InFlight      int       `json:"in_flight"` // calls along this edge waiting for their reply now
}

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
	var hist [histBuckets]uint64
	for k, e := range g.edges {
		if now.Sub(e.lastSeen) > edgeIdle {
			delete(g.edges, k)
			continue
		}
		ge := GraphEdge{ID: k.from + ">" + k.to + ">" + k.typ, From: k.from, To: k.to, Type: k.typ,
			New: e.fresh, LastSeen: e.lastSeen, Methods: append([]string(nil), e.methods...)}
		if resetFresh {
			e.fresh = 0
		}
		clear(hist[:])
		var latN uint64
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
			if s.hist != nil {
				for b, n := range s.hist {
					hist[b] += uint64(n)
				}
				latN += s.latencyN
			}
		}
		total := ge.Calls + ge.Casts + ge.Fanouts + ge.Notifications
		ge.Rate = float64(total) / secs
		ge.CallRate = float64(ge.Calls) / secs
		ge.CastRate = float64(ge.Casts+ge.Fanouts) / secs
		if total > 0 {
			ge.ErrorRatio = float64(ge.Errors+ge.Timeouts+ge.Unroutable) / float64(total)
		}
		if latN > 0 {
			ge.P50US = percentile(&hist, latN, 0.50)
			ge.P99US = percentile(&hist, latN, 0.99)
		}
		out.Edges = append(out.Edges, ge)
		for _, id := range []string{k.from, k.to} {
			if _, ok := nodeIdx[id]; !ok {
				info := g.nodes[id]
				nodeIdx[id] = len(out.Nodes)
				out.Nodes = append(out.Nodes, GraphNode{ID: id, Label: info.label, Service: info.service,
					Host: info.host, Kind: info.kind, Layer: layerOf(info)})
			}
		}
		out.Nodes[nodeIdx[k.from]].OutRate += ge.Rate
		to := &out.Nodes[nodeIdx[k.to]]
		to.InRate += ge.Rate
		to.Errors += ge.Errors + ge.Timeouts
	}
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

// percentile reads the p-quantile from a merged histogram: the bucket that holds the ceil(p*n)-th value.
func percentile(h *[histBuckets]uint64, n uint64, p float64) int64 {
	rank := uint64(math.Ceil(p * float64(n)))
	if rank == 0 {
		rank = 1
	}
	var seen uint64
	for b, c := range h {
		seen += c
		if seen >= rank {
			return histValue(b)
		}
	}
	return histValue(histBuckets - 1)
}

// layerOf places a service in the left-to-right layout by its role, read from the program name OpenStack puts in
// connection_name (nova-api, nova-conductor, neutron-openvswitch-agent...). The order follows how a request flows:
// API → conductor/server → scheduler → compute and agents → sinks (notification listeners, unconsumed topics).
func layerOf(n nodeInfo) int {
	if n.kind == "topic" {
		return 4
	}
	if n.kind == "unknown" {
		return 0
	}
	s := strings.ToLower(n.service)
	has := func(parts ...string) bool {
		for _, p := range parts {
			if strings.Contains(s, p) {
				return true
			}
		}
		return false
	}
	switch {
	case has("-api", "wsgi", "httpd", "apache", "horizon", "dashboard"):
		return 0
	case has("conductor", "neutron-server", "-engine", "-server"):
		return 1
	case has("scheduler", "placement"):
		return 2
	case has("compute", "volume", "agent", "backup", "-l3", "dhcp", "metadata", "ovs", "manager"):
		return 3
	case has("notification", "ceilometer", "collector", "listener", "searchlight"):
		return 4
	default:
		return 2
	}
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
