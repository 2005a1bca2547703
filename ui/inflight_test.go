package ui

import (
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
