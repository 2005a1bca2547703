package correlate

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/amqptrace/amqptrace/internal/wire"
)

// cloud is a small Nova: a conductor (caller, with a send and a reply connection) and a scheduler (RPC server with
// a listener and a send connection), all behind the proxy.
type cloud struct {
	h                   *harness
	condSend, condReply *tconn
	schedListen         *tconn
	schedSend           *tconn
	replyTag            string
	// beforeDeliver, when set, runs before each delivery of call.
	beforeDeliver func()
}

func newCloud(t *testing.T, cfg Config) *cloud { return newCloudOn(newHarness(t, cfg)) }

func newCloudOn(h *harness) *cloud {
	c := &cloud{h: h}
	c.condSend = h.conn("nova-conductor", 4242, "10.0.0.5")
	c.condReply = h.conn("nova-conductor", 4242, "10.0.0.5")
	c.schedListen = h.conn("nova-scheduler", 5151, "10.0.0.6")
	c.schedSend = h.conn("nova-scheduler", 5151, "10.0.0.6")
	c.schedListen.rpcServer("scheduler", "host1")
	c.replyTag = c.condReply.replyListener(replyQ)
	c.condSend.c2s(wire.ConfirmSelect(1))
	c.schedSend.c2s(wire.ConfirmSelect(1))
	return c
}

// call runs one full call: publish, confirm, delivery, reply publish, reply confirm, reply delivery.
func (c *cloud) call(msgID, uniq string, seq uint64, reply []byte) {
	body := callBody("select_destinations", msgID, uniq, reqID, map[string]any{"instance_uuids": []string{"i1"}})
	c.condSend.publish("nova", "scheduler", false, callProps(60000), body)
	c.h.step(time.Millisecond)
	c.condSend.s2c(wire.Ack(1, seq, false))
	c.h.step(time.Millisecond)
	if c.beforeDeliver != nil {
		c.beforeDeliver()
	}
	c.schedListen.deliver("1", seq, "nova", "scheduler", callProps(60000), body)
	c.h.step(3 * time.Millisecond)
	c.schedSend.publish("", replyQ, true, osloProps, reply)
	c.h.step(time.Millisecond)
	c.schedSend.s2c(wire.Ack(1, seq, false))
	if c.beforeDeliver != nil {
		c.beforeDeliver()
	}
	c.condReply.deliver(c.replyTag, seq, "", replyQ, osloProps, reply)
}

func TestCallOK(t *testing.T) {
	c := newCloud(t, Config{})
	start := c.h.now
	c.call("msg1", "u1", 1, replyBody("msg1", "u2", []string{"host1"}, nil, true))
	r := c.h.only()
	if r.Kind != KindCall || r.Status != StatusOK || r.Protocol != "oslo" {
		t.Fatalf("kind/status/protocol = %s/%s/%s", r.Kind, r.Status, r.Protocol)
	}
	if r.Method != "select_destinations" || r.Topic != "scheduler" || r.Server != nil || *r.Version != "4.5" {
		t.Errorf("method/topic/server/version wrong: %s", dump([]*Record{r}))
	}
	if r.MsgID != "msg1" || r.UniqueID != "u1" || r.RequestID != reqID || r.GlobalRequestID != gReqID {
		t.Errorf("ids wrong: %s", dump([]*Record{r}))
	}
	if r.Caller == nil || r.Caller.Service != "nova-conductor" || r.Caller.PID != 4242 || r.Caller.Host != "10.0.0.5" ||
		r.Caller.User != "guest" || r.Caller.Vhost != "/" {
		t.Errorf("caller = %+v", r.Caller)
	}
	if r.Callee == nil || r.Callee.Service != "nova-scheduler" || r.Callee.PID != 5151 || r.Queue != "scheduler" {
		t.Errorf("callee = %+v queue %q", r.Callee, r.Queue)
	}
	if r.Published == nil || !r.Published.Equal(start) || r.Confirmed == nil || r.Delivered == nil || r.Replied == nil ||
		r.ReplyDelivered == nil {
		t.Fatalf("timestamps missing: %s", dump([]*Record{r}))
	}
	if r.DurationUS != 6000 || r.QueueUS != 2000 || r.ServerUS != 3000 {
		t.Errorf("duration/queue/server = %d/%d/%d, want 6000/2000/3000", r.DurationUS, r.QueueUS, r.ServerUS)
	}
	if r.TimeoutMS != 60000 || r.Deliveries != 1 || r.Replies != 1 || string(r.Result) != `["host1"]` {
		t.Errorf("timeout/deliveries/replies/result = %d/%d/%d/%s", r.TimeoutMS, r.Deliveries, r.Replies, r.Result)
	}
	st := c.h.c.Stats()
	if st.Pending != 0 || st.RecordsOf(KindCall, StatusOK) != 1 || st.Confirms != 2 || st.UnmatchedReplies != 0 {
		t.Errorf("stats = %+v", st)
	}
}

