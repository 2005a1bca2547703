package frames

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/amqptrace/amqptrace/internal/wire"
)

// payloadOf strips the frame header and end octet from a wire frame.
func payloadOf(frame []byte) []byte { return frame[7 : len(frame)-1] }

func TestDecodeMethod(t *testing.T) {
	args := wire.Table{"x-expires": int32(60000), "x-queue-type": "classic"}
	tests := []struct {
		frame []byte
		want  Method
	}{
		{wire.Start(wire.Table{"product": "RabbitMQ"}), &ConnectionStart{VersionMajor: 0, VersionMinor: 9,
			ServerProperties: Table{"product": "RabbitMQ"}, Mechanisms: "AMQPLAIN PLAIN", Locales: "en_US"}},
		{wire.StartOKPlain(wire.Table{"connection_name": "nova-api:42:u"}, "nova", "pw"), &ConnectionStartOK{
			ClientProperties: Table{"connection_name": "nova-api:42:u"}, Mechanism: "PLAIN", User: "nova", Locale: "en_US"}},
		{wire.StartOKAMQPlain(nil, "cinder", "pw"), &ConnectionStartOK{Mechanism: "AMQPLAIN", User: "cinder", Locale: "en_US"}},
		{wire.Tune(2047, 131072, 60), &ConnectionTune{ChannelMax: 2047, FrameMax: 131072, Heartbeat: 60}},
		{wire.TuneOK(2047, 131072, 10), &ConnectionTuneOK{ChannelMax: 2047, FrameMax: 131072, Heartbeat: 10}},
		{wire.Open("/nova"), &ConnectionOpen{VirtualHost: "/nova"}},
		{wire.OpenOK(), &ConnectionOpenOK{}},
		{wire.Method(0, 10, 50, wire.Short(320), wire.ShortStr("CONNECTION_FORCED"), wire.Short(60), wire.Short(40)),
			&ConnectionClose{ReplyCode: 320, ReplyText: "CONNECTION_FORCED", FailingClassID: 60, FailingMethodID: 40}},
		{wire.Method(0, 10, 51), &ConnectionCloseOK{}},
		{wire.Method(0, 10, 60, wire.ShortStr("low on memory")), &ConnectionBlocked{Reason: "low on memory"}},
		{wire.Method(0, 10, 61), &ConnectionUnblocked{}},
		{wire.ChannelOpen(1), &ChannelOpen{}},
		{wire.ChannelOpenOK(1), &ChannelOpenOK{}},
		{wire.Method(1, 20, 20, wire.Bits(true)), &ChannelFlow{Active: true}},
		{wire.Method(1, 20, 21, wire.Bits(false)), &ChannelFlowOK{}},
		{wire.Method(1, 20, 40, wire.Short(404), wire.ShortStr("NOT_FOUND"), wire.Short(50), wire.Short(10)),
			&ChannelClose{ReplyCode: 404, ReplyText: "NOT_FOUND", FailingClassID: 50, FailingMethodID: 10}},
		{wire.Method(1, 20, 41), &ChannelCloseOK{}},
		{wire.ExchangeDeclare(1, "nova_fanout", "fanout", true, nil), &ExchangeDeclare{Exchange: "nova_fanout",
			Type: "fanout", Durable: true}},
		{wire.Method(1, 40, 10, wire.Short(0), wire.ShortStr("x"), wire.ShortStr("topic"), wire.Bits(true, false, true, true, true), wire.TableArg(nil)),
			&ExchangeDeclare{Exchange: "x", Type: "topic", Passive: true, AutoDelete: true, Internal: true, NoWait: true}},
		{wire.Method(1, 40, 11), &ExchangeDeclareOK{}},
		{wire.QueueDeclare(1, "reply_abc", false, true, true, args), &QueueDeclare{Queue: "reply_abc", Exclusive: true,
			AutoDelete: true, Arguments: Table{"x-expires": int32(60000), "x-queue-type": "classic"}}},
		{wire.QueueDeclareOK(1, "q", 3, 1), &QueueDeclareOK{Queue: "q", MessageCount: 3, ConsumerCount: 1}},
		{wire.QueueBind(1, "compute.host1", "nova", "compute.host1", nil), &QueueBind{Queue: "compute.host1",
			Exchange: "nova", RoutingKey: "compute.host1"}},
		{wire.Method(1, 50, 21), &QueueBindOK{}},
		{wire.Method(1, 50, 40, wire.Short(0), wire.ShortStr("q"), wire.Bits(false, true, true)),
			&QueueDelete{Queue: "q", IfEmpty: true, NoWait: true}},
		{wire.Method(1, 50, 41, wire.Long(7)), &QueueDeleteOK{MessageCount: 7}},
		{wire.Method(1, 60, 10, wire.Long(0), wire.Short(100), wire.Bits(true)), &BasicQos{PrefetchCount: 100, Global: true}},
		{wire.Method(1, 60, 11), &BasicQosOK{}},
		{wire.Consume(2, "scheduler", "ctag-1", false, true, nil), &BasicConsume{Queue: "scheduler",
			ConsumerTag: "ctag-1", Exclusive: true}},
		{wire.ConsumeOK(2, "ctag-1"), &BasicConsumeOK{ConsumerTag: "ctag-1"}},
		{wire.Cancel(2, "ctag-1", true), &BasicCancel{ConsumerTag: "ctag-1", NoWait: true}},
		{wire.Method(2, 60, 31, wire.ShortStr("ctag-1")), &BasicCancelOK{ConsumerTag: "ctag-1"}},
		{wire.Publish(1, "nova", "scheduler", true), &BasicPublish{Exchange: "nova", RoutingKey: "scheduler", Mandatory: true}},
		{wire.Return(1, 312, "NO_ROUTE", "nova", "compute.host99"), &BasicReturn{ReplyCode: 312, ReplyText: "NO_ROUTE",
			Exchange: "nova", RoutingKey: "compute.host99"}},
		{wire.Deliver(2, "ctag-1", 1<<40, true, "nova", "scheduler"), &BasicDeliver{ConsumerTag: "ctag-1",
			DeliveryTag: 1 << 40, Redelivered: true, Exchange: "nova", RoutingKey: "scheduler"}},
		{wire.Method(1, 60, 70, wire.Short(0), wire.ShortStr("q"), wire.Bits(true)), &BasicGet{Queue: "q", NoAck: true}},
		{wire.GetOK(1, 5, false, "", "q", 2), &BasicGetOK{DeliveryTag: 5, RoutingKey: "q", MessageCount: 2}},
		{wire.Method(1, 60, 72, wire.ShortStr("")), &BasicGetEmpty{}},
		{wire.Ack(1, 10, true), &BasicAck{DeliveryTag: 10, Multiple: true}},
		{wire.Method(1, 60, 90, wire.LongLong(3), wire.Bits(true)), &BasicReject{DeliveryTag: 3, Requeue: true}},
		{wire.Nack(1, 4, false, true), &BasicNack{DeliveryTag: 4, Requeue: true}},
		{wire.ConfirmSelect(1), &ConfirmSelect{}},
		{wire.Method(1, 85, 11), &ConfirmSelectOK{}},
		{wire.Method(1, 90, 10), &UnknownMethod{Class: 90, Method: 10}},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		p := payloadOf(tt.frame)
		got, err := DecodeMethod(p)
		if err != nil {
			t.Fatalf("%s: %v\n%s", tt.want.Name(), err, hex.Dump(p))
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("got  %#v\nwant %#v\n%s", got, tt.want, hex.Dump(p))
		}
		if c, m := uint16(p[0])<<8|uint16(p[1]), uint16(p[2])<<8|uint16(p[3]); got.ClassID() != c || got.MethodID() != m {
			t.Errorf("%s: ids %d.%d, frame says %d.%d", got.Name(), got.ClassID(), got.MethodID(), c, m)
		}
		seen[got.Name()] = true
		// Every truncation of the arguments is an error, never a panic (methods with no arguments excepted).
		for cut := 4; cut < len(p); cut++ {
			if m, err := DecodeMethod(p[:cut]); err == nil && !reflect.DeepEqual(m, tt.want) {
				// A shorter payload may still decode when the cut only drops trailing reserved fields.
				if _, isUnknown := m.(*UnknownMethod); !isUnknown && len(p)-cut > 2 {
					t.Errorf("%s cut at %d decoded to %#v without error", got.Name(), cut, m)
				}
			}
		}
	}
	if len(seen) != 42 { // 41 known methods + "unknown"
		t.Errorf("%d distinct methods covered, want 42", len(seen))
	}
	if _, err := DecodeMethod([]byte{0, 60, 0}); !errors.Is(err, ErrMalformed) {
		t.Errorf("3-byte payload: %v", err)
	}
}

