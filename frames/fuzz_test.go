package frames

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"testing"

	"github.com/amqptrace/amqptrace/internal/wire"
)

// seedStreams are client streams for FuzzDecoder: builder output and the start of each real capture.
func seedStreams(f *testing.F) [][]byte {
	hs, _ := handshake()
	out := [][]byte{
		hs,
		wire.Concat(hs, wire.Message(1, "nova", "scheduler", wire.Properties{ContentType: "application/json",
			Headers: wire.Table{"a": int32(1)}}, bytes.Repeat([]byte("b"), 5000), 4096), wire.Heartbeat()),
		wire.Concat(hs, wire.Ack(1, 1, false), wire.Frame(wire.TypeBody, 1, nil), wire.Heartbeat()),
		wire.ProtocolHeader(),
		[]byte("AMQP\x00\x01\x00\x00"),
	}
	for _, dir := range []string{"amqp091", "oslo"} {
		for _, c := range loadCaptures(f, dir) {
			out = append(out, c.c2s[:min(len(c.c2s), 4096)])
		}
	}
	return out
}

// FuzzDecoder feeds a stream whole and split at two fuzzer-chosen offsets and checks both give the same frames and
// the same outcome, and that Write keeps its contract.
func FuzzDecoder(f *testing.F) {
	for _, s := range seedStreams(f) {
		f.Add(s, uint16(3), uint16(100))
	}
	f.Fuzz(func(t *testing.T, b []byte, s1, s2 uint16) {
		run := func(cuts ...int) (*recorder, *Conn) {
			r := &recorder{}
			conn := NewConn(r, Options{MaxFrameSize: 64 << 10, Logger: discard})
			d := conn.ClientDecoder()
			prev := 0
			for _, c := range append(cuts, len(b)) {
				c = min(max(c, prev), len(b))
				if n, err := d.Write(b[prev:c]); n != c-prev || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
				prev = c
			}
			return r, conn
		}
		want, wconn := run()
		i := int(s1) % (len(b) + 1)
		j := i + int(s2)%(len(b)-i+1)
		got, gconn := run(i, j)
		diffEvents(t, "split", want.events[0], got.events[0])
		if (wconn.Err() == nil) != (gconn.Err() == nil) {
			t.Fatalf("whole: %v, split at %d,%d: %v", wconn.Err(), i, j, gconn.Err())
		}
		if st := gconn.Stats(); st.Client.Bytes != uint64(len(b)) {
			t.Fatalf("counted %d bytes of %d", st.Client.Bytes, len(b))
		}
		// Methods and headers handed over must not make the decoders panic.
		for _, e := range want.events[0] {
			switch e.Type {
			case TypeMethod:
				_, _ = DecodeMethod(e.Payload)
			case TypeHeader:
				var h ContentHeader
				_ = DecodeContentHeader(e.Payload, &h)
			}
		}
	})
}

func FuzzTable(f *testing.F) {
	f.Add(wire.AppendTable(nil, wire.Table{"a": int32(1), "b": "s", "c": []any{true, nil}, "d": wire.Table{"e": 2.5},
		"x": []byte{1}, "D": wire.Decimal{Scale: 1, Value: 5}, "l": int64(-1), "T": uint32(7)})[4:])
	f.Add([]byte("\x01kF\x00\x00\x00\x05\x01kF\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		tbl, err := DecodeTable(b)
		if err != nil && tbl != nil && len(tbl) > len(b) {
			t.Fatalf("table of %d entries from %d bytes", len(tbl), len(b))
		}
		// The smallest entry is two bytes: an empty name (length 0) and the void type 'V'.
		if err == nil && len(tbl) > len(b)/2 {
			t.Fatalf("table of %d entries from %d bytes", len(tbl), len(b))
		}
	})
}

func FuzzContentHeader(f *testing.F) {
	f.Add(wire.HeaderPayload(10, wire.Properties{ContentType: "application/json", Headers: wire.Table{"a": "b"},
		DeliveryMode: 2, ReplyTo: "r", Expiration: "60000", AppID: "x"}))
	f.Add(wire.HeaderPayload(0, wire.Properties{}))
	f.Fuzz(func(t *testing.T, b []byte) {
		var h ContentHeader
		if err := DecodeContentHeader(b, &h); err == nil {
			if len(b) < 14 || h.BodySize != binary.BigEndian.Uint64(b[4:12]) {
				t.Fatalf("decoded %+v from %d bytes", h, len(b))
			}
		}
	})
}

