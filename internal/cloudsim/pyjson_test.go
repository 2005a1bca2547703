package cloudsim

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// python3 returns the Debian interpreter that has oslo.messaging, or skips (outside CI) when it is missing.
func python3(t *testing.T) string {
	t.Helper()
	const py = "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is required in CI: %v", py, err)
		}
		t.Skipf("%s not installed: %v", py, err)
	}
	return py
}

// checkWithPython feeds lines to a Python script on stdin and fails the test with its output if it exits non-zero.
func checkWithPython(t *testing.T, script string, lines []string) string {
	t.Helper()
	cmd := exec.Command(python3(t), "-c", script)
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python check failed: %v\n%s", err, out)
	}
	return string(out)
}

// redumpScript re-serialises every line with json.dumps (kombu's and oslo's serializer) and prints MISMATCH
// lines; our encoder must produce the same bytes.
const redumpScript = `
import json, sys
n = 0
for line in sys.stdin:
    line = line.rstrip("\n")
    if not line:
        continue
    again = json.dumps(json.loads(line))
    if again != line:
        print("MISMATCH\n go: %s\n py: %s" % (line, again))
        sys.exit(1)
    n += 1
print("ok", n)
`

func TestPyDumpsMatchesPython(t *testing.T) {
	ts := time.Date(2024, 5, 1, 12, 0, 0, 733459000, time.UTC)
	values := []any{
		object{{"a", 1}, {"b", "x"}, {"c", nil}, {"d", true}, {"e", false}, {"f", 1.5}, {"g", 2.0}},
		object{{"quote\"back\\slash", "tab\tnl\ncr\rbs\bff\f"}, {"ctl", "\x01\x1f\x7f"}},
		object{{"html", "<a href='x'>&amp;</a> / slash"}, {"unicode", "é ü 日本 🎉"}},
		[]any{[]string{"x", "y"}, []object{{{"k", int64(-42)}}}, object{}, []any{}},
		object{{"nested", pyDumps(object{{"inner", "with \"quotes\" and é"}})}},
		object{{"ts", pyDatetime(ts)}},
	}
	var lines []string
	for _, v := range values {
		lines = append(lines, pyDumps(v))
	}
	out := checkWithPython(t, redumpScript, lines)
	if !strings.HasPrefix(out, "ok 6") {
		t.Fatalf("python said %q", out)
	}
}

func TestPyDatetime(t *testing.T) {
	for _, tc := range []struct {
		t    time.Time
		want string
	}{
		{time.Date(2024, 5, 1, 12, 0, 0, 733459000, time.UTC), "2024-05-01 12:00:00.733459"},
		{time.Date(2024, 5, 1, 12, 0, 0, 1000, time.UTC), "2024-05-01 12:00:00.000001"},
		{time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC), "2024-05-01 12:00:00"}, // str(datetime) drops .000000
	} {
		if got := pyDatetime(tc.t); got != tc.want {
			t.Errorf("pyDatetime(%v) = %q, want %q", tc.t, got, tc.want)
		}
	}
}

func TestEnvelopePrefix(t *testing.T) {
	rc := newUserContext("192.0.2.10", time.Now())
	body := string((&rpcRequest{Method: "m", Args: object{}}).body(rc, hexID()))
	const prefix = `{"oslo.version": "2.0", "oslo.message": "{\"method\": \"m\", \"args\": {}, \"_unique_id\": \"`
	if !strings.HasPrefix(body, prefix) {
		t.Fatalf("body starts %q, want %q", body[:min(len(body), len(prefix))], prefix)
	}
}