func TestCallFailure(t *testing.T) {
	c := newCloud(t, Config{})
	f := failureJSON("InstanceNotFound_Remote", "nova.exception_Remote", "Instance 44 could not be found.")
	c.call("msg1", "u1", 1, replyBody("msg1", "u2", nil, f, true))
	r := c.h.only()
	if r.Status != StatusError || r.Error == nil || r.Error.Class != "InstanceNotFound" ||
		r.Error.Module != "nova.exception" || r.Error.Message != "Instance 44 could not be found." {
		t.Fatalf("got %s", dump([]*Record{r}))
	}
}

func TestHeartbeats(t *testing.T) {
	c := newCloud(t, Config{})
	body := callBody("select_destinations", "msg1", "u1", reqID, nil)
	c.condSend.publish("nova", "scheduler", false, callProps(60000), body)
	c.schedListen.deliver("1", 1, "nova", "scheduler", callProps(60000), body)
	for i, u := range []string{"hb1", "hb2"} {
		c.h.step(time.Second)
		hb := replyBody("msg1", u, nil, nil, false)
		c.schedSend.publish("", replyQ, true, osloProps, hb)
		c.condReply.deliver(c.replyTag, uint64(i+1), "", replyQ, osloProps, hb)
	}
	if rs := c.h.records(); len(rs) != 0 {
		t.Fatalf("heartbeats ended the call: %s", dump(rs))
	}
	final := replyBody("msg1", "u9", 7, nil, true)
	c.schedSend.publish("", replyQ, true, osloProps, final)
	c.condReply.deliver(c.replyTag, 3, "", replyQ, osloProps, final)
	r := c.h.only()
	if r.Heartbeats != 2 || len(r.HeartbeatTimes) != 2 || r.Status != StatusOK || string(r.Result) != "7" {
		t.Fatalf("got %s", dump([]*Record{r}))
	}
	if got := c.h.c.Stats().Heartbeats; got != 2 {
		t.Errorf("Stats.Heartbeats = %d", got)
	}
}

func TestTimeoutAndLateReply(t *testing.T) {
	for _, tc := range []struct {
		name      string
		delivered bool
		replyIn   time.Duration // after publish; 0 = never
		status    Status
		late      bool
		followUp  bool // the reply came after the record was emitted: a follow-up record amends it
	}{
		{"never delivered", false, 0, StatusTimeout, false, false},
		{"delivered, no reply", true, 0, StatusTimeout, false, false},
		{"late within grace", true, 1500*time.Millisecond + 3*time.Second, StatusTimeout, true, false},
		{"after grace", true, 1500*time.Millisecond + 6*time.Second, StatusTimeout, false, true},
		{"in time", true, time.Second, StatusOK, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCloud(t, Config{Grace: 5 * time.Second})
			body := callBody("slow", "msg1", "u1", reqID, nil)
			c.condSend.publish("nova", "scheduler", false, callProps(1500), body)
			start := c.h.now
			if tc.delivered {
				c.schedListen.deliver("1", 1, "nova", "scheduler", callProps(1500), body)
			}
			if tc.replyIn > 0 {
				// Time passes with expiry running, as it would under Run.
				c.h.advance(tc.replyIn)
				rb := replyBody("msg1", "u2", 1, nil, true)
				c.schedSend.publish("", replyQ, true, osloProps, rb)
				c.condReply.deliver(c.replyTag, 1, "", replyQ, osloProps, rb)
			}
			c.h.advance(time.Minute)
			rs := c.h.records()
			if want := map[bool]int{false: 1, true: 2}[tc.followUp]; len(rs) != want {
				t.Fatalf("%d records, want %d: %s", len(rs), want, dump(rs))
			}
			r := rs[0]
			if tc.followUp {
				// The call's record stays a timeout; the follow-up names it and says what the reply was, and when.
				f := rs[1]
				if f.Amends != r.ID || f.Status != StatusOK || !f.LateReply || string(f.Result) != "1" ||
					f.LateByUS != (6*time.Second).Microseconds() || f.Replied == nil || f.ReplyDelivered == nil ||
					f.MsgID != r.MsgID || f.Caller != r.Caller || f.DurationUS != (7500*time.Millisecond).Microseconds() {
					t.Errorf("follow-up: %s", dump(rs))
				}
				if got := c.h.c.Stats().RepliesAfterRecord; got != 1 {
					t.Errorf("RepliesAfterRecord = %d, want 1", got)
				}
			}
			if r.Status != tc.status || r.LateReply != tc.late {
				t.Fatalf("status %s late %v, want %s %v: %s", r.Status, r.LateReply, tc.status, tc.late, dump([]*Record{r}))
			}
			if r.Deadline == nil || !r.Deadline.Equal(start.Add(1500*time.Millisecond)) {
				t.Errorf("deadline = %v", r.Deadline)
			}
			if tc.status == StatusTimeout && (r.EverDelivered == nil || *r.EverDelivered != tc.delivered) {
				t.Errorf("ever_delivered = %v, want %v", r.EverDelivered, tc.delivered)
			}
			if tc.late && r.ReplyDelivered == nil {
				t.Errorf("late reply times missing")
			}
			// After the grace both sightings of the reply (publish and delivery) go to the follow-up: none is lost.
			if got := c.h.c.Stats().UnmatchedReplies; got != 0 {
				t.Errorf("unmatched replies = %d, want 0", got)
			}
			if got := c.h.c.Stats().LateReplies; (got == 1) != tc.late {
				t.Errorf("late replies = %d", got)
			}
		})
	}
}

