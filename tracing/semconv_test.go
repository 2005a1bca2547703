package tracing

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/amqptrace/amqptrace/correlate"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
)

// semconvKeys reads every attribute name the pinned semantic-conventions release defines, from the package's own
// source in the module cache: a hand-written key that is not in the release (a typo, a name from an older or newer
// release) then fails here rather than in a backend's dashboards.
func semconvKeys(t *testing.T) map[string]bool {
	t.Helper()
	out, err := exec.Command("go", "list", "-f", "{{.Dir}}", "go.opentelemetry.io/otel/semconv/v1.43.0").Output()
	if err != nil {
		t.Fatalf("go list semconv: %v", err)
	}
	files, err := filepath.Glob(filepath.Join(strings.TrimSpace(string(out)), "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("semconv sources: %v (%d files)", err, len(files))
	}
	re := regexp.MustCompile(`attribute\.Key\("([^"]+)"\)`)
	keys := map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllSubmatch(b, -1) {
			keys[string(m[1])] = true
		}
	}
	if !keys["messaging.destination.name"] || len(keys) < 500 {
		t.Fatalf("read %d keys from semconv, not the attribute registry", len(keys))
	}
	return keys
}

// TestSemconvNames exports every kind of record and checks each attribute key on spans, span events and resources:
// a key is either in the pinned release or under one of our own prefixes.
func TestSemconvNames(t *testing.T) {
	std := semconvKeys(t)
	recs := bootRequest()
	recs = append(recs, fanoutUpdateAggregates())
	late := callTimeoutNeverDelivered()
	late.Amends, late.Replied, late.ReplyDelivered = 1, at(90_000_000), at(90_000_100)
	recs = append(recs, late)
	spans, _ := exportAll(t, Config{}, recs...)

	seen := map[string]string{}
	note := func(where string, kvs []attribute.KeyValue) {
		for _, kv := range kvs {
			seen[string(kv.Key)] = where
		}
	}
	for _, s := range spans {
		note(s.SpanKind.String()+" span", s.Attributes)
		for _, e := range s.Events {
			note("event "+e.Name, e.Attributes)
		}
		note("resource", s.Resource.Attributes())
	}
	for _, want := range []string{"messaging.destination.name", "messaging.rabbitmq.destination.routing_key",
		"server.address", "server.port", "network.peer.address", "network.peer.port", "messaging.message.id",
		"messaging.operation.name", "rpc.response.status_code", "service.instance.id", "host.ip", "exception.type"} {
		if _, ok := seen[want]; !ok {
			t.Errorf("%s never emitted", want)
		}
	}
	for k, where := range seen {
		if strings.HasPrefix(k, "openstack.") || strings.HasPrefix(k, "amqptrace.") {
			continue
		}
		if !std[k] {
			t.Errorf("%s emits %q, which semconv v1.43.0 does not define", where, k)
		}
	}
	if got := spans[0].Resource.SchemaURL(); got != semconvSchemaURL {
		t.Errorf("resource schema URL %q, want %q", got, semconvSchemaURL)
	}
}

func TestResourceHostAndInstance(t *testing.T) {
	rs := newResources(16)
	byName := rs.forEndpoint(&correlate.Endpoint{Service: "nova-compute", PID: 7, Host: "compute-1.example"}, "")
	if v, _ := byName.Set().Value("host.name"); v.AsString() != "compute-1.example" {
		t.Errorf("host.name %q, want the name", v.AsString())
	}
	if _, ok := byName.Set().Value("host.ip"); ok {
		t.Error("host.ip set from a name")
	}
	byIP := rs.forEndpoint(&correlate.Endpoint{Service: "nova-compute", PID: 7, Host: "fd00::8"}, "")
	if v, _ := byIP.Set().Value("host.ip"); len(v.AsStringSlice()) != 1 || v.AsStringSlice()[0] != "fd00::8" {
		t.Errorf("host.ip %v", v.AsStringSlice())
	}

	id := func(r *resource.Resource) string { v, _ := r.Set().Value("service.instance.id"); return v.AsString() }
	// Stable: a second resource cache (another proxy, a restart) derives the same id for the same process.
	again := newResources(16).forEndpoint(&correlate.Endpoint{Service: "nova-compute", PID: 7, Host: "compute-1.example"}, "")
	if id(byName) != id(again) {
		t.Errorf("instance id not stable: %s vs %s", id(byName), id(again))
	}
	other := rs.forEndpoint(&correlate.Endpoint{Service: "nova-compute", PID: 8, Host: "compute-1.example"}, "")
	if id(byName) == id(other) || id(byName) == id(byIP) {
		t.Errorf("distinct processes share an instance id: %s %s %s", id(byName), id(other), id(byIP))
	}
	if u := id(byName); !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(u) {
		t.Errorf("instance id %q is not a UUID v5", u)
	}
}
