package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	// A command name with spaces and parentheses: fields must be counted after the last ')'.
	stat := "4242 (evil) (name x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 3 0 100 200000 300 " +
		"18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0\n"
	got, err := parseStatCPU([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	if want := 3250 * time.Millisecond; got != want { // (250+75) ticks of 10 ms
		t.Fatalf("got %v, want %v", got, want)
	}
	for _, bad := range []string{"", "1 (x S 1 2", "1 (x) S 1 2 3"} {
		if _, err := parseStatCPU([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// TestProcCPUSelf burns CPU until /proc shows it: procCPU reads the live file and sees time go up.
func TestProcCPUSelf(t *testing.T) {
	self := pidSelf(t)
	start, err := procCPU(self)
	if err != nil {
		t.Fatal(err)
	}
	x := 0
	for i := 0; ; i++ {
		x += i * i
		if i%1_000_000 == 0 {
			now, err := procCPU(self)
			if err != nil {
				t.Fatal(err)
			}
			if now > start {
				break
			}
		}
	}
	_ = x
}

func TestParseVmRSS(t *testing.T) {
	status := "Name:\tbench\nVmPeak:\t  999 kB\nVmRSS:\t    2048 kB\nThreads:\t5\n"
	got, err := parseVmRSS([]byte(status))
	if err != nil || got != 2048<<10 {
		t.Fatalf("got %d, %v; want %d", got, err, 2048<<10)
	}
	for _, bad := range []string{"Name:\tx\n", "VmRSS:\t12 MB\n", "VmRSS:\tlots kB\n"} {
		if _, err := parseVmRSS([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	rss, err := procRSS(pidSelf(t))
	if err != nil || rss <= 0 {
		t.Fatalf("own VmRSS: %d, %v", rss, err)
	}
}

func TestParseSockets(t *testing.T) {
	out := []byte("Memory\n\n\x1b[1mFile Descriptors\x1b[0m\n\nTotal: 2, limit: 927\nSockets: 7, limit: 832\n")
	used, limit, err := parseSockets(out)
	if err != nil || used != 7 || limit != 832 {
		t.Fatalf("got %d, %d, %v", used, limit, err)
	}
	if _, _, err := parseSockets([]byte("Total: 2, limit: 927\n")); err == nil {
		t.Fatal("no error without a Sockets line")
	}
}

func TestIdleCapacity(t *testing.T) {
	for _, tc := range []struct{ want, used, limit, got int }{
		{1000, 10, 20000, 1000}, // plenty
		{1000, 10, 832, 758},    // the stock 1024-file broker: 832 - 10 - 64
		{1000, 900, 832, 0},     // over the limit already
	} {
		if got := idleCapacity(tc.want, tc.used, tc.limit); got != tc.got {
			t.Errorf("idleCapacity(%d, %d, %d) = %d, want %d", tc.want, tc.used, tc.limit, got, tc.got)
		}
	}
}

func TestMedianRatioVerdict(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	if m := median([]float64{5, 1, 3}); m == nil || *m != 3 {
		t.Errorf("odd median: %v", m)
	}
	if m := median([]float64{4, 1, 3, 2}); m == nil || *m != 2.5 {
		t.Errorf("even median: %v", m)
	}
	if median(nil) != nil || ratio(f(1), nil) != nil || ratio(f(1), f(0)) != nil {
		t.Error("missing figures must give n/a")
	}
	spec := func(workload, key string) metricSpec {
		for _, s := range metricSpecs {
			if s.workload == workload && s.key == key {
				return s
			}
		}
		t.Fatalf("no spec %s/%s", workload, key)
		return metricSpec{}
	}
	for _, tc := range []struct {
		s         metricSpec
		at, ratio *float64
		want      string
	}{
		{spec("throughput", "msgs_per_s"), f(970), f(0.97), "PASS"},
		{spec("throughput", "msgs_per_s"), f(960), f(0.96), "MISS"},
		{spec("throughput", "msgs_per_s").forTLS(), f(960), f(0.96), "PASS"},
		{spec("rpc", "calls_per_s").forTLS(), f(960), f(0.96), "MISS"},
		{spec("rpc", "p99_ms"), f(1), f(1.05), "PASS"},
		{spec("rpc", "p99_ms"), f(1), f(1.06), "MISS"},
		{spec("throughput", "cpu_us_per_msg"), f(6), f(1.15), "PASS"},
		{spec("throughput", "cpu_us_per_msg"), f(7), f(1.2), "MISS"},
		{spec("throughput", "cpu_us_per_msg").forTLS(), f(7), f(1.2), "PASS"},
		{spec("idle", "kib_per_conn"), f(8), nil, "PASS"},
		{spec("idle", "kib_per_conn"), f(8.1), f(0.5), "MISS"},
		{spec("idle", "kib_per_conn"), nil, nil, "n/a"},
		{spec("rpc", "calls_per_s"), f(1), nil, "n/a"},
		{spec("large", "mb_per_s"), f(1), f(0.1), ""},
	} {
		if got := verdict(tc.s, tc.at, tc.ratio); got != tc.want {
			t.Errorf("%s/%s at=%v ratio=%v: %q, want %q", tc.s.workload, tc.s.key, tc.at, tc.ratio, got, tc.want)
		}
	}
}

func TestBuildRowsAndOutput(t *testing.T) {
	res := results{}
	res.add("throughput", pathDirect, metrics{"msgs_per_s": 1000})
	res.add("throughput", pathHAProxy, metrics{"msgs_per_s": 800, "cpu_us_per_msg": 4})
	res.add("throughput", pathHAProxy, metrics{"msgs_per_s": 900, "cpu_us_per_msg": 6})
	res.add("throughput", pathHAProxy, metrics{"msgs_per_s": 1000, "cpu_us_per_msg": 5})
	res.add("throughput", pathAmqptrace, metrics{"msgs_per_s": 873, "cpu_us_per_msg": 10})
	rows := buildRows(res, []string{"throughput"}, false)
	if len(rows) != 2 {
		t.Fatalf("%d rows, want 2 (throughput only)", len(rows))
	}
	r := rows[0]
	if *r.Median[pathHAProxy] != 900 || *r.OverHAProxy != 0.97 || *r.OverDirect != 0.873 || r.Verdict != "PASS" {
		t.Errorf("msgs/s row: %+v over=%v direct=%v", r, *r.OverHAProxy, *r.OverDirect)
	}
	if r.Spread == nil || *r.Spread != (1000.0-800)/900 {
		t.Errorf("spread %v, want (1000-800)/900 from the haproxy rounds", r.Spread)
	}
	if c := rows[1]; c.Median[pathDirect] != nil || *c.OverHAProxy != 2 || c.Verdict != "MISS" {
		t.Errorf("cpu row: %+v", c)
	}
	rep := &report{Config: runConfig{Rounds: 3, Duration: "5s", Warmup: "1s"}, Rows: rows, Notes: []string{"a note"}}
	var tbl bytes.Buffer
	if err := rep.writeTable(&tbl); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"1 KiB msgs/s end to end", "900", "873", "0.97", "22%", "PASS", "MISS", "n/a", "a note"} {
		if !strings.Contains(tbl.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, tbl.String())
		}
	}
	var js bytes.Buffer
	if err := rep.writeJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back struct {
		Results []struct {
			Metric  string              `json:"metric"`
			Median  map[string]*float64 `json:"median"`
			Verdict string              `json:"verdict"`
		} `json:"results"`
	}
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if back.Results[1].Median[pathDirect] != nil || back.Results[1].Verdict != "MISS" || *back.Results[0].Median[pathAmqptrace] != 873 {
		t.Errorf("JSON round trip: %s", js.String())
	}
}

func TestOsloCallReplyRoundTrip(t *testing.T) {
	req := requestID()
	body, err := osloCall("bench_echo", map[string]any{"x": `quote " and \ backslash`}, "abc123", "reply_00ff", req)
	if err != nil {
		t.Fatal(err)
	}
	// The 41-byte prefix oslo.messaging's kombu serializer writes (oslo-wire-format.md §4.1).
	if !bytes.HasPrefix(body, []byte(`{"oslo.version": "2.0", "oslo.message": "{\"method\": \"bench_echo\", \"args\": `)) {
		t.Fatalf("envelope: %s", body)
	}
	m, err := parseOslo(body)
	if err != nil {
		t.Fatal(err)
	}
	if m.Method != "bench_echo" || m.MsgID != "abc123" || m.ReplyQ != "reply_00ff" || !strings.Contains(string(m.Args), `backslash`) {
		t.Fatalf("parsed %+v", m)
	}
	if !strings.Contains(string(body), req) || len(req) != len("req-")+36 || req[4+14] != '4' {
		t.Fatalf("request id %q not a req-<uuid4> in the body", req)
	}
	reply, err := osloReply(map[string]any{"ok": true}, "abc123")
	if err != nil {
		t.Fatal(err)
	}
	r, err := parseOslo(reply)
	if err != nil || r.MsgID != "abc123" || !r.Ending {
		t.Fatalf("reply %+v, %v: %s", r, err, reply)
	}
	if _, err := parseOslo([]byte(`{"method": "x"}`)); err == nil {
		t.Fatal("a body without the envelope parsed")
	}
}

func TestPercentile(t *testing.T) {
	var s []time.Duration
	for i := 1; i <= 100; i++ {
		s = append(s, time.Duration(i)*time.Millisecond)
	}
	if p := percentile(s, 0.5); p != 50 {
		t.Errorf("p50 %v", p)
	}
	if p := percentile(s, 0.99); p != 99 {
		t.Errorf("p99 %v", p)
	}
	if p := percentile(s[:1], 0.99); p != 1 {
		t.Errorf("p99 of one %v", p)
	}
}

func TestTailBufferIsBounded(t *testing.T) {
	b := &tailBuffer{max: 8}
	for _, w := range []string{"abc", "defgh", "ijklmnopqrstuvwxyz", "12"} {
		if n, err := b.Write([]byte(w)); n != len(w) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", w, n, err)
		}
	}
	if got := b.String(); got != "uvwxyz12" {
		t.Fatalf("tail %q, want the last 8 bytes", got)
	}
}

func TestURLs(t *testing.T) {
	if got := urlVia("amqp://u:p@127.0.0.1:5672/vh", "127.0.0.1:6000"); got != "amqp://u:p@127.0.0.1:6000/vh" {
		t.Errorf("urlVia: %s", got)
	}
	if a, err := brokerAddr("amqp://u:p@localhost/"); err != nil || a != "localhost:5672" {
		t.Errorf("brokerAddr default port: %s %v", a, err)
	}
	if _, err := brokerAddr("amqps://u:p@localhost/"); err == nil {
		t.Error("amqps accepted")
	}
	if _, err := brokerAddr("amqp://u:s3cret@[::1"); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("bad URL: %v (must fail without the password)", err)
	}
	for addr, want := range map[string]bool{"127.0.0.1:5672": true, "[::1]:5672": true, "localhost:1": true, "10.0.0.1:5672": false} {
		if isLoopbackHost(addr) != want {
			t.Errorf("isLoopbackHost(%s) != %v", addr, want)
		}
	}
}

func TestParseStopLine(t *testing.T) {
	out := "time=2026-11-21T14:00:00Z level=INFO msg=\"pipeline serving\" listen=127.0.0.1:5673\n" +
		"time=2026-11-21T14:00:09Z level=INFO msg=\"pipeline stopped\" uptime=9.1s connections=12 messages=80412 " +
		"messages_dropped=7 records=20101 records_dropped=3 decode_off=1\n"
	got, ok := parseStopLine(out)
	if !ok {
		t.Fatal("line not found")
	}
	want := observation{Runs: 1, Messages: 80412, MessagesDropped: 7, Records: 20101, RecordsDropped: 3, DecodeOff: 1}
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for _, bad := range []string{
		"",
		"time=x level=INFO msg=\"pipeline serving\" messages=1\n",
		// An older amqptrace without messages_dropped: the losses are unknown, not zero.
		"time=x level=INFO msg=\"pipeline stopped\" connections=1 records=2 records_dropped=0 decode_off=0\n",
	} {
		if o, ok := parseStopLine(bad); ok {
			t.Errorf("%q: parsed as %+v", bad, o)
		}
	}
}

// A watched process that used no CPU in the window gives no figure, not 0 (which would pass every CPU target): it
// is a launcher such as perf record, not the proxy. One that did use CPU gives one.
func TestCPUMeterNeedsCPU(t *testing.T) {
	idle := exec.Command("sleep", "60")
	if err := idle.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = idle.Process.Kill(); _ = idle.Wait() })
	// Meter it once it sleeps: its start-up (exec, loading) must not fall into the window.
	for {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", idle.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.LastIndexByte(stat, ')'); i > 0 && len(stat) > i+2 && stat[i+2] == 'S' {
			break
		}
		select {
		case <-t.Context().Done():
			t.Fatal("sleep never went to sleep")
		case <-time.After(time.Millisecond):
		}
	}
	m := &cpuMeter{pid: idle.Process.Pid}
	m.start, m.err = procCPU(m.pid)
	if m.err != nil {
		t.Fatal(m.err)
	}
	if v, ok := m.perUnit(1000); ok {
		t.Errorf("a sleeping process gave %v µs per unit, want no figure", v)
	}

	self := &cpuMeter{pid: pidSelf(t)}
	self.start, self.err = procCPU(self.pid)
	x := 0
	for i := 0; ; i++ { // burn CPU until /proc shows some
		x += i * i
		if i%1_000_000 == 0 {
			if v, ok := self.perUnit(1); ok {
				if v <= 0 {
					t.Fatalf("got %v", v)
				}
				break
			}
		}
	}
	_ = x
}

// The gate of an interleaved path: work (a call, a publish) starts only while it is open, drain waits for the work
// in flight, and shut releases clients waiting for a turn.
func TestGate(t *testing.T) {
	g := newGate()
	entered := make(chan bool)
	go func() { entered <- g.enter() }()
	select {
	case <-entered:
		t.Fatal("a call started while the gate was closed")
	case <-time.After(50 * time.Millisecond): // nothing to wait on: the call must not start at all
	}
	g.set(true)
	if !<-entered {
		t.Fatal("enter = false on an open gate")
	}
	g.set(false)
	if g.drain(20 * time.Millisecond) {
		t.Fatal("drain reported no call in flight while one was")
	}
	drained := make(chan bool)
	go func() { drained <- g.drain(time.Minute) }()
	select {
	case <-drained:
		t.Fatal("drain returned while a call was still in flight")
	case <-time.After(50 * time.Millisecond): // nothing to wait on: drain must not return at all
	}
	g.leave()
	if !<-drained {
		t.Fatal("drain did not see the call come back")
	}
	go func() { entered <- g.enter() }()
	g.shut()
	if <-entered {
		t.Fatal("enter = true on a gate shut for good")
	}
}
