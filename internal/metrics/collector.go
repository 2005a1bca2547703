package metrics

import (
	"context"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/amqptrace/amqptrace/correlate"
	"github.com/amqptrace/amqptrace/internal/pipeline"
	"github.com/amqptrace/amqptrace/proxy"
	"github.com/amqptrace/amqptrace/tracing"
	"github.com/amqptrace/amqptrace/ui"
)

// Sources are the snapshots read at scrape time. Nil functions are components that are not running (no OTLP
// export, no UI); their metrics are left out rather than reported as zero.
type Sources struct {
	Pipeline  func() pipeline.Stats
	SinkNames []string // names of pipeline.Config.Sinks, in order, for the per-sink drop counter
	Tracing   func() tracing.Stats
	UI        func() ui.Stats
	// InFlight, when set, gives the in-flight gauges (queue wire depth and lag, calls in flight per process).
	InFlight func(ctx context.Context, limit int) correlate.InFlight
	// Logger receives the collector's own panic line; nil discards.
	Logger *slog.Logger
}

// NewRegistry returns a registry with the Go runtime and process collectors, the component collector for src,
// and the record metrics (returned as a correlate.Sink to plug into the pipeline).
// src is read at every scrape, so the caller may fill it in after this call (components are built in turn).
func NewRegistry(src *Sources, lim Limits) (*prometheus.Registry, *Records) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(&collector{src: src, panics: correlate.NewPanicGuard("metrics", src.Logger)})
	return reg, NewRecords(reg, lim)
}

// Handler serves reg in the Prometheus text format.
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, ErrorHandling: promhttp.ContinueOnError})
}

// maxGaugeSeries bounds each in-flight gauge family: the deepest queues and the busiest processes.
const maxGaugeSeries = 100

type collector struct {
	src *Sources
	// panics counts scrapes cut short by a panic (what was collected before it is still served).
	panics *correlate.PanicGuard
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("amqptrace_"+name, help, labels, nil)
}

