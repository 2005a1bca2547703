package cloudsim

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"net"
	"testing"
)

func frame(typ byte, channel uint16, payload []byte) []byte {
	f := []byte{typ}
	f = binary.BigEndian.AppendUint16(f, channel)
	f = binary.BigEndian.AppendUint32(f, uint32(len(payload)))
	f = append(f, payload...)
	return append(f, 0xce)
}

func shortstr(s string) []byte { return append([]byte{byte(len(s))}, s...) }

// contentHeader builds a Basic content header with content_type, content_encoding, delivery_mode, optionally
// expiration, and optionally headers and priority.
func contentHeader(bodySize uint64, withHeadersPriority bool, exp string) []byte {
	flags := uint16(propContentType | propContentEncoding | propDeliveryMode)
	if withHeadersPriority {
		flags |= propHeaders | propPriority
	}
	if exp != "" {
		flags |= 0x0100
	}
	p := binary.BigEndian.AppendUint16(nil, 60)
	p = binary.BigEndian.AppendUint16(p, 0)
	p = binary.BigEndian.AppendUint64(p, bodySize)
	p = binary.BigEndian.AppendUint16(p, flags)
	p = append(p, shortstr("application/json")...)
	p = append(p, shortstr("utf-8")...)
	if withHeadersPriority {
		p = append(p, 0, 0, 0, 0)
	}
	p = append(p, 2)
	if withHeadersPriority {
		p = append(p, 0)
	}
	if exp != "" {
		p = append(p, shortstr(exp)...)
	}
	return p
}

func startOk(props []byte) []byte {
	p := binary.BigEndian.AppendUint16(nil, 10)
	p = binary.BigEndian.AppendUint16(p, 11)
	p = append(p, props...)
	p = append(p, shortstr("AMQPLAIN")...)
	resp := []byte("\x05LOGINS\x00\x00\x00\x05guest")
	p = binary.BigEndian.AppendUint32(p, uint32(len(resp)))
	p = append(p, resp...)
	return append(p, shortstr("en_US")...)
}

// captureConn records what is written to it.
type captureConn struct {
	net.Conn
	buf bytes.Buffer
}

func (c *captureConn) Write(p []byte) (int, error) { return c.buf.Write(p) }

func TestWireFixStream(t *testing.T) {
	goProps := []byte{0, 0, 0, 0} // amqp091-go's table, whatever it is, gets replaced
	body := bytes.Repeat([]byte("x"), 300)
	publish := frame(frameMethod, 1, []byte{0, 60, 0, 40, 0, 0, 4, 'n', 'o', 'v', 'a', 0, 0})
	in := [][]byte{
		[]byte("AMQP\x00\x00\x09\x01"),
		frame(frameMethod, 0, startOk(goProps)),
		publish,
		frame(frameHeader, 1, contentHeader(uint64(len(body)), false, "1500")),
		frame(3, 1, body),
		publish,
		frame(frameHeader, 1, contentHeader(uint64(len(body)), false, "")),
		frame(3, 1, body),
		{8, 0, 0, 0, 0, 0, 0, 0xce}, // heartbeat
	}
	props := encodeClientProperties("nova-api:4242:88888888-8888-4888-8888-888888888888")
	want := bytes.Join([][]byte{
		in[0],
		frame(frameMethod, 0, startOk(props)),
		publish,
		frame(frameHeader, 1, contentHeader(uint64(len(body)), true, "1500")),
		in[4], publish,
		frame(frameHeader, 1, contentHeader(uint64(len(body)), true, "")),
		in[7], in[8],
	}, nil)
	stream := bytes.Join(in, nil)

	// The stream arrives in two writes split at every offset, and byte by byte: the output never changes.
	for split := 0; split <= len(stream); split++ {
		cc := &captureConn{}
		w := newWireFixConn(cc, props)
		for _, part := range [][]byte{stream[:split], stream[split:]} {
			if n, err := w.Write(part); n != len(part) || err != nil {
				t.Fatalf("split %d: Write = %d, %v", split, n, err)
			}
		}
		if !bytes.Equal(cc.buf.Bytes(), want) {
			t.Fatalf("split %d: output differs\n got:\n%s\nwant:\n%s", split, hex.Dump(cc.buf.Bytes()), hex.Dump(want))
		}
	}
	cc := &captureConn{}
	w := newWireFixConn(cc, props)
	for i := range stream {
		_, _ = w.Write(stream[i : i+1])
	}
	if !bytes.Equal(cc.buf.Bytes(), want) {
		t.Fatalf("byte by byte: output differs\n%s", hex.Dump(cc.buf.Bytes()))
	}
}

func TestFixContentHeaderFlags(t *testing.T) {
	for _, tc := range []struct {
		exp  string
		want uint16
	}{{"", 0xf800}, {"60000", 0xf900}} {
		got := fixContentHeader(contentHeader(10, false, tc.exp))
		if got == nil {
			t.Fatalf("exp %q: nothing rewritten", tc.exp)
		}
		if f := binary.BigEndian.Uint16(got[12:14]); f != tc.want {
			t.Errorf("exp %q: flags %#04x, want %#04x (py-amqp's)", tc.exp, f, tc.want)
		}
	}
	if fixContentHeader(contentHeader(10, true, "")) != nil {
		t.Error("a header that already has headers and priority was rewritten")
	}
	if fixContentHeader([]byte{0, 60, 0}) != nil {
		t.Error("a truncated header was rewritten")
	}
}
