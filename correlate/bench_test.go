package correlate

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amqptrace/amqptrace/frames"
	"github.com/amqptrace/amqptrace/internal/wire"
)

// Placeholders in the RPC template, overwritten with a fresh id on every call so that no two calls in the reorder
// window share an id. They are hex-sized, and hex needs no escaping in the inner JSON string.
const (
	phMsgID   = "MMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMM"
	phUnique  = "UUUUUUUUUUUUUUUUUUUUUUUUUUUUUUUU"
	phReplyU  = "VVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVV"
	phRequest = "RRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRR"
)

// rpcTemplate is one oslo RPC on the wire as amqptrace-bench's rpc workload sends it (cmd/amqptrace-bench/oslo.go:
// a ~1 KiB double-encoded call with the full set of _context_* keys, confirms on both publishing channels), as
// the six writes the proxy's pumps tap: the caller's publish, the broker's confirm of it, the delivery to the
// server, the server's reply publish, its confirm, and the reply's delivery to the caller.
type rpcTemplate struct {
	call, callAck, deliver, reply, replyAck, replyDeliver []byte
	consumerAck                                           []byte // a consumer's Basic.Ack of its delivery (tag 1)
	// ids are the places of the placeholders in each write, patched per call.
	ids []idSpot
}

type idSpot struct {
	buf *[]byte
	at  int
	ph  string
}

func newRPCTemplate(b testing.TB) *rpcTemplate {
	return newRPCTemplateArgs(b, map[string]any{"host": "bench-host", "payload": strings.Repeat("a", 256)})
}

// args20 is a nova-like argument object of 20 keys: ids, names, timestamps, numbers, a nested object, a URL, an
// admin password and a connection_info held as a JSON string, so the redactor has keys, values and nested JSON
// to look at (what BenchmarkRPCArgs20 measures).
func args20() map[string]any {
	ci, _ := json.Marshal(map[string]any{"driver_volume_type": "iscsi", "data": map[string]any{
		"target_iqn": "iqn.2010-10.org.openstack:volume-1", "target_portal": "10.0.0.5:3260", "auth_method": "CHAP",
		"auth_username": "u", "auth_password": "bench-not-a-secret"}})
	return map[string]any{
		"instance_uuid": "33333333-3333-4333-8333-333333333333", "host": "compute-1.example.org", "node": "node1",
		"flavor_id": "m1.small", "image_ref": "44444444-4444-4444-8444-444444444444", "key_name": "mykey",
		"admin_password": "bench-not-a-secret", "display_name": "bench-vm", "created_at": "2024-05-01T12:00:00.000000",
		"vcpus": 2, "memory_mb": 4096, "root_gb": 20, "availability_zone": "nova", "launched_on": nil,
		"metadata": map[string]any{"role": "web", "tier": "frontend"}, "request_spec": "spec-1",
		"block_device_mapping": []any{"vda"}, "image_url": "http://glance:9292/v2/images/4444",
		"connection_info": string(ci), "description": strings.Repeat("a", 120),
	}
}

func newRPCTemplateArgs(b testing.TB, args map[string]any) *rpcTemplate {
	inner := pyJSON(
		kv{"method", "bench_echo"},
		kv{"args", args},
		kv{"version", "1.0"}, kv{"_msg_id", phMsgID}, kv{"_reply_q", replyQ}, kv{"_timeout", nil},
		kv{"_unique_id", phUnique},
		kv{"_context_user", "0123456789abcdef0123456789abcdef"},
		kv{"_context_project_id", "fedcba9876543210fedcba9876543210"},
		kv{"_context_is_admin", false}, kv{"_context_read_only", false},
		kv{"_context_auth_token", "bench-fake-token-not-a-secret"},
		kv{"_context_request_id", "req-" + phRequest},
		kv{"_context_global_request_id", nil},
		kv{"_context_roles", []string{"member", "reader"}},
		kv{"_context_user_name", "bench"}, kv{"_context_project_name", "bench"},
	)
	call := envelope(inner)
	reply := envelope(pyJSON(kv{"result", map[string]any{"method": "bench_echo", "ok": true}}, kv{"failure", nil},
		kv{"ending", true}, kv{"_msg_id", phMsgID}, kv{"_unique_id", phReplyU}))
	props := callProps(60000)
	t := &rpcTemplate{
		call: wire.Concat(wire.Publish(1, "bench", "bench_topic", false), wire.Header(1, uint64(len(call)), props),
			wire.Body(1, call, frameMax)),
		callAck: wire.Ack(1, 1, false),
		deliver: wire.Concat(wire.Deliver(1, "1", 1, false, "bench", "bench_topic"),
			wire.Header(1, uint64(len(call)), props), wire.Body(1, call, frameMax)),
		reply: wire.Concat(wire.Publish(1, "", replyQ, true), wire.Header(1, uint64(len(reply)), osloProps),
			wire.Body(1, reply, frameMax)),
		replyAck:    wire.Ack(1, 1, false),
		consumerAck: wire.Ack(1, 1, false),
		replyDeliver: wire.Concat(wire.Deliver(1, "1", 1, false, "", replyQ), wire.Header(1, uint64(len(reply)), osloProps),
			wire.Body(1, reply, frameMax)),
	}
	for _, buf := range []*[]byte{&t.call, &t.deliver, &t.reply, &t.replyDeliver} {
		for _, ph := range []string{phMsgID, phUnique, phReplyU, phRequest} {
			for off := 0; ; {
				k := bytes.Index((*buf)[off:], []byte(ph))
				if k < 0 {
					break
				}
				t.ids = append(t.ids, idSpot{buf: buf, at: off + k, ph: ph})
				off += k + len(ph)
			}
		}
	}
	if len(t.ids) != 10 {
		b.Fatalf("found %d id placeholders, want 10", len(t.ids))
	}
	return t
}