var (
	dConnsOpen    = desc("connections_open", "Client connections being proxied now.")
	dConnsTotal   = desc("connections_total", "Client connections accepted since start.")
	dConnsRefused = desc("connections_refused_total", "Client connections closed at once because --max-conns was reached.")
	dConnsNoDial  = desc("connections_dial_failed_total", "Client connections closed because no upstream broker could be dialled.")
	dHandshake    = desc("tls_handshake_failures_total", "Client TLS handshakes that failed or timed out.")
	dDialFail     = desc("upstream_dial_failures_total", "Failed dials to each upstream broker.", "upstream")
	dUpstreamUp   = desc("upstream_up", "Health of each upstream broker: 1 up, 0 down or not checked yet (see /api/stats for the reason).", "upstream")
	dUpstreamDown = desc("upstream_downs_total", "Times each upstream broker was marked down (failed dials, checks, or connections it ended before answering).", "upstream")
	dUpstreamFail = desc("upstream_consecutive_failures", "Failures of each upstream broker since its last success.", "upstream")
	dBytes        = desc("bytes_total", "Bytes forwarded, by direction (client_to_broker, broker_to_client).", "direction")
	dTapFail      = desc("tap_failures_total", "Connections whose observation was switched off by a panic or error (forwarding went on).")
	dFrames       = desc("frames_total", "AMQP frames decoded, by direction and frame type.", "direction", "type")
	dDecodeOff    = desc("decode_disabled_connections_total", "Connections whose decoding was switched off (not AMQP 0-9-1, or a decode error).")
	dDecodeLive   = desc("decoders_open", "Connections with a live decoder.")

	dMessages   = desc("correlator_messages_total", "Messages and topology events handed to the correlator.")
	dPending    = desc("pending_calls", "RPCs waiting for their final reply or settle time.")
	dPendingB   = desc("pending_bytes", "Estimated memory held by the pending RPCs (bounded by --max-pending-bytes).")
	dPendingMax = desc("pending_calls_limit", "The pending table's cap (--max-pending): at it, the oldest pending RPC is emitted early (evicted).")
	dPendingBM  = desc("pending_bytes_limit", "The pending table's memory cap (--max-pending-bytes).")
	dCorr       = desc("correlator_events_total", "Correlator events by kind (expired, evicted, late_reply, heartbeat, unmatched_reply, unmatched_delivery, unroutable, confirm, nack, channel_reset, truncated_body, decode_failure, parse_failure, body_reused, unknown_message, plain_message, late_event, reorder_overflow, orphan_merged, held, server_wait, reply_after_record, foreign_reply, connection_blocked, connection_unblocked, broker_closed_connection, broker_closed_channel, consumer_cancelled, redelivered).", "event")
	dDropped    = desc("dropped_total", "Everything dropped rather than waited for, by stage (correlator_queue, body_workers, sink:<name>, tracing_queue, span_export, ui).", "stage")
	dBuffered   = desc("reorder_buffered_events", "Events waiting in the correlator's reorder window (events from different connections are put back in read-time order).")
	dOrphans    = desc("orphan_events", "Replies and deliveries waiting for the request they belong to.")
	dRecordsOut = desc("records_emitted_total", "Records the correlator emitted to the sinks.")

	dSpans       = desc("spans_exported_total", "Spans accepted by the OTLP collector.")
	dSampled     = desc("records_sampled_out_total", "Records not exported by the sampling decision.")
	dExportErrs  = desc("otlp_export_errors_total", "Failed OTLP export calls.")
	dServices    = desc("otlp_resources", "Distinct OpenStack processes (resources) cached by the exporter.")
	dWSClients   = desc("websocket_clients", "Browser websocket clients connected now.")
	dWSTotal     = desc("websocket_clients_total", "Browser websocket clients accepted since start.")
	dWSKicked    = desc("websocket_clients_kicked_total", "Websocket clients disconnected because they did not keep up.")
	dHTTPRefused = desc("http_rejected_total", "HTTP requests refused, by reason (origin, auth).", "reason")

	dPanics       = desc("panics_total", "Panics recovered, by component (correlator, decoder, sink:<name>, tracing, ui, metrics). Each cost one event, record, update, connection's decoding (decoder) or scrape (metrics), and nothing else: forwarding goes on.", "component")
	dQueueDepth   = desc("queue_wire_depth", "Messages observed published to a queue and not yet delivered, for the deepest queues.", "queue")
	dQueueLag     = desc("queue_wire_lag_seconds", "How long the oldest message observed published to a queue and not yet delivered has waited.", "queue")
	dServerCalls  = desc("server_calls_in_flight", "Calls delivered to a server process and not yet answered (with oslo's unlimited prefetch, including those waiting for a worker).", "service", "host")
	dCallerCalls  = desc("caller_calls_awaiting_reply", "Calls a process published and has no reply to yet.", "service", "host")
	dServerOldest = desc("server_oldest_call_seconds", "Age of the oldest call a server process has in hand.", "service", "host")
	dPreOpen      = desc("pre_open_frames_total", "Frames clients sent before the broker accepted their login (Connection.Open-Ok), other than the handshake's: never decoded.")
	dCapPackets   = desc("capture_packets_total", "Packets the capture (amqptrace capture, replay) read.")
	dCapKernel    = desc("capture_kernel_packets_total", "Packets the kernel passed the capture's port filter (PACKET_STATISTICS, live capture).")
	dCapKDrops    = desc("capture_kernel_drops_total", "Packets the kernel dropped because the capture ring was full (PACKET_STATISTICS, live capture).")
	dCapGaps      = desc("capture_gaps_total", "Holes in a captured connection's stream (lost packets, or given up after the reassembly bound); each resynchronises that direction's decoder.")
	dCapGapBytes  = desc("capture_gap_bytes_total", "Bytes known to be missing in those holes (reassembly drops).")
	dCapConns     = desc("capture_connections_total", "Captured connections, by start: syn (seen from the start), mid_stream (picked up after it), tls (recognised as TLS, not decodable).", "kind")
	dCapResyncs   = desc("decoder_resyncs_total", "Times a decoder lost its place in a captured stream and hunted for the next frame boundary, by direction.", "direction")
	dCapSkipped   = desc("decoder_skipped_bytes_total", "Bytes passed over while hunting for a frame boundary, by direction.", "direction")
)