func TestUnroutable(t *testing.T) {
	h := newHarness(t, Config{})
	api := h.conn("nova-api", 7, "10.0.0.9")
	api.c2s(wire.ConfirmSelect(1))
	body := castBody("build_instances", "u1", reqID, nil)
	api.publish("nova", "conductor.nowhere", true, osloProps, body)
	api.s2c(wire.Return(1, 312, "NO_ROUTE", "nova", "conductor.nowhere"), wire.Header(1, uint64(len(body)), osloProps),
		wire.Body(1, body, frameMax), wire.Ack(1, 1, false))
	r := h.only()
	if r.Status != StatusUnroutable || r.ReturnCode != 312 || r.ReturnText != "NO_ROUTE" || r.Kind != KindCast {
		t.Fatalf("got %s", dump([]*Record{r}))
	}
	if st := h.c.Stats(); st.Unroutable != 1 || st.Confirms != 1 {
		t.Errorf("stats %+v", st)
	}
}

// A mandatory reply to a vanished reply queue comes back; oslo publishes it again with the same _msg_id.
func TestReturnedReplyIsRepublished(t *testing.T) {
	h := newHarness(t, Config{})
	caller := h.conn("nova-api", 7, "10.0.0.9") // its reply connection is not behind this proxy
	server := h.conn("nova-conductor", 8, "10.0.0.5")
	server.c2s(wire.ConfirmSelect(1))
	body := callBody("ping", "msg1", "u1", reqID, nil)
	caller.publish("nova", "conductor", false, callProps(60000), body)
	r1 := replyBody("msg1", "r1", nil, nil, true)
	server.publish("", replyQ, true, osloProps, r1)
	server.s2c(wire.Return(1, 312, "NO_ROUTE", "", replyQ), wire.Header(1, uint64(len(r1)), osloProps),
		wire.Body(1, r1, frameMax), wire.Ack(1, 1, false))
	if rs := h.records(); len(rs) != 0 {
		t.Fatalf("returned reply ended the call: %s", dump(rs))
	}
	h.step(250 * time.Millisecond)
	r2 := replyBody("msg1", "r2", "pong", nil, true)
	server.publish("", replyQ, true, osloProps, r2)
	server.s2c(wire.Ack(1, 2, false))
	r := h.only()
	if r.Status != StatusOK || r.Replies != 2 || r.ReplyReturns != 1 || string(r.Result) != `"pong"` {
		t.Fatalf("got %s", dump([]*Record{r}))
	}
}

func TestFanoutAndRoundRobin(t *testing.T) {
	h := newHarness(t, Config{})
	var servers []*tconn
	for i := range 3 {
		s := h.conn("nova-compute", 100+i, fmt.Sprintf("10.0.1.%d", i))
		s.rpcServer("compute", fmt.Sprintf("host%d", i))
		servers = append(servers, s)
	}
	api := h.conn("nova-api", 7, "10.0.0.9")
	body := castBody("refresh", "uf", reqID, nil)
	api.publish("compute_fanout", "", false, osloProps, body)
	for i, s := range servers {
		if rs := h.records(); len(rs) != 0 {
			t.Fatalf("fanout emitted after %d of 3 deliveries", i)
		}
		s.deliver("3", 1, "compute_fanout", "", osloProps, body)
		s.ack(1)
	}
	r := h.only() // all three expected deliveries are in and answered: no settle wait
	if r.Kind != KindFanout || r.Deliveries != 3 || len(r.Callees) != 3 || r.Topic != "compute" {
		t.Fatalf("got %s", dump([]*Record{r}))
	}
	for i, ce := range r.Callees {
		if ce.PID != 100+i {
			t.Errorf("callee %d = %+v", i, ce)
		}
	}

	// Round robin on the shared topic queue: the delivering connection names the server.
	for i := range 2 {
		b := castBody("ping", fmt.Sprintf("rr%d", i), reqID, nil)
		api.publish("nova", "compute", false, osloProps, b)
		servers[i].deliver("1", 2, "nova", "compute", osloProps, b)
		servers[i].ack(2)
	}
	rs := h.records()[1:]
	if len(rs) != 2 || rs[0].Callee.PID != 100 || rs[1].Callee.PID != 101 || rs[0].Queue != "compute" {
		t.Fatalf("round robin: %s", dump(rs))
	}
}

