// Package metrics exposes amqptrace in the Prometheus text format: what the records say (RPCs by kind, method,
// topic and status; client and server durations; queue wait) and what every component counts (connections,
// bytes, frames, decode errors, pending calls, every drop counter, exporter and websocket state).
//
// Record metrics are updated in line by a correlate.Sink (Prometheus vectors are lock-free on the hot path once a
// label set exists); component counters are read from the components' own Stats snapshots at scrape time, so the
// forwarding path pays nothing for them. Label values from the wire (method, topic) are bounded: past Limits.MaxSeries
// distinct (method, topic) pairs new ones are folded into "other", so a misbehaving client cannot grow memory
// without bound. The same holds for service names (caller and callee, Limits.MaxServices) and exception classes
// (Limits.MaxExceptions); every fold is counted in amqptrace_metrics_label_overflow_total by the label folded.
package metrics

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/amqptrace/amqptrace/correlate"
)

// rpcBuckets span 1 ms to 100 s (oslo.metrics' 0.01-100 s range, and the sub-10 ms casts and queue waits below it)
// on round boundaries, six per decade: 1, 1.5, 2, 3, 5, 7. Round bounds keep `le="1"` and `le="0.01"` queries
// working (exponential bounds printed as le="0.010000000000000002"), and neighbours at most 1.67x apart keep
// histogram_quantile within that factor of the true p99 (the 2.15x spacing before gave up to 2x).
var rpcBuckets = roundBuckets(-3, 2)

// roundBuckets returns m·10^e for e in [fromExp, toExp) and m in 1, 1.5, 2, 3, 5, 7, then 10^toExp. Each bound is
// parsed from its decimal text, so it is the float64 nearest that number and prints back as it (multiplying would
// give 0.30000000000000004).
func roundBuckets(fromExp, toExp int) []float64 {
	out := make([]float64, 0, 6*(toExp-fromExp)+1)
	for e := fromExp; e < toExp; e++ {
		for _, m := range []string{"1", "1.5", "2", "3", "5", "7"} {
			out = append(out, mustFloat(m+"e"+strconv.Itoa(e)))
		}
	}
	return append(out, mustFloat("1e"+strconv.Itoa(toExp)))
}

func mustFloat(s string) float64 {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		panic(err) // only called with the literals above
	}
	return f
}

// Limits bound the label values taken from the wire. Zero takes the default.
type Limits struct {
	MaxSeries     int // distinct (method, topic) pairs (default 2000)
	MaxServices   int // distinct service names, callers and callees together (default 200)
	MaxExceptions int // distinct exception classes (default 200)
}

// Defaults of Limits. A cloud has a few dozen services and a few hundred methods; the caps are well above that and
// well below what would hurt a Prometheus server (each pair multiplies by status and by histogram bucket).
const (
	DefaultMaxSeries     = 2000
	DefaultMaxServices   = 200
	DefaultMaxExceptions = 200
)

func (l Limits) withDefaults() Limits {
	if l.MaxSeries <= 0 {
		l.MaxSeries = DefaultMaxSeries
	}
	if l.MaxServices <= 0 {
		l.MaxServices = DefaultMaxServices
	}
	if l.MaxExceptions <= 0 {
		l.MaxExceptions = DefaultMaxExceptions
	}
	return l
}

// labelSet admits at most max distinct values of one label; the rest are "other". Callers hold Records.mu.
type labelSet struct {
	max   int
	known map[string]bool
}

func (ls *labelSet) admit(v string) bool {
	if ls.known[v] {
		return true
	}
	if len(ls.known) >= ls.max {
		return false
	}
	ls.known[v] = true
	return true
}

// Records is a correlate.Sink that turns records into Prometheus metrics.
type Records struct {
	records   *prometheus.CounterVec
	client    *prometheus.HistogramVec
	server    *prometheus.HistogramVec
	queue     *prometheus.HistogramVec
	late      prometheus.Counter
	after     *prometheus.CounterVec
	flows     *prometheus.CounterVec
	errors    *prometheus.CounterVec
	folded    *prometheus.CounterVec
	maxSeries int

	mu         sync.Mutex
	known      map[[2]string]bool
	services   labelSet
	exceptions labelSet
}

