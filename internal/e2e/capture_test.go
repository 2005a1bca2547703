package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gopacket/gopacket/pcapgo"

	"github.com/amqptrace/amqptrace/capture"
	"github.com/amqptrace/amqptrace/correlate"
	"github.com/amqptrace/amqptrace/internal/brokertest"
	"github.com/amqptrace/amqptrace/internal/pipeline"
)

// startRecorder starts tcpdump or tshark writing the broker port's packets to file and waits until it captures.
func startRecorder(t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if brokertest.InCI() {
			t.Fatalf("%s not installed (scripts/ensure-test-deps.sh installs it)", name)
		}
		t.Skipf("%s not installed", name)
	}
	cmd := exec.Command(path, args...)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			if l := sc.Text(); !once && (strings.Contains(l, "listening on") || strings.Contains(l, "Capturing on")) {
				once = true
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("%s did not start capturing", name)
	}
	return cmd
}

func stopRecorder(t *testing.T, cmd *exec.Cmd) {
	_ = cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Logf("%s: %v", cmd.Path, err)
	}
}

// passive runs a passive pipeline with source, collecting records.
func passive(t *testing.T, fromFile bool, source func(ctx context.Context, p *pipeline.Passive, c *capture.Capture) error) (*collector, *pipeline.Passive, func() error) {
	return passiveOn(t, fromFile, brokerPort(t), source)
}

// passiveOn is passive for a broker on port.
func passiveOn(t *testing.T, fromFile bool, port uint16, source func(ctx context.Context, p *pipeline.Passive, c *capture.Capture) error) (*collector, *pipeline.Passive, func() error) {
	col := newCollector()
	pp := pipeline.NewPassive(pipeline.PassiveConfig{
		Capture: capture.Config{Ports: []uint16{port}}, Sinks: []correlate.Sink{col},
		Correlate:    correlate.Config{Source: map[bool]string{true: "replay", false: "capture"}[fromFile]},
		Backpressure: fromFile, PacketClock: fromFile,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- pp.Run(ctx, func(ctx context.Context, c *capture.Capture) error { return source(ctx, pp, c) })
	}()
	return col, pp, func() error { cancel(); return <-done }
}

func brokerPort(t *testing.T) uint16 {
	_, p, err := net.SplitHostPort(brokertest.Addr())
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return uint16(n)
}

// ours keeps the records of the scenario's requests (the capture also sees every other test's traffic).
func ours(m *manifest, rs []correlate.Record) []correlate.Record {
	u := map[string]bool{}
	for _, a := range m.Actions {
		u[a.Publishes[0].UniqueID] = true
	}
	var out []correlate.Record
	for _, r := range rs {
		if u[r.UniqueID] {
			out = append(out, r)
		}
	}
	return out
}

func replayFile(t *testing.T, path string) ([]correlate.Record, pipeline.Stats) {
	t.Helper()
	return replayFileOn(t, path, brokerPort(t))
}

// replayFileOn replays a capture file of a broker on port.
func replayFileOn(t *testing.T, path string, port uint16) ([]correlate.Record, pipeline.Stats) {
	t.Helper()
	col, pp, stop := passiveOn(t, true, port, func(ctx context.Context, p *pipeline.Passive, c *capture.Capture) error {
		defer c.Close()
		_, err := capture.ReadFile(ctx, path, c, capture.ReadOptions{Pace: p.Pace})
		return err
	})
	// The source returns at the end of the file; stop waits for it (cancel only matters if it hangs).
	deadline := time.Now().Add(60 * time.Second)
	for pp.Stats().Capture.Packets == 0 || pp.Stats().Capture.ConnsOpen > 0 {
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond) // polling the replay's progress; no event to wait on
	}
	_ = stop()
	return col.snapshot(), pp.Stats()
}

