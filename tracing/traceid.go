package tracing

import "github.com/amqptrace/amqptrace/correlate"

// TraceIDHex returns the hex trace id under which the exporter puts r's spans. It depends on r alone, so the UI
// can link a call to its trace in Jaeger without talking to the exporter.
func TraceIDHex(r *correlate.Record) string { return traceIDFor(traceKey(r)).String() }
