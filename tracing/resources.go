package tracing

import (
	"sync/atomic"

	"github.com/amqptrace/amqptrace/correlate"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
)

// Resource attribute keys (semantic conventions: model/service, model/host, model/process, model/telemetry).
const (
	keyServiceName = attribute.Key("service.name")
	keyHostName    = attribute.Key("host.name")
	keyProcessPID  = attribute.Key("process.pid")
	keyDistroName  = attribute.Key("telemetry.distro.name")
	// keySource is where amqptrace read the bytes when it was not the proxy: "capture" or "replay" (the
	// record's source field).
	keySource       = attribute.Key("amqptrace.source")
	distroName      = "amqptrace"
	unknownService  = "unknown_service" // the OTel spec's name for a service that did not say
	overflowService = "amqptrace-overflow"
)

type resourceKey struct {
	service string
	host    string
	pid     int
	source  string
}

// resources caches one *resource.Resource per OpenStack process so that every span of a process shares one
// pointer (the OTLP transform groups spans by resource) and the set stays bounded. It is used only from the Run
// goroutine (and from Shutdown after Run has returned), so it needs no lock; size is atomic for Stats.
type resources struct {
	max      int
	byKey    map[resourceKey]*resource.Resource
	overflow *resource.Resource
	size     atomic.Int64
	spilled  atomic.Uint64
}

func newResources(max int) *resources {
	return &resources{
		max:   max,
		byKey: make(map[resourceKey]*resource.Resource),
		overflow: resource.NewSchemaless(
			keyServiceName.String(overflowService),
			keyDistroName.String(distroName),
		),
	}
}

// forEndpoint returns the resource of ep (nil: the unknown service). Beyond max distinct processes it returns
// the catch-all resource and counts the spill, so a flood of distinct pids cannot grow memory or the backend's
// service list without bound. source is the record's Source (empty for the proxy's records).
func (rs *resources) forEndpoint(ep *correlate.Endpoint, source string) *resource.Resource {
	k := resourceKey{source: source}
	if ep != nil {
		k.service, k.host, k.pid = ep.Service, ep.Host, ep.PID
	}
	if k.service == "" {
		k.service = unknownService
	}
	if r, ok := rs.byKey[k]; ok {
		return r
	}
	if len(rs.byKey) >= rs.max {
		rs.spilled.Add(1)
		return rs.overflow
	}
	attrs := make([]attribute.KeyValue, 0, 4)
	attrs = append(attrs, keyServiceName.String(clip(k.service)))
	if k.host != "" {
		attrs = append(attrs, keyHostName.String(clip(k.host)))
	}
	if k.pid > 0 {
		attrs = append(attrs, keyProcessPID.Int(k.pid))
	}
	attrs = append(attrs, keyDistroName.String(distroName))
	if k.source != "" {
		attrs = append(attrs, keySource.String(k.source))
	}
	r := resource.NewSchemaless(attrs...)
	rs.byKey[k] = r
	rs.size.Store(int64(len(rs.byKey)))
	return r
}
