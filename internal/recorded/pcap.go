package recorded

import (
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// Packet is one packet of a capture made from recorded connections: an Ethernet/IPv4/TCP frame. Dir is 0 for
// client → broker, 1 for broker → client; Off is the stream offset of its payload's first byte, -1 when it has
// none.
type Packet struct {
	Data []byte
	Dir  int
	Off  int
	// At is when the packet was captured; zero means 100 µs after the packet before it (WriteCapture).
	At time.Time
}

// Read is one read a recording made of a connection: Dir as in Packet, the bytes and when they were read.
type Read struct {
	Dir  int
	At   time.Time
	Data []byte
}

// maxSegment bounds one packet's payload: a read larger than this (a 64 KiB body) goes out as several segments,
// as it would on the wire.
const maxSegment = 16 << 10

// Timed cuts connection i's reads into packets stamped with their read times, in read order: SYN, SYN-ACK and
// ACK at the first read, each read as one segment (or several of maxSegment), then a FIN each way at the last.
func Timed(i int, reads []Read) []Packet {
	if len(reads) == 0 {
		return nil
	}
	ends := [2]netip.AddrPort{Client(i), netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, 100}), BrokerPort)}
	isn := [2]uint32{0xffffff00 - uint32(i)*17, 1000 + uint32(i)*1000003}
	first, last := reads[0].At, reads[len(reads)-1].At
	mk := func(d int, seq uint32, flags string, payload []byte, off int, at time.Time) Packet {
		return Packet{Data: TCPPacket(ends[d], ends[1-d], seq, flags, payload), Dir: d, Off: off, At: at}
	}
	out := []Packet{mk(0, isn[0], "S", nil, -1, first), mk(1, isn[1], "SA", nil, -1, first),
		mk(0, isn[0]+1, "A", nil, -1, first)}
	var pos [2]int
	for _, r := range reads {
		for b := r.Data; len(b) > 0; {
			n := min(len(b), maxSegment)
			out = append(out, mk(r.Dir, isn[r.Dir]+1+uint32(pos[r.Dir]), "A", b[:n], pos[r.Dir], r.At))
			pos[r.Dir] += n
			b = b[n:]
		}
	}
	return append(out, mk(0, isn[0]+1+uint32(pos[0]), "FA", nil, -1, last),
		mk(1, isn[1]+1+uint32(pos[1]), "FA", nil, -1, last))
}

// ByTime merges the connections' packets into one capture in time order (stable: a connection's own order
// stays).
func ByTime(conns [][]Packet) []Packet {
	var out []Packet
	for _, c := range conns {
		out = append(out, c...)
	}
	slices.SortStableFunc(out, func(a, b Packet) int { return a.At.Compare(b.At) })
	return out
}

// Awkward are the segment sizes Packets cycles through: around the 7-byte frame header and the frame-end octet,
// and a few larger ones.
var Awkward = []int{1, 6, 7, 8, 9, 13, 100, 3, 57, 2, 300, 5}

// BrokerPort is the broker's port in the packets.
const BrokerPort = 5672

// Client is the client address of connection i in the packets (the broker is 10.0.0.100:5672).
func Client(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(1 + i)}), uint16(40000+i))
}

