package metrics

import (
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/amqptrace/amqptrace/correlate"
)

// TestBucketBoundsAreRound reads the le labels as /metrics prints them: every bound is a round number (at most two
// significant digits, so `le="1"` and `le="0.01"` queries match), oslo.metrics' 0.01 and 100 are bounds, and
// neighbours are at most 1.67x apart.
func TestBucketBoundsAreRound(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	r := NewRecords(reg, Limits{})
	r.Record(&correlate.Record{Kind: correlate.KindCall, Status: correlate.StatusOK, Method: "m", Topic: "t",
		Published: at(0), Delivered: at(2), Replied: at(40), ReplyDelivered: at(43)})
	w := httptest.NewRecorder()
	Handler(reg).ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	page := w.Body.String()

	for _, fam := range []string{"amqptrace_rpc_client_duration_seconds", "amqptrace_rpc_server_duration_seconds",
		"amqptrace_rpc_queue_wait_seconds"} {
		re := regexp.MustCompile(`(?m)^` + fam + `_bucket\{.*le="([^"]+)"\}`)
		var les []string
		for _, m := range re.FindAllStringSubmatch(page, -1) {
			les = append(les, m[1])
		}
		if len(les) < 20 || les[len(les)-1] != "+Inf" {
			t.Fatalf("%s: bounds %v", fam, les)
		}
		seen := map[string]bool{}
		prev := 0.0
		for _, le := range les[:len(les)-1] {
			seen[le] = true
			v, err := strconv.ParseFloat(le, 64)
			if err != nil {
				t.Fatalf("%s: le=%q: %v", fam, le, err)
			}
			if digits := strings.Trim(strings.ReplaceAll(strings.Split(le, "e")[0], ".", ""), "0"); len(digits) > 2 {
				t.Errorf("%s: le=%q is not a round number", fam, le)
			}
			if prev > 0 && v/prev > 1.67 {
				t.Errorf("%s: %v after %v is %.2fx apart", fam, v, prev, v/prev)
			}
			prev = v
		}
		for _, want := range []string{"0.001", "0.01", "0.1", "1", "10", "100"} {
			if !seen[want] {
				t.Errorf("%s: no le=%q bound (have %v)", fam, want, les)
			}
		}
	}
}
