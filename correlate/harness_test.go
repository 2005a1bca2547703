package correlate

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amqptrace/amqptrace/frames"
	"github.com/amqptrace/amqptrace/internal/wire"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const frameMax = 131072

// harness drives a Correlator synchronously: frames go through real frames decoders into real Conns, stamped with
// the harness clock as the proxy stamps its reads, and flush runs the queued events through the reorder window on
// the test goroutine as a tap without lag would (every window has passed), so tests need no Run goroutine and no
// sleeps.
type harness struct {
	t    testing.TB
	c    *Correlator
	mu   sync.Mutex
	recs []*Record
	now  time.Time
	ids  uint64
	// panicsExpected is how many recovered panics the test provokes on purpose (else any fails it).
	panicsExpected uint64
	// live: the correlator runs its own Run goroutine on time.Now (under testing/synctest); now is then only the
	// read time stamped on the frames the test writes.
	live bool
}

func newHarness(t testing.TB, cfg Config) *harness {
	t.Helper()
	h := &harness{t: t, now: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)}
	// Driven by hand, without Run: no body worker runs, and every frame has the same read time, so bodies are
	// parsed where they complete, in order (bodywork_test.go runs the workers).
	cfg.InlineBodies = true
	cfg.Now = func() time.Time {
		if h.live {
			return time.Now()
		}
		return h.now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Sink = SinkFunc(func(r *Record) {
		h.mu.Lock()
		h.recs = append(h.recs, r)
		h.mu.Unlock()
	})
	h.c = New(cfg)
	// A panic in the correlator is recovered and counted so the process lives, which also hides it from a test
	// that only looks at records: every harness test fails on one.
	t.Cleanup(func() {
		if n := h.c.Stats().Panics; n != h.panicsExpected {
			t.Errorf("%d panics recovered in the correlator, want %d", n, h.panicsExpected)
		}
	})
	return h
}

// newLiveHarness is a harness for a correlator that runs Run on time.Now; call it inside a synctest bubble.
func newLiveHarness(t *testing.T, cfg Config) *harness {
	h := newHarness(t, cfg)
	h.live, h.now = true, time.Now()
	return h
}

// emitted returns the records so far without touching the correlator (safe while Run runs).
func (h *harness) emitted() []*Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*Record(nil), h.recs...)
}

// flush takes every queued event (and ended connection) into the reorder window and processes all of it, in read
// order. Events fed after a flush but read before its newest event are late, as under Run.
func (h *harness) flush() {
	for {
		select {
		case ev := <-h.c.q:
			h.c.admitBatch(ev)
			continue
		default:
		}
		break
	}
	select {
	case <-h.c.closedSignal:
		h.c.reapClosed()
	default:
	}
	h.c.drain()
}

// advance moves the clock and runs expiry.
func (h *harness) advance(d time.Duration) {
	h.flush()
	h.now = h.now.Add(d)
	h.c.expire(h.now)
}

func (h *harness) step(d time.Duration) { h.now = h.now.Add(d) }

func (h *harness) records() []*Record {
	h.flush()
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*Record(nil), h.recs...)
}

// only returns the single record, failing otherwise.
func (h *harness) only() *Record {
	h.t.Helper()
	rs := h.records()
	if len(rs) != 1 {
		h.t.Fatalf("got %d records, want 1: %s", len(rs), dump(rs))
	}
	return rs[0]
}

