package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
)

// targetKind says how a metric is judged.
type targetKind int

const (
	noTarget       targetKind = iota
	atLeastHAProxy            // amqptrace ≥ limit × haproxy (rates)
	atMostHAProxy             // amqptrace ≤ limit × haproxy (latency, CPU)
	atMostAbsolute            // amqptrace ≤ limit (memory per idle connection)
)

// metricSpec describes one printed row. The order of metricSpecs is the order of the report.
type metricSpec struct {
	workload, key, label, unit string
	kind                       targetKind
	limit                      float64
	// tlsLimit replaces limit when the proxies terminate TLS (--tls), where one is stated; TLS costs both proxies
	// the same cipher work, but amqptrace's TLS connections take its goroutine pumps, not the event loops.
	tlsLimit float64
	// beside names the proxy's figure ("workload/key", amqptrace column) that this row is stated next to: the
	// capture workload has no haproxy to compare with, so its CPU row says what the proxy costs for the same unit.
	beside string
}

// The targets are what amqptrace promises against haproxy in the same run: decoding for (almost) free.
var metricSpecs = []metricSpec{
	{"throughput", "msgs_per_s", "1 KiB msgs/s end to end", "msg/s", atLeastHAProxy, 0.97, 0.95, ""},
	{"throughput", "cpu_us_per_msg", "proxy CPU per message", "µs", atMostHAProxy, 1.15, 1.3, ""},
	{"rpc", "calls_per_s", "RPC calls/s", "call/s", atLeastHAProxy, 0.97, 0, ""},
	{"rpc", "p50_ms", "RPC latency p50", "ms", atMostHAProxy, 1.05, 0, ""},
	{"rpc", "p99_ms", "RPC latency p99", "ms", atMostHAProxy, 1.05, 0, ""},
	{"rpc", "cpu_us_per_call", "proxy CPU per call", "µs", atMostHAProxy, 1.15, 0, ""},
	{"idle", "kib_per_conn", "proxy memory per idle conn", "KiB", atMostAbsolute, 8, 0, ""},
	{"idle", "conns_opened", "idle connections opened", "conns", noTarget, 0, 0, ""},
	{"large", "mb_per_s", "8 MiB msgs MB/s", "MB/s", noTarget, 0, 0, ""},
	{"large", "cpu_us_per_msg", "proxy CPU per 8 MiB message", "µs", atMostHAProxy, 1.5, 0, ""},
	{"capture", "live_msgs_per_s", "live capture: 1 KiB msgs/s on lo", "msg/s", noTarget, 0, 0, ""},
	{"capture", "cpu_us_per_msg", "live capture CPU per message", "µs", noTarget, 0, 0, "throughput/cpu_us_per_msg"},
	{"capture", "kernel_drops", "live capture kernel drops", "pkts", atMostAbsolute, 0, 0, ""},
	{"capture", "gaps", "live capture reassembly gaps", "gaps", noTarget, 0, 0, ""},
	{"capture", "replay_mb_per_s", "replay of rpc pcap, 1 core", "MB/s", noTarget, 0, 0, ""},
	{"capture", "replay_records_per_s", "replay records/s, 1 core", "rec/s", noTarget, 0, 0, ""},
}

// forTLS is s as judged when the proxies terminate TLS.
func (s metricSpec) forTLS() metricSpec {
	if s.tlsLimit != 0 {
		s.limit = s.tlsLimit
	}
	return s
}

func (s metricSpec) target() string {
	switch s.kind {
	case atLeastHAProxy:
		return fmt.Sprintf("≥ %.2f × haproxy", s.limit)
	case atMostHAProxy:
		return fmt.Sprintf("≤ %.2f × haproxy", s.limit)
	case atMostAbsolute:
		return fmt.Sprintf("≤ %g %s", s.limit, s.unit)
	}
	return ""
}

// results collects per-round values: workload -> path -> metric -> one value per successful round.
type results map[string]map[string]map[string][]float64

