package correlate

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/amqptrace/amqptrace/frames"
	"github.com/amqptrace/amqptrace/internal/wire"
)

func bodySeeds() [][]byte {
	return [][]byte{
		callBody("select_destinations", "m1", "u1", reqID, map[string]any{"a": []any{1, "x", nil, true}}),
		castBody("build_instances", "u2", reqID, map[string]any{"admin_password": "p"}),
		replyBody("m1", "u3", map[string]any{"r": 1.5e3}, nil, true),
		replyBody("m1", "u4", nil, failureJSON("E_Remote", "m_Remote", "msg \u00e9 \"q\""), true),
		replyBody("m1", "u5", nil, nil, false),
		[]byte(`{"event_type": "x.y", "priority": "INFO", "publisher_id": "p", "payload": {}, "_unique_id": "u"}`),
		[]byte(`{"oslo.version": "2.0", "oslo.message": "{\"method\": \"m\", \"args\": {\"k\": \"\\ud83d\\ude00\"}}"}`),
	}
}

// FuzzBodyParser: any body, whole or cut anywhere into head and tail, parses without panicking, and whatever
// payload it keeps is valid JSON.
func FuzzBodyParser(f *testing.F) {
	for _, s := range bodySeeds() {
		f.Add(s, uint16(len(s)/3))
	}
	f.Fuzz(func(t *testing.T, body []byte, cut uint16) {
		for _, policy := range []PayloadPolicy{PayloadRedacted, PayloadFull} {
			p := bodyParser{policy: policy, maxPayload: 256, bodyCap: 1 << 16}
			var whole bodyInfo
			p.parse(body, &whole)
			check(t, &whole)
			k := int(cut) % (len(body) + 1)
			var tr bodyInfo
			p.parseTruncated(body[:k], body[k:], &tr)
			check(t, &tr)
			if out := redactJSON(body, policy, 128); out != nil && !json.Valid(out) {
				t.Fatalf("redactJSON(%q) = invalid %q", body, out)
			}
		}
	})
}

func check(t *testing.T, b *bodyInfo) {
	t.Helper()
	for _, raw := range [][]byte{b.args, b.result} {
		if raw != nil && !json.Valid(raw) {
			t.Fatalf("kept invalid JSON %q", raw)
		}
	}
	if len(b.method) > maxIDLen || len(b.msgID) > maxIDLen || len(b.requestID) > maxIDLen {
		t.Fatalf("unbounded string kept")
	}
}

// FuzzAssembler feeds frames of arbitrary type, channel, direction and payload straight to a Conn, then runs the
// correlator over whatever came out: nothing may panic, and the pending table stays within its cap.
func FuzzAssembler(f *testing.F) {
	body := callBody("m", "m1", "u1", reqID, nil)
	for _, fr := range [][]byte{
		wire.MethodPayload(60, 40, wire.Short(0), wire.ShortStr("nova"), wire.ShortStr("conductor"), wire.Bits(false, false)),
		wire.HeaderPayload(uint64(len(body)), callProps(1000)),
		body[:40],
		body[40:],
	} {
		f.Add(fuzzFrame(0, 1, 1, fr))
	}
	f.Add(append(append(fuzzFrame(0, 1, 1, wire.MethodPayload(60, 40, wire.Short(0), wire.ShortStr(""), wire.ShortStr("q"),
		wire.Bits(true, false))), fuzzFrame(0, 2, 1, wire.HeaderPayload(3, wire.Properties{}))...), fuzzFrame(0, 3, 1, []byte("abc"))...))
	// A consumer's answers, read in place: whole, multiple, Reject, Nack, and cut short.
	for _, fr := range [][]byte{
		wire.MethodPayload(60, 80, wire.LongLong(1), wire.Bits(false)),
		wire.MethodPayload(60, 80, wire.LongLong(0), wire.Bits(true)),
		wire.MethodPayload(60, 90, wire.LongLong(7), wire.Bits(true)),
		wire.MethodPayload(60, 120, wire.LongLong(1<<63), wire.Bits(true, true)),
		wire.MethodPayload(60, 80, wire.Short(1)),
	} {
		f.Add(fuzzFrame(0, 1, 1, fr))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c := New(Config{MaxPending: 8, BodyCap: 256, QueueSize: 64})
		cn := c.NewConn(ConnInfo{ID: 1, Client: "10.0.0.1:1"})
		for len(data) >= 5 {
			dir, typ, ch := data[0]&1, data[1]%4, uint16(data[2]%3)
			n := int(binary.BigEndian.Uint16(data[3:5]))
			data = data[5:]
			n = min(n, len(data))
			fr := frames.Frame{Dir: frames.Direction(dir), Type: []frames.Type{1, 2, 3, 8}[typ], Channel: ch, Payload: data[:n]}
			if fr.Type == frames.TypeMethod && n >= 4 {
				fr.ClassID, fr.MethodID = binary.BigEndian.Uint16(data[:2]), binary.BigEndian.Uint16(data[2:4])
			}
			cn.HandleFrame(&fr)
			cn.EndWrite(fr.Dir)
			data = data[n:]
			for len(c.q) > 0 {
				c.admitBatch(<-c.q)
			}
			c.drain()
			if c.table.n > 8 {
				t.Fatalf("pending %d over cap", c.table.n)
			}
		}
		c.expire(time.Now().Add(time.Hour))
		cn.Close("", nil)
	})
}