func FuzzMethod(f *testing.F) {
	for _, fr := range [][]byte{wire.StartOKPlain(wire.Table{"connection_name": "a:1:b"}, "u", "p"),
		wire.StartOKAMQPlain(nil, "u", "p"), wire.Start(wire.Table{"product": "RabbitMQ"}), wire.Tune(1, 2, 3),
		wire.QueueDeclare(1, "q", true, false, true, wire.Table{"x-expires": int32(1)}), wire.Publish(1, "e", "k", true),
		wire.Deliver(1, "t", 1, true, "e", "k"), wire.Consume(1, "q", "t", false, false, nil), wire.Nack(1, 1, true, true),
		wire.Return(1, 312, "NO_ROUTE", "e", "k"), wire.GetOK(1, 1, false, "e", "k", 0)} {
		f.Add(payloadOf(fr))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMethod(b)
		if err == nil {
			if len(b) < 4 || m.ClassID() != binary.BigEndian.Uint16(b) || m.MethodID() != binary.BigEndian.Uint16(b[2:]) {
				t.Fatalf("%#v from % x", m, b)
			}
		}
		checkMessageArgs(t, b, m, err)
	})
}

// checkMessageArgs checks DecodeMessageArgs against DecodeMethod's m and err for payload b: it accepts exactly the
// Publish and Deliver payloads DecodeMethod accepts, with the same values.
func checkMessageArgs(t *testing.T, b []byte, m Method, err error) {
	t.Helper()
	var got MessageArgs
	gerr := DecodeMessageArgs(b, &got)
	var want MessageArgs
	switch m := m.(type) {
	case *BasicPublish:
		want = MessageArgs{ClassID: 60, MethodID: 40, Exchange: []byte(m.Exchange), RoutingKey: []byte(m.RoutingKey),
			Mandatory: m.Mandatory, Immediate: m.Immediate}
	case *BasicDeliver:
		want = MessageArgs{ClassID: 60, MethodID: 60, ConsumerTag: []byte(m.ConsumerTag), DeliveryTag: m.DeliveryTag,
			Redelivered: m.Redelivered, Exchange: []byte(m.Exchange), RoutingKey: []byte(m.RoutingKey)}
	default:
		if gerr == nil {
			t.Fatalf("DecodeMessageArgs accepted % x (DecodeMethod: %T, %v)", b, m, err)
		}
		return
	}
	if gerr != nil {
		t.Fatalf("DecodeMethod accepts % x, DecodeMessageArgs: %v", b, gerr)
	}
	if got.ClassID != want.ClassID || got.MethodID != want.MethodID || !bytes.Equal(got.ConsumerTag, want.ConsumerTag) ||
		got.DeliveryTag != want.DeliveryTag || got.Redelivered != want.Redelivered ||
		!bytes.Equal(got.Exchange, want.Exchange) || !bytes.Equal(got.RoutingKey, want.RoutingKey) ||
		got.Mandatory != want.Mandatory || got.Immediate != want.Immediate {
		t.Fatalf("got %+v, want %+v, from % x", got, want, b)
	}
}

// FuzzStartOKKeep checks DecodeConnectionStartOK against DecodeMethod: whatever DecodeMethod accepts as a
// Start-Ok, the filtered decode accepts too, with the same kept fields, mechanism, user and locale, and nothing
// it was told to leave out.
func FuzzStartOKKeep(f *testing.F) {
	props := wire.Table{"product": "py-amqp", "connection_name": "nova-api:1:x", "capabilities": wire.Table{
		"publisher_confirms": true, "consumer_cancel_notify": true}, "version": "5.1.1", "n": int32(3), "e": ""}
	f.Add(payloadOf(wire.StartOKPlain(props, "u", "p")))
	f.Add(payloadOf(wire.StartOKAMQPlain(props, "u", "p")))
	f.Add(payloadOf(wire.StartOKPlain(nil, "u", "p")))
	f.Fuzz(func(t *testing.T, b []byte) {
		keep := func(name []byte) bool { return len(name)%2 == 1 }
		got, gerr := DecodeConnectionStartOK(b, keep)
		m, err := DecodeMethod(b)
		want, ok := m.(*ConnectionStartOK)
		if err != nil || !ok {
			if gerr == nil && (len(b) < 4 || binary.BigEndian.Uint32(b) != 10<<16|11) {
				t.Fatalf("accepted a payload that is not a Start-Ok: % x", b)
			}
			return
		}
		if gerr != nil {
			t.Fatalf("DecodeMethod accepts % x, DecodeConnectionStartOK: %v", b, gerr)
		}
		if got.Mechanism != want.Mechanism || got.User != want.User || got.Locale != want.Locale {
			t.Fatalf("got %q %q %q, want %q %q %q", got.Mechanism, got.User, got.Locale, want.Mechanism, want.User, want.Locale)
		}
		kept := Table{}
		for k, v := range want.ClientProperties {
			if keep([]byte(k)) {
				kept[k] = v
			}
		}
		if len(kept) == 0 {
			kept = nil
		}
		if !reflect.DeepEqual(got.ClientProperties, kept) {
			t.Fatalf("kept %#v, want %#v", got.ClientProperties, kept)
		}
	})
}
