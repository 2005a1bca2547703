package correlate

import (
	"encoding/json"
	"testing"
	"time"
)

// A delivery of a body just published reuses the publish's parse, and the record is the one a fresh parse of the
// delivery gives.
func TestDeliveriesReuseThePublishParse(t *testing.T) {
	f := failureJSON("InstanceNotFound_Remote", "nova.exception_Remote", "Instance 44 could not be found.")
	replies := [][]byte{replyBody("msg1", "u2", []string{"host1"}, nil, true), replyBody("msg2", "u4", nil, f, true)}
	run := func(reuse bool) ([]byte, Stats) {
		c := newCloud(t, Config{})
		if !reuse {
			// A cache with another seed knows none of the publishes: every delivery is parsed.
			c.beforeDeliver = func() { c.h.c.bodies = newBodyCache() }
		}
		c.call("msg1", "u1", 1, replies[0])
		c.call("msg2", "u3", 2, replies[1])
		rs := c.h.records()
		if len(rs) != 2 {
			t.Fatalf("got %d records: %s", len(rs), dump(rs))
		}
		j, err := json.Marshal(rs)
		if err != nil {
			t.Fatal(err)
		}
		return j, c.h.c.Stats()
	}
	reused, st := run(true)
	parsed, st2 := run(false)
	if st.BodiesReused != 4 || st2.BodiesReused != 0 {
		t.Fatalf("bodies reused: %d with the cache, %d without; want 4 and 0", st.BodiesReused, st2.BodiesReused)
	}
	if string(reused) != string(parsed) {
		t.Fatalf("records differ:\nreused %s\nparsed %s", reused, parsed)
	}
}

// The cache keys on the compression the properties announce as well as the bytes, and a body that did not parse is
// counted as a parse failure for every message that carried it, as before there was a cache.
func TestBodyReuseNeedsSameBytesAndCompression(t *testing.T) {
	h := newHarness(t, Config{})
	api := h.conn("nova-api", 7, "10.0.0.9")
	comp := h.conn("nova-compute", 8, "10.0.0.10")
	tag := comp.consume("compute")

	body := castBody("refresh", "u1", reqID, nil)
	api.publish("nova", "compute", false, osloProps, body)
	gz := osloProps
	gz.ContentEncoding = "gzip" // not gzip bytes: decompression fails and the body is read as it is
	comp.deliver(tag, 1, "nova", "compute", gz, body)
	other := castBody("refresh", "u2", reqID, nil) // same length, other bytes
	comp.deliver(tag, 2, "nova", "compute", osloProps, other)
	if st := h.c.Stats(); st.BodiesReused != 0 {
		t.Fatalf("reused %d parses for bodies that were not published as they were delivered", st.BodiesReused)
	}

	bad := []byte(`{"oslo.version": "2.0", "oslo.message": "not JSON"}`)
	api.publish("nova", "compute", false, osloProps, bad)
	comp.deliver(tag, 3, "nova", "compute", osloProps, bad)
	h.advance(time.Minute)
	if st := h.c.Stats(); st.BodiesReused != 1 || st.ParseFailures != 2 {
		t.Fatalf("bodies reused %d, parse failures %d; want 1 and 2", st.BodiesReused, st.ParseFailures)
	}
}