// NewRecords registers the record metrics on reg.
func NewRecords(reg prometheus.Registerer, lim Limits) *Records {
	lim = lim.withDefaults()
	r := &Records{
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "amqptrace_records_total",
			Help: "Finished RPC records by kind (call, cast, fanout, notification), method (for notifications the event type), topic and status (ok, error, timeout, unroutable).",
		}, []string{"kind", "method", "topic", "status"}),
		client: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "amqptrace_rpc_client_duration_seconds",
			Help:    "Calls as the caller sees them on the wire: request published to final reply delivered.",
			Buckets: rpcBuckets,
		}, []string{"method", "topic", "status"}),
		server: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "amqptrace_rpc_server_duration_seconds",
			Help:    "Calls as the server handles them: request delivered to reply published.",
			Buckets: rpcBuckets,
		}, []string{"method", "topic", "status"}),
		queue: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "amqptrace_rpc_queue_wait_seconds",
			Help:    "Time a request spent in RabbitMQ: published to delivered to its consumer.",
			Buckets: rpcBuckets,
		}, []string{"kind", "topic"}),
		late: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "amqptrace_rpc_late_replies_total",
			Help: "Final replies that arrived after the caller's deadline (the call counts as a timeout).",
		}),
		after: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "amqptrace_rpc_replies_after_record_total",
			Help: "Replies that came after their call's record was emitted as a timeout (later than the deadline plus --reply-grace), by method, topic and the reply's status; each is a follow-up record that amends the call's.",
		}, []string{"method", "topic", "status"}),
		flows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "amqptrace_rpc_flows_total",
			Help: "Finished records by caller and callee service (as the wire names them: connection_name, or the topic a process serves; \"unknown\" when it did not say), kind and status: who talks to whom.",
		}, []string{"caller", "callee", "kind", "status"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "amqptrace_rpc_errors_total",
			Help: "Calls that ended in a remote exception, by method, topic and the exception's class (NoValidHost, MessagingTimeout on a nested call, ...).",
		}, []string{"method", "topic", "exception"}),
		folded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "amqptrace_metrics_label_overflow_total",
			Help: "Records a label of which was folded into \"other\" because its cap was reached, by label: method_topic (--metrics-max-series), service (--metrics-max-services) or exception (--metrics-max-exceptions).",
		}, []string{"label"}),
		maxSeries:  lim.MaxSeries,
		known:      map[[2]string]bool{},
		services:   labelSet{max: lim.MaxServices, known: map[string]bool{}},
		exceptions: labelSet{max: lim.MaxExceptions, known: map[string]bool{}},
	}
	reg.MustRegister(r.records, r.client, r.server, r.queue, r.late, r.after, r.flows, r.errors, r.folded)
	return r
}

// maxLabelLen bounds one label value taken from the wire: an oslo method or topic is a few dozen bytes.
const maxLabelLen = 128

// labels returns bounded method and topic label values: valid UTF-8 (the Prometheus client panics on anything
// else), at most maxLabelLen bytes, and at most maxSeries distinct pairs.
func (r *Records) labels(method, topic string) (string, string) {
	method, topic = correlate.CleanString(method, maxLabelLen), correlate.CleanString(topic, maxLabelLen)
	key := [2]string{method, topic}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.known[key] {
		return method, topic
	}
	if len(r.known) >= r.maxSeries {
		r.folded.WithLabelValues("method_topic").Inc()
		return "other", "other"
	}
	r.known[key] = true
	return method, topic
}

// serviceLabels returns bounded caller and callee label values.
func (r *Records) serviceLabels(caller, callee *correlate.Endpoint) (string, string) {
	name := func(e *correlate.Endpoint) string {
		if e == nil || e.Service == "" {
			return "unknown"
		}
		return correlate.CleanString(e.Service, maxLabelLen)
	}
	a, b := name(caller), name(callee)
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.services.admit(a) {
		r.folded.WithLabelValues("service").Inc()
		a = "other"
	}
	if !r.services.admit(b) {
		r.folded.WithLabelValues("service").Inc()
		b = "other"
	}
	return a, b
}

// exceptionLabel returns a bounded exception class label value.
func (r *Records) exceptionLabel(class string) string {
	class = correlate.CleanString(class, maxLabelLen)
	if class == "" {
		class = "unknown"
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.exceptions.admit(class) {
		r.folded.WithLabelValues("exception").Inc()
		return "other"
	}
	return class
}

// Record implements correlate.Sink.
func (r *Records) Record(rec *correlate.Record) {
	name := rec.Method
	if name == "" && rec.Kind == correlate.KindNotification {
		// A notification has no method; its event type (instance.create.end) is what an operator filters on.
		name = rec.EventType
	}
	method, topic := r.labels(name, rec.Topic)
	status := string(rec.Status)
	if rec.Amends != 0 {
		// The call was counted, and timed, in the record this one amends.
		r.after.WithLabelValues(method, topic, status).Inc()
		return
	}
	r.records.WithLabelValues(string(rec.Kind), method, topic, status).Inc()
	caller, callee := r.serviceLabels(rec.Caller, rec.Callee)
	r.flows.WithLabelValues(caller, callee, string(rec.Kind), status).Inc()
	if rec.Error != nil {
		r.errors.WithLabelValues(method, topic, r.exceptionLabel(rec.Error.Class)).Inc()
	}
	if rec.LateReply {
		r.late.Inc()
	}
	if rec.Kind == correlate.KindCall {
		if rec.Published != nil && rec.ReplyDelivered != nil && rec.Status != correlate.StatusTimeout {
			r.client.WithLabelValues(method, topic, status).Observe(rec.ReplyDelivered.Sub(*rec.Published).Seconds())
		}
		if rec.Delivered != nil && rec.Replied != nil {
			r.server.WithLabelValues(method, topic, status).Observe(rec.Replied.Sub(*rec.Delivered).Seconds())
		}
	}
	if rec.Published != nil && rec.Delivered != nil {
		r.queue.WithLabelValues(string(rec.Kind), topic).Observe(rec.Delivered.Sub(*rec.Published).Seconds())
	}
}
