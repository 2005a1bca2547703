package correlate

import (
	"testing"
	"time"
)

// The topology's expectations, without frames: which queues a publish can still be delivered from.
func TestTopologyExpect(t *testing.T) {
	tp := newTopology()
	tp.declareExchange("nova", "topic", nil, "")
	tp.declareExchange("compute_fanout", "fanout", nil, "")
	tp.declareQueue("compute", &queueFlags{}, nil, "")
	tp.declareQueue("compute.cmp1", &queueFlags{ttl: 30 * time.Second}, []string{"compute"}, "")
	tp.declareQueue("compute_fanout_aaaa", &queueFlags{expires: true}, nil, "")
	tp.declareQueue("compute_fanout_bbbb", &queueFlags{expires: true}, nil, "")
	tp.declareQueue("scratch", &queueFlags{autoDelete: true}, nil, "")
	tp.bind("compute", "nova", "compute")
	tp.bind("compute.cmp1", "nova", "compute.cmp1")
	tp.bind("compute_fanout_aaaa", "compute_fanout", "compute")
	tp.bind("compute_fanout_bbbb", "compute_fanout", "compute")
	tp.bind("scratch", "nova", "scratch")
	for _, q := range []string{"compute", "compute.cmp1", "compute_fanout_aaaa", "compute_fanout_bbbb", "scratch"} {
		tp.consumerAdded(q, Endpoint{}, 0)
	}
	if topic, server := tp.splitRPC("compute.cmp1"); topic != "compute" || server != "cmp1" {
		t.Errorf("splitRPC = %q %q", topic, server)
	}
	if e := tp.expect("compute_fanout", "compute"); e.now != 2 || e.queued != 0 {
		t.Errorf("fanout with two servers: %+v", e)
	}

	// cmp1 stops: its server queue keeps messages for its restart, its fanout queue (x-expires) does not, and
	// the auto-delete queue is gone with its consumer.
	tp.consumerGone("compute.cmp1", Endpoint{})
	tp.consumerGone("compute_fanout_aaaa", Endpoint{})
	tp.consumerGone("scratch", Endpoint{})
	if e := tp.expect("nova", "compute.cmp1"); e.now != 0 || e.queued != 1 || e.ttl != 30*time.Second {
		t.Errorf("server queue of a stopped server: %+v", e)
	}
	if e := tp.expect("compute_fanout", "compute"); e.now != 1 || e.queued != 0 {
		t.Errorf("fanout after one server stopped: %+v", e)
	}
	if e := tp.expect("nova", "scratch"); e.total() != 0 || tp.queues["scratch"] != nil {
		t.Errorf("auto-delete queue after its consumer: %+v", e)
	}
	// A queue deleted (oslo deletes its fanout queue on a clean stop) is no longer expected at all.
	tp.deleteQueue("compute_fanout_bbbb")
	if e := tp.expect("compute_fanout", "compute"); e.total() != 0 {
		t.Errorf("fanout after its queues went: %+v", e)
	}
	// A queue never consumed through this proxy is not waited for.
	tp.declareQueue("notifications.info", &queueFlags{}, nil, "")
	tp.bind("notifications.info", "nova", "notifications.info")
	if e := tp.expect("nova", "notifications.info"); e.total() != 0 {
		t.Errorf("unconsumed queue: %+v", e)
	}
}
