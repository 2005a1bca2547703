// Package browsertest starts Debian's headless Chromium for tests (driven with chromedp) and saves screenshots as
// test artifacts. Without chromium a test is skipped locally and fails in CI (CI=true), like the broker tests.
package browsertest

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/amqptrace/amqptrace/internal/brokertest"
)

// ChromiumPath is Debian's chromium (package chromium; `make deps` installs it).
const ChromiumPath = "/usr/bin/chromium"

// Start runs a headless Chromium for one test and returns a chromedp context for it; Cleanup closes it. The flags
// let it run as root in a container and keep it from reaching for anything but the pages it is sent to (this
// machine's network is closed, and background requests would fail by the dozen).
func Start(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(ChromiumPath); err != nil {
		if brokertest.InCI() {
			t.Fatalf("chromium not found at %s (make deps installs Debian's chromium): %v", ChromiumPath, err)
		}
		t.Skipf("chromium not found at %s", ChromiumPath)
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(ChromiumPath),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1600, 1000),
	)
	ctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelCtx(); cancelAlloc() })
	// Start the browser on the long-lived context: a timeout here would bound the browser's life, not one step.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// Screenshot writes a PNG of the page to $AMQPTRACE_ARTIFACTS (or the test's temp dir) and returns its path.
func Screenshot(t *testing.T, ctx context.Context, name string) string {
	t.Helper()
	dir := os.Getenv("AMQPTRACE_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(sctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	p := filepath.Join(dir, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", p)
	return p
}