func dump(rs []*Record) string {
	var b strings.Builder
	for _, r := range rs {
		j, _ := json.Marshal(r)
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.String()
}

// tconn is one client connection through the "proxy": bytes go through a frames.Conn into a correlate.Conn.
type tconn struct {
	h   *harness
	cn  *Conn
	dec *frames.Conn
	tag int
}

// conn opens a connection for program:pid from host, with the AMQP handshake and channel 1.
func (h *harness) conn(program string, pid int, host string) *tconn {
	return h.connIn(program, pid, host, "/")
}

// connIn is conn in vhost.
func (h *harness) connIn(program string, pid int, host, vhost string) *tconn {
	h.ids++
	props := wire.Table{"product": "py-amqp", "product_version": "5.1.1"}
	if program != "" {
		props["connection_name"] = fmt.Sprintf("%s:%d:%08d-8888-4888-8888-888888888888", program, pid, h.ids)
	}
	cn := h.c.NewConn(ConnInfo{ID: h.ids, Client: fmt.Sprintf("%s:%d", host, 40000+h.ids), Upstream: "127.0.0.1:5672"})
	tc := &tconn{h: h, cn: cn, dec: frames.NewConn(h.stamped(cn), frames.Options{})}
	tc.c2s(wire.ProtocolHeader(), wire.StartOKAMQPlain(props, "guest", "s3cret-amqp-pw"), wire.TuneOK(2047, frameMax, 60),
		wire.Open(vhost), wire.ChannelOpen(1))
	tc.s2c(wire.Start(wire.Table{}), wire.Tune(2047, frameMax, 60), wire.OpenOK(), wire.ChannelOpenOK(1))
	return tc
}

// stamped stamps every frame with the harness clock, as the proxy stamps each read: the read time is the
// harness's now when the bytes are written to the decoder, whatever the decoder stamps by itself.
func (h *harness) stamped(cn *Conn) frames.Handler {
	return stampedHandler{h: h, cn: cn}
}

// stampedHandler passes EndWrite on, so the Conn hands over its batch at the end of each write as it does behind
// a real decoder.
type stampedHandler struct {
	h  *harness
	cn *Conn
}

func (s stampedHandler) HandleFrame(f *frames.Frame) {
	f.Time = s.h.now
	s.cn.HandleFrame(f)
}

func (s stampedHandler) EndWrite(dir frames.Direction) { s.cn.EndWrite(dir) }

// Resync passes a decoder's loss of place on, as a capture's decoders do.
func (s stampedHandler) Resync(dir frames.Direction) { s.cn.Resync(dir) }

func (tc *tconn) c2s(parts ...[]byte) {
	tc.h.t.Helper()
	if _, err := tc.dec.ClientDecoder().Write(wire.Concat(parts...)); err != nil {
		tc.h.t.Fatal(err)
	}
	if err := tc.dec.Err(); err != nil {
		tc.h.t.Fatalf("decoder off: %v", err)
	}
}

func (tc *tconn) s2c(parts ...[]byte) {
	tc.h.t.Helper()
	if _, err := tc.dec.ServerDecoder().Write(wire.Concat(parts...)); err != nil {
		tc.h.t.Fatal(err)
	}
	if err := tc.dec.Err(); err != nil {
		tc.h.t.Fatalf("decoder off: %v", err)
	}
}

// consume declares nothing: it subscribes queue with the next consumer tag and returns the tag.
func (tc *tconn) consume(queue string) string {
	tc.tag++
	tag := fmt.Sprint(tc.tag)
	tc.c2s(wire.Consume(1, queue, tag, false, false, nil))
	tc.s2c(wire.ConsumeOK(1, tag))
	return tag
}

// rpcServer declares and consumes like an oslo RPC server listener (topic, topic.server, topic_fanout_<id>).
func (tc *tconn) rpcServer(topic, server string) {
	fq := topic + "_fanout_" + fmt.Sprintf("%032d", tc.h.ids)
	tc.c2s(
		wire.ExchangeDeclare(1, "nova", "topic", false, nil), wire.QueueDeclare(1, topic, false, false, false, nil),
		wire.QueueBind(1, topic, "nova", topic, nil),
		wire.ExchangeDeclare(1, "nova", "topic", false, nil), wire.QueueDeclare(1, topic+"."+server, false, false, false, nil),
		wire.QueueBind(1, topic+"."+server, "nova", topic+"."+server, nil),
		wire.ExchangeDeclare(1, topic+"_fanout", "fanout", false, nil),
		wire.QueueDeclare(1, fq, false, false, false, wire.Table{"x-expires": int32(1800000)}),
		wire.QueueBind(1, fq, topic+"_fanout", topic, nil),
	)
	tc.consume(topic)
	tc.consume(topic + "." + server)
	tc.consume(fq)
}

// replyListener declares and consumes a reply queue.
func (tc *tconn) replyListener(q string) string {
	tc.c2s(wire.QueueDeclare(1, q, false, false, false, wire.Table{"x-expires": int32(1800000)}))
	return tc.consume(q)
}

var osloProps = wire.Properties{ContentType: "application/json", ContentEncoding: "utf-8", Headers: wire.Table{},
	DeliveryMode: 2}

func callProps(expirationMS int) wire.Properties {
	p := osloProps
	p.Expiration = fmt.Sprint(expirationMS)
	return p
}

func (tc *tconn) publish(exchange, rk string, mandatory bool, p wire.Properties, body []byte) {
	tc.c2s(wire.Publish(1, exchange, rk, mandatory), wire.Header(1, uint64(len(body)), p), wire.Body(1, body, frameMax))
}

func (tc *tconn) deliver(tag string, dtag uint64, exchange, rk string, p wire.Properties, body []byte) {
	tc.s2c(wire.Deliver(1, tag, dtag, false, exchange, rk), wire.Header(1, uint64(len(body)), p),
		wire.Body(1, body, frameMax))
}

// ack is the consumer's Basic.Ack of delivery dtag on channel 1.
func (tc *tconn) ack(dtag uint64) { tc.c2s(wire.Ack(1, dtag, false)) }

// kv is one key/value of an ordered JSON object (oslo's key order matters for truncated bodies).
type kv struct {
	k string
	v any
}

// pyJSON renders an ordered object with Python's default separators, as oslo and kombu do.
func pyJSON(pairs ...kv) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, p := range pairs {
		if i > 0 {
			b.WriteString(", ")
		}
		k, _ := json.Marshal(p.k)
		b.Write(k)
		b.WriteString(": ")
		if raw, ok := p.v.(json.RawMessage); ok {
			b.Write(raw)
			continue
		}
		v, err := json.Marshal(p.v)
		if err != nil {
			panic(err)
		}
		b.Write(v)
	}
	b.WriteByte('}')
	return b.String()
}