func TestCastSettles(t *testing.T) {
	h := newHarness(t, Config{Settle: 2 * time.Second})
	api := h.conn("nova-api", 7, "10.0.0.9")
	api.publish("nova", "conductor", false, osloProps, castBody("build_instances", "u1", reqID, nil))
	h.advance(1999 * time.Millisecond)
	if rs := h.records(); len(rs) != 0 {
		t.Fatalf("emitted before settle")
	}
	h.advance(time.Millisecond)
	r := h.only()
	if r.Kind != KindCast || r.Status != StatusOK || r.Deliveries != 0 || *r.Namespace != "compute_task" {
		t.Fatalf("got %s", dump([]*Record{r}))
	}
}

func TestTopicServerSplit(t *testing.T) {
	h := newHarness(t, Config{})
	ironic := h.conn("ironic-conductor", 9, "10.0.0.7")
	ironic.rpcServer("ironic.conductor_manager", "cond1.example.org")
	api := h.conn("nova-api", 7, "10.0.0.9")
	for i, rk := range []string{
		"ironic.conductor_manager.cond1.example.org", // learned topic, dotted server
		"ironic.conductor_manager",                   // learned topic alone
		"compute.host1.example.org",                  // nothing learned: first dot
	} {
		api.publish("nova", rk, false, osloProps, castBody("m", fmt.Sprint("s", i), reqID, nil))
	}
	h.advance(DefaultQueueHorizon + time.Minute) // two of them are queued for the conductor, never delivered
	rs := h.records()
	want := []struct{ topic, server string }{
		{"ironic.conductor_manager", "cond1.example.org"}, {"ironic.conductor_manager", ""},
		{"compute", "host1.example.org"},
	}
	if len(rs) != 3 {
		t.Fatalf("got %d records", len(rs))
	}
	slices.SortFunc(rs, func(a, b *Record) int { return strings.Compare(a.UniqueID, b.UniqueID) }) // s0, s1, s2
	for i, r := range rs {
		server := ""
		if r.Server != nil {
			server = *r.Server
		}
		if r.Topic != want[i].topic || server != want[i].server {
			t.Errorf("%s: topic %q server %q, want %q %q", r.RoutingKey, r.Topic, server, want[i].topic, want[i].server)
		}
	}
}

func TestCompressedBodies(t *testing.T) {
	body := castBody("build_instances", "uz", reqID, map[string]any{"x": strings.Repeat("a", 5000)})
	var gz, zl bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write(body)
	w.Close()
	z := zlib.NewWriter(&zl)
	z.Write(body)
	z.Close()
	for _, tc := range []struct {
		name string
		body []byte
		p    wire.Properties
	}{
		{"kombu zlib header", zl.Bytes(), func() wire.Properties {
			p := osloProps
			p.Headers = wire.Table{"compression": "application/x-gzip"}
			return p
		}()},
		{"gzip content encoding", gz.Bytes(), wire.Properties{ContentType: "application/json", ContentEncoding: "gzip"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{})
			api := h.conn("nova-api", 7, "10.0.0.9")
			api.publish("nova", "conductor", false, tc.p, tc.body)
			h.advance(time.Minute)
			r := h.only()
			if r.Method != "build_instances" || r.UniqueID != "uz" || r.RequestID != reqID {
				t.Fatalf("got %s", dump([]*Record{r}))
			}
		})
	}
}

func TestNotificationWithoutEnvelope(t *testing.T) {
	h := newHarness(t, Config{})
	listener := h.conn("ceilometer-agent-notification", 3, "10.0.0.8")
	listener.c2s(wire.QueueDeclare(1, "notifications.info", false, false, false, nil),
		wire.QueueBind(1, "notifications.info", "nova", "notifications.info", nil))
	tag := listener.consume("notifications.info")
	compute := h.conn("nova-compute", 100, "10.0.1.1")
	body := []byte(pyJSON(append([]kv{{"message_id", "77777777-7777-4777-8777-777777777777"},
		{"publisher_id", "nova-compute:host1"}, {"event_type", "instance.create.start"}, {"priority", "INFO"},
		{"payload", map[string]any{"uuid": "i1"}}, {"timestamp", "2024-05-01 12:00:00.733459"},
		{"_unique_id", "un"}}, ctxKeys(reqID)...)...))
	compute.publish("nova", "notifications.info", false, osloProps, body)
	listener.deliver(tag, 1, "nova", "notifications.info", osloProps, body)
	listener.ack(1)
	r := h.only() // the one expected delivery is in, and answered
	if r.Kind != KindNotification || r.EventType != "instance.create.start" || r.PublisherID != "nova-compute:host1" ||
		r.Priority != "INFO" || r.Topic != "notifications" || r.Callee.PID != 3 || string(r.Args) != `{"uuid":"i1"}` {
		t.Fatalf("got %s", dump([]*Record{r}))
	}
}

