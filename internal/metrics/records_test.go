package metrics

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/amqptrace/amqptrace/correlate"
	"github.com/amqptrace/amqptrace/internal/pipeline"
	"github.com/amqptrace/amqptrace/ui"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func at(ms int) *time.Time {
	t := time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC).Add(time.Duration(ms) * time.Millisecond)
	return &t
}

func TestRecordsCountAndTime(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	r := NewRecords(reg, Limits{})
	r.Record(&correlate.Record{Kind: correlate.KindCall, Status: correlate.StatusOK, Method: "select_destinations",
		Topic: "scheduler", Published: at(0), Delivered: at(2), Replied: at(40), ReplyDelivered: at(43)})
	r.Record(&correlate.Record{Kind: correlate.KindCall, Status: correlate.StatusTimeout, Method: "select_destinations",
		Topic: "scheduler", Published: at(0), LateReply: true, Delivered: at(1), Replied: at(70000), ReplyDelivered: at(70001)})
	r.Record(&correlate.Record{Kind: correlate.KindCast, Status: correlate.StatusOK, Method: "build_and_run_instance",
		Topic: "compute", Published: at(0), Delivered: at(5)})

	if got := testutil.ToFloat64(r.records.WithLabelValues("call", "select_destinations", "scheduler", "ok")); got != 1 {
		t.Errorf("ok calls = %v, want 1", got)
	}
	if got := testutil.ToFloat64(r.records.WithLabelValues("call", "select_destinations", "scheduler", "timeout")); got != 1 {
		t.Errorf("timeouts = %v, want 1", got)
	}
	if got := testutil.ToFloat64(r.late); got != 1 {
		t.Errorf("late replies = %v, want 1", got)
	}
	// The timeout is not a client-side duration sample (the caller gave up); its server time is.
	if n := testutil.CollectAndCount(r.client); n != 1 {
		t.Errorf("client histogram series = %d, want 1", n)
	}
	got := map[string][2]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("pedantic registry: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "amqptrace_rpc_queue_wait_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			key := m.GetLabel()[0].GetValue() + "/" + m.GetLabel()[1].GetValue()
			got[key] = [2]float64{float64(m.GetHistogram().GetSampleCount()), m.GetHistogram().GetSampleSum()}
		}
	}
	want := map[string][2]float64{"call/scheduler": {2, 0.003}, "cast/compute": {1, 0.005}}
	for k, w := range want {
		g := got[k]
		if g[0] != w[0] || math.Abs(g[1]-w[1]) > 1e-9 {
			t.Errorf("queue wait %s: count/sum = %v, want %v", k, g, w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("queue wait series = %v, want %v", got, want)
	}
}

func TestLabelsAreBounded(t *testing.T) {
	r := NewRecords(prometheus.NewRegistry(), Limits{MaxSeries: 3})
	for i := 0; i < 10; i++ {
		r.Record(&correlate.Record{Kind: correlate.KindCast, Status: correlate.StatusOK,
			Method: "m" + strings.Repeat("x", i), Topic: "t"})
	}
	if got := testutil.ToFloat64(r.folded.WithLabelValues("method_topic")); got != 7 {
		t.Errorf("folded = %v, want 7", got)
	}
	if got := testutil.ToFloat64(r.records.WithLabelValues("cast", "other", "other", "ok")); got != 7 {
		t.Errorf("other series = %v, want 7", got)
	}
}

// Caller and callee services and exception classes are labels too, each with its own cap; what is folded is
// counted by label, and the services within the cap keep their own series.
func TestServiceAndExceptionLabelsAreBounded(t *testing.T) {
	r := NewRecords(prometheus.NewRegistry(), Limits{MaxServices: 3, MaxExceptions: 2})
	ep := func(s string) *correlate.Endpoint { return &correlate.Endpoint{Service: s} }
	for i := 0; i < 5; i++ {
		r.Record(&correlate.Record{Kind: correlate.KindCall, Status: correlate.StatusError, Method: "m", Topic: "t",
			Caller: ep("nova-conductor"), Callee: ep(fmt.Sprintf("svc-%d", i)),
			Error: &correlate.RemoteError{Class: fmt.Sprintf("Error%d", i)}})
	}
	r.Record(&correlate.Record{Kind: correlate.KindCast, Status: correlate.StatusOK, Method: "m", Topic: "t"})
	// nova-conductor, svc-0 and svc-1 fit in 3; svc-2..4 and then "unknown" twice (the cast) are folded.
	for _, tc := range []struct {
		c    prometheus.Counter
		want float64
	}{
		{r.flows.WithLabelValues("nova-conductor", "svc-1", "call", "error"), 1},
		{r.flows.WithLabelValues("nova-conductor", "other", "call", "error"), 3},
		{r.flows.WithLabelValues("other", "other", "cast", "ok"), 1},
		{r.folded.WithLabelValues("service"), 5},
		{r.errors.WithLabelValues("m", "t", "Error1"), 1},
		{r.errors.WithLabelValues("m", "t", "other"), 3},
		{r.folded.WithLabelValues("exception"), 3},
	} {
		if got := testutil.ToFloat64(tc.c); got != tc.want {
			t.Errorf("%s = %v, want %v", tc.c.Desc(), got, tc.want)
		}
	}
}

func TestNotificationsAreLabelledByEventType(t *testing.T) {
	r := NewRecords(prometheus.NewRegistry(), Limits{})
	r.Record(&correlate.Record{Kind: correlate.KindNotification, Status: correlate.StatusOK,
		EventType: "instance.create.end", Topic: "notifications"})
	if got := testutil.ToFloat64(r.records.WithLabelValues("notification", "instance.create.end", "notifications", "ok")); got != 1 {
		t.Errorf("notification by event type = %v, want 1", got)
	}
}

// The record that killed the proxy: a method, topic and event type that are not valid UTF-8 (the Prometheus client
// panics on such a label value). Records from correlate are already mended; this sink mends and bounds again, as
// every boundary that requires valid text does, so a record built elsewhere cannot panic it either.
func TestInvalidUTF8LabelsAreMendedAndBounded(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	r := NewRecords(reg, Limits{})
	r.Record(&correlate.Record{Kind: correlate.KindCast, Status: correlate.StatusOK, Method: "pin\xc9\xf8g",
		Topic: "compute.\xff", Published: at(0), Delivered: at(3)})
	r.Record(&correlate.Record{Kind: correlate.KindNotification, Status: correlate.StatusOK,
		EventType: "compute.\xff\xfeinstance" + strings.Repeat("x", 500), Topic: "notifications"})
	if got := testutil.ToFloat64(r.records.WithLabelValues("cast", "pin\uFFFD\uFFFDg", "compute.\uFFFD", "ok")); got != 1 {
		t.Errorf("mended cast series = %v, want 1", got)
	}
	long := correlate.CleanString("compute.\xff\xfeinstance"+strings.Repeat("x", 500), maxLabelLen)
	if got := testutil.ToFloat64(r.records.WithLabelValues("notification", long, "notifications", "ok")); got != 1 {
		t.Errorf("bounded notification series = %v, want 1", got)
	}
	if _, err := reg.Gather(); err != nil {
		t.Fatalf("gather: %v", err)
	}
}

// Every component's panics are on /metrics under amqptrace_panics_total, by component, and a scrape survives a
// source that panics (it counts itself under component="metrics").
func TestPanicsAreExported(t *testing.T) {
	src := &Sources{SinkNames: []string{"metrics", "events"}}
	reg, _ := NewRegistry(src, Limits{})
	src.Pipeline = func() pipeline.Stats {
		return pipeline.Stats{SinkDrops: []uint64{3, 0}, SinkPanics: []uint64{3, 0}, Decode: pipeline.DecodeStats{Panics: 2},
			Correlate: correlate.Stats{Panics: 1}}
	}
	src.UI = func() ui.Stats { panic("a source that panics") }
	want := func(metricsPanics int) string {
		return fmt.Sprintf(`
# HELP amqptrace_panics_total Panics recovered, by component (correlator, decoder, sink:<name>, tracing, ui, metrics). Each cost one event, record, update, connection's decoding (decoder) or scrape (metrics), and nothing else: forwarding goes on.
# TYPE amqptrace_panics_total counter
amqptrace_panics_total{component="correlator"} 1
amqptrace_panics_total{component="decoder"} 2
amqptrace_panics_total{component="metrics"} %d
amqptrace_panics_total{component="sink:events"} 0
amqptrace_panics_total{component="sink:metrics"} 3
`, metricsPanics)
	}
	// Each scrape panics in the UI source, after the pipeline's metrics; the next scrape counts the one before.
	for i := range 2 {
		if err := testutil.GatherAndCompare(reg, strings.NewReader(want(i)), "amqptrace_panics_total"); err != nil {
			t.Errorf("scrape %d: %v", i+1, err)
		}
	}
}

// A follow-up (a reply after its call's record) counts once, by method, and does not count the call again.
func TestFollowUpCountsOnceByMethod(t *testing.T) {
	r := NewRecords(prometheus.NewRegistry(), Limits{})
	r.Record(&correlate.Record{ID: 1, Kind: correlate.KindCall, Status: correlate.StatusTimeout, Method: "report_state",
		Topic: "q-plugin", Published: at(0), Delivered: at(1)})
	r.Record(&correlate.Record{ID: 2, Amends: 1, Kind: correlate.KindCall, Status: correlate.StatusOK, Method: "report_state",
		Topic: "q-plugin", Published: at(0), Delivered: at(1), Replied: at(12000), ReplyDelivered: at(12001)})
	if got := testutil.ToFloat64(r.records.WithLabelValues("call", "report_state", "q-plugin", "timeout")); got != 1 {
		t.Errorf("timeouts = %v, want 1", got)
	}
	if got := testutil.CollectAndCount(r.records); got != 1 {
		t.Errorf("%d record series, want 1 (the follow-up is not a second call)", got)
	}
	if got := testutil.ToFloat64(r.after.WithLabelValues("report_state", "q-plugin", "ok")); got != 1 {
		t.Errorf("replies after record = %v, want 1", got)
	}
	if got := testutil.CollectAndCount(r.server); got != 0 {
		t.Errorf("the follow-up was timed as a call: %d server series", got)
	}
}
