package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The capture workload measures amqptrace's passive mode, which has no haproxy to compare with, so its figures sit
// in the amqptrace column and the proxy's own figure is named beside them (metricSpec.beside).
//
//   - live: `amqptrace capture --interface lo --port <broker port>` runs while the throughput workload's clients
//     talk to the broker directly, at the direct path's rate. Its CPU per message is divided by the messages those
//     clients consumed; every message crosses the wire twice (publish, delivery), as it does through the proxy. The
//     kernel drops come from its stop line, for the whole live run. Anything else on the broker's port while it
//     runs (other users of a shared broker) is captured too and only makes its CPU figure worse.
//   - replay: tcpdump records the rpc workload (direct) on lo; `amqptrace replay` then reads that file round by
//     round on one core (taskset -c 0 and GOMAXPROCS=1): the file's size and the records it printed, over the
//     replay's wall time from exec to exit (process start included, so the figure errs low).
//
// Both need what live capture needs (CAP_NET_RAW, tcpdump); without it the run says why in a note and the rows
// are n/a.

// captureRecordFor bounds how long the rpc workload is recorded for the replay figure.
const captureRecordFor = 3 * time.Second

// runCaptureWorkload runs both parts and adds their metrics to res under the workload "capture", path amqptrace.
func runCaptureWorkload(ctx context.Context, e *env, rounds int, bin, brokerURL, upstream string, res results, note func(string, ...any)) error {
	_, port, err := net.SplitHostPort(upstream)
	if err != nil {
		return err
	}
	var errs []error
	if err := runLiveCapture(ctx, e, rounds, bin, brokerURL, port, res); err != nil {
		errs = append(errs, fmt.Errorf("live: %w", err))
	}
	if ctx.Err() == nil {
		if err := runReplayBench(ctx, e, rounds, bin, brokerURL, port, res, note); err != nil {
			errs = append(errs, fmt.Errorf("replay: %w", err))
		}
	}
	return errors.Join(errs...)
}

func runLiveCapture(ctx context.Context, e *env, rounds int, bin, brokerURL, port string, res results) error {
	cmd := exec.Command(bin, "capture", "--interface", "lo", "--port", port, "--http", "")
	cmd.Env = withoutPrefix(os.Environ(), "OTEL_")
	p, err := startWatched(ctx, "amqptrace capture", cmd, `msg=capturing`)
	if err != nil {
		return err
	}
	defer p.stop(15 * time.Second)
	t := &target{path: "capture", url: brokerURL, proc: p}
	w := slicedWorkloads[0] // throughput
	err = interleave(ctx, e, w, []*target{t}, rounds, func(_ int, _ string, m metrics) {
		out := metrics{"live_msgs_per_s": m["msgs_per_s"]}
		if v, ok := m["cpu_us_per_msg"]; ok {
			out["cpu_us_per_msg"] = v
		}
		res.add("capture", pathAmqptrace, out)
	})
	p.stop(15 * time.Second)
	if err != nil {
		return err
	}
	st, ok := parseCaptureStop(p.output.String())
	if !ok {
		return fmt.Errorf("amqptrace capture did not log its totals at exit; its output:\n%s", p.output.String())
	}
	res.add("capture", pathAmqptrace, metrics{"kernel_drops": float64(st["kernel_drops"]), "gaps": float64(st["gaps"])})
	return nil
}

