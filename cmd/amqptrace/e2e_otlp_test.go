package main

import (
	"context"
	"net"
	"sync"
	"testing"
	"unicode/utf8"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/grpc"
)

// otlpReceiver is an in-test OTLP gRPC trace collector on loopback (the e2e tests that need no Jaeger point
// --otlp-endpoint at it). It accepts every export, counts requests and spans, counts span names and string
// attribute values that are not valid UTF-8 (protobuf cannot carry them, so this is a belt-and-braces check), and,
// when keep is set, keeps every span's string attributes for the test to look at.
type otlpReceiver struct {
	collectortrace.UnimplementedTraceServiceServer

	addr string
	keep bool

	mu       sync.Mutex
	requests int
	spans    int
	invalid  int
	kept     []map[string]string // string attributes (and "span.name") of each span, when keep
}

// startOTLPReceiver listens on 127.0.0.1:0 and serves until the test ends (the server is stopped and its Serve
// goroutine joined in a cleanup, so it is registered before startBin's and outlives the process under test).
func startOTLPReceiver(t *testing.T, keep bool) *otlpReceiver {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("OTLP receiver: %v", err)
	}
	r := &otlpReceiver{addr: ln.Addr().String(), keep: keep}
	srv := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(srv, r)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-served
	})
	return r
}

// Export implements collectortrace.TraceServiceServer.
func (r *otlpReceiver) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	n, invalid := 0, 0
	var kept []map[string]string
	for _, rs := range req.GetResourceSpans() {
		for _, kv := range rs.GetResource().GetAttributes() {
			if s := kv.GetValue().GetStringValue(); !utf8.ValidString(s) || !utf8.ValidString(kv.GetKey()) {
				invalid++
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				n++
				if !utf8.ValidString(sp.GetName()) {
					invalid++
				}
				var attrs map[string]string
				if r.keep {
					attrs = map[string]string{"span.name": sp.GetName()}
				}
				for _, kv := range sp.GetAttributes() {
					s := kv.GetValue().GetStringValue()
					if !utf8.ValidString(s) || !utf8.ValidString(kv.GetKey()) {
						invalid++
					}
					if _, ok := kv.GetValue().GetValue().(*commonpb.AnyValue_StringValue); ok && attrs != nil {
						attrs[kv.GetKey()] = s
					}
				}
				if attrs != nil {
					kept = append(kept, attrs)
				}
			}
		}
	}
	r.mu.Lock()
	r.requests++
	r.spans += n
	r.invalid += invalid
	r.kept = append(r.kept, kept...)
	r.mu.Unlock()
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

// counts returns the export requests, spans and invalid strings received so far.
func (r *otlpReceiver) counts() (requests, spans, invalid int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests, r.spans, r.invalid
}

// spansWhere returns the kept spans whose attribute key equals value.
func (r *otlpReceiver) spansWhere(key, value string) []map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []map[string]string
	for _, a := range r.kept {
		if v, ok := a[key]; ok && v == value {
			out = append(out, a)
		}
	}
	return out
}