func TestGenericRPC(t *testing.T) {
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprint("direct=", direct), func(t *testing.T) {
			h := newHarness(t, Config{})
			client := h.conn("", 0, "10.0.2.1")
			server := h.conn("", 0, "10.0.2.2")
			replyTo, deliveredReplyTo := "amq.gen-callback", "amq.gen-callback"
			if direct {
				replyTo, deliveredReplyTo = directReplyTo, directReplyTo+".g1h2AA5yZXBseUAxMjM0NTY3OA=="
			}
			client.c2s(wire.Consume(1, replyTo, "ctag", direct, false, nil))
			client.s2c(wire.ConsumeOK(1, "ctag"))
			stag := server.consume("rpc_queue")
			req := wire.Properties{CorrelationID: "c-1", ReplyTo: replyTo, Type: "fib"}
			client.publish("", "rpc_queue", false, req, []byte("30"))
			req.ReplyTo = deliveredReplyTo
			server.deliver(stag, 1, "", "rpc_queue", req, []byte("30"))
			rep := wire.Properties{CorrelationID: "c-1"}
			server.publish("", deliveredReplyTo, false, rep, []byte("832040"))
			if rs := h.records(); len(rs) != 0 {
				t.Fatalf("ended before the reply delivery: %s", dump(rs))
			}
			client.deliver("ctag", 1, "", deliveredReplyTo, rep, []byte("832040"))
			r := h.only()
			if r.Protocol != "amqp" || r.Kind != KindCall || r.Status != StatusOK || r.Method != "fib" ||
				r.MsgID != "c-1" || r.Delivered == nil || r.ReplyDelivered == nil || r.Queue != "rpc_queue" {
				t.Fatalf("got %s", dump([]*Record{r}))
			}
			if r.Caller.Service != "py-amqp" || r.Caller.Connection == "" {
				t.Errorf("caller without connection_name = %+v", r.Caller)
			}
		})
	}
}

// A conductor handling a call of request R makes a call of its own with R: that call's parent is the first.
func TestParentLink(t *testing.T) {
	h := newHarness(t, Config{})
	api := h.conn("nova-api", 7, "10.0.0.9")
	condListen := h.conn("nova-conductor", 4242, "10.0.0.5")
	condListen.rpcServer("conductor", "c1")
	condSend := h.conn("nova-conductor", 4242, "10.0.0.5")
	outer := callBody("schedule_and_build", "outer", "u-outer", reqID, nil)
	api.publish("nova", "conductor", false, callProps(60000), outer)
	condListen.deliver("1", 1, "nova", "conductor", callProps(60000), outer)
	inner := callBody("select_destinations", "inner", "u-inner", reqID, nil)
	condSend.publish("nova", "scheduler", false, callProps(60000), inner)
	other := callBody("select_destinations", "other", "u-other", "req-other", nil)
	condSend.publish("nova", "scheduler", false, callProps(60000), other)
	h.advance(2 * time.Minute)
	byID := map[string]*Record{}
	for _, r := range h.records() {
		byID[r.MsgID] = r
	}
	if byID["inner"] == nil || byID["inner"].ParentID != "outer" {
		t.Fatalf("inner parent: %s", dump(h.records()))
	}
	if byID["outer"].ParentID != "" || byID["other"].ParentID != "" {
		t.Errorf("unexpected parents: %s", dump(h.records()))
	}
}