// setIDs writes call n's ids into the template, and its publish sequence number into both confirms.
func (t *rpcTemplate) setIDs(n uint64) {
	var id [8]byte
	var hx [16]byte
	for _, s := range t.ids {
		binary.BigEndian.PutUint64(id[:], n)
		hex.Encode(hx[:], id[:])
		dst := (*s.buf)[s.at : s.at+len(s.ph)]
		copy(dst, s.ph[:len(s.ph)-len(hx)]) // the placeholder letter keeps the kinds of id apart
		copy(dst[len(s.ph)-len(hx):], hx[:])
	}
	// Basic.Ack: frame header (7 bytes), class and method (4), then the delivery tag.
	binary.BigEndian.PutUint64(t.callAck[11:], n)
	binary.BigEndian.PutUint64(t.replyAck[11:], n)
}

// BenchmarkRPC is the proxy's RPC workload through the public path: frames decoders (stamping reads as Write
// does) into Conn.HandleFrame and EndWrite on this goroutine, the correlator's Run on its own, and a sink that
// counts records. One op is one call (six writes: four messages and two confirms); the timer runs until Run has
// emitted every record, so ns/op and allocs/op cover both goroutines. cpu-ns/op is the process's CPU time per
// call (both goroutines and GC), the steadier number on a shared machine.
//
// The loop runs about ten times the call rate of amqptrace-bench's rpc workload, so the reorder window is a
// tenth of the default: it then holds about as many events as the default window does in the proxy (~10,000),
// instead of filling to ReorderCap and processing every event early.
func BenchmarkRPC(b *testing.B) { benchRPC(b, newRPCTemplate(b), false) }

// BenchmarkRPCAcked is BenchmarkRPC with the two consumer acks an oslo RPC also sends (the server's of the call
// delivery, the caller's of the reply's): they are read and passed to the correlator, which tracks no call
// delivery, so this is what reading them costs.
func BenchmarkRPCAcked(b *testing.B) { benchRPC(b, newRPCTemplate(b), true) }

// BenchmarkRPCArgs20 is BenchmarkRPC with a 20-key argument object (args20) in the call: the redactor's cost per
// RPC (issue 14 allows it at most 10% of BenchmarkRPC's CPU per RPC).
func BenchmarkRPCArgs20(b *testing.B) { benchRPC(b, newRPCTemplateArgs(b, args20()), false) }

// BenchmarkRPCArgs20None is BenchmarkRPCArgs20 with --payload none: no argument is kept, so nothing is redacted.
// What redaction adds to an RPC is BenchmarkRPCArgs20's CPU per RPC less this one's.
func BenchmarkRPCArgs20None(b *testing.B) {
	benchRPCWith(b, newRPCTemplateArgs(b, args20()), false, PayloadNone)
}

// benchRig is a Correlator running on its own goroutine, fed through frames decoders on the benchmark's, and
// counting the records its sink gets: what BenchmarkRPC and BenchmarkPlainMessage share.
type benchRig struct {
	c       *Correlator
	records atomic.Int64
	ids     uint64
	cancel  context.CancelFunc
	done    chan error
	cpu0    time.Duration
}

func newBenchRig(payload PayloadPolicy) *benchRig {
	r := &benchRig{done: make(chan error, 1)}
	r.c = New(Config{Reorder: DefaultReorder / 10, Logger: slog.New(slog.DiscardHandler), Payload: payload,
		Sink: SinkFunc(func(*Record) { r.records.Add(1) })})
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- r.c.Run(ctx) }()
	return r
}