func TestSASLUser(t *testing.T) {
	tbl := wire.AppendTable(nil, wire.Table{"LOGIN": "u1", "PASSWORD": "p"})
	for _, tt := range []struct {
		mech, resp, want string
	}{
		{"PLAIN", "\x00alice\x00secret", "alice"},
		{"PLAIN", "admin\x00alice\x00secret", "alice"},
		{"PLAIN", "alice", ""},
		{"AMQPLAIN", string(tbl[4:]), "u1"},
		{"AMQPLAIN", string(tbl), "u1"}, // with the table length, as some clients send it
		{"AMQPLAIN", "\x05LOGIN", ""},
		{"EXTERNAL", "", ""},
	} {
		if got := saslUser(tt.mech, []byte(tt.resp)); got != tt.want {
			t.Errorf("saslUser(%s, %q) = %q, want %q", tt.mech, tt.resp, got, tt.want)
		}
	}
}

// TestPasswordNeverExposed decodes Start-Ok frames (good, truncated, corrupted) through the Decoder and
// DecodeMethod and checks the password appears in no returned value, error or log line.
func TestPasswordNeverExposed(t *testing.T) {
	const pw = "Zq9-s3cr3t-PASSWORD-Zq9"
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	var out strings.Builder
	record := func(vs ...any) {
		for _, v := range vs {
			fmt.Fprintf(&out, "%#v %v\n", v, v)
		}
	}
	for _, f := range [][]byte{
		wire.StartOKPlain(wire.Table{"connection_name": "a:1:b"}, "guest", pw),
		wire.StartOKAMQPlain(wire.Table{"connection_name": "a:1:b"}, "guest", pw),
	} {
		p := payloadOf(f)
		for cut := 4; cut <= len(p); cut++ {
			m, err := DecodeMethod(p[:cut])
			record(m, err)
		}
		for i := 4; i < len(p); i++ { // corrupt one byte at a time
			q := bytes.Clone(p)
			q[i] ^= 0xff
			m, err := DecodeMethod(q)
			record(m, err)
		}
		// Through the Decoder: a good frame, then one with a bad end octet, then a truncated frame followed by
		// garbage, so decoding switches off on a frame that holds the password.
		bad := bytes.Clone(f)
		bad[len(bad)-1] = 0
		for _, stream := range [][]byte{wire.Concat(wire.ProtocolHeader(), f), wire.Concat(wire.ProtocolHeader(), bad),
			wire.Concat(wire.ProtocolHeader(), f[:len(f)-3], []byte("garbage garbage"))} {
			conn := NewConn(HandlerFunc(func(fr *Frame) {
				m, err := DecodeMethod(fr.Payload)
				record(m, err)
			}), Options{Logger: log})
			feed(t, conn.ClientDecoder(), stream, every(5))
			record(conn.Err(), conn.Stats())
		}
	}
	if !strings.Contains(out.String(), "guest") {
		t.Fatal("test is broken: the user never showed up")
	}
	for _, s := range []string{out.String(), logs.String()} {
		if strings.Contains(s, pw) || strings.Contains(s, pw[:10]) || strings.Contains(s, hex.EncodeToString([]byte(pw[:6]))) {
			t.Fatalf("password exposed:\n%s", s)
		}
	}
	if !strings.Contains(logs.String(), "decoding switched off") {
		t.Fatal("test is broken: decoding never switched off")
	}
}

