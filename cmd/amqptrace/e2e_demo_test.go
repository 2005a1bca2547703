package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/amqptrace/amqptrace/correlate"
	"github.com/amqptrace/amqptrace/internal/brokertest"
	"github.com/amqptrace/amqptrace/internal/cloudsim"
)

// TestE2EDemoAccuracy runs the simulated cloud through the wiring `amqptrace demo` uses (newApp, then app.run
// with the cloud started once the proxy serves), bounded by cloudsim's MaxBoots instead of a signal, and checks
// that the events file holds exactly what the cloud says it sent: the same count per (kind, method, status),
// every heartbeat and every late reply, every fanout delivered to every agent.
//
// It runs in-process because `amqptrace demo` has no flag that ends it by itself; the lead may add one (--boots)
// and move this test to the subprocess.
func TestE2EDemoAccuracy(t *testing.T) {
	skipShort(t)
	brokertest.Require(t)
	v := testVhost(t)
	events := filepath.Join(t.TempDir(), "events.jsonl")

	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var o options
	o.register(fs, "127.0.0.1:0", "127.0.0.1:0")
	if err := fs.Parse([]string{"--upstream", brokertest.Addr(), "--events", events, "--shutdown-grace", "10s"}); err != nil {
		t.Fatal(err)
	}
	logs := newTail(256 << 10)
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- logs (tail) ---\n%s", logs.String())
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	a, err := newApp(ctx, &o, logger, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	const boots, agents = 10, 3
	var cloud *cloudsim.Cloud
	start := time.Now()
	err = a.run(ctx, func(ctx context.Context, proxyAddr string) error {
		// Faults well above the demo's defaults, so that errors, heartbeats, timeouts and late replies all occur
		// in a short run.
		cloud = cloudsim.New(cloudsim.Config{URL: v.url(proxyAddr), Rate: 4, MaxBoots: boots, Agents: agents,
			Prefix: v.prefix, Seed: 20260101, ErrorRate: 0.15, SlowRate: 0.3, TimeoutRate: 0.15,
			Logger: logger})
		return cloud.Run(ctx)
	})
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if ctx.Err() != nil {
		t.Fatal("the run ended only because the test's deadline passed")
	}
	counts := cloud.Counts()
	t.Logf("cloud ran %v: boots %d (skipped %d), replies %d, heartbeats %d (monitored slow %d), late replies %d, returned %d, bad %d, mismatched %d",
		time.Since(start).Round(time.Millisecond), counts.Boots, counts.BootsSkipped, counts.Replies, counts.Heartbeats,
		counts.MonitoredSlow, counts.LateReplies, counts.Returned, counts.Bad, counts.Mismatched)
	if counts.Boots != boots {
		t.Fatalf("cloud finished %d boots, want %d", counts.Boots, boots)
	}
	if counts.Bad != 0 || counts.Returned != 0 {
		t.Errorf("cloud saw %d bad deliveries and %d returns; the comparison below assumes none", counts.Bad, counts.Returned)
	}

	// What amqptrace should have recorded: the caller's view. Sent is what the cloud meant and Observed what its
	// callers saw; they agree unless the machine was too slow for an injected fate, and then the wire (Observed)
	// is what amqptrace sees.
	want := counts.Sent
	if counts.Mismatched != 0 {
		t.Logf("%d calls ended differently from their injected fate; comparing with what the callers observed", counts.Mismatched)
		want = counts.Observed
	}
	statuses := map[string]int{}
	for k, n := range want {
		statuses[k.Status] += n
		if k.Status == "aborted" {
			t.Errorf("%v ×%d aborted: a run bounded by MaxBoots must not cut messages short", k, n)
		}
	}
	for _, s := range []string{"ok", "error", "timeout"} {
		if statuses[s] == 0 {
			t.Errorf("the cloud sent no %s RPC: the run does not exercise what it claims (statuses %v)", s, statuses)
		}
	}

	recs := readEvents(t, events)
	got := map[cloudsim.Key]int{}
	heartbeats, late, incomplete := 0, 0, 0
	for i := range recs {
		r := &recs[i]
		got[cloudsim.Key{Kind: string(r.Kind), Method: recordMethod(r), Status: string(r.Status)}]++
		heartbeats += r.Heartbeats
		if r.LateReply {
			late++
		}
		if r.Incomplete {
			incomplete++
		}
		if r.Caller == nil || r.Caller.Service == "" {
			t.Errorf("record %d (%s %s) has no caller service", r.ID, r.Kind, r.Method)
		}
		switch {
		case r.Kind == correlate.KindFanout && r.Deliveries != agents:
			t.Errorf("fanout %s reached %d consumers, want every agent (%d)", r.Method, r.Deliveries, agents)
		case r.Kind == correlate.KindCall && r.Status != correlate.StatusTimeout && (r.Callee == nil || r.Callee.Service == ""):
			t.Errorf("answered call %s has no callee", r.Method)
		case r.Kind == correlate.KindCall && r.Status == correlate.StatusOK && r.ReplyDelivered == nil:
			t.Errorf("ok call %s has no reply_delivered", r.Method)
		}
	}
	keys := map[cloudsim.Key]bool{}
	for k := range want {
		keys[k] = true
	}
	for k := range got {
		keys[k] = true
	}
	sorted := make([]cloudsim.Key, 0, len(keys))
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Slice(sorted, func(i, j int) bool { return fmt.Sprint(sorted[i]) < fmt.Sprint(sorted[j]) })
	total := 0
	for _, k := range sorted {
		total += want[k]
		if got[k] != want[k] {
			t.Errorf("%-13s %-28s %-8s cloud sent %3d, amqptrace recorded %3d", k.Kind, k.Method, k.Status, want[k], got[k])
		}
	}
	if len(recs) != total {
		t.Errorf("%d records for %d messages the cloud sent", len(recs), total)
	}
	if heartbeats != counts.Heartbeats {
		t.Errorf("records carry %d heartbeats, the cloud's servers sent %d", heartbeats, counts.Heartbeats)
	}
	if late != counts.LateReplies {
		t.Errorf("%d records with a late reply, the cloud counted %d late replies", late, counts.LateReplies)
	}
	t.Logf("%d records over %d (kind, method, status) groups, statuses %v, %d heartbeats, %d late replies, %d emitted incomplete at shutdown",
		len(recs), len(sorted), statuses, heartbeats, late, incomplete)
}