func runReplayBench(ctx context.Context, e *env, rounds int, bin, brokerURL, port string, res results, note func(string, ...any)) error {
	tcpdump, err := exec.LookPath("tcpdump")
	if err != nil {
		return fmt.Errorf("tcpdump is needed to record the rpc workload (scripts/ensure-test-deps.sh installs it): %w", err)
	}
	dir, err := os.MkdirTemp("", "amqptrace-bench-replay-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "rpc.pcap")
	// -B: a 64 MiB kernel buffer, so that the recording itself drops nothing; -U: write packet by packet, so that
	// the file is whole when tcpdump exits on SIGINT.
	rec, err := startWatched(ctx, "tcpdump", exec.Command(tcpdump, "-i", "lo", "-s", "0", "-B", "65536", "-U", "-w", file,
		"tcp", "port", port), `listening on`)
	if err != nil {
		return err
	}
	short := *e
	short.duration = min(e.duration, captureRecordFor)
	t := &target{path: "capture-rpc", url: brokerURL}
	err = interleave(ctx, &short, slicedWorkloads[1], []*target{t}, 1, func(int, string, metrics) {})
	_ = rec.cmd.Process.Signal(syscall.SIGINT)
	rec.stop(10 * time.Second)
	if err != nil {
		return fmt.Errorf("recording the rpc workload: %w", err)
	}
	if n, ok := tcpdumpDrops(rec.output.String()); !ok || n > 0 {
		note("capture: tcpdump's recording of the rpc workload reports %d packets dropped by the kernel (ok=%v): the replay figure reads a file with holes", n, ok)
	}
	fi, err := os.Stat(file)
	if err != nil {
		return err
	}
	for round := 1; round <= rounds && ctx.Err() == nil; round++ {
		m, err := timeReplay(ctx, bin, file, fi.Size())
		if err != nil {
			return err
		}
		e.log.Info("done", "round", fmt.Sprintf("%d/%d", round, rounds), "workload", "capture", "file_mb", float64(fi.Size())/1e6,
			"result", summary("capture", m))
		res.add("capture", pathAmqptrace, m)
	}
	return ctx.Err()
}

// timeReplay runs amqptrace replay on file, on one core, and returns its MB/s and records/s.
func timeReplay(ctx context.Context, bin, file string, size int64) (metrics, error) {
	args := []string{bin, "replay", "--http", "", file}
	if ts, err := exec.LookPath("taskset"); err == nil {
		args = append([]string{ts, "-c", "0"}, args...)
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = append(withoutPrefix(os.Environ(), "OTEL_"), "GOMAXPROCS=1")
	out := &tailBuffer{max: 16 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	if err != nil {
		return nil, fmt.Errorf("amqptrace replay: %w; its output:\n%s", err, out.String())
	}
	st, ok := parseCaptureStop(out.String())
	if !ok {
		return nil, fmt.Errorf("amqptrace replay did not log its totals; its output:\n%s", out.String())
	}
	if st["records"] == 0 {
		return nil, fmt.Errorf("amqptrace replay made no record of the rpc workload's capture; its output:\n%s", out.String())
	}
	return metrics{"replay_mb_per_s": float64(size) / 1e6 / wall.Seconds(),
		"replay_records_per_s": float64(st["records"]) / wall.Seconds()}, nil
}

// captureStopFields are the counters read from the "capture stopped" line of amqptrace capture and replay.
var captureStopFields = [...]string{"packets", "kernel_drops", "gaps", "messages", "records"}

// parseCaptureStop finds the last "capture stopped" line (slog text format) and returns its counters; ok is false
// when the line, or one of captureStopFields, is missing.
func parseCaptureStop(out string) (map[string]uint64, bool) {
	return logCounters(out, "capture stopped", captureStopFields[:])
}

var tcpdumpDropRE = regexp.MustCompile(`(?m)^(\d+) packets dropped by kernel$`)

// tcpdumpDrops reads "N packets dropped by kernel" from tcpdump's exit summary.
func tcpdumpDrops(out string) (uint64, bool) {
	m := tcpdumpDropRE.FindStringSubmatch(out)
	if m == nil {
		return 0, false
	}
	n, err := strconv.ParseUint(m[1], 10, 64)
	return n, err == nil
}

// startWatched starts cmd (its output kept in a tailBuffer) and waits until ready appears in that output: the
// process says itself when it is capturing. It dies with the bench (Pdeathsig).
func startWatched(ctx context.Context, kind string, cmd *exec.Cmd, ready string) (*proxyProc, error) {
	p := &proxyProc{kind: kind, cmd: cmd, output: &tailBuffer{max: 16 << 10}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.output, p.output
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", kind, err)
	}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	deadline := time.Now().Add(15 * time.Second)
	backoff := 10 * time.Millisecond
	for !strings.Contains(p.output.String(), ready) {
		if ok, werr := p.exited(); ok {
			return nil, fmt.Errorf("%s exited before it was ready (%v); its output:\n%s", kind, werr, p.output.String())
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			p.stop(2 * time.Second)
			return nil, fmt.Errorf("%s did not say %q within 15s; its output:\n%s", kind, ready, p.output.String())
		}
		// Neither program has a readiness notification but its log line, so we poll it, with backoff.
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
		case <-p.done:
		}
		t.Stop()
		backoff = min(backoff*2, 100*time.Millisecond)
	}
	return p, nil
}