// Packets cuts connection i into packets: SYN, SYN-ACK, ACK, then both directions' bytes in segments of Awkward
// sizes, interleaved by how far each direction has got, every 11th segment retransmitted (once whole, right after
// it, and once two segments late), then a FIN each way. The client's initial sequence number sits just below 2^32,
// so its sequence numbers wrap.
func Packets(i int, c Conn) []Packet {
	ends := [2]netip.AddrPort{Client(i), netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, 100}), BrokerPort)}
	isn := [2]uint32{0xffffff00 - uint32(i)*17, 1000 + uint32(i)*1000003}
	streams := [2][]byte{c.C2S, c.S2C}
	mk := func(d int, seq uint32, flags string, payload []byte, off int) Packet {
		return Packet{Data: TCPPacket(ends[d], ends[1-d], seq, flags, payload), Dir: d, Off: off}
	}
	out := []Packet{mk(0, isn[0], "S", nil, -1), mk(1, isn[1], "SA", nil, -1), mk(0, isn[0]+1, "A", nil, -1)}
	var pos [2]int
	var segs [2][][2]int // each direction's segments so far: [start, end)
	for k := 0; pos[0] < len(streams[0]) || pos[1] < len(streams[1]); {
		d := 0 // the direction less far through its stream goes next
		if pos[0] >= len(streams[0]) || (pos[1] < len(streams[1]) && pos[1]*len(streams[0]) < pos[0]*len(streams[1])) {
			d = 1
		}
		n := min(Awkward[k%len(Awkward)], len(streams[d])-pos[d])
		k++
		a, b := pos[d], pos[d]+n
		out = append(out, mk(d, isn[d]+1+uint32(a), "A", streams[d][a:b], a))
		segs[d] = append(segs[d], [2]int{a, b})
		pos[d] = b
		if k%11 == 0 {
			out = append(out, mk(d, isn[d]+1+uint32(a), "A", streams[d][a:b], a)) // retransmitted at once
		}
		if s := segs[d]; k%11 == 5 && len(s) >= 3 {
			r := s[len(s)-3] // retransmitted late, after two newer segments
			out = append(out, mk(d, isn[d]+1+uint32(r[0]), "A", streams[d][r[0]:r[1]], r[0]))
		}
	}
	return append(out, mk(0, isn[0]+1+uint32(len(c.C2S)), "FA", nil, -1),
		mk(1, isn[1]+1+uint32(len(c.S2C)), "FA", nil, -1))
}

// Interleave merges the connections' packets one from each in turn, dropping the first skip packets of each (a
// capture that started after they connected).
func Interleave(conns [][]Packet, skip int) []Packet {
	var out []Packet
	for r := skip; ; r++ {
		more := false
		for _, c := range conns {
			if r < len(c) {
				out = append(out, c[r])
				more = true
			}
		}
		if !more {
			return out
		}
	}
}

// WriteCapture writes the packets as a pcap file (ng false, pcapgo.Writer) or a pcapng file (pcapgo.NgWriter),
// at their At, or 100 µs apart from a fixed time.
func WriteCapture(w io.Writer, pkts []Packet, ng bool) error {
	var pw interface {
		WritePacket(gopacket.CaptureInfo, []byte) error
	}
	flush := func() error { return nil }
	if ng {
		nw, err := pcapgo.NewNgWriter(w, layers.LinkTypeEthernet)
		if err != nil {
			return err
		}
		pw, flush = nw, nw.Flush
	} else {
		w := pcapgo.NewWriter(w)
		if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
			return err
		}
		pw = w
	}
	at := time.Unix(1700000000, 0)
	for _, p := range pkts {
		at = at.Add(100 * time.Microsecond)
		if !p.At.IsZero() {
			at = p.At
		}
		if err := pw.WritePacket(gopacket.CaptureInfo{Timestamp: at, CaptureLength: len(p.Data), Length: len(p.Data)},
			p.Data); err != nil {
			return err
		}
	}
	return flush()
}

// WriteCaptureFile is WriteCapture to a new file at path.
func WriteCaptureFile(path string, pkts []Packet, ng bool) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := WriteCapture(f, pkts, ng); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// TCPPacket builds an Ethernet/IPv4/TCP packet with correct lengths and checksums; flags holds S, A, F, R.
func TCPPacket(from, to netip.AddrPort, seq uint32, flags string, payload []byte) []byte {
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2},
		EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: from.Addr().AsSlice(),
		DstIP: to.Addr().AsSlice()}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(from.Port()), DstPort: layers.TCPPort(to.Port()), Seq: seq,
		Window: 65535}
	for _, f := range flags {
		switch f {
		case 'S':
			tcp.SYN = true
		case 'A':
			tcp.ACK = true
		case 'F':
			tcp.FIN = true
		case 'R':
			tcp.RST = true
		}
	}
	_ = tcp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip, tcp, gopacket.Payload(payload)); err != nil {
		panic(err) // only for malformed layers, which these are not
	}
	return buf.Bytes()
}