func TestPartialVisibility(t *testing.T) {
	t.Run("caller only", func(t *testing.T) {
		h := newHarness(t, Config{})
		caller := h.conn("nova-conductor", 4242, "10.0.0.5")
		reply := h.conn("nova-conductor", 4242, "10.0.0.5")
		tag := reply.replyListener(replyQ)
		body := callBody("m", "msg1", "u1", reqID, nil)
		caller.publish("nova", "scheduler", false, callProps(60000), body)
		h.step(5 * time.Millisecond)
		reply.deliver(tag, 1, "", replyQ, osloProps, replyBody("msg1", "u2", 1, nil, true))
		r := h.only()
		if r.Status != StatusOK || r.Delivered != nil || r.Callee != nil || r.DurationUS != 5000 {
			t.Fatalf("got %s", dump([]*Record{r}))
		}
	})
	t.Run("server only", func(t *testing.T) {
		h := newHarness(t, Config{})
		listen := h.conn("nova-scheduler", 5151, "10.0.0.6")
		listen.rpcServer("scheduler", "host1")
		send := h.conn("nova-scheduler", 5151, "10.0.0.6")
		body := callBody("m", "msg1", "u1", reqID, nil)
		listen.deliver("1", 1, "nova", "scheduler", callProps(60000), body)
		h.step(3 * time.Millisecond)
		send.publish("", replyQ, true, osloProps, replyBody("msg1", "u2", 1, nil, true))
		r := h.only() // nobody here consumes the reply queue and no confirms: final at the reply publish
		if r.Status != StatusOK || r.Published != nil || r.Caller != nil || r.ServerUS != 3000 || r.Callee.PID != 5151 {
			t.Fatalf("got %s", dump([]*Record{r}))
		}
	})
}

func TestRedactionInJSONLines(t *testing.T) {
	for _, policy := range []PayloadPolicy{PayloadRedacted, PayloadFull, PayloadNone} {
		t.Run(policy.String(), func(t *testing.T) {
			var out bytes.Buffer
			jl := NewJSONLines(&out)
			h := newHarness(t, Config{Payload: policy})
			h.c.sink = jl
			api := h.conn("nova-api", 7, "10.0.0.9")
			args := map[string]any{"instance": map[string]any{"admin_password": adminPwd, "name": "vm1",
				"nested": []any{map[string]any{"Auth_Token": token}}}, "flavor": "m1.small"}
			api.publish("nova", "conductor", false, osloProps, castBody("build_instances", "u1", reqID, args))
			h.advance(time.Minute)
			if err := jl.Flush(); err != nil {
				t.Fatal(err)
			}
			s := out.String()
			if strings.Count(s, "\n") != 1 {
				t.Fatalf("want one line, got %q", s)
			}
			for _, secret := range []string{token, "s3cret-amqp-pw"} {
				if strings.Contains(s, secret) {
					t.Errorf("secret %q leaked: %s", secret, s)
				}
			}
			var r Record
			if err := json.Unmarshal(out.Bytes(), &r); err != nil {
				t.Fatal(err)
			}
			switch policy {
			case PayloadRedacted:
				if strings.Contains(s, adminPwd) || !strings.Contains(string(r.Args), `"admin_password":"***"`) ||
					!strings.Contains(string(r.Args), `"name":"vm1"`) {
					t.Errorf("args = %s", r.Args)
				}
			case PayloadFull:
				// Whole, but secrets are removed in every mode (issue 14: full used to keep admin_password).
				if strings.Contains(s, adminPwd) || !strings.Contains(string(r.Args), `"admin_password":"***"`) ||
					!strings.Contains(string(r.Args), `"flavor":"m1.small"`) {
					t.Errorf("full policy args = %s", r.Args)
				}
			case PayloadNone:
				if r.Args != nil {
					t.Errorf("none policy kept args: %s", r.Args)
				}
			}
		})
	}
}

func TestAssemblyInterleavedChannelsAndReset(t *testing.T) {
	h := newHarness(t, Config{})
	api := h.conn("nova-api", 7, "10.0.0.9")
	api.c2s(wire.ChannelOpen(2))
	b1 := castBody("one", "u1", reqID, map[string]string{"k": strings.Repeat("x", 300)})
	b2 := castBody("two", "u2", reqID, nil)
	// Channel 1 splits its body in small frames; channel 2 sends a whole message in between.
	api.c2s(wire.Publish(1, "nova", "conductor", false), wire.Header(1, uint64(len(b1)), osloProps),
		wire.Body(1, b1[:100], 0))
	api.c2s(wire.Publish(2, "nova", "conductor", false), wire.Header(2, uint64(len(b2)), osloProps),
		wire.Body(2, b2, 0))
	api.c2s(wire.Body(1, b1[100:], 120))
	// A content interrupted by a method frame on its channel is lost, and counted.
	api.c2s(wire.Publish(1, "nova", "conductor", false), wire.Header(1, 50, osloProps), wire.Body(1, b2[:10], 0),
		wire.Publish(1, "nova", "conductor", false), wire.Header(1, 10, osloProps))
	// A stray body frame on an idle channel is counted too.
	api.c2s(wire.Body(3, []byte("zz"), 0))
	h.advance(time.Minute)
	rs := h.records()
	if len(rs) != 2 || rs[0].Method != "two" || rs[1].Method != "one" || rs[1].RequestBytes != len(b1) {
		t.Fatalf("got %s", dump(rs))
	}
	if got := h.c.Stats().ChannelResets; got != 2 {
		t.Errorf("channel resets = %d, want 2", got)
	}
}

