package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"go.yaml.in/yaml/v3"

	"github.com/amqptrace/amqptrace/internal/brokertest"
	"github.com/amqptrace/amqptrace/internal/cloudsim"
)

const deployDir = "../../deploy"

// requireTool returns the path of a command-line tool; outside CI a missing one skips, in CI it fails, so a CI
// machine without Debian's prometheus package cannot pass the alert tests by not running them.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if brokertest.InCI() {
			t.Fatalf("%s not installed (scripts/ensure-test-deps.sh installs it): %v", name, err)
		}
		t.Skipf("%s not installed: %v", name, err)
	}
	return p
}

// TestDeployFilesParse parses every YAML (all documents) and JSON file under deploy/, so a shipped file with a
// tab, a bad indent or a trailing comma fails here and not on the operator's cluster.
func TestDeployFilesParse(t *testing.T) {
	n := 0
	err := filepath.WalkDir(deployDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		switch filepath.Ext(path) {
		case ".yaml", ".yml":
			n++
			dec := yaml.NewDecoder(bytes.NewReader(b))
			for doc := 0; ; doc++ {
				var v any
				if err := dec.Decode(&v); errors.Is(err, io.EOF) {
					break
				} else if err != nil {
					t.Errorf("%s: document %d: %v", path, doc, err)
					break
				}
			}
		case ".json":
			n++
			var v any
			if err := json.Unmarshal(b, &v); err != nil {
				t.Errorf("%s: %v", path, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 5 {
		t.Fatalf("parsed %d files under %s; the walk missed the deploy files", n, deployDir)
	}
}

// TestPromtoolRules checks the shipped alert rules and runs their unit tests (each alert fired from synthetic
// series).
func TestPromtoolRules(t *testing.T) {
	pt := requireTool(t, "promtool")
	dir := filepath.Join(deployDir, "prometheus")
	for _, args := range [][]string{{"check", "rules", "amqptrace-rules.yaml"}, {"test", "rules", "amqptrace-rules.test.yaml"}} {
		cmd := exec.Command(pt, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestPrometheusRuleMatchesRules: the Kubernetes PrometheusRule carries the same groups as the rules file.
func TestPrometheusRuleMatchesRules(t *testing.T) {
	var rules struct {
		Groups []any `yaml:"groups"`
	}
	readYAML(t, filepath.Join(deployDir, "prometheus", "amqptrace-rules.yaml"), &rules)
	b, err := os.ReadFile(filepath.Join(deployDir, "kubernetes", "monitoring.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	found := false
	for {
		var doc struct {
			Kind string `yaml:"kind"`
			Spec struct {
				Groups []any `yaml:"groups"`
			} `yaml:"spec"`
		}
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if doc.Kind == "PrometheusRule" {
			found = true
			if len(rules.Groups) == 0 || !reflect.DeepEqual(doc.Spec.Groups, rules.Groups) {
				t.Error("PrometheusRule spec.groups differ from deploy/prometheus/amqptrace-rules.yaml")
			}
		}
	}
	if !found {
		t.Error("no PrometheusRule in deploy/kubernetes/monitoring.yaml")
	}
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

var metricName = regexp.MustCompile(`\bamqptrace_[a-z0-9_]+`)

// referencedMetrics collects every amqptrace_* name in the dashboard's and the rules' expressions.
func referencedMetrics(t *testing.T) map[string][]string {
	t.Helper()
	refs := map[string][]string{}
	add := func(where, expr string) {
		for _, m := range metricName.FindAllString(expr, -1) {
			refs[m] = append(refs[m], where)
		}
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	readYAML(t, filepath.Join(deployDir, "prometheus", "amqptrace-rules.yaml"), &rules)
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			add("alert "+r.Alert, r.Expr)
		}
	}
	b, err := os.ReadFile(filepath.Join(deployDir, "grafana", "amqptrace-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash any
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	// Walk the whole document: panel targets and template variable queries alike.
	var walk func(where string, v any)
	walk = func(where string, v any) {
		switch x := v.(type) {
		case map[string]any:
			if title, ok := x["title"].(string); ok {
				where = "panel " + title
			}
			for k, c := range x {
				if s, ok := c.(string); ok && (k == "expr" || k == "query" || k == "definition") {
					add(where, s)
				}
				walk(where, c)
			}
		case []any:
			for _, c := range x {
				walk(where, c)
			}
		}
	}
	walk("dashboard", dash)
	if len(refs) < 10 {
		t.Fatalf("found %d metric names in the dashboard and rules; the parse missed them", len(refs))
	}
	return refs
}

// exportedName says whether a referenced series name is served in the scrape: a family itself, or a histogram's
// _bucket, _sum or _count series.
func exportedName(fams map[string]bool, hist map[string]bool, name string) bool {
	if fams[name] {
		return true
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suf); ok && hist[base] {
			return true
		}
	}
	return false
}

// TestDeployMetricsExist runs the real binary against RabbitMQ, drives a simulated OpenStack cloud (with slow
// calls, so the in-flight gauges have something in hand) through it, and scrapes /metrics until every metric the
// dashboard and the alert rules use has been served. Gauges of what is waiting appear only while something waits,
// so a name counts once any scrape served it.
func TestDeployMetricsExist(t *testing.T) {
	skipShort(t)
	refs := referencedMetrics(t)
	broker := brokertest.Require(t)
	v := testVhost(t)
	p, listen, httpAddr, client := startProxyHTTP(t, broker)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cloud := cloudsim.New(cloudsim.Config{URL: v.url(listen), Rate: 4, Computes: 1, Agents: 1, Prefix: v.prefix,
		Seed: 5, ErrorRate: 0.1, SlowRate: 0.5, TimeoutRate: -1})
	cloudErr := make(chan error, 1)
	go func() { cloudErr <- cloud.Run(ctx) }()

	fams, hist := map[string]bool{}, map[string]bool{}
	missing := func() []string {
		var out []string
		for name := range refs {
			if !exportedName(fams, hist, name) {
				out = append(out, name)
			}
		}
		sort.Strings(out)
		return out
	}
	deadline := time.Now().Add(90 * time.Second)
	for len(missing()) > 0 && time.Now().Before(deadline) {
		for name, mf := range scrapeMetrics(t, client, httpAddr) {
			if len(mf.GetMetric()) > 0 {
				fams[name] = true
				if mf.GetType() == dto.MetricType_HISTOGRAM {
					hist[name] = true
				}
			}
		}
		select {
		case <-p.done:
			t.Fatalf("amqptrace exited: %v", p.err)
		case err := <-cloudErr:
			t.Fatalf("cloud stopped early: %v", err)
		case <-time.After(100 * time.Millisecond): // scrape interval, not a wait for a result
		}
	}
	cancel()
	<-cloudErr
	for _, name := range missing() {
		t.Errorf("%s (used by %s) was never served on /metrics", name, strings.Join(refs[name], ", "))
	}
}

// TestJaegerPinnedOnce: the README, the compose file and every manifest name one Jaeger release, the one whose Go
// module scripts/jaeger.sh builds for the tests, so what an operator runs is what the tests ran against.
func TestJaegerPinnedOnce(t *testing.T) {
	re := regexp.MustCompile(`jaegertracing/jaeger:([0-9][0-9.]*)`)
	tags := map[string][]string{}
	files := []string{filepath.Join(deployDir, "..", "README.md")}
	_ = filepath.WalkDir(deployDir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, path)
		}
		return err
	})
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			tags[m[1]] = append(tags[m[1]], f)
		}
	}
	script, err := os.ReadFile(filepath.Join(deployDir, "..", "scripts", "jaeger.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if len(tags) != 1 {
		t.Fatalf("Jaeger images named: %v; want one release everywhere", tags)
	}
	for tag := range tags {
		if !strings.Contains(string(script), "Jaeger v"+tag+" release") {
			t.Errorf("deploy files pin jaegertracing/jaeger:%s, but scripts/jaeger.sh builds another release", tag)
		}
	}
}

// TestDeployScriptsAndLogrotate: the devstack plugin parses as bash, and logrotate accepts the shipped snippet
// (debug mode: it reads and checks the configuration, rotates nothing).
func TestDeployScriptsAndLogrotate(t *testing.T) {
	for _, f := range []string{"devstack/plugin.sh", "devstack/settings"} {
		if out, err := exec.Command("bash", "-n", filepath.Join(deployDir, f)).CombinedOutput(); err != nil {
			t.Errorf("bash -n %s: %v\n%s", f, err, out)
		}
	}
	lr, err := exec.LookPath("logrotate")
	if err != nil {
		lr = requireTool(t, "/usr/sbin/logrotate")
	}
	state := filepath.Join(t.TempDir(), "state")
	out, err := exec.Command(lr, "--debug", "--state", state, filepath.Join(deployDir, "logrotate", "amqptrace")).CombinedOutput()
	if err != nil || bytes.Contains(out, []byte("error:")) {
		t.Errorf("logrotate --debug: %v\n%s", err, out)
	}
}