func (r results) add(workload, path string, m metrics) {
	if r[workload] == nil {
		r[workload] = map[string]map[string][]float64{}
	}
	if r[workload][path] == nil {
		r[workload][path] = map[string][]float64{}
	}
	for k, v := range m {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			r[workload][path][k] = append(r[workload][path][k], v)
		}
	}
}

// row is one metric of the report; a nil pointer is n/a. Field names are the --json interface.
type row struct {
	Workload    string               `json:"workload"`
	Metric      string               `json:"metric"`
	Label       string               `json:"label"`
	Unit        string               `json:"unit"`
	Median      map[string]*float64  `json:"median"`
	Rounds      map[string][]float64 `json:"rounds"`
	OverHAProxy *float64             `json:"amqptrace_over_haproxy"`
	OverDirect  *float64             `json:"amqptrace_over_direct"`
	// Spread is the largest (max-min)/median over rounds among the paths: the noise a ratio has to be read against.
	Spread  *float64 `json:"spread,omitempty"`
	Target  string   `json:"target,omitempty"`
	Verdict string   `json:"verdict,omitempty"`
	// Beside is the proxy's figure this row is stated next to (metricSpec.beside), and OverBeside this row's
	// amqptrace median over it.
	Beside     *float64 `json:"beside_proxy,omitempty"`
	OverBeside *float64 `json:"over_beside_proxy,omitempty"`
}

func median(v []float64) *float64 {
	if len(v) == 0 {
		return nil
	}
	s := slices.Clone(v)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return &m
}

// spread returns the largest (max-min)/median of any path with at least two rounds, or nil.
func spread(rounds map[string][]float64) *float64 {
	var worst *float64
	for _, v := range rounds {
		m := median(v)
		if len(v) < 2 || *m == 0 {
			continue
		}
		sp := (slices.Max(v) - slices.Min(v)) / math.Abs(*m)
		if worst == nil || sp > *worst {
			worst = &sp
		}
	}
	return worst
}

func ratio(a, b *float64) *float64 {
	if a == nil || b == nil || *b == 0 {
		return nil
	}
	r := *a / *b
	return &r
}

// verdict judges the amqptrace median: PASS, MISS, or n/a when a needed figure is missing.
func verdict(s metricSpec, at, overHAProxy *float64) string {
	switch s.kind {
	case atLeastHAProxy:
		if overHAProxy == nil {
			return "n/a"
		}
		return passMiss(*overHAProxy >= s.limit)
	case atMostHAProxy:
		if overHAProxy == nil {
			return "n/a"
		}
		return passMiss(*overHAProxy <= s.limit)
	case atMostAbsolute:
		if at == nil {
			return "n/a"
		}
		return passMiss(*at <= s.limit)
	}
	return ""
}