// A call with a 300 KiB argument, over a 64 KiB BodyCap: head and tail still give method and ids.
func TestBigBodyCorrelates(t *testing.T) {
	for _, bodyCap := range []int{64 << 10, 0} {
		t.Run(fmt.Sprint("cap=", bodyCap), func(t *testing.T) {
			c := newCloud(t, Config{BodyCap: bodyCap})
			big := map[string]any{"blob": strings.Repeat("y", 300<<10), "nested": map[string]string{"_msg_id": "decoy"}}
			body := callBody("upload", "msgbig", "ubig", reqID, big)
			c.condSend.publish("nova", "scheduler", false, callProps(60000), body)
			c.schedListen.deliver("1", 1, "nova", "scheduler", callProps(60000), body)
			rb := replyBody("msgbig", "ur", "ok", nil, true)
			c.schedSend.publish("", replyQ, true, osloProps, rb)
			c.condReply.deliver(c.replyTag, 1, "", replyQ, osloProps, rb)
			r := c.h.only()
			if r.Status != StatusOK || r.Method != "upload" || r.MsgID != "msgbig" || r.RequestID != reqID ||
				r.Deliveries != 1 || r.RequestBytes != len(body) {
				t.Fatalf("got %s", dump([]*Record{r}))
			}
			if wantTrunc := bodyCap != 0; r.Truncated != wantTrunc {
				t.Errorf("truncated = %v, want %v", r.Truncated, wantTrunc)
			}
		})
	}
}

func TestFloodKeepsPendingAtCap(t *testing.T) {
	h := newHarness(t, Config{MaxPending: 100})
	api := h.conn("nova-api", 7, "10.0.0.9")
	for i := range 250 {
		api.publish("nova", "conductor", false, callProps(60000), callBody("m", fmt.Sprint("m", i), fmt.Sprint("u", i), reqID, nil))
		h.flush()
		if n := h.c.table.n; n > 100 {
			t.Fatalf("pending %d over cap", n)
		}
	}
	st := h.c.Stats()
	if st.Pending != 100 || st.Evicted != 150 || len(h.records()) != 150 {
		t.Fatalf("pending %d evicted %d records %d", st.Pending, st.Evicted, len(h.records()))
	}
	if r := h.records()[0]; r.MsgID != "m0" || !r.Incomplete || r.Status != StatusTimeout {
		t.Errorf("oldest evicted first: %s", dump([]*Record{r}))
	}
}