// envelope wraps an inner message in the oslo 2.0 envelope.
func envelope(inner string) []byte {
	s, _ := json.Marshal(inner)
	return []byte(`{"oslo.version": "2.0", "oslo.message": ` + string(s) + `}`)
}

const (
	reqID    = "req-11111111-1111-4111-8111-111111111111"
	gReqID   = "req-22222222-2222-4222-8222-222222222222"
	token    = "gAAAAAB-example-token-0000"
	replyQ   = "reply_fedcba98765443218fedcba987654321"
	adminPwd = "Sup3rS3cretAdminPw"
)

func ctxKeys(requestID string) []kv {
	return []kv{
		{"_context_user", "1234567890abcdef1234567890abcdef"},
		{"_context_auth_token", token},
		{"_context_request_id", requestID},
		{"_context_global_request_id", gReqID},
		{"_context_roles", []string{"member", "reader"}},
	}
}

func callBody(method, msgID, uniqueID, requestID string, args any) []byte {
	pairs := []kv{{"method", method}, {"args", args}, {"version", "4.5"}, {"_msg_id", msgID}, {"_reply_q", replyQ},
		{"_timeout", nil}, {"_unique_id", uniqueID}}
	return envelope(pyJSON(append(pairs, ctxKeys(requestID)...)...))
}

func castBody(method, uniqueID, requestID string, args any) []byte {
	pairs := []kv{{"method", method}, {"args", args}, {"namespace", "compute_task"}, {"version", "1.17"},
		{"_unique_id", uniqueID}}
	return envelope(pyJSON(append(pairs, ctxKeys(requestID)...)...))
}

func replyBody(msgID, uniqueID string, result any, failure any, ending bool) []byte {
	return envelope(pyJSON(kv{"result", result}, kv{"failure", failure}, kv{"ending", ending}, kv{"_msg_id", msgID},
		kv{"_unique_id", uniqueID}))
}

func failureJSON(class, module, msg string) string {
	return pyJSON(kv{"class", class}, kv{"module", module}, kv{"message", msg}, kv{"tb", []string{"Traceback\n"}},
		kv{"args", []string{msg}}, kv{"kwargs", map[string]any{"code": 404}})
}