// Describe sends nothing: the collector is unchecked, because which metrics exist depends on which components
// run (and on the upstream list).
func (c *collector) Describe(chan<- *prometheus.Desc) {}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	defer c.panics.Recover(nil)
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	// First, so that a scrape a panic cuts short still reports the earlier ones.
	counter(dPanics, float64(c.panics.Count()), "metrics")
	if c.src.Pipeline != nil {
		st := c.src.Pipeline()
		p := st.Proxy
		gauge(dConnsOpen, float64(p.ConnsOpen))
		counter(dConnsTotal, float64(p.ConnsTotal))
		counter(dConnsRefused, float64(p.ConnsRefused))
		counter(dConnsNoDial, float64(p.ConnsDialFailed))
		counter(dHandshake, float64(p.HandshakeFailures))
		ups := make([]string, 0, len(p.DialFailuresByUpstream))
		for u := range p.DialFailuresByUpstream {
			ups = append(ups, u)
		}
		sort.Strings(ups)
		for _, u := range ups {
			counter(dDialFail, float64(p.DialFailuresByUpstream[u]), u)
		}
		for _, u := range p.Upstreams {
			up := 0.0
			if u.State == proxy.StateUp {
				up = 1
			}
			gauge(dUpstreamUp, up, u.Addr)
			counter(dUpstreamDown, float64(u.Downs), u.Addr)
			gauge(dUpstreamFail, float64(u.ConsecutiveFailures), u.Addr)
		}
		counter(dBytes, float64(p.BytesClientToServer), "client_to_broker")
		counter(dBytes, float64(p.BytesServerToClient), "broker_to_client")
		counter(dTapFail, float64(p.TapFailures))

		d := st.Decode
		if cs := st.Capture; cs != nil {
			counter(dCapPackets, float64(cs.Packets))
			counter(dCapKernel, float64(cs.KernelPackets))
			counter(dCapKDrops, float64(cs.KernelDrops))
			counter(dCapGaps, float64(cs.Gaps))
			counter(dCapGapBytes, float64(cs.GapBytes))
			counter(dCapConns, float64(cs.Conns-cs.MidStream), "syn")
			counter(dCapConns, float64(cs.MidStream), "mid_stream")
			counter(dCapConns, float64(cs.TLS), "tls")
			counter(dCapResyncs, float64(d.Client.Resyncs), "client_to_broker")
			counter(dCapResyncs, float64(d.Server.Resyncs), "broker_to_client")
			counter(dCapSkipped, float64(d.Client.Skipped), "client_to_broker")
			counter(dCapSkipped, float64(d.Server.Skipped), "broker_to_client")
			counter(dPanics, float64(cs.Panics), "capture")
		}
		gauge(dDecodeLive, float64(d.ConnsLive))
		counter(dDecodeOff, float64(d.ConnsOff))
		for _, dir := range []struct {
			name string
			s    struct{ m, h, b, hb uint64 }
		}{
			{"client_to_broker", struct{ m, h, b, hb uint64 }{d.Client.Methods, d.Client.Headers, d.Client.Bodies, d.Client.Heartbeats}},
			{"broker_to_client", struct{ m, h, b, hb uint64 }{d.Server.Methods, d.Server.Headers, d.Server.Bodies, d.Server.Heartbeats}},
		} {
			counter(dFrames, float64(dir.s.m), dir.name, "method")
			counter(dFrames, float64(dir.s.h), dir.name, "header")
			counter(dFrames, float64(dir.s.b), dir.name, "body")
			counter(dFrames, float64(dir.s.hb), dir.name, "heartbeat")
		}

		cs := st.Correlate
		counter(dMessages, float64(cs.MessagesIn))
		gauge(dPending, float64(cs.Pending))
		gauge(dPendingB, float64(cs.PendingBytes))
		gauge(dPendingMax, float64(cs.MaxPending))
		gauge(dPendingBM, float64(cs.MaxPendingBytes))
		gauge(dBuffered, float64(cs.Buffered))
		gauge(dOrphans, float64(cs.Orphans))
		counter(dRecordsOut, float64(cs.RecordsOut))
		counter(dDropped, float64(cs.QueueDrops), "correlator_queue")
		counter(dDropped, float64(cs.BodiesShed), "body_workers")
		for ev, v := range map[string]uint64{
			"expired": cs.Expired, "evicted": cs.Evicted, "late_reply": cs.LateReplies, "heartbeat": cs.Heartbeats,
			"unmatched_reply": cs.UnmatchedReplies, "unmatched_delivery": cs.UnmatchedDeliveries,
			"unroutable": cs.Unroutable, "confirm": cs.Confirms, "nack": cs.Nacks, "channel_reset": cs.ChannelResets,
			"truncated_body": cs.TruncatedBodies, "decode_failure": cs.DecodeFailures,
			"parse_failure": cs.ParseFailures, "body_reused": cs.BodiesReused,
			"body_offloaded": cs.BodiesOffloaded, "inflate_cut": cs.InflateCut,
			"consumer_untracked": cs.ConsumersUntracked, "unknown_message": cs.UnknownMessages,
			"consumer_ack": cs.ConsumerAcks, "ack_untracked": cs.AcksUntracked,
			"plain_message": cs.PlainMessages, "late_event": cs.LateEvents, "reorder_overflow": cs.ReorderOverflow, "orphan_merged": cs.OrphansMerged, "held": cs.Holds, "server_wait": cs.ServerWaits,
			"reply_after_record": cs.RepliesAfterRecord, "foreign_reply": cs.ForeignReplies,
			"connection_blocked": cs.Blocked, "connection_unblocked": cs.Unblocked,
			"broker_closed_connection": cs.BrokerClosedConnections, "broker_closed_channel": cs.BrokerClosedChannels,
			"consumer_cancelled": cs.ConsumersCancelled, "redelivered": cs.Redeliveries,
		} {
			counter(dCorr, float64(v), ev)
		}
		counter(dPreOpen, float64(cs.PreOpenFrames))
		counter(dPanics, float64(cs.Panics), "correlator")
		counter(dPanics, float64(d.Panics), "decoder")
		for i, v := range st.SinkDrops {
			counter(dDropped, float64(v), "sink:"+c.sinkName(i))
		}
		for i, v := range st.SinkPanics {
			counter(dPanics, float64(v), "sink:"+c.sinkName(i))
		}
	}
	if c.src.InFlight != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		v := c.src.InFlight(ctx, 0)
		cancel()
		for _, q := range v.Queues[:min(len(v.Queues), maxGaugeSeries)] {
			name := correlate.CleanString(q.Queue, maxLabelLen) // clean already; the client panics on anything else
			gauge(dQueueDepth, float64(q.Depth), name)
			gauge(dQueueLag, float64(q.OldestAgeMS)/1000, name)
		}
		// Processes are summed by service and host: a restarted process (a new pid) keeps its series.
		for _, ps := range []struct {
			d, oldest *prometheus.Desc
			list      []correlate.ProcessInFlight
		}{{dServerCalls, dServerOldest, v.Servers}, {dCallerCalls, nil, v.Callers}} {
			sum, age := map[[2]string]float64{}, map[[2]string]float64{}
			for _, p := range ps.list {
				k := [2]string{correlate.CleanString(p.Service, maxLabelLen), correlate.CleanString(p.Host, maxLabelLen)}
				if _, ok := sum[k]; !ok && len(sum) >= maxGaugeSeries {
					continue
				}
				sum[k] += float64(p.InFlight)
				age[k] = max(age[k], float64(p.OldestAgeMS)/1000)
			}
			for k, n := range sum {
				gauge(ps.d, n, k[0], k[1])
				if ps.oldest != nil {
					gauge(ps.oldest, age[k], k[0], k[1])
				}
			}
		}
	}
	if c.src.Tracing != nil {
		t := c.src.Tracing()
		counter(dSpans, float64(t.SpansExported))
		counter(dSampled, float64(t.SampledOut))
		counter(dExportErrs, float64(t.ExportErrors))
		gauge(dServices, float64(t.Services))
		counter(dDropped, float64(t.RecordsDropped), "tracing_queue")
		counter(dDropped, float64(t.SpansDropped), "span_export")
		counter(dPanics, float64(t.Panics), "tracing")
	}
	if c.src.UI != nil {
		u := c.src.UI()
		gauge(dWSClients, float64(u.Clients))
		counter(dWSTotal, float64(u.ClientsTotal))
		counter(dWSKicked, float64(u.ClientsKicked))
		counter(dHTTPRefused, float64(u.OriginRejected), "origin")
		counter(dHTTPRefused, float64(u.AuthRejected), "auth")
		counter(dDropped, float64(u.RecordsDropped), "ui")
		counter(dPanics, float64(u.Panics), "ui")
	}
}

// sinkName is the name of the i-th pipeline sink.
func (c *collector) sinkName(i int) string {
	if i < len(c.src.SinkNames) {
		return c.src.SinkNames[i]
	}
	return strconv.Itoa(i)
}
