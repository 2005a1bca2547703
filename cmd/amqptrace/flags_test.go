package main

import (
	"bytes"
	"flag"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestEnvSetsFlagsCommandLineWins(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	var o options
	o.register(fs, "127.0.0.1:5673", "127.0.0.1:8080")
	if err := fs.Parse([]string{"--listen", "127.0.0.1:7000"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"AMQPTRACE_LISTEN":         "127.0.0.1:9999", // loses: given on the command line
		"AMQPTRACE_OTLP_ENDPOINT":  "127.0.0.1:4317",
		"AMQPTRACE_SHUTDOWN_GRACE": "42s",
		"AMQPTRACE_UPSTREAM_TLS":   "true",
	}
	if err := applyEnv(fs, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if o.listen != "127.0.0.1:7000" {
		t.Errorf("listen = %q, want the command line's value", o.listen)
	}
	if o.otlpEndpoint != "127.0.0.1:4317" || o.shutdownGrace != 42*time.Second || !o.upstreamTLS {
		t.Errorf("env not applied: otlp=%q grace=%v upstreamTLS=%v", o.otlpEndpoint, o.shutdownGrace, o.upstreamTLS)
	}
}

func TestEnvBadValueIsAnError(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	var o options
	o.register(fs, "a", "b")
	_ = fs.Parse(nil)
	err := applyEnv(fs, func(k string) string {
		if k == "AMQPTRACE_MAX_CONNS" {
			return "many"
		}
		return ""
	})
	if err == nil || !strings.Contains(err.Error(), "AMQPTRACE_MAX_CONNS") {
		t.Fatalf("err = %v, want one naming AMQPTRACE_MAX_CONNS", err)
	}
}

func TestUsageAndExitCodes(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "amqptrace ") {
		t.Errorf("version: code %d, out %q", code, out.String())
	}
	out.Reset()
	errb.Reset()
	// Help that was asked for is the command's output: standard output, so `amqptrace proxy --help | less` works.
	for _, cmd := range []string{"proxy", "demo", "capture", "replay"} {
		out.Reset()
		errb.Reset()
		if code := run([]string{cmd, "--help"}, &out, &errb); code != 0 || errb.Len() != 0 {
			t.Errorf("%s --help: code %d, stderr %q; want 0 and nothing on stderr", cmd, code, errb.String())
		}
		for _, want := range []string{"--otlp-endpoint", "$AMQPTRACE_OTLP_ENDPOINT", "$AMQPTRACE_HTTP_TOKEN"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("%s --help does not mention %s on stdout", cmd, want)
			}
		}
	}
	errb.Reset()
	if code := run([]string{"frobnicate"}, &out, &errb); code != 2 {
		t.Errorf("unknown command: code %d, want 2", code)
	}
	errb.Reset()
	if code := run([]string{"proxy", "--payload", "everything"}, &out, &errb); code != 2 {
		t.Errorf("bad --payload: code %d, want 2 (stderr %q)", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"proxy", "--http", "0.0.0.0:0", "--listen", "127.0.0.1:0"}, &out, &errb); code != 2 ||
		!strings.Contains(errb.String(), "--http-token") {
		t.Errorf("non-loopback --http without a token: code %d, stderr %q", code, errb.String())
	}
}

// deployVars returns the AMQPTRACE_* names a deploy file sets.
func deployVars(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var out []string
	for _, m := range regexp.MustCompile(`AMQPTRACE_[A-Z_]+`).FindAllString(string(b), -1) {
		if !seen[m] {
			seen[m] = true
			out = append(out, m)
		}
	}
	return out
}

// TestDeployFilesUseRealFlags keeps deploy/ honest: every AMQPTRACE_* variable the unit's environment file, the
// container image, the compose file and the Kubernetes manifests set must be a flag amqptrace has.
func TestDeployFilesUseRealFlags(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	var o options
	o.register(fs, "", "")
	known := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { known[envName(f.Name)] = true })
	files := []string{"systemd/amqptrace.env", "Dockerfile", "compose.yaml", "kubernetes/amqptrace.yaml"}
	for _, f := range files {
		vars := deployVars(t, filepath.Join("..", "..", "deploy", f))
		if len(vars) == 0 {
			t.Errorf("%s sets no AMQPTRACE_* variable", f)
		}
		for _, v := range vars {
			if !known[v] {
				t.Errorf("%s sets %s, which is no amqptrace flag", f, v)
			}
		}
	}
}

