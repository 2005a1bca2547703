package wire

import (
	"bytes"
	"encoding/binary"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Body must split at frame_max − 8 payload bytes: frame_max counts the 7-byte header and the end octet.
func TestBodySplitsAtFrameMax(t *testing.T) {
	body := bytes.Repeat([]byte{7}, 3*(4096-8)+1)
	b := Body(1, body, 4096)
	var sizes []int
	var got []byte
	for len(b) > 0 {
		n := int(binary.BigEndian.Uint32(b[3:7]))
		if b[0] != TypeBody || binary.BigEndian.Uint16(b[1:3]) != 1 || b[7+n] != FrameEnd || 8+n > 4096 {
			t.Fatalf("bad frame % x", b[:8])
		}
		sizes = append(sizes, n)
		got = append(got, b[7:7+n]...)
		b = b[8+n:]
	}
	if len(sizes) != 4 || sizes[0] != 4088 || sizes[3] != 1 || !bytes.Equal(got, body) {
		t.Fatalf("sizes %v", sizes)
	}
}

func TestBitsPacking(t *testing.T) {
	got := Bits(true, false, true, false, false, false, false, false, true)(nil)
	if !bytes.Equal(got, []byte{0x05, 0x01}) {
		t.Fatalf("% x", got)
	}
}