// TestOsloCapture runs the real oslo.messaging scenario straight against the broker while amqptrace captures the
// broker's port on lo, and tcpdump (pcap) and tshark (pcapng, two interfaces) record it: the live capture and
// the replay of each file give one correct record per action, checked like the proxy's; then the tcpdump file
// with packets removed at random (1%, 5%), and cut to start after the clients connected, pairs what it can and
// never falsely.
func TestOsloCapture(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: runs real oslo.messaging processes")
	}
	brokerAddr := brokertest.Require(t)
	requireOslo(t)
	acct := brokerAccount(t)
	dir := t.TempDir()
	port := strconv.Itoa(int(brokerPort(t)))

	ready := make(chan struct{})
	live, livePP, stopLive := passive(t, false, func(ctx context.Context, _ *pipeline.Passive, c *capture.Capture) error {
		return capture.Live(ctx, capture.LiveConfig{Interface: "lo", Ports: []uint16{brokerPort(t)},
			Ready: func() { close(ready) }}, c)
	})
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		err := stopLive()
		if errors.Is(err, capture.ErrNoCapability) && !brokertest.InCI() {
			t.Skip(err)
		}
		t.Fatalf("live capture did not start: %v", err)
	}
	pcap := filepath.Join(dir, "tcpdump.pcap")
	pcapng := filepath.Join(dir, "tshark.pcapng")
	td := startRecorder(t, "tcpdump", "-i", "lo", "-U", "-s", "0", "-w", pcap, "tcp", "port", port)
	ts := startRecorder(t, "tshark", "-i", "lo", "-i", "any", "-f", "tcp port "+port, "-w", pcapng)

	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, python, "testdata/oslo_scenario.py", "--url", acct.rabbitURL(brokerAddr),
		"--exchange", acct.exchange, "--suffix", acct.suffix)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var m manifest
	if err := json.Unmarshal(stdout.Bytes(), &m); err != nil || runErr != nil || len(m.Failures) > 0 {
		stopRecorder(t, td)
		stopRecorder(t, ts)
		_ = stopLive()
		t.Fatalf("oslo scenario: run: %v, manifest: %v, failures: %q\nstderr (tail):\n%s", runErr, err, m.Failures,
			tail(stderr.String(), 4000))
	}
	want := len(m.Actions)
	if !live.waitFor(60*time.Second, func(rs []correlate.Record) bool { return len(ours(&m, rs)) >= want }) {
		got := map[string]bool{}
		for _, r := range ours(&m, live.snapshot()) {
			got[r.UniqueID] = true
		}
		var missing []string
		for _, a := range m.Actions {
			if !got[a.Publishes[0].UniqueID] {
				missing = append(missing, a.label())
			}
		}
		t.Errorf("live capture: %d of %d records within 60s; still pending: %q (in flight: %+v)",
			len(got), want, missing, livePP.InFlight(context.Background(), 10).Oldest)
	}
	stopRecorder(t, td)
	stopRecorder(t, ts)
	if err := stopLive(); err != nil {
		t.Fatalf("live capture: %v", err)
	}
	st := livePP.Stats()
	t.Run("live", func(t *testing.T) {
		checkOsloRecords(t, &m, ours(&m, live.snapshot()))
		if st.Capture.KernelDrops != 0 || st.Capture.KernelPackets == 0 {
			t.Errorf("kernel: %d packets, %d drops", st.Capture.KernelPackets, st.Capture.KernelDrops)
		}
		for _, r := range ours(&m, live.snapshot()) {
			if r.Source != "capture" {
				t.Fatalf("source %q", r.Source)
			}
		}
		t.Logf("live: %d packets (kernel %d, drops %d), %d connections (%d mid-stream), %d gaps, %d records in all",
			st.Capture.Packets, st.Capture.KernelPackets, st.Capture.KernelDrops, st.Capture.Conns,
			st.Capture.MidStream, st.Capture.Gaps, st.Correlate.RecordsOut)
	})
	for _, f := range []string{pcap, pcapng} {
		t.Run("replay "+filepath.Base(f), func(t *testing.T) {
			rs, st := replayFile(t, f)
			checkOsloRecords(t, &m, ours(&m, rs))
			t.Logf("%s: %d packets, %d connections, %d retransmitted bytes (duplicates), %d gaps", filepath.Base(f),
				st.Capture.Packets, st.Capture.Conns, st.Capture.Retransmitted, st.Capture.Gaps)
		})
	}
	if d := os.Getenv("AMQPTRACE_KEEP_CAPTURE"); d != "" {
		// For a failure that depends on the recording: keep it and the scenario's manifest to replay by hand.
		for _, f := range []string{pcap, pcapng} {
			b, _ := os.ReadFile(f)
			_ = os.WriteFile(filepath.Join(d, filepath.Base(f)), b, 0o644)
		}
		_ = os.WriteFile(filepath.Join(d, "manifest.json"), stdout.Bytes(), 0o644)
	}
	pkts, streams := readOracle(t, pcap)
	wholeRs, _ := replayFile(t, pcap)
	whole := ours(&m, wholeRs)
	for _, loss := range []float64{0.01, 0.05} {
		t.Run("loss "+strconv.FormatFloat(loss*100, 'f', 0, 64)+"%", func(t *testing.T) {
			lossy := filepath.Join(dir, "lossy.pcap")
			removed := pickLoss(len(pkts), loss, 42)
			dropPacketsAt(t, pcap, lossy, removed)
			damaged, delayed := damagedByLoss(t, &m, pkts, streams, removed)
			rs, st := replayFile(t, lossy)
			checkNoFalsePair(t, &m, ours(&m, rs))
			changed, changedDelayed := checkLossExactly(t, &m, whole, ours(&m, rs), damaged, delayed)
			t.Logf("%d of %d packets removed: they carried messages of %d actions, %d have messages delayed behind a hole; "+
				"%d actions' records changed or missing (%d of them delayed, not lost); %d of %d intact; %d gaps, "+
				"%d resyncs, %d records in all", len(removed), len(pkts), len(damaged), len(delayed), changed, changedDelayed,
				intact(t, &m, ours(&m, rs)), want, st.Capture.Gaps, st.Decode.Client.Resyncs+st.Decode.Server.Resyncs,
				st.Correlate.RecordsOut)
		})
	}
	t.Run("mid-stream", func(t *testing.T) {
		cut := filepath.Join(dir, "cut.pcap")
		// Start the file 3 s into the scenario: every client has connected by then.
		dropPackets(t, pcap, cut, 0, 3*time.Second, 1)
		rs, st := replayFile(t, cut)
		mine := ours(&m, rs)
		checkNoFalsePair(t, &m, mine)
		paired := 0
		for _, r := range mine {
			if r.Kind == correlate.KindCall && r.Status == correlate.StatusOK && r.Delivered != nil && r.ReplyDelivered != nil {
				paired++
			}
		}
		if st.Capture.MidStream == 0 || paired == 0 {
			t.Errorf("%d mid-stream connections, %d calls paired", st.Capture.MidStream, paired)
		}
		t.Logf("picked up %d connections mid-stream: %d records of the scenario, %d calls paired", st.Capture.MidStream,
			len(mine), paired)
	})
}

