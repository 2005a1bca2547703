// Package ui serves the live web UI of amqptrace: an HTTP API over recent records, a service graph aggregated on
// the server, a websocket that streams both to browsers, and the embedded page (ui/web) that draws them.
//
// # What it does
//
//   - Server.Record is a correlate.Sink. It copies the record (the correlator keeps ownership of what it passed)
//     and hands the copy to the aggregator through a bounded channel; when the channel is full the record is
//     dropped and counted. Record never blocks and never logs.
//   - Server.Run owns every long-lived goroutine: the aggregator, and one writer goroutine per websocket client.
//     Every UpdateEvery (500ms by default) the aggregator moves the batch of new records into the ring of recent
//     records and into the graph aggregates, then publishes one delta to every client. Work per record is a map
//     lookup and a few counter increments; JSON is built once per tick, not per record and not per client, so
//     thousands of records per second stay cheap.
//   - The websocket protocol is: a "snapshot" message on connect (graph, counters, recent calls, sequence number
//     N), then "delta" messages N+1, N+2, ... (graph, counters, the calls added since the last tick). A client that
//     sees a gap reconnects and gets a fresh snapshot. Every message names the Server instance: record ids are
//     unique only within one process, so a page that reconnects to a restarted server drops its old rows. A
//     snapshot and the first delta may overlap by one tick; the page keys rows by record id. Each client has a bounded queue (ClientQueue messages) and
//     exactly one writer goroutine; a client whose queue is full is disconnected and counted, so a slow browser
//     never slows the hub, Record, or other clients.
//   - On ctx end Run closes every websocket itself (http.Server.Shutdown does not close hijacked connections)
//     and waits for their writer goroutines.
//
// # What it does not do
//
//   - It does not correlate, trace or export: it only reads finished correlate.Records. It imports correlate and
//     nothing else of ours (never tracing: the lead passes Config.TraceID to link to Jaeger).
//   - It keeps no history beyond the ring (RecentSize records) and the sliding window of the graph (60s of
//     counts and latency histograms per edge, edges forgotten after 5 minutes without traffic, capped in number).
//   - It does not trust wire strings: the page inserts every one as text (textContent, SVG text nodes), never as
//     HTML, and the server sends a strict Content-Security-Policy. Args and results are redacted again here
//     (secret-looking keys, Keystone tokens, passwords in URLs) even though correlate redacts them first: the UI
//     is the last place a secret could leak from, and defence in depth is cheap.
//
// # Who owns which bytes
//
// A record passed to Record belongs to the caller; the Server keeps its own deep copy. Records in the ring are
// immutable once stored (the aggregator redacts before storing), so HTTP handlers may marshal them under a read
// lock. Messages queued to websocket clients are immutable byte slices shared by all clients.
//
// # Locks
//
// Two mutexes, always taken in this order: hub.mu (subscriber set, sequence number, last published state), then
// store.mu (ring, graph aggregates). The aggregator never holds store.mu while it takes hub.mu.
package ui
