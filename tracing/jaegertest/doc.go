// Package jaegertest starts a real Jaeger v2 for tests and reads traces back through its query API.
//
// It is a non-test package used only by tests (tracing's export test, and the end-to-end test that runs real
// oslo.messaging through the proxy). Start takes the binary from JAEGER_BIN (build it with scripts/jaeger.sh);
// without it the test is skipped, or fails when CI=true, so CI cannot pass by silently skipping.
//
// Jaeger runs as a child process with in-memory storage, an OTLP gRPC receiver and the query service, every
// listener bound to 127.0.0.1 on a free port, no internal telemetry exporters, the query service's self-tracing off
// (Jaeger v2 enables it by default and dials localhost:4317 with it), no sampling or other extensions that reach
// out, and the query's clock-skew adjuster off (maximum adjustment 0): all spans of amqptrace come from one
// clock, so an adjustment would only move the timestamps a test compares. The process is stopped (SIGTERM, then
// SIGKILL) in t.Cleanup and waited for, so no process or goroutine outlives the test.
//
// Queries use Jaeger's HTTP JSON API (/api/services, /api/traces, /api/traces/{id}), the one its UI uses; the
// types here decode only the fields the tests read.
package jaegertest