func TestDecodeContentHeader(t *testing.T) {
	ts := time.Unix(1700000000, 0).UTC()
	props := wire.Properties{ContentType: "application/json", ContentEncoding: "utf-8",
		Headers: wire.Table{"x-trace": "abc"}, DeliveryMode: 2, Priority: 5, CorrelationID: "corr",
		ReplyTo: "reply_1", Expiration: "60000", MessageID: "m-1", Timestamp: ts, Type: "t", UserID: "guest",
		AppID: "nova", ClusterID: "c"}
	want := ContentHeader{ClassID: 60, BodySize: 1 << 33, Properties: Properties{Flags: 0xfffc,
		ContentType: "application/json", ContentEncoding: "utf-8", Headers: Table{"x-trace": "abc"}, DeliveryMode: 2,
		Priority: 5, CorrelationID: "corr", ReplyTo: "reply_1", Expiration: "60000", MessageID: "m-1",
		Timestamp: ts, Type: "t", UserID: "guest", AppID: "nova", ClusterID: "c"}}
	p := wire.HeaderPayload(1<<33, props)
	h := ContentHeader{Properties: Properties{AppID: "stale"}}
	if err := DecodeContentHeader(p, &h); err != nil || !reflect.DeepEqual(h, want) {
		t.Fatalf("got %+v, %v\nwant %+v", h, err, want)
	}
	// A continuation flag word (bit 0 set) is skipped, and the properties still decode.
	q := append(bytes.Clone(p[:14]), p[12:]...) // duplicate the flag word
	q[13] |= 1
	q[15] = 0 // the second word announces nothing
	want.Properties.Flags |= 1
	if err := DecodeContentHeader(q, &h); err != nil || !reflect.DeepEqual(h, want) {
		t.Fatalf("with a continuation word: %+v, %v", h, err)
	}
	for cut := range len(p) {
		if err := DecodeContentHeader(p[:cut], &h); !errors.Is(err, ErrMalformed) {
			t.Fatalf("cut at %d: %v", cut, err)
		}
	}
	// The properties kombu puts on every oslo message cost no allocation; others are still read whole.
	for _, ce := range []string{"utf-8", "UTF-8", "gzip"} {
		p := wire.HeaderPayload(100, wire.Properties{ContentType: "application/json", ContentEncoding: ce, DeliveryMode: 2})
		allocs := testing.AllocsPerRun(10, func() { _ = DecodeContentHeader(p, &h) })
		if h.Properties.ContentType != "application/json" || h.Properties.ContentEncoding != ce {
			t.Fatalf("content type/encoding = %q/%q", h.Properties.ContentType, h.Properties.ContentEncoding)
		}
		if want := map[bool]float64{true: 0, false: 1}[ce == "utf-8"]; allocs != want {
			t.Errorf("application/json, %s: %v allocations, want %v", ce, allocs, want)
		}
	}
	// Only the flagged properties are read.
	p = wire.HeaderPayload(3, wire.Properties{ReplyTo: "r", Timestamp: ts})
	if err := DecodeContentHeader(p, &h); err != nil || h.Properties.ReplyTo != "r" || !h.Properties.Timestamp.Equal(ts) ||
		h.Properties.Flags != FlagReplyTo|FlagTimestamp || h.BodySize != 3 {
		t.Fatalf("%+v %v", h, err)
	}
}