// open is a connection of program (pid) past its handshake, with channel 1 open.
func (r *benchRig) open(program string, pid int) *frames.Conn {
	r.ids++
	cn := r.c.NewConn(ConnInfo{ID: r.ids, Client: fmt.Sprintf("10.0.0.%d:%d", pid, 5000+r.ids)})
	dec := frames.NewConn(cn, frames.Options{})
	dec.ClientDecoder().Write(wire.Concat(wire.ProtocolHeader(),
		wire.StartOKPlain(wire.Table{"connection_name": fmt.Sprintf("%s:%d:x", program, pid)}, "guest", "pw"),
		wire.TuneOK(2047, frameMax, 60), wire.Open("/"), wire.ChannelOpen(1)))
	// Nothing past the handshake is decoded before the broker's Open-Ok (f290ce9).
	dec.ServerDecoder().Write(wire.Concat(wire.Start(wire.Table{}), wire.Tune(2047, frameMax, 60), wire.OpenOK(),
		wire.ChannelOpenOK(1)))
	return dec
}

// start resets the timer and the CPU clock once the setup is done.
func (r *benchRig) start(b *testing.B) {
	b.ReportAllocs()
	b.ResetTimer()
	r.cpu0 = cpuTime()
}

// pace keeps the benchmark well inside QueueSize (Run drains the queue on a tick), so nothing is dropped.
func (r *benchRig) pace() {
	for r.c.queued.Load() > DefaultQueueSize/2 {
		time.Sleep(time.Millisecond)
	}
}

// finish stops Run once it has emitted everything, reports the process's CPU time per op (both goroutines and
// GC), and returns the stats and the records counted.
func (r *benchRig) finish(b *testing.B) (Stats, int64) {
	r.cancel()
	if err := <-r.done; err != nil {
		b.Fatal(err)
	}
	cpu := cpuTime() - r.cpu0
	b.StopTimer()
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	return r.c.Stats(), r.records.Load()
}

func benchRPC(b *testing.B, t *rpcTemplate, consumerAcks bool) {
	benchRPCWith(b, t, consumerAcks, PayloadRedacted)
}

func benchRPCWith(b *testing.B, t *rpcTemplate, consumerAcks bool, payload PayloadPolicy) {
	r := newBenchRig(payload)
	// Each process has two connections (oslo's listener and sender), as in amqptrace-bench.
	caller, callerReply := r.open("nova-conductor", 1), r.open("nova-conductor", 1)
	server, serverSend := r.open("nova-scheduler", 2), r.open("nova-scheduler", 2)
	caller.ClientDecoder().Write(wire.ConfirmSelect(1))
	serverSend.ClientDecoder().Write(wire.ConfirmSelect(1))
	server.ClientDecoder().Write(wire.Concat(wire.ExchangeDeclare(1, "bench", "topic", false, nil),
		wire.QueueDeclare(1, "bench_topic", false, false, false, nil),
		wire.QueueBind(1, "bench_topic", "bench", "bench_topic", nil),
		wire.Consume(1, "bench_topic", "1", false, false, nil)))
	server.ServerDecoder().Write(wire.ConsumeOK(1, "1"))
	callerReply.ClientDecoder().Write(wire.Concat(wire.QueueDeclare(1, replyQ, false, false, false, nil),
		wire.Consume(1, replyQ, "1", false, false, nil)))
	callerReply.ServerDecoder().Write(wire.ConsumeOK(1, "1"))

	r.start(b)
	for i := range b.N {
		t.setIDs(uint64(i + 1))
		caller.ClientDecoder().Write(t.call)
		caller.ServerDecoder().Write(t.callAck)
		server.ServerDecoder().Write(t.deliver)
		if consumerAcks {
			server.ClientDecoder().Write(t.consumerAck)
		}
		serverSend.ClientDecoder().Write(t.reply)
		serverSend.ServerDecoder().Write(t.replyAck)
		callerReply.ServerDecoder().Write(t.replyDeliver)
		if consumerAcks {
			callerReply.ClientDecoder().Write(t.consumerAck)
		}
		r.pace()
	}
	st, got := r.finish(b)
	if got != int64(b.N) || st.QueueDrops != 0 || st.UnmatchedReplies != 0 || st.ReorderOverflow != 0 ||
		st.RecordsOf(KindCall, StatusOK) != uint64(b.N) {
		b.Fatalf("%d records for %d calls; stats %+v", got, b.N, st)
	}
}

// BenchmarkBodyParse parses the call and the reply body of BenchmarkRPC (one op is both), the part of the pumps'
// work that this package owns, without the noise of a second goroutine.
func BenchmarkBodyParse(b *testing.B) {
	t := newRPCTemplate(b)
	t.setIDs(1)
	body := func(msg []byte) []byte { // the body frame's payload: from the envelope to its closing brace
		b := msg[bytes.Index(msg, []byte(`{"oslo.version"`)):]
		return b[:bytes.LastIndexByte(b, '}')+1]
	}
	call, reply := body(t.call), body(t.reply)
	p := bodyParser{maxPayload: DefaultMaxPayloadBytes, bodyCap: DefaultBodyCap}
	var out bodyInfo
	b.ReportAllocs()
	for b.Loop() {
		p.parse(call, &out)
		p.parse(reply, &out)
	}
	if out.kind != mkReply || out.msgID == "" {
		b.Fatalf("parsed %+v", out)
	}
}

