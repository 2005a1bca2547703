package frames

import (
	"math"
	"time"
)

// Field-table value types.
//
// The letters are RabbitMQ's, from its AMQP 0-9-1 errata, which amqp091-go (read.go/write.go) and RabbitMQ itself
// use; they differ from the 0-9-1 spec text in two places: 's' is a signed 16-bit integer (not a short string)
// and 'l' is a signed 64-bit integer. py-amqp (the oslo.messaging transport) writes large integers as 'L'
// (signed 64-bit, struct '>q') and may read 'U' (signed 16-bit), so those two spec letters are accepted too.
//
//	t bool        b int8      B uint8      s,U int16   u uint16   I int32   i uint32
//	l,L int64     f float32   d float64    D Decimal   S string   x []byte  A []any
//	T time.Time   F Table     V nil
//
// Nothing here maps to uint64: no client we know writes an unsigned 64-bit field.

// maxTableDepth bounds nesting of tables and arrays, so a hostile payload of nested 'F' headers cannot grow the
// stack; real traffic nests two or three levels (client capabilities).
const maxTableDepth = 64

// DecodeTable decodes the content of a field table: b is what follows the table's 4-byte length. An empty table
// decodes to a nil Table. The result owns its memory (no value aliases b).
func DecodeTable(b []byte) (Table, error) {
	return decodeTable(b, 0)
}

func decodeTable(b []byte, depth int) (Table, error) {
	if depth >= maxTableDepth {
		return nil, errf("field table nested deeper than %d", maxTableDepth)
	}
	if len(b) == 0 {
		return nil, nil
	}
	c := cursor{b: b}
	// A field is at least 3 bytes (empty name, type, void), which bounds the map's size hint by the input. The hint
	// stays at one map group (8 fields) beyond that: real fields are tens of bytes, and sizing for len(b)/3 gave a
	// connection's client properties (a dozen fields in ~400 bytes) a 64-slot map, 3.5 KiB of garbage per
	// handshake. A larger table grows the map as its fields come.
	t := make(Table, min(len(b)/3, 8))
	for c.err == nil && c.remaining() > 0 {
		name := c.shortBytes()
		v := c.value(depth)
		if c.err == nil {
			t[string(name)] = v
		}
	}
	return t, c.err
}

// tableKeep reads a field table of which it decodes only the top-level fields keep accepts (see
// DecodeConnectionStartOK); the others are skipped. An empty result is a nil Table.
func (c *cursor) tableKeep(keep func(name []byte) bool) Table {
	b := c.longBytes()
	if c.err != nil {
		return nil
	}
	t := cursor{b: b}
	var out Table
	for t.err == nil && t.remaining() > 0 {
		name := t.shortBytes()
		if t.err != nil {
			break
		}
		if !keep(name) {
			t.skipValue(0)
			continue
		}
		v := t.value(0)
		if t.err == nil {
			if out == nil {
				out = make(Table, 4)
			}
			out[string(name)] = v
		}
	}
	if t.err != nil {
		c.err = t.err
		return nil
	}
	return out
}

// value reads one typed field value: the type octet, then the value.
func (c *cursor) value(depth int) any {
	typ := c.u8()
	if c.err != nil {
		return nil
	}
	switch typ {
	case 't':
		return c.u8() != 0
	case 'b':
		return int8(c.u8())
	case 'B':
		return c.u8()
	case 's', 'U':
		return int16(c.u16())
	case 'u':
		return c.u16()
	case 'I':
		return int32(c.u32())
	case 'i':
		return c.u32()
	case 'l', 'L':
		return int64(c.u64())
	case 'f':
		return math.Float32frombits(c.u32())
	case 'd':
		return math.Float64frombits(c.u64())
	case 'D':
		return Decimal{Scale: c.u8(), Value: int32(c.u32())}
	case 'S':
		return c.longstr()
	case 'x':
		b := c.longBytes()
		if c.err != nil {
			return nil
		}
		return append([]byte{}, b...)
	case 'A':
		return c.array(depth + 1)
	case 'T':
		return time.Unix(int64(c.u64()), 0).UTC()
	case 'F':
		return c.table(depth + 1)
	case 'V':
		return nil
	}
	c.fail("unknown field type 0x%02x at offset %d", typ, c.off-1)
	return nil
}

// array reads a field array: uint32 byte length, then typed values.
func (c *cursor) array(depth int) []any {
	if depth >= maxTableDepth {
		c.fail("field array nested deeper than %d", maxTableDepth)
		return nil
	}
	b := c.longBytes()
	if c.err != nil {
		return nil
	}
	a := cursor{b: b}
	// A value is at least one byte (void), which bounds the capacity hint by the input.
	out := make([]any, 0, min(len(b), 64))
	for a.err == nil && a.remaining() > 0 {
		v := a.value(depth)
		if a.err == nil {
			out = append(out, v)
		}
	}
	if a.err != nil {
		c.err = a.err
		return nil
	}
	return out
}