func TestDecodeTable(t *testing.T) {
	ts := time.Unix(1700000000, 0).UTC()
	in := wire.Table{"t": true, "b": int8(-2), "B": uint8(200), "s": int16(-300), "u": uint16(60000),
		"I": int32(-70000), "i": uint32(4000000000), "l": int64(-1 << 40), "f": float32(1.5), "d": 2.25,
		"D": wire.Decimal{Scale: 2, Value: 12345}, "S": "str", "x": []byte{1, 2}, "A": []any{int32(1), "two", nil},
		"T": ts, "F": wire.Table{"nested": wire.Table{"deep": true}}, "V": nil, "empty": wire.Table{}}
	want := Table{"t": true, "b": int8(-2), "B": uint8(200), "s": int16(-300), "u": uint16(60000),
		"I": int32(-70000), "i": uint32(4000000000), "l": int64(-1 << 40), "f": float32(1.5), "d": 2.25,
		"D": Decimal{Scale: 2, Value: 12345}, "S": "str", "x": []byte{1, 2}, "A": []any{int32(1), "two", nil},
		"T": ts, "F": Table{"nested": Table{"deep": true}}, "V": nil, "empty": Table(nil)}
	b := wire.AppendTable(nil, in)[4:]
	got, err := DecodeTable(b)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("got %#v, %v\nwant %#v", got, err, want)
	}
	// py-amqp's letters: 'L' signed 64-bit, 'U' signed 16-bit.
	got, err = DecodeTable([]byte("\x01LL\xff\xff\xff\xff\xff\xff\xff\xfe\x01UU\xff\xfe"))
	if err != nil || got["L"] != int64(-2) || got["U"] != int16(-2) {
		t.Fatalf("py-amqp letters: %#v %v", got, err)
	}
	for cut := 1; cut < len(b); cut++ {
		if _, err := DecodeTable(b[:cut]); err == nil {
			// Some cuts land on a field boundary and decode a smaller table: only check they cannot panic.
			continue
		}
	}
	for name, bad := range map[string][]byte{
		"unknown type":   []byte("\x01kZ"),
		"lying length":   []byte("\x01kS\xff\xff\xff\xffabc"),
		"lying array":    []byte("\x01kA\x00\x00\x10\x00"),
		"name too long":  []byte("\x09k"),
		"missing value":  []byte("\x01k"),
		"array bad item": []byte("\x01kA\x00\x00\x00\x01Z"),
	} {
		if _, err := DecodeTable(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Nesting is bounded: 100 nested tables fail cleanly.
	var nested []byte
	for range 100 {
		inner := nested
		nested = append([]byte("\x01kF"), byte(len(inner)>>24), byte(len(inner)>>16), byte(len(inner)>>8), byte(len(inner)))
		nested = append(nested, inner...)
	}
	if _, err := DecodeTable(nested); !errors.Is(err, ErrMalformed) {
		t.Errorf("deep nesting: %v", err)
	}
}

// DecodeMessageArgs reads Publish and Deliver in place: the values DecodeMethod gives, no allocation, an error for
// a cut payload and for any other method.
func TestDecodeMessageArgs(t *testing.T) {
	pub := payloadOf(wire.Publish(1, "nova", "conductor", true))
	del := payloadOf(wire.Deliver(1, "ctag", 1<<40, true, "nova", "conductor"))
	var m MessageArgs
	if err := DecodeMessageArgs(pub, &m); err != nil || m.MethodID != 40 || string(m.Exchange) != "nova" ||
		string(m.RoutingKey) != "conductor" || !m.Mandatory || m.Immediate || m.ConsumerTag != nil {
		t.Fatalf("publish: %+v, %v", m, err)
	}
	if err := DecodeMessageArgs(del, &m); err != nil || m.MethodID != 60 || string(m.ConsumerTag) != "ctag" ||
		m.DeliveryTag != 1<<40 || !m.Redelivered || string(m.Exchange) != "nova" || string(m.RoutingKey) != "conductor" {
		t.Fatalf("deliver: %+v, %v", m, err)
	}
	if a := testing.AllocsPerRun(10, func() { _ = DecodeMessageArgs(pub, &m); _ = DecodeMessageArgs(del, &m) }); a != 0 {
		t.Errorf("%v allocations", a)
	}
	for _, p := range [][]byte{pub, del} {
		for cut := range len(p) {
			if err := DecodeMessageArgs(p[:cut], &m); !errors.Is(err, ErrMalformed) {
				t.Fatalf("% x cut at %d: %v", p, cut, err)
			}
		}
	}
	if err := DecodeMessageArgs(payloadOf(wire.GetOK(1, 1, false, "e", "k", 0)), &m); err == nil {
		t.Error("Get-Ok accepted")
	}
}
