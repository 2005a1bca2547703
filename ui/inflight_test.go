package ui

import (
	"context"
	"testing"

	"github.com/amqptrace/amqptrace/correlate"
)

// The graph carries what waits now: a server's calls in hand, a caller's calls awaiting replies, and per edge the
// calls along it waiting for their reply; a call still queued counts on its caller only.
func TestGraphWithInFlight(t *testing.T) {
	api := correlate.Endpoint{Service: "nova-api", Host: "10.0.0.9"}
	compute := correlate.Endpoint{Service: "nova-compute", Host: "10.0.0.20"}
	g := Graph{By: "service", Nodes: []GraphNode{{ID: "nova-api"}, {ID: "nova-compute"}},
		Edges: []GraphEdge{{ID: "nova-api>nova-compute>rpc", From: "nova-api", To: "nova-compute", Type: edgeRPC}}}
	v := correlate.InFlight{
		Servers: []correlate.ProcessInFlight{{Endpoint: compute, InFlight: 3, Handling: 1}},
		Callers: []correlate.ProcessInFlight{{Endpoint: api, InFlight: 5}},
		Flows: []correlate.FlowInFlight{{Caller: api, Callee: compute, Pending: 3},
			{Caller: api, Pending: 2}}, // queued: no callee yet
	}
	got := g.withInFlight(v)
	if n := got.Nodes[1]; n.InFlight != 3 || n.Handling != 1 {
		t.Errorf("nova-compute: in_flight %d handling %d, want 3 and 1", n.InFlight, n.Handling)
	}
	if n := got.Nodes[0]; n.Awaiting != 5 {
		t.Errorf("nova-api: awaiting %d, want 5", n.Awaiting)
	}
	if e := got.Edges[0]; e.InFlight != 3 {
		t.Errorf("edge: in_flight %d, want 3", e.InFlight)
	}
	host := Graph{By: "host", Nodes: []GraphNode{{ID: "nova-compute@10.0.0.20"}}}.withInFlight(v)
	if host.Nodes[0].InFlight != 3 {
		t.Errorf("by host: %+v", host.Nodes[0])
	}
}

// A server process with every worker it was seen to have busy and more calls waiting is marked saturated; a queue's
// backlog counts on the node that serves its topic ("<topic>" and "<topic>.<server>" queues).
func TestGraphSaturationAndQueues(t *testing.T) {
	conductor := correlate.Endpoint{Service: "nova-conductor", Host: "10.0.0.5", PID: 1}
	busy := correlate.Endpoint{Service: "nova-compute", Host: "10.0.1.1", PID: 2}
	idle := correlate.Endpoint{Service: "nova-scheduler", Host: "10.0.0.6", PID: 3}
	g := Graph{By: "service", Nodes: []GraphNode{{ID: "nova-compute", Serves: []string{"compute"}},
		{ID: "nova-conductor"}, {ID: "nova-scheduler", Serves: []string{"scheduler"}}}}
	v := correlate.InFlight{
		Servers: []correlate.ProcessInFlight{
			{Endpoint: busy, InFlight: 4, Handling: 1, PeakHandling: 1},
			{Endpoint: idle, InFlight: 2, Handling: 2, PeakHandling: 8}, // workers free: not saturated
			{Endpoint: conductor, InFlight: 3, Handling: 0},             // unmonitored: no peak known
		},
		Queues: []correlate.QueueInFlight{{Queue: "compute.host1", Depth: 7, OldestAgeMS: 900},
			{Queue: "compute", Depth: 2, OldestAgeMS: 1500}, {Queue: "conductor", Depth: 5, OldestAgeMS: 50}},
	}
	got := g.withInFlight(v)
	comp, cond, sch := got.Nodes[0], got.Nodes[1], got.Nodes[2]
	if !comp.Saturated || comp.PeakHandling != 1 {
		t.Errorf("nova-compute (pool of 1, 3 waiting): saturated %v peak %d, want true and 1", comp.Saturated, comp.PeakHandling)
	}
	if sch.Saturated || cond.Saturated {
		t.Errorf("saturated: scheduler %v, conductor %v, want neither", sch.Saturated, cond.Saturated)
	}
	if comp.QueueDepth != 9 || comp.QueueOldestMS != 1500 {
		t.Errorf("nova-compute queues: depth %d oldest %d ms, want 9 and 1500", comp.QueueDepth, comp.QueueOldestMS)
	}
	if cond.QueueDepth != 0 || sch.QueueDepth != 0 {
		t.Errorf("queue depth counted on nodes that do not serve it: conductor %d scheduler %d", cond.QueueDepth, sch.QueueDepth)
	}
}

// GET /api/topology passes the limit to the data path and serves its view as it is; without one it is a 404.
func TestTopologyAPI(t *testing.T) {
	var asked int
	s, _ := newTestServer(t, Config{Topology: func(_ context.Context, limit int) correlate.Topology {
		asked = limit
		return correlate.Topology{Vhosts: []correlate.VhostTopology{{Vhost: "/",
			Queues: []correlate.QueueView{{Name: "conductor", Declared: true, Durable: true, QueueType: "quorum"}}}}}
	}})
	h := s.Handler()
	var v correlate.Topology
	if res := getJSON(t, h, "/api/topology?limit=5", &v); res.StatusCode != 200 || asked != 5 {
		t.Fatalf("status %d, limit asked %d", res.StatusCode, asked)
	}
	if len(v.Vhosts) != 1 || len(v.Vhosts[0].Queues) != 1 || v.Vhosts[0].Queues[0].QueueType != "quorum" {
		t.Errorf("view: %+v", v)
	}
	if getJSON(t, h, "/api/topology", nil); asked != 2000 {
		t.Errorf("default limit %d, want 2000", asked)
	}
	if res := getJSON(t, h, "/api/topology?limit=-1", nil); res.StatusCode != 400 {
		t.Errorf("negative limit: %d, want 400", res.StatusCode)
	}
	none, _ := newTestServer(t, Config{})
	if res := getJSON(t, none.Handler(), "/api/topology", nil); res.StatusCode != 404 {
		t.Errorf("without a topology: %d, want 404", res.StatusCode)
	}
}