func fuzzFrame(dir, typ byte, ch byte, payload []byte) []byte {
	b := []byte{dir, typ - 1, ch}
	b = binary.BigEndian.AppendUint16(b, uint16(len(payload)))
	return append(b, payload...)
}

// buildCalls encodes n calls: caller publish + confirm, server delivery, reply publish + confirm, reply delivery.
func buildCalls(n int) [][4][]byte {
	out := make([][4][]byte, n)
	for i := range n {
		msgID, uniq := fmt.Sprintf("%032x", i), fmt.Sprintf("%031xa", i)
		body := callBody("select_destinations", msgID, uniq, reqID,
			map[string]any{"instance_uuids": []string{"33333333-3333-4333-8333-333333333333"}, "return_objects": true})
		rb := replyBody(msgID, fmt.Sprintf("%031xb", i), []any{map[string]any{"service_host": "host1"}}, nil, true)
		out[i] = [4][]byte{
			wire.Concat(wire.Message(1, "nova", "scheduler", callProps(60000), body, frameMax)),
			wire.Concat(wire.Deliver(1, "1", uint64(i+1), false, "nova", "scheduler"),
				wire.Header(1, uint64(len(body)), callProps(60000)), wire.Body(1, body, frameMax)),
			wire.Concat(wire.Publish(1, "", replyQ, true), wire.Header(1, uint64(len(rb)), osloProps), wire.Body(1, rb, frameMax)),
			wire.Concat(wire.Deliver(1, "1", uint64(i+1), false, "", replyQ), wire.Header(1, uint64(len(rb)), osloProps),
				wire.Body(1, rb, frameMax)),
		}
	}
	return out
}

// BenchmarkCorrelate replays calls through frames decoding, assembly, body parsing and pairing, all on one
// goroutine, and reports messages per second (4 messages per call).
func BenchmarkCorrelate(b *testing.B) {
	h := newHarness(&testing.T{}, Config{})
	h.c.sink = SinkFunc(func(*Record) {})
	h.t = nil
	calls := buildCalls(4096)
	caller := benchConn(h, "nova-conductor", 1)
	callerReply := benchConn(h, "nova-conductor", 1)
	server := benchConn(h, "nova-scheduler", 2)
	serverSend := benchConn(h, "nova-scheduler", 2)
	server.ClientDecoder().Write(wire.Concat(wire.QueueDeclare(1, "scheduler", false, false, false, nil),
		wire.Consume(1, "scheduler", "1", false, false, nil)))
	server.ServerDecoder().Write(wire.ConsumeOK(1, "1"))
	callerReply.ClientDecoder().Write(wire.Concat(wire.QueueDeclare(1, replyQ, false, false, false, nil),
		wire.Consume(1, replyQ, "1", false, false, nil)))
	callerReply.ServerDecoder().Write(wire.ConsumeOK(1, "1"))
	h.flush()
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	msgs := 0
	for i := 0; b.Loop(); i++ {
		m := calls[i%len(calls)]
		caller.ClientDecoder().Write(m[0])
		server.ServerDecoder().Write(m[1])
		serverSend.ClientDecoder().Write(m[2])
		callerReply.ServerDecoder().Write(m[3])
		msgs += 4
		if len(h.c.q) > 1024 {
			h.flush()
		}
	}
	h.flush()
	b.ReportMetric(float64(msgs)/b.Elapsed().Seconds(), "msgs/s")
	// The machine is shared: CPU time consumed by this process (all threads, GC included) says what one core does.
	if cpu := cpuTime() - cpu0; cpu > 0 {
		b.ReportMetric(float64(msgs)/cpu.Seconds(), "msgs/cpu-s")
	}
	if st := h.c.Stats(); st.QueueDrops != 0 || st.UnmatchedReplies != 0 {
		b.Fatalf("stats %+v", st)
	}
}

// BenchmarkPendingMemory reports the heap held per pending call (a call published, never answered).
func BenchmarkPendingMemory(b *testing.B) {
	const n = 20000
	calls := buildCalls(n)
	for b.Loop() {
		h := newHarness(&testing.T{}, Config{MaxPending: 2 * n})
		h.c.sink = SinkFunc(func(*Record) {})
		caller := benchConn(h, "nova-conductor", 1)
		h.flush()
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i := range n {
			caller.ClientDecoder().Write(calls[i][0])
			if len(h.c.q) > 1024 {
				h.flush()
			}
		}
		h.flush()
		runtime.GC()
		runtime.ReadMemStats(&after)
		if h.c.table.n != n {
			b.Fatalf("pending %d", h.c.table.n)
		}
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "bytes/pending")
		runtime.KeepAlive(h)
	}
}

func benchConn(h *harness, program string, pid int) *frames.Conn {
	h.ids++
	cn := h.c.NewConn(ConnInfo{ID: h.ids, Client: fmt.Sprintf("10.0.0.%d:5000", pid)})
	dec := frames.NewConn(cn, frames.Options{})
	dec.ClientDecoder().Write(wire.Concat(wire.ProtocolHeader(),
		wire.StartOKPlain(wire.Table{"connection_name": fmt.Sprintf("%s:%d:x", program, pid)}, "guest", "pw"),
		wire.TuneOK(2047, frameMax, 60), wire.Open("/"), wire.ChannelOpen(1)))
	return dec
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