// TestKubernetesAndComposeParse parses the YAML with the system's python3-yaml (installed with oslo.messaging),
// so that a syntax slip in a manifest that cannot be applied here is still caught.
func TestKubernetesAndComposeParse(t *testing.T) {
	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		t.Skip("no /usr/bin/python3")
	}
	script := `import sys, yaml
docs = list(yaml.safe_load_all(open(sys.argv[1])))
kinds = sorted(d["kind"] for d in docs if d)
assert kinds == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service"], kinds
dep = next(d for d in docs if d and d["kind"] == "Deployment")
pdb = next(d for d in docs if d and d["kind"] == "PodDisruptionBudget")
assert pdb["spec"]["minAvailable"] < dep["spec"]["replicas"], "a PDB that allows no disruption blocks every drain"
assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
c = yaml.safe_load(open(sys.argv[2]))
assert set(c["services"]) == {"rabbitmq", "jaeger", "amqptrace"}, c["services"].keys()
print("ok")`
	out, err := exec.Command(py, "-c", script, "../../deploy/kubernetes/amqptrace.yaml", "../../deploy/compose.yaml").CombinedOutput()
	if err != nil {
		t.Fatalf("yaml: %v\n%s", err, out)
	}
}

// TestSystemdUnitVerifies runs `systemd-analyze verify` on the unit, pointed at a binary that exists.
func TestSystemdUnitVerifies(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("systemd-analyze missing (make deps installs Debian's systemd)")
		}
		t.Skip("systemd-analyze missing")
	}
	unit, err := os.ReadFile("../../deploy/systemd/amqptrace.service")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "amqptrace")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	patched := strings.ReplaceAll(string(unit), "/usr/local/bin/amqptrace", bin)
	path := filepath.Join(dir, "amqptrace.service")
	if err := os.WriteFile(path, []byte(patched), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", path).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// A malformed upstream address or an out-of-range port is refused at start-up: exit 2, one line naming the flag
// and the address. So is an unknown strategy or check.
func TestUpstreamFlagsAreChecked(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--upstream", "127.0.0.1:99999"}, `--upstream "127.0.0.1:99999": port "99999" is not a number from 1 to 65535`},
		{[]string{"--upstream", "127.0.0.1:5672,127.0.0.1:0"}, `--upstream "127.0.0.1:0": port "0"`},
		{[]string{"--upstream", "rabbit:amqp"}, `--upstream "rabbit:amqp": port "amqp"`},
		{[]string{"--upstream", "rabbit"}, `--upstream "rabbit": want host:port`},
		{[]string{"--upstream", ":5672"}, `--upstream ":5672": no host`},
		{[]string{"--upstream", " , "}, `--upstream: no broker address given`},
		{[]string{"--upstream-strategy", "random"}, `--upstream-strategy: unknown upstream strategy "random"`},
		{[]string{"--upstream-check", "http"}, `--upstream-check: unknown upstream check "http"`},
		{[]string{"--upstream-backoff", "-1s"}, `--upstream-backoff -1s: must not be negative`},
	} {
		var out, errb bytes.Buffer
		args := append([]string{"proxy", "--listen", "127.0.0.1:0", "--http", ""}, tc.args...)
		code := run(args, &out, &errb)
		lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
		if code != 2 || len(lines) != 1 || !strings.Contains(lines[0], tc.want) {
			t.Errorf("%v: code %d, stderr %q; want 2 and one line with %q", tc.args, code, errb.String(), tc.want)
		}
	}
}

// A mistake on the command line is one line on stderr that names the flag, with a hint where one helps, and exit
// status 2; the usage comes only with --help.
func TestFlagMistakesAreOneLine(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"proxy", "--bogus"}, "unknown flag --bogus (amqptrace proxy --help lists them)"},
		{[]string{"proxy", "--upstreem", "x:1"}, "unknown flag --upstreem; did you mean --upstream?"},
		{[]string{"proxy", "--reply-grace", "5"}, `--reply-grace "5": a duration needs a unit; did you mean 5s?`},
		{[]string{"proxy", "--reply-grace", "soon"}, `--reply-grace "soon": not a duration`},
		{[]string{"proxy", "--body-cap", "big"}, `--body-cap "big": `},
		{[]string{"proxy", "--sample-ratio", "2"}, "--sample-ratio 2: must be between 0 and 1"},
		{[]string{"demo", "--sample-ratio", "-0.5"}, "--sample-ratio -0.5: must be between 0 and 1"},
		{[]string{"replay", "--gap-timeout", "3", "x.pcap"}, `--gap-timeout "3": a duration needs a unit; did you mean 3s?`},
		{[]string{"proxy", "--listen"}, "--listen needs a value"},
		{[]string{"proxy", "--listen", "127.0.0.1:99999"}, `--listen "127.0.0.1:99999": port "99999" is not a number from 0 to 65535`},
		{[]string{"proxy", "--listen", "5673"}, `--listen "5673": want host:port`},
		{[]string{"demo", "--http", "127.0.0.1:80800"}, `--http "127.0.0.1:80800": port "80800"`},
		{[]string{"proxy", "--upstream", "ftp://nova:s3cr3tpw@rmq:5672/"}, `--upstream "ftp://nova:xxxxx@rmq:5672/": scheme "ftp"`},
		{[]string{"proxy", "--upstream", "amqps://rmq1,rmq2:5672"}, "--upstream: amqps:// and plain entries mixed"},
		{[]string{"proxy", "--payload", "everything"}, `--payload: unknown payload policy "everything"`},
		{[]string{"proxy", "--redact-patterns", "("}, `--redact-patterns: redaction pattern "(": error parsing regexp`},
		{[]string{"proxy", "--max-conns", "-1"}, "--max-conns -1: must not be negative"},
		{[]string{"proxy", "--ack-wait", "-5s"}, "--ack-wait -5s: must not be negative"},
		{[]string{"proxy", "--queue-horizon", "-1m"}, "--queue-horizon -1m0s: must not be negative"},
		{[]string{"replay", "--body-cap", "-1", "x.pcap"}, "--body-cap -1: must not be negative"},
	} {
		var out, errb bytes.Buffer
		code := run(tc.args, &out, &errb)
		lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
		if code != 2 || len(lines) != 1 || !strings.Contains(lines[0], tc.want) {
			t.Errorf("%v: code %d, stderr %q; want 2 and one line with %q", tc.args, code, errb.String(), tc.want)
		}
		if strings.Contains(lines[0], "usage:") || strings.Contains(lines[0], "correlate:") || strings.Contains(errb.String(), "s3cr3tpw") {
			t.Errorf("%v: stderr %q; want no usage: prefix, no package name and no password", tc.args, errb.String())
		}
	}
}

