package capture

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// ErrNotCapture means a file is neither pcap nor pcapng.
var ErrNotCapture = errors.New("not a pcap or pcapng file")

// ErrTruncated means a capture file ended (or broke) in the middle of a packet record: what came before it was
// read and handed over.
var ErrTruncated = errors.New("truncated capture file")

// ReadOptions tune ReadFile. The zero value reads as fast as it can.
type ReadOptions struct {
	// Realtime paces the packets at the speed they were captured.
	Realtime bool
	// Pace, when set, is called every few hundred packets; it may block to let the consumer catch up (a replay
	// waits for the correlator's queue instead of overflowing it).
	Pace func(ctx context.Context)
	// Read, when set, is kept up to date with the bytes of the file read so far (for a progress line).
	Read *atomic.Int64
}

// packetReader is what pcapgo's two readers have in common, plus the link type of each packet.
type packetReader interface {
	ZeroCopyReadPacketData() ([]byte, gopacket.CaptureInfo, error)
}

// ReadFile hands every packet of a pcap or pcapng file to c, in file order, and returns the number of packets.
// It stops early when ctx ends (returning ctx's error). Errors name the file: ErrNotCapture, ErrLinkType (a link
// type c does not decode), ErrTruncated (after handing over every whole packet before the break).
func ReadFile(ctx context.Context, path string, c *Capture, opts ReadOptions) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	cr := &countingReader{r: f, n: opts.Read}
	br := bufio.NewReaderSize(cr, 1<<20)
	magic, err := br.Peek(4)
	if err != nil {
		return 0, fmt.Errorf("%s: %w (%d bytes)", path, ErrNotCapture, len(magic))
	}
	var pr packetReader
	var linkOf func(gopacket.CaptureInfo) (layers.LinkType, error)
	switch {
	case isPcapMagic(magic):
		r, err := pcapgo.NewReader(br)
		if err != nil {
			return 0, fmt.Errorf("%s: %w: %v", path, ErrTruncated, err)
		}
		lt := r.LinkType()
		if !SupportedLinkType(lt) {
			return 0, fmt.Errorf("%s: %w %d (%s); supported: Ethernet, Linux cooked (SLL, SLL2), raw IP, BSD loopback",
				path, ErrLinkType, int(lt), lt)
		}
		pr = r
		linkOf = func(gopacket.CaptureInfo) (layers.LinkType, error) { return lt, nil }
	case string(magic) == "\x0a\x0d\x0d\x0a":
		r, err := pcapgo.NewNgReader(br, pcapgo.NgReaderOptions{WantMixedLinkType: true})
		if err != nil {
			return 0, fmt.Errorf("%s: %w: %v", path, ErrTruncated, err)
		}
		pr = r
		linkOf = func(ci gopacket.CaptureInfo) (layers.LinkType, error) {
			iface, err := r.Interface(ci.InterfaceIndex)
			if err != nil {
				return 0, fmt.Errorf("%s: packet on interface %d, which the file does not describe", path, ci.InterfaceIndex)
			}
			if !SupportedLinkType(iface.LinkType) {
				return 0, fmt.Errorf("%s: interface %d (%s): %w %d (%s); supported: Ethernet, Linux cooked (SLL, SLL2), raw IP, BSD loopback",
					path, ci.InterfaceIndex, iface.Name, ErrLinkType, int(iface.LinkType), iface.LinkType)
			}
			return iface.LinkType, nil
		}
	default:
		return 0, fmt.Errorf("%s: %w (it starts with % x)", path, ErrNotCapture, magic)
	}

	var n int
	var first, wallStart time.Time
	for {
		if n&255 == 0 {
			if err := ctx.Err(); err != nil {
				return n, err
			}
			if opts.Pace != nil {
				opts.Pace(ctx)
			}
		}
		data, ci, err := pr.ZeroCopyReadPacketData()
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("%s: %w after %d packets: %v", path, ErrTruncated, n, err)
		}
		lt, err := linkOf(ci)
		if err != nil {
			return n, err
		}
		if opts.Realtime {
			if first.IsZero() {
				first, wallStart = ci.Timestamp, time.Now()
			} else if wait := time.Until(wallStart.Add(ci.Timestamp.Sub(first))); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					return n, ctx.Err()
				case <-t.C:
				}
			}
		}
		n++
		if err := c.Packet(lt, data, ci.Length, ci.Timestamp); err != nil {
			return n, fmt.Errorf("%s: packet %d: %w", path, n, err)
		}
	}
}

func isPcapMagic(m []byte) bool {
	switch string(m) {
	case "\xa1\xb2\xc3\xd4", "\xd4\xc3\xb2\xa1", "\xa1\xb2\x3c\x4d", "\x4d\x3c\xb2\xa1":
		return true
	}
	return false
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.n != nil {
		c.n.Add(int64(n))
	}
	return n, err
}
