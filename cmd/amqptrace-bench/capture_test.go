package main

import (
	"strings"
	"testing"
)

func TestParseCaptureStop(t *testing.T) {
	out := "time=x level=INFO msg=capturing interface=lo port=5672\n" +
		`time=x level=INFO msg="capture stopped" uptime=1.5s packets=120 connections=3 mid_stream=0 tls=0 kernel_drops=2 gaps=1 gap_bytes=10 resyncs=1 messages=50 messages_dropped=0 records=20 records_dropped=0 decode_off=0` + "\n" +
		`time=x level=INFO msg="pipeline stopped" messages=1` + "\n"
	st, ok := parseCaptureStop(out)
	if !ok {
		t.Fatal("not parsed")
	}
	for k, want := range map[string]uint64{"packets": 120, "kernel_drops": 2, "gaps": 1, "messages": 50, "records": 20} {
		if st[k] != want {
			t.Errorf("%s = %d, want %d", k, st[k], want)
		}
	}
	for _, bad := range []string{"", "msg=capturing\n", `msg="capture stopped" packets=1 gaps=0 messages=1 records=1` + "\n"} {
		if _, ok := parseCaptureStop(bad); ok {
			t.Errorf("%q: parsed, want not ok (line or kernel_drops missing)", bad)
		}
	}
}

func TestTcpdumpDrops(t *testing.T) {
	out := "tcpdump: listening on lo, link-type EN10MB (Ethernet), snapshot length 262144 bytes\n" +
		"5310 packets captured\n5322 packets received by filter\n7 packets dropped by kernel\n"
	if n, ok := tcpdumpDrops(out); !ok || n != 7 {
		t.Fatalf("got %d, %v; want 7, true", n, ok)
	}
	if _, ok := tcpdumpDrops("tcpdump: killed\n"); ok {
		t.Fatal("no summary: parsed")
	}
}

// TestCaptureRows: the capture rows are in the amqptrace column, the CPU row names the proxy's CPU per message
// beside its own, and kernel drops are judged against 0.
func TestCaptureRows(t *testing.T) {
	res := results{}
	res.add("throughput", pathAmqptrace, metrics{"cpu_us_per_msg": 10})
	res.add("capture", pathAmqptrace, metrics{"cpu_us_per_msg": 4, "live_msgs_per_s": 1000})
	res.add("capture", pathAmqptrace, metrics{"kernel_drops": 0, "gaps": 0})
	res.add("capture", pathAmqptrace, metrics{"replay_mb_per_s": 100, "replay_records_per_s": 5000})
	rows := buildRows(res, []string{"throughput", "capture"}, false)
	by := map[string]row{}
	for _, r := range rows {
		by[r.Workload+"/"+r.Metric] = r
	}
	cpu := by["capture/cpu_us_per_msg"]
	if cpu.Beside == nil || *cpu.Beside != 10 || cpu.OverBeside == nil || *cpu.OverBeside != 0.4 {
		t.Fatalf("capture CPU row: beside %v over %v, want 10 and 0.4", cpu.Beside, cpu.OverBeside)
	}
	if cpu.Target != "proxy: 10.0 µs (0.40×)" || cpu.Verdict != "" {
		t.Errorf("capture CPU row: target %q verdict %q", cpu.Target, cpu.Verdict)
	}
	if d := by["capture/kernel_drops"]; d.Verdict != "PASS" || d.Target != "≤ 0 pkts" {
		t.Errorf("kernel drops: %q %q", d.Target, d.Verdict)
	}
	res.add("capture", pathAmqptrace, metrics{"kernel_drops": 3})
	res.add("capture", pathAmqptrace, metrics{"kernel_drops": 3})
	for _, r := range buildRows(res, []string{"capture"}, false) {
		if r.Metric == "kernel_drops" && r.Verdict != "MISS" {
			t.Errorf("kernel drops 3: verdict %q", r.Verdict)
		}
		if r.Metric == "cpu_us_per_msg" && r.Beside != nil {
			t.Errorf("throughput not selected: beside %v, want n/a", *r.Beside)
		}
	}
	if r := by["capture/replay_mb_per_s"]; r.Median[pathAmqptrace] == nil || *r.Median[pathAmqptrace] != 100 ||
		r.Median[pathHAProxy] != nil {
		t.Errorf("replay MB/s row: %+v", r.Median)
	}
	var b strings.Builder
	if err := (&report{Rows: rows}).writeTable(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "proxy: 10.0 µs (0.40×)") {
		t.Errorf("table does not state the proxy's CPU beside the capture's:\n%s", b.String())
	}
}
