package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/amqptrace/amqptrace/correlate"
	"github.com/amqptrace/amqptrace/internal/recorded"
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

// TestReplayProgressLine: a replay shorter than two seconds prints nothing; a longer one rewrites one line with
// the bytes read, the file sizes and the records so far, twice a second, and ends it with a newline when stopped.
func TestReplayProgressLine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var out bytes.Buffer
		var read atomic.Int64
		stop := progressLine(&out, &read, 3e6, func() uint64 { return 7 })
		time.Sleep(1500 * time.Millisecond)
		stop()
		if out.Len() != 0 {
			t.Fatalf("a 1.5 s replay printed %q", out.String())
		}
	})
	synctest.Test(t, func(t *testing.T) {
		var out bytes.Buffer
		var read atomic.Int64
		records := atomic.Uint64{}
		stop := progressLine(&out, &read, 3e6, records.Load)
		read.Store(1_500_000)
		records.Store(42)
		time.Sleep(2600 * time.Millisecond)
		synctest.Wait()
		if got, want := out.String(), "\rreplay: 1.5 of 3.0 MB, 42 records"; !strings.HasPrefix(got, want) {
			t.Fatalf("after 2.6 s the progress line is %q, want it to start %q", got, want)
		}
		read.Store(3_000_000)
		records.Store(99)
		time.Sleep(500 * time.Millisecond)
		synctest.Wait()
		stop()
		got := out.String()
		if !strings.HasSuffix(got, "\rreplay: 3.0 of 3.0 MB, 99 records\n") || strings.Count(got, "\n") != 1 {
			t.Fatalf("the line after stopping is %q: want the last figures and one newline", got)
		}
	})
}

// TestReplayKeepsServingUI replays a recorded oslo.messaging conversation with the real binary and --http: once
// the files are read it says so, keeps serving the records it made on /api/calls, and exits 0 on SIGTERM.
func TestReplayKeepsServingUI(t *testing.T) {
	skipShort(t)
	conns, err := recorded.Load(filepath.Join("..", "..", "frames", "testdata", "oslo"))
	if err != nil {
		t.Fatal(err)
	}
	var streams [][]recorded.Packet
	for i, c := range conns {
		streams = append(streams, recorded.Packets(i, c))
	}
	path := filepath.Join(t.TempDir(), "oslo.pcap")
	if err := recorded.WriteCaptureFile(path, recorded.Interleave(streams, 0), false); err != nil {
		t.Fatal(err)
	}

	p := startBin(t, "replay", "--http", "127.0.0.1:0", "--log-level", "info", path)
	line, ok := p.stderr.waitLine(60*time.Second, p.done, httpLine.MatchString)
	if !ok {
		t.Fatalf("no %q line (exited: %v)", "UI and API listening", p.err)
	}
	httpAddr := httpLine.FindStringSubmatch(line)[1]
	if _, ok := p.stderr.waitLine(60*time.Second, p.done, func(l string) bool {
		return strings.Contains(l, "replay done; the UI keeps serving")
	}); !ok {
		t.Fatalf("replay did not report that it finished (exited: %v)", p.err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	code, body, err := httpGet(ctx, http.DefaultClient, "http://"+httpAddr+"/api/calls")
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET /api/calls after the replay: %d %v", code, err)
	}
	var page struct {
		Calls []correlate.Record `json:"calls"`
	}
	if err := json.Unmarshal(body, &page); err != nil {
		t.Fatalf("/api/calls: %v: %.200s", err, body)
	}
	recs, calls := page.Calls, 0
	for _, r := range recs {
		if r.Source != "replay" {
			t.Fatalf("record %d from %q, want replay", r.ID, r.Source)
		}
		if r.Kind == correlate.KindCall && r.Status == correlate.StatusOK && r.Method != "" {
			calls++
		}
	}
	if calls == 0 {
		t.Fatalf("the UI serves %d records after the replay, no completed call among them", len(recs))
	}
	select {
	case <-p.done:
		t.Fatalf("amqptrace exited after the replay although --http was given: %v", p.err)
	default:
	}
	p.signal(syscall.SIGTERM)
	if rc := p.wait(30 * time.Second); rc != 0 {
		t.Fatalf("exit status %d after SIGTERM, want 0", rc)
	}
	t.Logf("%d records served after the replay, %d completed calls", len(recs), calls)
}
