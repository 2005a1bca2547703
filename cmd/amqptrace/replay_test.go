package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// writePcap writes a pcap of TCP packets to port 5672 carrying payloads, with link type lt (Ethernet framing).
func writePcap(t *testing.T, path string, lt layers.LinkType, payloads ...[]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := pcapgo.NewWriter(&buf)
	if err := w.WriteFileHeader(65536, lt); err != nil {
		t.Fatal(err)
	}
	seq := uint32(100)
	for i, p := range payloads {
		eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{0, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{0, 0, 0, 0, 0, 2},
			EthernetType: layers.EthernetTypeIPv4}
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: net.IPv4(127, 0, 0, 1),
			DstIP: net.IPv4(127, 0, 0, 1)}
		tcp := &layers.TCP{SrcPort: 40000, DstPort: 5672, Seq: seq, SYN: i == 0, ACK: i > 0, Window: 100}
		if i == 0 {
			seq++
		}
		seq += uint32(len(p))
		_ = tcp.SetNetworkLayerForChecksum(ip)
		sb := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(sb, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
			eth, ip, tcp, gopacket.Payload(p)); err != nil {
			t.Fatal(err)
		}
		ci := gopacket.CaptureInfo{Timestamp: time.Unix(1700000000, int64(i)*1e6), CaptureLength: len(sb.Bytes()),
			Length: len(sb.Bytes())}
		if err := w.WritePacket(ci, sb.Bytes()); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestReplayBadInput: each kind of bad input is one clear line on standard error and exit status 1.
func TestReplayBadInput(t *testing.T) {
	dir := t.TempDir()
	notCapture := filepath.Join(dir, "notes.txt")
	_ = os.WriteFile(notCapture, []byte("this is not a capture\n"), 0o600)
	linkType := filepath.Join(dir, "usb.pcap")
	writePcap(t, linkType, layers.LinkType(189), []byte("x"))
	noAMQP := filepath.Join(dir, "http.pcap")
	writePcap(t, noAMQP, layers.LinkTypeEthernet, nil, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	amqp := filepath.Join(dir, "amqp.pcap")
	whole := writePcap(t, amqp, layers.LinkTypeEthernet, nil, []byte("AMQP\x00\x00\x09\x01"),
		[]byte{1, 0, 0, 0, 0, 0, 4, 0, 10, 0, 11, 0xce})
	truncated := filepath.Join(dir, "truncated.pcap")
	_ = os.WriteFile(truncated, whole[:len(whole)-20], 0o600)

	for _, tc := range []struct{ name, file, want string }{
		{"not a capture", notCapture, "not a pcap or pcapng file"},
		{"missing", filepath.Join(dir, "nope.pcap"), "no such file"},
		{"link type", linkType, "unsupported link type 189"},
		{"no AMQP", noAMQP, "no AMQP 0-9-1 on port 5672"},
		{"truncated", truncated, "truncated capture file after 2 packets"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run([]string{"replay", "--log-level", "error", tc.file}, &stdout, &stderr)
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			if code != 1 || len(lines) != 1 || !strings.Contains(lines[0], tc.want) {
				t.Fatalf("exit %d, stderr:\n%s\nwant exit 1 and one line with %q", code, stderr.String(), tc.want)
			}
			t.Logf("%s", lines[0])
		})
	}
	t.Run("ok", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		if code := run([]string{"replay", "--log-level", "error", "--events", "-", amqp}, &stdout, &stderr); code != 0 {
			t.Fatalf("exit %d: %s", code, stderr.String())
		}
	})
}
