// Package pipeline joins the parts of amqptrace into one running proxy: proxy (bytes) → frames (decoding) →
// correlate (records) → sinks (events file, tracing, UI), as drawn in design.md section 2.
//
// # What it does
//
// New builds a proxy.Proxy whose TapFunc gives every client connection its own correlate.Conn and frames.Conn:
// the tap writers are the frames.Conn's two Decoders, the Decoders hand frames to the correlate.Conn, and when the
// proxy reports the connection's end the correlate.Conn is closed with the proxy's close reason (plus "decode
// switched off: <err>" when the decoder gave up on the stream). Records leave the Correlator through one
// correlate.Fanout, which gives every configured sink its own bounded queue: a slow sink drops (and counts) its
// own records and never slows correlation, let alone forwarding.
//
// Serve (or Run, which listens first) owns every goroutine it starts and returns only when all have returned. On
// cancellation it shuts down in data-flow order, so nothing that was observed is lost on a clean stop:
//
//  1. stop accepting and give open connections Config.ShutdownGrace, then cut the rest (proxy.Serve);
//  2. every connection's Done has closed its correlate.Conn, so the Correlator is stopped and flushes its pending
//     records (with what is known) into the Fanout;
//  3. the Fanout is stopped and delivers what its queues hold to the sinks.
//
// When Serve returns, every record has been handed to every sink (or counted as dropped). Closing the sinks
// (flushing a file, shutting an exporter down) is the caller's business: the caller built them.
//
// # What it does not do
//
// No flag or environment parsing (cmd), no sink construction, no HTTP. It adds no per-frame work of its own: the
// only per-connection state here is a registry entry (taken under a mutex once at open and once at close) that
// lets Stats sum the decoders of live connections with those of closed ones, so there are no global atomics on the
// hot path.
//
// # Who owns which bytes
//
// The proxy owns its pump buffers and lends them to the tap writers for the duration of one Write; frames lends
// frames to correlate for the duration of one HandleFrame; correlate copies what it keeps and gives each sink a
// Record that the sink must copy if it keeps it. The pipeline itself never touches message bytes.
//
// # Secrets
//
// Nothing here logs or stores payloads. Close reasons carry proxy errors and frames.DecodeError texts, which hold
// at most a frame header, never a Start-Ok response.
package pipeline