// BenchmarkRedactArgs20 is the redactor alone on BenchmarkRPCArgs20's argument object (args20), as the body parser
// calls it (scratch buffers kept between calls): one op is one redaction in the default policy.
func BenchmarkRedactArgs20(b *testing.B) {
	args, err := json.Marshal(args20())
	if err != nil {
		b.Fatal(err)
	}
	var out json.RawMessage
	var sc redactScratch
	b.ReportAllocs()
	for b.Loop() {
		out = (*Redactor)(nil).json(&sc, args, PayloadRedacted, DefaultMaxPayloadBytes)
	}
	if !json.Valid(out) || bytes.Contains(out, []byte("bench-not-a-secret")) {
		b.Fatalf("redacted %s", out)
	}
}

// BenchmarkPlainMessage is amqptrace-bench's throughput workload through the public path: a plain 1 KiB
// octet-stream message (no oslo envelope, no reply_to) published on a confirm channel, its confirm, its delivery
// and the consumer's ack. One op is one message (four writes). Such a message makes no record; this is what
// observing it costs the proxy.
func BenchmarkPlainMessage(b *testing.B) {
	r := newBenchRig(PayloadRedacted)
	pub, sub := r.open("publisher", 1), r.open("consumer", 2)
	pub.ClientDecoder().Write(wire.ConfirmSelect(1))
	sub.ClientDecoder().Write(wire.Concat(wire.QueueDeclare(1, "bench-q", false, false, false, nil),
		wire.Consume(1, "bench-q", "1", false, false, nil)))
	sub.ServerDecoder().Write(wire.ConsumeOK(1, "1"))
	body := bytes.Repeat([]byte{'x'}, 1024)
	props := wire.Properties{ContentType: "application/octet-stream"}
	publish := wire.Concat(wire.Publish(1, "", "bench-q", false), wire.Header(1, uint64(len(body)), props),
		wire.Body(1, body, frameMax))
	confirm := wire.Ack(1, 1, false)
	deliver := wire.Concat(wire.Deliver(1, "1", 1, false, "", "bench-q"), wire.Header(1, uint64(len(body)), props),
		wire.Body(1, body, frameMax))
	ack := wire.Ack(1, 1, false)
	r.start(b)
	for i := range b.N {
		binary.BigEndian.PutUint64(confirm[11:], uint64(i+1))
		binary.BigEndian.PutUint64(deliver[11+1+len("1"):], uint64(i+1)) // Deliver: the consumer tag, then its own
		binary.BigEndian.PutUint64(ack[11:], uint64(i+1))
		pub.ClientDecoder().Write(publish)
		pub.ServerDecoder().Write(confirm)
		sub.ServerDecoder().Write(deliver)
		sub.ClientDecoder().Write(ack)
		r.pace()
	}
	if st, records := r.finish(b); records != 0 || st.QueueDrops != 0 || st.PlainMessages == 0 {
		b.Fatalf("%d records; stats %+v", records, st)
	}
}

// BenchmarkInFlightView is the in-flight view (/api/inflight, the UI's graph tick, the /metrics gauges) over a
// backlog of 200,000 casts queued for a stopped nova-compute: one op is one walk of the pending table, which the
// correlator goroutine makes instead of pairing.
func BenchmarkInFlightView(b *testing.B) {
	bc := newBacklogCloud(b, Config{MaxPending: 300000, MaxPendingBytes: 1 << 30, MaxPayloadBytes: 4096})
	bc.compute.cn.Close("nova-compute stopped", nil)
	bc.h.flush()
	args := map[string]any{"instance": map[string]any{"uuid": "6b0c5e3e-0000-4000-8000-000000000000", "host": "cmp1"}}
	const backlog = 200000
	for i := range backlog {
		bc.api.publish("nova", "compute.cmp1", false, osloProps,
			castBody("build_and_run_instance", fmt.Sprintf("u-%08d", i), reqID, args))
		if i%1000 == 999 {
			bc.h.flush()
		}
		bc.h.step(time.Microsecond)
	}
	bc.h.flush()
	var v InFlight
	for b.Loop() {
		v = bc.h.c.inFlightView(0)
	}
	if v.Pending != backlog || len(v.Queues) != 1 || v.Queues[0].Depth != backlog {
		b.Fatalf("view: %d pending, queues %+v", v.Pending, v.Queues)
	}
}