// --upstream takes what an operator copies from transport_url: only host and port are kept, since credentials and
// vhost are each client's own.
func TestUpstreamTakesTransportURLs(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		tls      bool
	}{
		{"10.0.0.5:5672", "10.0.0.5:5672", false},
		{"amqp://guest:guest@rmq.example:5673/", "rmq.example:5673", false},
		{"rabbit://nova:pw@ctl1:5672,nova:pw@ctl2:5672,nova:pw@ctl3/nova", "ctl1:5672,ctl2:5672,ctl3:5672", false},
		{"amqps://nova:pw@[fd00::5]/", "[fd00::5]:5671", true},
		{"amqp://rmq", "rmq:5672", false},
	} {
		got, tls, err := upstreamAddrs(tc.in)
		if err != nil || strings.Join(got, ",") != tc.want || tls != tc.tls {
			t.Errorf("upstreamAddrs(%q) = %q, tls %v, err %v; want %q, tls %v", tc.in, got, tls, err, tc.want, tc.tls)
		}
	}
}

// A variable with the prefix that sets no flag (a typo, or another command's flag) is named, with the nearest one.
func TestUnknownEnvIsNamed(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	var o options
	o.register(fs, "a", "b")
	got := unknownEnv(fs, []string{"AMQPTRACE_LISTN=x", "AMQPTRACE_LISTEN=y", "PATH=/bin", "AMQPTRACE_FROBNICATE_ALL=1"})
	want := [][2]string{{"AMQPTRACE_FROBNICATE_ALL", ""}, {"AMQPTRACE_LISTN", "AMQPTRACE_LISTEN"}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("unknownEnv = %q, want %q", got, want)
	}
}

// --memory-limit sets Go's soft limit to seven eighths of itself and the pending table's default cap to a quarter
// of itself; an explicit --max-pending-bytes stays; GOMEMLIMIT stands when the flag is not given.
func TestMemoryLimitSetsTheSoftLimitAndThePendingCap(t *testing.T) {
	var set []int64
	defer func(f func(int64) int64) { setMemoryLimit = f }(setMemoryLimit)
	setMemoryLimit = func(v int64) int64 {
		if v < 0 {
			return 1 << 30 // as if GOMEMLIMIT=1GiB
		}
		set = append(set, v)
		return 0
	}
	for _, tc := range []struct {
		name        string
		args        []string
		gomemlimit  string
		wantSet     []int64
		wantPending int
	}{
		{"defaults", nil, "", []int64{224 << 20}, 64 << 20},
		{"a larger budget", []string{"--memory-limit", "1073741824"}, "", []int64{896 << 20}, 256 << 20},
		{"an explicit cap", []string{"--max-pending-bytes", "1000000"}, "", []int64{224 << 20}, 1000000},
		{"no soft limit", []string{"--memory-limit", "0"}, "", nil, 64 << 20},
		{"GOMEMLIMIT", nil, "1GiB", nil, 256 << 20},
		{"GOMEMLIMIT and the flag", []string{"--memory-limit", "134217728"}, "1GiB", []int64{112 << 20}, 32 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("GOMEMLIMIT", tc.gomemlimit)
			set = nil
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			var o options
			o.register(fs, "127.0.0.1:5673", "127.0.0.1:8080")
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			got := o.applyMemoryLimit(slog.New(slog.DiscardHandler))
			if got != tc.wantPending || !slices.Equal(set, tc.wantSet) {
				t.Errorf("pending cap %d, soft limits set %v; want %d, %v", got, set, tc.wantPending, tc.wantSet)
			}
		})
	}
}