func passMiss(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

// buildRows turns results into report rows for the selected workloads.
func buildRows(res results, selected []string, tls bool) []row {
	var rows []row
	for _, s := range metricSpecs {
		if tls {
			s = s.forTLS()
		}
		if !slices.Contains(selected, s.workload) {
			continue
		}
		r := row{Workload: s.workload, Metric: s.key, Label: s.label, Unit: s.unit,
			Median: map[string]*float64{}, Rounds: map[string][]float64{}, Target: s.target()}
		for _, p := range paths {
			v := res[s.workload][p][s.key]
			r.Median[p] = median(v)
			r.Rounds[p] = v
		}
		r.Spread = spread(r.Rounds)
		r.OverHAProxy = ratio(r.Median[pathAmqptrace], r.Median[pathHAProxy])
		r.OverDirect = ratio(r.Median[pathAmqptrace], r.Median[pathDirect])
		r.Verdict = verdict(s, r.Median[pathAmqptrace], r.OverHAProxy)
		if s.beside != "" {
			if w, k, _ := strings.Cut(s.beside, "/"); slices.Contains(selected, w) {
				r.Beside = median(res[w][pathAmqptrace][k])
			}
			r.OverBeside = ratio(r.Median[pathAmqptrace], r.Beside)
			r.Target = fmt.Sprintf("proxy: %s %s (%s×)", num(r.Beside), s.unit, ratioStr(r.OverBeside))
		}
		rows = append(rows, r)
	}
	return rows
}

// report is the whole output; --json prints it as is.
type report struct {
	Config runConfig `json:"config"`
	Rows   []row     `json:"results"`
	// Observation is amqptrace's own account of what it observed and dropped (nil when it did not run).
	Observation *observation `json:"observation,omitempty"`
	Notes       []string     `json:"notes"`
}

type runConfig struct {
	Rounds             int      `json:"rounds"`
	Duration           string   `json:"duration"`
	Warmup             string   `json:"warmup"`
	Workloads          []string `json:"workloads"`
	IdleConnsRequested int      `json:"idle_conns_requested"`
	IdleConns          int      `json:"idle_conns"`
	Broker             string   `json:"broker"`
	Amqptrace          string   `json:"amqptrace"`
	OTLPEndpoint       string   `json:"otlp_endpoint,omitempty"`
	DevHAProxyAsTrace  bool     `json:"dev_haproxy_in_amqptrace_slot,omitempty"`
	Profile            string   `json:"profile"`
	TLS                bool     `json:"tls,omitempty"`
}

func (r *report) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func (r *report) writeTable(w io.Writer) error {
	c := r.Config
	fmt.Fprintf(w, "amqptrace-bench: %d round(s) × %s per workload (after %s warm-up), broker %s, amqptrace %s, profile %s\n",
		c.Rounds, c.Duration, c.Warmup, c.Broker, c.Amqptrace, c.Profile)
	if c.TLS {
		fmt.Fprintln(w, "TLS: the clients speak amqps to haproxy and to amqptrace, which terminate it; direct is plain AMQP")
	}
	if c.DevHAProxyAsTrace {
		fmt.Fprintln(w, "DEV MODE: the amqptrace column is a second haproxy, not amqptrace")
	}
	fmt.Fprintln(w, "medians over rounds; ratios are amqptrace/haproxy and amqptrace/direct; spread is the largest")
	fmt.Fprintln(w, "(max-min)/median over rounds of any path: a ratio closer to its target than that is within the noise")
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "workload\tmetric\tunit\tdirect\thaproxy\tamqptrace\tat/hap\tat/direct\tspread\ttarget\tverdict")
	for _, x := range r.Rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", x.Workload, x.Label, x.Unit,
			num(x.Median[pathDirect]), num(x.Median[pathHAProxy]), num(x.Median[pathAmqptrace]),
			ratioStr(x.OverHAProxy), ratioStr(x.OverDirect), percent(x.Spread), x.Target, x.Verdict)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if r.Observation != nil {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "amqptrace observation, all rounds:", r.Observation)
	}
	if len(r.Notes) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "notes:")
		for _, n := range r.Notes {
			fmt.Fprintf(w, "  - %s\n", strings.ReplaceAll(n, "\n", "\n    "))
		}
	}
	return nil
}

// num prints a figure with about three significant digits; nil is n/a.
func num(v *float64) string {
	if v == nil {
		return "n/a"
	}
	switch a := math.Abs(*v); {
	case a >= 100:
		return fmt.Sprintf("%.0f", *v)
	case a >= 10:
		return fmt.Sprintf("%.1f", *v)
	default:
		return fmt.Sprintf("%.2f", *v)
	}
}

func percent(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", *v*100)
}

func ratioStr(v *float64) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", *v)
}

// summary renders one round's metrics for the progress line, in report order.
func summary(workload string, m metrics) string {
	var parts []string
	for _, s := range metricSpecs {
		if v, ok := m[s.key]; ok && s.workload == workload {
			parts = append(parts, fmt.Sprintf("%s=%s", s.key, num(&v)))
		}
	}
	if len(parts) == 0 {
		return "n/a"
	}
	return strings.Join(parts, " ")
}
