package frames

import (
	"encoding/binary"
	"fmt"
)

// cursor reads AMQP fields from a payload slice with a sticky error (style rule 8): the first failure wins, every
// later read returns a zero value, and the caller checks c.err once at the end. Every read is bounded by the bytes
// that remain, so a lying length can never index past the slice or allocate more than the payload holds.
type cursor struct {
	b   []byte
	off int
	err error
	// bits is the octet that packed bit fields are being read from, and nbit how many of its bits were used; any
	// non-bit read resets it (spec 4.2.5.2: consecutive bits share an octet).
	bits, nbit uint8
}

func (c *cursor) fail(format string, args ...any) {
	if c.err == nil {
		c.err = fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
	}
}

// take returns the next n bytes (aliasing c.b) or nil after an error.
func (c *cursor) take(n int, what string) []byte {
	c.nbit = 0
	if c.err != nil {
		return nil
	}
	if n < 0 || n > len(c.b)-c.off {
		c.fail("%s needs %d bytes at offset %d, %d remain", what, n, c.off, len(c.b)-c.off)
		return nil
	}
	p := c.b[c.off : c.off+n : c.off+n]
	c.off += n
	return p
}

func (c *cursor) remaining() int { return len(c.b) - c.off }

func (c *cursor) u8() uint8 {
	if p := c.take(1, "octet"); p != nil {
		return p[0]
	}
	return 0
}

func (c *cursor) u16() uint16 {
	if p := c.take(2, "short"); p != nil {
		return binary.BigEndian.Uint16(p)
	}
	return 0
}

func (c *cursor) u32() uint32 {
	if p := c.take(4, "long"); p != nil {
		return binary.BigEndian.Uint32(p)
	}
	return 0
}

func (c *cursor) u64() uint64 {
	if p := c.take(8, "longlong"); p != nil {
		return binary.BigEndian.Uint64(p)
	}
	return 0
}

// bit reads the next packed bit: the first bit of a run consumes an octet, the following seven reuse it.
func (c *cursor) bit() bool {
	if c.err != nil {
		return false
	}
	if c.nbit == 0 || c.nbit == 8 {
		p := c.take(1, "bit octet")
		if p == nil {
			return false
		}
		c.bits, c.nbit = p[0], 0
	}
	v := c.bits&(1<<c.nbit) != 0
	c.nbit++
	return v
}

// shortBytes reads a short string (octet length) without copying.
func (c *cursor) shortBytes() []byte { return c.take(int(c.u8()), "shortstr") }

// shortstr reads a short string into an owned string.
func (c *cursor) shortstr() string { return string(c.shortBytes()) }

// longBytes reads a long string (uint32 length) without copying.
func (c *cursor) longBytes() []byte {
	n := c.u32()
	if c.err == nil && uint64(n) > uint64(c.remaining()) {
		c.fail("longstr of %d bytes at offset %d, %d remain", n, c.off, c.remaining())
		return nil
	}
	return c.take(int(n), "longstr")
}

func (c *cursor) longstr() string { return string(c.longBytes()) }

// table reads a field table (uint32 length, then fields) into an owned Table.
func (c *cursor) table(depth int) Table {
	b := c.longBytes()
	if c.err != nil {
		return nil
	}
	t, err := decodeTable(b, depth)
	if err != nil && c.err == nil {
		c.err = err
	}
	return t
}

func errf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}