func TestConfirmMultipleAndNack(t *testing.T) {
	h := newHarness(t, Config{})
	api := h.conn("nova-api", 7, "10.0.0.9")
	api.c2s(wire.ConfirmSelect(1))
	for i := range 3 {
		api.publish("nova", "conductor", false, osloProps, castBody("m", fmt.Sprint("u", i), reqID, nil))
	}
	h.step(time.Millisecond)
	api.s2c(wire.Ack(1, 2, true), wire.Nack(1, 3, false, false))
	h.advance(time.Minute)
	rs := h.records()
	if len(rs) != 3 || rs[0].Confirmed == nil || rs[1].Confirmed == nil || rs[2].Nacked != true || rs[0].Nacked {
		t.Fatalf("got %s", dump(rs))
	}
	if st := h.c.Stats(); st.Confirms != 2 || st.Nacks != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestConnectionsAndClose(t *testing.T) {
	h := newHarness(t, Config{})
	a := h.conn("nova-api", 7, "10.0.0.9")
	b := h.conn("nova-compute", 8, "10.0.0.8")
	b.rpcServer("compute", "h1")
	if got := len(h.c.Connections()); got != 2 {
		t.Fatalf("connections = %d", got)
	}
	h.flush()
	if !h.c.topoFor("/").consumed("compute") {
		t.Fatalf("consumer not known")
	}
	b.cn.Close("client EOF", nil)
	b.cn.Close("again", nil)
	h.flush()
	if got := h.c.Connections(); len(got) != 1 || got[0].Endpoint.Service != "nova-api" {
		t.Errorf("connections = %+v", got)
	}
	if h.c.topoFor("/").consumed("compute") || h.c.Stats().Connections != 1 {
		t.Errorf("closed connection's consumers linger")
	}
	a.cn.Close("client EOF", nil)
}

// A plain AMQP message (no reply_to, no correlation_id) is not an RPC: by default it is counted and makes no
// record; with GenericCasts it is a one-way "amqp" cast with its delivery.
func TestPlainMessages(t *testing.T) {
	for _, generic := range []bool{false, true} {
		t.Run(fmt.Sprint("generic_casts=", generic), func(t *testing.T) {
			h := newHarness(t, Config{GenericCasts: generic})
			pub := h.conn("", 0, "10.0.3.1")
			sub := h.conn("", 0, "10.0.3.2")
			tag := sub.consume("events")
			props := wire.Properties{ContentType: "text/plain", MessageID: "m-1"}
			pub.publish("", "events", false, props, []byte("hello"))
			sub.deliver(tag, 1, "", "events", props, []byte("hello"))
			h.advance(time.Minute)
			rs := h.records()
			st := h.c.Stats()
			if !generic {
				if len(rs) != 0 || st.PlainMessages != 2 {
					t.Fatalf("records %s, plain %d: want none and 2 counted", dump(rs), st.PlainMessages)
				}
				return
			}
			if len(rs) != 1 || rs[0].Kind != KindCast || rs[0].Protocol != "amqp" || rs[0].Deliveries != 1 ||
				rs[0].Published == nil || rs[0].Delivered == nil {
				t.Fatalf("got %s, want one delivered amqp cast", dump(rs))
			}
		})
	}
}

// One large message must not pin its size on a long-lived connection: after it, the connection's parser keeps no
// scratch buffer over keepScratch.
func TestLargeMessageScratchIsReleased(t *testing.T) {
	h := newHarness(t, Config{})
	caller := h.conn("nova-conductor", 4242, "10.0.0.5")
	args := map[string]any{"blob": strings.Repeat("z", 512<<10)}
	caller.publish("nova", "scheduler", false, callProps(60000), callBody("big", "m-big", "u-big", reqID, args))
	p := &caller.cn.asm[0].content().parser // client → broker
	if cap(p.inner) > keepScratch || cap(p.dec) > keepScratch {
		t.Fatalf("after a 512 KiB message the parser keeps %d + %d bytes of scratch, want at most %d each",
			cap(p.inner), cap(p.dec), keepScratch)
	}
	h.flush()
	if st := h.c.Stats(); st.MessagesIn == 0 {
		t.Fatal("the large message did not reach the correlator")
	}
}

// Long strings are cut at 256 bytes without splitting a UTF-8 sequence or an escape, and the result stays valid
// JSON whatever the bytes are.
func TestRedactCutsStringsCleanly(t *testing.T) {
	for name, in := range map[string]string{
		"utf8":          `"` + strings.Repeat("é", 400) + `"`,
		"escapes":       `"` + strings.Repeat(`\n`, 300) + `"`,
		"unicode":       `"` + strings.Repeat(`\u00e9`, 100) + `"`,
		"stray-cont":    "\"\\b" + strings.Repeat("\xb9", 300) + "\"",
		"escape-at-cut": `"` + strings.Repeat("a", 255) + `\"tail` + strings.Repeat("b", 10) + `"`,
	} {
		out := redactJSON([]byte(in), PayloadRedacted, 4096)
		if !json.Valid(out) {
			t.Errorf("%s: invalid JSON %q", name, out)
			continue
		}
		var s string
		if err := json.Unmarshal(out, &s); err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if name != "stray-cont" && !utf8.ValidString(s) {
			t.Errorf("%s: cut inside a UTF-8 sequence: %q", name, s)
		}
		if !strings.HasSuffix(s, "…") {
			t.Errorf("%s: not marked as cut: %q", name, s)
		}
	}
}

// A body over BodyCap that is not JSON (an 8 MiB image, say) cannot be an oslo message: it is counted as truncated
// and none of it is copied. Keeping its head and tail cost a megabyte of copies per message and a search of the
// tail for every id key, which was 42% of the proxy's CPU in make bench's 8 MiB workload.
func TestBigOpaqueBodyKeepsNothing(t *testing.T) {
	h := newHarness(t, Config{}) // DefaultBodyCap: head and tail would be 512 KiB each
	tc := h.conn("uploader", 77, "10.0.0.7")
	body := bytes.Repeat([]byte{'L'}, 4<<20)
	msg := wire.Concat(wire.Publish(1, "", "images", false), wire.Header(1, uint64(len(body)), wire.Properties{}),
		wire.Body(1, body, frameMax))
	h.flush()
	st0 := h.c.Stats()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if _, err := tc.dec.ClientDecoder().Write(msg); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > 256<<10 {
		t.Errorf("decoding a 4 MiB binary body allocated %d KiB, want no copy of it", got>>10)
	}
	h.flush()
	st := h.c.Stats()
	if n := st.MessagesIn - st0.MessagesIn; n != 1 || st.TruncatedBodies != 1 || st.ParseFailures != 0 {
		t.Errorf("messages %d, truncated %d, parse failures %d; want 1, 1, 0", n, st.TruncatedBodies, st.ParseFailures)
	}
}
