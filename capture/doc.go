// Package capture turns packets into the byte streams amqptrace decodes, without being in the path: live from an
// AF_PACKET socket (Live), or from pcap and pcapng files (ReadFile). It reassembles each TCP connection to the
// watched ports in both directions and hands each direction's bytes, stamped with the capture time of the packet
// that carried them, to a Tap, as the proxy hands its reads to its tap. design.md section 2 has the picture.
//
// # What it does
//
//   - Link layers: Ethernet (with 802.1Q tags), Linux cooked (SLL and SLL2), raw IP, BSD loopback; IPv4 and
//     IPv6; TCP. Everything else is counted and passed over.
//   - Reassembly (Capture.Packet): per direction, bytes are delivered in sequence order; retransmitted and
//     overlapping bytes are trimmed; segments that arrive ahead of a hole wait (bounded in bytes and in capture
//     time) for the hole to fill. A hole that does not fill is a gap: the Tap is told how many bytes are missing
//     (Tap.Gap) before the bytes after it, so its decoder resynchronises instead of misreading them.
//   - A connection whose SYN was not seen (the capture started after it) is delivered from its first segment on
//     with ConnInfo.MidStream set. Which side is the broker is decided by the SYN when seen, else by the port.
//   - TLS is recognised (a TLS record header where the stream starts) and counted; its bytes never reach a Tap's
//     writers.
//   - Live capture binds an AF_PACKET socket (TPACKET_V3 ring, through gopacket/afpacket, pure Go) with a classic
//     BPF filter for the ports, and reports the kernel's PACKET_STATISTICS drops.
//
// # What it does not do
//
// No AMQP: it never looks past TCP (the Tap's writers are frames decoders, joined in cmd). No IP fragment
// reassembly (fragments are counted): AMQP over TCP is not fragmented on any sane network. It never writes to the
// network.
//
// # Goroutines and ownership
//
// Capture is driven by one goroutine (the one calling Packet, Tick and Close): Tap writers and callbacks run on
// it, one connection after another, so a Tap needs no lock. Stats may be read from any goroutine. Bytes handed to
// a writer are valid only during the call.
package capture
