package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/amqptrace/amqptrace/internal/brokertest"
)

// waitEventLines waits until the file at path holds at least n lines, or the process exits, or a minute passes.
func waitEventLines(t *testing.T, p *proc, path string, n int) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(time.Minute)
	for {
		if b, err := os.ReadFile(path); err == nil && bytes.Count(b, []byte{'\n'}) >= n {
			return
		}
		select {
		case <-tick.C:
		case <-p.done:
			t.Fatalf("amqptrace exited before %s held %d lines: %v", filepath.Base(path), n, p.err)
		case <-deadline:
			t.Fatalf("%s never held %d lines", filepath.Base(path), n)
		}
	}
}

// The real binary, killed with SIGKILL while calls finish, then restarted on the same events file: what the kill
// left is whole lines, a torn tail (what a crash inside write(2) on another system, or an older amqptrace, leaves)
// is cut at the restart and logged, and then logrotate's rename + SIGHUP moves the writes to a new file. Every line
// of both files is one record.
func TestE2EEventsFileSurvivesKillAndRotation(t *testing.T) {
	skipShort(t)
	broker := brokertest.Require(t)
	v := testVhost(t)
	dir := t.TempDir()
	events := filepath.Join(dir, "events.jsonl")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	start := func() (*proc, string) {
		p := startBin(t, "proxy", "--listen", "127.0.0.1:0", "--upstream", broker, "--http", "", "--events", events)
		listen, _ := p.listening(false)
		return p, v.url(listen)
	}
	calls := func(url string, n int) {
		t.Helper()
		queue := "e2e-events-" + randHex(4)
		stop := serve(t, dialPeer(t, url, "e2e-events-server"), queue)
		defer stop()
		c := newCaller(t, url)
		defer c.conn.Close()
		for range n {
			if err := c.call(ctx, queue); err != nil {
				t.Fatal(err)
			}
		}
	}

	p, url := start()
	calls(url, 5)
	waitEventLines(t, p, events, 5)
	p.signal(syscall.SIGKILL)
	p.wait(time.Minute)
	b, err := os.ReadFile(events)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) == 0 || b[len(b)-1] != '\n' {
		t.Fatalf("after SIGKILL the events file ends in a partial line: %q", b[max(0, len(b)-60):])
	}
	whole := len(b)
	torn := `{"kind":"call","status":"ok","method":"sel`
	if err := os.WriteFile(events, append(b, torn...), 0o640); err != nil {
		t.Fatal(err)
	}

	p, url = start()
	if _, ok := p.stderr.waitLine(10*time.Second, p.done, func(l string) bool {
		return strings.Contains(l, "partial line") && strings.Contains(l, "bytes_cut=42")
	}); !ok {
		t.Errorf("the restart did not log the cut tail (%d bytes)", len(torn))
	}
	if b, _ := os.ReadFile(events); len(b) != whole {
		t.Fatalf("after the restart the file is %d bytes, want the %d whole-line bytes", len(b), whole)
	}
	calls(url, 2)
	before := len(readEvents(t, events)) // the restart's two calls may be in either file once rotated
	rotated := events + ".1"
	if err := os.Rename(events, rotated); err != nil {
		t.Fatal(err)
	}
	p.signal(syscall.SIGHUP)
	if _, ok := p.stderr.waitLine(10*time.Second, p.done, func(l string) bool {
		return strings.Contains(l, "events file reopened")
	}); !ok {
		t.Fatalf("no reopen after SIGHUP (exited: %v)", p.err)
	}
	calls(url, 3)
	waitEventLines(t, p, events, 3)
	p.signal(syscall.SIGTERM)
	if code := p.wait(time.Minute); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
	old, cur := readEvents(t, rotated), readEvents(t, events)
	if len(old) < before || len(old)+len(cur) != 5+2+3 {
		t.Errorf("records: %d in the rotated file, %d in the new one; want 10 in all, at least %d in the rotated one",
			len(old), len(cur), before)
	}
}
