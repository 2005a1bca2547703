package main

import (
	"bytes"
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/amqptrace/amqptrace/correlate"
	"github.com/amqptrace/amqptrace/internal/testio"
	"github.com/amqptrace/amqptrace/ui"
)

func tailRecord(id uint64, kind correlate.Kind, status correlate.Status, method, caller, callee string, dur, queue time.Duration) *correlate.Record {
	pub := time.Date(2026, 12, 2, 3, 4, 5, 6e6, time.UTC)
	r := &correlate.Record{ID: id, Kind: kind, Status: status, Method: method, Published: &pub,
		Caller: &correlate.Endpoint{Service: caller}, Callee: &correlate.Endpoint{Service: callee},
		DurationUS: dur.Microseconds(), QueueUS: queue.Microseconds()}
	if status == correlate.StatusError {
		r.Error = &correlate.RemoteError{Class: "NoValidHost"}
	}
	return r
}

// tailUI runs a real UI server (the websocket tail reads) with the given token.
func tailUI(t *testing.T, token string) (*ui.Server, string) {
	t.Helper()
	s := ui.New(ui.Config{Token: token, UpdateEvery: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(func() { cancel(); <-done; srv.Close() })
	return s, srv.URL
}

// amqptrace tail follows the UI's websocket: history first, then live calls, filtered, with wire strings made safe
// for the terminal.
func TestTailFollowsTheUI(t *testing.T) {
	s, url := tailUI(t, "s3cret")
	s.Record(tailRecord(1, correlate.KindCall, correlate.StatusOK, "select_destinations", "nova-conductor", "nova-scheduler", 1500*time.Millisecond, 300*time.Millisecond))
	s.Record(tailRecord(2, correlate.KindCall, correlate.StatusOK, "fast_call", "nova-conductor", "nova-scheduler", 2*time.Millisecond, 0))
	s.Record(tailRecord(3, correlate.KindCall, correlate.StatusOK, "other_service", "neutron-server", "neutron-dhcp-agent", 5*time.Second, 0))

	var out, errb testio.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() {
		done <- runContext(ctx, []string{"tail", "--http", url, "--http-token", "s3cret", "--service", "NOVA", "--slower-than", "1s"}, &out, &errb)
	}()
	waitUntil(t, "the history row", func() bool { return strings.Contains(out.String(), "select_destinations") })
	// Live: an error from the scheduler, with an escape sequence in its method name, and one the filter drops.
	s.Record(tailRecord(4, correlate.KindCall, correlate.StatusError, "build\x1b[2Jnow", "nova-conductor", "nova-scheduler", 2*time.Second, 0))
	s.Record(tailRecord(5, correlate.KindCast, correlate.StatusOK, "too_fast", "nova-api", "nova-conductor", time.Millisecond, 0))
	waitUntil(t, "the live row", func() bool { return strings.Contains(out.String(), "NoValidHost") })
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("tail exited %d after its context ended (stderr %q)", code, errb.String())
	}
	got := out.String()
	for _, want := range []string{"TIME UTC", "03:04:05.006", "1500.0", "300.0", "nova-conductor → nova-scheduler  select_destinations", "build\uFFFD[2Jnow"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	for _, gone := range []string{"fast_call", "other_service", "too_fast", "\x1b"} {
		if strings.Contains(got, gone) {
			t.Errorf("output has %q, which the filter or the terminal guard should have kept out:\n%s", gone, got)
		}
	}
}

// A wrong token is one line naming the flag to fix, not a reconnect loop.
func TestTailRefusedTokenIsOneLine(t *testing.T) {
	_, url := tailUI(t, "s3cret")
	var out, errb bytes.Buffer
	code := run([]string{"tail", "--http", url, "--http-token", "wrong"}, &out, &errb)
	lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
	if code != 1 || len(lines) != 1 || !strings.Contains(lines[0], "--http-token") {
		t.Errorf("code %d, stderr %q; want 1 and one line naming --http-token", code, errb.String())
	}
	code = run([]string{"tail", "--kind", "rpc"}, &out, &errb)
	if code != 2 {
		t.Errorf("--kind rpc: code %d, want 2", code)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second) // liveness bound for a broken build, not a timing assertion
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
