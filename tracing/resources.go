package tracing

import (
	"crypto/sha1"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"net/netip"
	"strconv"
	"sync/atomic"

	"github.com/amqptrace/amqptrace/correlate"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
)

// Resource attribute keys (semantic conventions: model/service, model/host, model/process, model/telemetry).
const (
	keyServiceName       = semconv.ServiceNameKey
	keyServiceInstanceID = semconv.ServiceInstanceIDKey
	keyHostName          = semconv.HostNameKey
	keyHostIP            = semconv.HostIPKey
	keyProcessPID        = semconv.ProcessPIDKey
	keyDistroName        = semconv.TelemetryDistroNameKey
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
		overflow: resource.NewWithAttributes(semconvSchemaURL,
			keyServiceName.String(overflowService),
			keyServiceInstanceID.String(instanceID(overflowService, "", 0)),
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
	attrs := make([]attribute.KeyValue, 0, 6)
	attrs = append(attrs, keyServiceName.String(clip(k.service)),
		keyServiceInstanceID.String(instanceID(k.service, k.host, k.pid)))
	// Endpoint.Host is the TCP peer, usually an IP: host.name must be a name, so an address goes to host.ip.
	if k.host != "" {
		if _, err := netip.ParseAddr(k.host); err == nil {
			attrs = append(attrs, keyHostIP.StringSlice([]string{k.host}))
		} else {
			attrs = append(attrs, keyHostName.String(clip(k.host)))
		}
	}
	if k.pid > 0 {
		attrs = append(attrs, keyProcessPID.Int(k.pid))
	}
	attrs = append(attrs, keyDistroName.String(distroName))
	if k.source != "" {
		attrs = append(attrs, keySource.String(k.source))
	}
	r := resource.NewWithAttributes(semconvSchemaURL, attrs...)
	rs.byKey[k] = r
	rs.size.Store(int64(len(rs.byKey)))
	return r
}

// instanceNamespace is the UUID namespace the conventions give for deriving service.instance.id (model/service:
// "UUID v5 ... namespace 4d63009a-8d0f-11ee-aad7-4c796ed8e320").
var instanceNamespace = [16]byte{0x4d, 0x63, 0x00, 0x9a, 0x8d, 0x0f, 0x11, 0xee, 0xaa, 0xd7, 0x4c, 0x79, 0x6e, 0xd8, 0xe3, 0x20}

// instanceID is service.instance.id of an OpenStack process: a UUID v5 (RFC 9562) of service, host and pid. It is
// derived, not random, so it stays the same across proxies and restarts of amqptrace for as long as the process
// lives, and two proxies seeing one process give its spans one instance.
func instanceID(service, host string, pid int) string {
	h := sha1.New()
	h.Write(instanceNamespace[:])
	h.Write([]byte(service + "\x00" + host + "\x00" + strconv.Itoa(pid)))
	var u [16]byte
	copy(u[:], h.Sum(nil))
	u[6] = u[6]&0x0f | 0x50 // version 5
	u[8] = u[8]&0x3f | 0x80 // RFC 9562 variant
	const hx = "0123456789abcdef"
	out := make([]byte, 0, 36)
	for i, b := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out = append(out, '-')
		}
		out = append(out, hx[b>>4], hx[b&0xf])
	}
	return string(out)
}
