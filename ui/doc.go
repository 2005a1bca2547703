// Package ui serves the live web UI of amqptrace: an HTTP API over recent records, a service graph aggregated on
// the server, a websocket that streams both to browsers, and the embedded page (ui/web) that draws them.
//
// # What it does
//
//   - Server.Record is a correlate.Sink. It keeps the record as it was given (correlate's record contract: immutable
//     once emitted, already redacted, shared by every sink) and adds it to the ring of recent records and the
//     graph aggregates under the store's lock, on the caller's goroutine: behind the Fanout that is this sink's own
//     goroutine, and the Fanout's bounded queue is the only queue in front of the UI. Record never logs.
//
//   - Server.Run owns every long-lived goroutine: the ticker, and one writer goroutine per websocket client.
//     Every UpdateEvery (500ms by default) it takes the records added since the last tick and publishes one delta
//     to every client. Work per record is a map lookup and a few counter increments; JSON is built once per tick,
//     not per record and not per client, so thousands of records per second stay cheap.
//
//   - The websocket protocol is: a "snapshot" message on connect (graph, counters, recent calls, sequence number
//     N), then "delta" messages N+1, N+2, ... (graph, counters, the calls added since the last tick). A client that
//     sees a gap reconnects and gets a fresh snapshot. Every message names the Server instance: record ids are
//     unique only within one process, so a page that reconnects to a restarted server drops its old rows. A
//     snapshot and the first delta may overlap by one tick; the page keys rows by record id. Each client has a bounded queue (ClientQueue messages) and
//     exactly one writer goroutine; a client whose queue is full is disconnected and counted, so a slow browser
//     never slows the hub, Record, or other clients.
//
//   - On ctx end Run closes every websocket itself (http.Server.Shutdown does not close hijacked connections)
//     and waits for their writer goroutines.
//
//   - The page (web/) is plain ES modules, no build step: js/main.js wires the websocket (api.js) to the graph
//     (graph.js, laid out by layout.js with the vendored dagre, coloured by health.js against each flow's own
//     baseline, with worst.js beside it), the call table (table.js), the topology view (topology.js, which polls
//     /api/topology and /api/inflight while it is open), the detail panel (panel.js, detail.js) and the request
//     tree (request.js); router.js gives every view a URL (#/graph, #/calls, #/topology, #/call/<id>,
//     #/request/<id>); util.js holds the text-only DOM helpers and the page's one time zone. vendor/ holds dagre's
//     ES module build with its licence, committed as published on npm.
//
//   - Roles on the graph come from the traffic (assignRoles): who sends a node calls, fanouts or notifications,
//     and the topics published to it. The page lays the flow out from the nodes nobody sends anything to; names
//     are only a last tie-break.
//
// # What it does not do
//
//   - It does not correlate, trace or export: it only reads finished correlate.Records. It imports correlate and
//     nothing else of ours (never tracing: the lead passes Config.TraceID to link to Jaeger).
//   - It keeps no history beyond the ring (RecentSize records) and the sliding window of the graph (60s of
//     counts and latency histograms per edge, edges forgotten after 5 minutes without traffic, capped in number).
//   - It does not trust wire strings: the page inserts every one as text (textContent, SVG text nodes), never as
//     HTML, and the server sends a strict Content-Security-Policy. It has no redaction rules of its own: correlate's
//     one Redactor has run on every record before any sink sees it.
//   - It answers nobody a DNS-rebinding page could send: without a token, only requests whose Host is a loopback
//     address, "localhost" or one of Config.AllowedHosts are served, and a websocket's Origin must name one too.
//
// # Who owns which bytes
//
// Records passed to Record are immutable (correlate's record contract) and kept as they are, so HTTP handlers may
// marshal them under a read lock. Messages queued to websocket clients are immutable byte slices shared by all clients.
//
// # Locks
//
// Two mutexes, always taken in this order: hub.mu (subscriber set, sequence number, last published state), then
// store.mu (ring, graph aggregates). The aggregator never holds store.mu while it takes hub.mu.
package ui
