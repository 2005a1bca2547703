// Package tracing turns correlate.Records into OpenTelemetry spans and exports them over OTLP gRPC.
//
// # What it does
//
// Each Record (one RPC, cast, fanout or notification, already paired by correlate) becomes a small set of spans:
//
//   - call: a CLIENT span (request published → final reply delivered, or the best bounds that were observed) owned
//     by the caller, and a SERVER span (request delivered → reply published) owned by the callee, as its child.
//   - cast and fanout: a PRODUCER span owned by the caller and one CONSUMER span per delivery (per callee).
//   - notification: a PRODUCER span, plus CONSUMER spans when a listener behind the proxy received it.
//
// Attributes follow the OpenTelemetry semantic conventions, release v1.43.0 as shipped in go.opentelemetry.io/otel
// (semconv.go pins it; TestSemconvNames checks every key we emit against it): rpc.system.name ("oslo_messaging",
// or "amqp" for generic reply_to/correlation_id RPC), rpc.method ("<topic>/<method>", the conventions'
// fully-qualified "service/method" shape, with the oslo namespace as "<topic>/<namespace>.<method>"),
// rpc.response.status_code ("OK", "ERROR", "TIMEOUT", "UNROUTABLE"), messaging.system ("rabbitmq"),
// messaging.destination.name (the exchange, "amq.default" for the default one), messaging.destination.subscription.name
// (the queue, on SERVER and CONSUMER spans), server.address and server.port (the broker that side's connection went
// to), network.peer.address and network.peer.port (the OpenStack process's end of that connection),
// messaging.rabbitmq.destination.routing_key, messaging.message.id (the oslo _unique_id, or a notification's
// message_id), messaging.message.conversation_id (the call's _msg_id), messaging.operation.type ("send" or
// "process") and messaging.operation.name ("publish" or "consume"). Everything OpenStack-specific lives under the
// single prefix "openstack." (request_id, global_request_id, topic, server, namespace, version, queue_wait_us,
// server_time_us, ...). Failures set the span status to Error and error.type (the remote exception's
// fully-qualified class, "timeout" or "unroutable"); a remote exception also adds an "exception" event.
// Heartbeat replies, publisher confirms and late replies are span events.
//
// Span names: calls use rpc.method ("scheduler/select_destinations"), as the RPC conventions ask; casts, fanouts and
// notifications use "<operation> <what>", the messaging shape, where <what> is rpc.method for casts and the event
// type for notifications ("publish conductor/build_instances", "consume conductor/build_instances",
// "publish compute.instance.create.start"), because an exchange tells an operator little.
//
// # Services
//
// Jaeger shows a span under the service of its Resource. The OTel SDK's TracerProvider has a single Resource (the
// process), but a proxy reports on behalf of many OpenStack processes, so this package builds each span itself as
// an sdktrace.ReadOnlySpan whose Resource is the OpenStack process that did the work: the caller for CLIENT and
// PRODUCER spans, the callee for SERVER and CONSUMER spans, with service.name, service.instance.id (a UUID v5 of
// service, host and pid: stable for the process's life and equal across proxies), host.ip (the TCP peer's address;
// host.name only when the peer is known by a name, since the conventions want a name there), process.pid and
// telemetry.distro.name="amqptrace" (the semantic conventions' attribute for the agent that produced the telemetry).
// Resources are cached by (service, host, pid) and bounded by Config.MaxServices; beyond that bound spans go to one
// catch-all resource (service.name "amqptrace-overflow") and are counted.
//
// # Ids: deterministic, so that proxies agree without talking
//
// The trace id is SHA-256 of the record's global request id (else request id, else msg id, unique id, message id),
// cut to 16 bytes, so every RPC of one OpenStack request lands in one trace. Span ids are SHA-256 of the RPC's key
// (msg id, else unique id: the same key correlate uses for Record.ParentID) and the span's role, cut to 8 bytes.
// A handling span (a call's SERVER span, a cast's CONSUMER span) is keyed by the RPC and the handling process
// (service, host, pid); so a record with ParentID, published by that same process, derives its parent's span id
// from ParentID and its own caller alone, and nests its CLIENT/PRODUCER span under it. Two proxies that see the
// same traffic produce the same ids, and their spans join in the backend.
//
// # Sampling
//
// The keep decision is a pure function of the trace id (the lower 8 bytes against SampleRatio, as the SDK's
// TraceIDRatioBased does), so two proxies agree. Records whose status is not ok, and calls slower than
// SlowThreshold, are always kept. The decision is per record: an error is kept even when its siblings in the same
// trace were sampled out.
//
// # Ownership and backpressure
//
// Record is the correlate.Sink method. It copies what it needs out of the record (never Args or Result: payloads
// are not exported) and hands the copy to a bounded queue with a non-blocking send; when the queue is full the
// record is dropped and counted. It never blocks and never keeps the caller's record. Run is the one goroutine that
// turns queued records into spans, batches them and calls the exporter; while an export is slow the queue fills and
// Record drops (counted), so a slow or dead collector costs the proxy nothing but lost spans. Each export is bounded
// by Config.ExportTimeout; a failed export drops its batch (counted). Shutdown stops Run, flushes what is queued and
// shuts the exporter down, bounded by its context.
//
// # What it does not do
//
// It does not sample by tail, retry a batch after the exporter gave up, propagate context into AMQP messages (the
// proxy forwards bytes untouched), or export arguments, results or anything else from message bodies. It does not
// parse flags or environment itself, except that New leaves the standard OTEL_EXPORTER_OTLP_* variables to the
// otlptracegrpc exporter and does not override them with defaults.
package tracing