// dropPackets copies a pcap, leaving out each packet with probability loss and every packet in the first skip of
// the capture; it returns how many it left out.
func dropPackets(t *testing.T, in, out string, loss float64, skip time.Duration, seed int64) int {
	rng := rand.New(rand.NewSource(seed))
	var first time.Time
	return copyPcap(t, in, out, func(_ int, ts time.Time) bool {
		if first.IsZero() {
			first = ts
		}
		return ts.Sub(first) >= skip && rng.Float64() >= loss
	})
}

// openPcap opens a pcap file for reading; it is closed when the test ends.
func openPcap(t *testing.T, path string) *pcapgo.Reader {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// copyPcap copies the packets of in that keep keeps (by index and time) to out and returns how many it left out.
func copyPcap(t *testing.T, in, out string, keep func(i int, ts time.Time) bool) int {
	t.Helper()
	r := openPcap(t, in)
	o, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	w := pcapgo.NewWriter(o)
	if err := w.WriteFileHeader(65536, r.LinkType()); err != nil {
		t.Fatal(err)
	}
	removed := 0
	for i := 0; ; i++ {
		data, ci, err := r.ReadPacketData()
		if err != nil {
			break
		}
		if !keep(i, ci.Timestamp) {
			removed++
			continue
		}
		if err := w.WritePacket(ci, data); err != nil {
			t.Fatal(err)
		}
	}
	return removed
}

// checkNoFalsePair: every record of a lossy or partial capture agrees with the manifest on what it says.
func checkNoFalsePair(t *testing.T, m *manifest, rs []correlate.Record) {
	t.Helper()
	by := map[string]*action{}
	for i := range m.Actions {
		by[m.Actions[i].Publishes[0].UniqueID] = &m.Actions[i]
	}
	seen := map[string]bool{}
	for _, r := range rs {
		a := by[r.UniqueID]
		// A fanout whose publish was lost is seen only by its deliveries, each one a server-side record (the
		// correlator's partial visibility: nothing joins deliveries without their request); any other repeat is
		// a false pair.
		if seen[r.UniqueID] && !(a.Kind == "fanout" && r.Published == nil) {
			b, _ := json.Marshal(r)
			t.Errorf("two records for %s: %s", a.label(), b)
		}
		seen[r.UniqueID] = true
		if string(r.Kind) != a.Kind {
			t.Errorf("%s: kind %s", a.label(), r.Kind)
		}
		if a.Kind == "call" && r.MsgID != *a.Publishes[0].MsgID {
			t.Errorf("%s: msg_id %s, want %s", a.label(), r.MsgID, *a.Publishes[0].MsgID)
		}
		if a.Kind != "notification" && r.Method != a.Method {
			t.Errorf("%s: method %q", a.label(), r.Method)
		}
		if r.Status == correlate.StatusOK && a.Status != "ok" {
			t.Errorf("%s: status ok, the scenario says %s", a.label(), a.Status)
		}
		if r.Error != nil && (a.ErrorClass == "" || r.Error.Class != a.ErrorClass) {
			t.Errorf("%s: error %+v, want %q", a.label(), r.Error, a.ErrorClass)
		}
	}
}

// intact counts the records that pass checkOsloRecord's checks as a whole (the rest lost frames).
func intact(t *testing.T, m *manifest, rs []correlate.Record) int {
	n := 0
	for _, r := range rs {
		for i := range m.Actions {
			a := &m.Actions[i]
			if a.Publishes[0].UniqueID == r.UniqueID && string(r.Status) == a.Status && r.Published != nil &&
				(a.Callee == nil || r.Deliveries > 0) && (a.Kind != "call" || a.Status == "timeout" || r.ReplyDelivered != nil) {
				n++
			}
		}
	}
	return n
}
