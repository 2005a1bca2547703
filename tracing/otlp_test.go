package tracing

import "testing"

func TestPlanTransport(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		env  map[string]string
		want transportPlan
	}{
		{"loopback flag is plain", Config{Endpoint: "127.0.0.1:4317"}, nil,
			transportPlan{endpoint: "127.0.0.1:4317", insecure: true}},
		{"localhost is plain", Config{Endpoint: "localhost:4317"}, nil,
			transportPlan{endpoint: "localhost:4317", insecure: true}},
		{"ipv6 loopback is plain", Config{Endpoint: "[::1]:4317"}, nil,
			transportPlan{endpoint: "[::1]:4317", insecure: true}},
		{"remote defaults to TLS", Config{Endpoint: "collector.example:4317"}, nil,
			transportPlan{endpoint: "collector.example:4317"}},
		{"remote with Insecure", Config{Endpoint: "collector.example:4317", Insecure: true}, nil,
			transportPlan{endpoint: "collector.example:4317", insecure: true}},
		{"certificate env beats Insecure", Config{Endpoint: "collector.example:4317", Insecure: true},
			map[string]string{"OTEL_EXPORTER_OTLP_CERTIFICATE": "/etc/ca.pem"},
			transportPlan{endpoint: "collector.example:4317"}},
		{"insecure env decides even for loopback", Config{Endpoint: "127.0.0.1:4317"},
			map[string]string{"OTEL_EXPORTER_OTLP_TRACES_INSECURE": "false"},
			transportPlan{endpoint: "127.0.0.1:4317"}},
		{"endpoint from env, remote: TLS", Config{},
			map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "collector.example:4317"},
			transportPlan{}},
		{"endpoint from env, loopback: plain", Config{},
			map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "127.0.0.1:4317"},
			transportPlan{insecure: true}},
		{"env URL scheme decides", Config{Insecure: true},
			map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector.example:4317"},
			transportPlan{}},
		{"flag URL scheme decides", Config{Endpoint: "https://127.0.0.1:4317", Insecure: true}, nil,
			transportPlan{endpoint: "https://127.0.0.1:4317", url: true}},
		{"nothing set: the exporter's default localhost:4317, plain", Config{}, nil,
			transportPlan{insecure: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lookup := func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
			if got := planTransport(tc.cfg, lookup); got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
			if n := len(planTransport(tc.cfg, lookup).options()); n > 2 {
				t.Errorf("%d options", n)
			}
		})
	}
}
