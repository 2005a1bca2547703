package ui

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/amqptrace/amqptrace/correlate"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Endpoints as oslo.messaging presents them: connection_name "<program>:<pid>:<uuid>", the TCP peer as host.
func ep(service string, pid int, host string) *correlate.Endpoint {
	return &correlate.Endpoint{Service: service, PID: pid, Host: host,
		Connection: fmt.Sprintf("%s:%d:88888888-8888-4888-8888-%012d", service, pid, pid), User: "nova", Vhost: "/"}
}

var (
	novaAPI       = ep("nova-api", 1200, "10.0.0.2")
	novaConductor = ep("nova-conductor", 4242, "10.0.0.5")
	novaScheduler = ep("nova-scheduler", 5151, "10.0.0.6")
	novaCompute1  = ep("nova-compute", 7001, "10.0.1.1")
	novaCompute2  = ep("nova-compute", 7002, "10.0.1.2")
	neutronServer = ep("neutron-server", 3300, "10.0.0.7")
	ovsAgent1     = ep("neutron-openvswitch-agent", 8101, "10.0.1.1")
	ovsAgent2     = ep("neutron-openvswitch-agent", 8102, "10.0.1.2")
	ovsAgent3     = ep("neutron-openvswitch-agent", 8103, "10.0.1.3")
)

// spec describes one RPC for gen.rec. Zero durations mean "not observed".
type spec struct {
	kind                  correlate.Kind
	status                correlate.Status
	method, topic, server string
	exchange              string
	caller, callee        *correlate.Endpoint
	callees               []correlate.Endpoint
	req, greq             string
	queue, srv, transit   time.Duration
	timeout               time.Duration
	args                  string
	errClass, errMsg      string
	eventType             string
	parent                string   // msg id (or unique id) of the RPC whose handling published this one
	parents               []string // ambiguous parent: the candidates
	heartbeats            int      // call-monitor heartbeats while the server handled it
	lateReply             bool     // a timeout whose reply came after the deadline
}

// gen makes records shaped like real oslo.messaging traffic, with increasing ids and publish times.
type gen struct {
	id  uint64
	now time.Time
}

func newGen() *gen { return &gen{now: time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC)} }

func tp(t time.Time) *time.Time { return &t }
func sp(s string) *string       { return &s }

func (g *gen) rec(s spec) *correlate.Record {
	g.id++
	g.now = g.now.Add(time.Millisecond)
	pub := g.now
	r := &correlate.Record{
		ID: g.id, Kind: s.kind, Status: s.status, Method: s.method, Topic: s.topic, Exchange: s.exchange,
		RoutingKey: s.topic, RequestID: s.req, GlobalRequestID: s.greq, Protocol: "oslo",
		Caller: s.caller, Callee: s.callee, Callees: s.callees, Published: tp(pub),
		MsgID: fmt.Sprintf("%032x", g.id), UniqueID: fmt.Sprintf("%032x", g.id+1<<40),
		RequestBytes: 912, Deliveries: 1, ParentID: s.parent, ParentCandidates: s.parents,
	}
	if r.Status == "" {
		r.Status = correlate.StatusOK
	}
	if r.Exchange == "" {
		r.Exchange = "nova"
	}
	if s.server != "" {
		r.Server = sp(s.server)
		r.RoutingKey = s.topic + "." + s.server
	}
	if s.kind == correlate.KindFanout {
		r.Exchange = s.topic + "_fanout"
		r.RoutingKey = ""
		r.Deliveries = len(s.callees)
		if len(s.callees) > 0 {
			r.Callee = &s.callees[0]
		}
	}
	if s.kind == correlate.KindNotification {
		r.EventType = s.eventType
		r.PublisherID = "nova-compute:host1"
		r.Priority = "INFO"
		r.RoutingKey = s.topic + ".info"
	}
	if s.args != "" {
		r.Args = json.RawMessage(s.args)
	}
	if s.queue > 0 {
		r.Delivered = tp(pub.Add(s.queue))
		r.QueueUS = s.queue.Microseconds()
	}
	if s.kind == correlate.KindCall {
		r.Version = sp("4.5")
		timeout := s.timeout
		if timeout == 0 {
			timeout = 60 * time.Second
		}
		r.Deadline = tp(pub.Add(timeout))
		r.TimeoutMS = timeout.Milliseconds()
		switch r.Status {
		case correlate.StatusTimeout:
			r.DurationUS = timeout.Microseconds()
			b := r.Delivered != nil
			r.EverDelivered = &b
			if s.lateReply && r.Delivered != nil {
				r.LateReply = true
				rep := r.Delivered.Add(s.srv)
				r.Replied, r.ReplyDelivered = tp(rep), tp(rep.Add(s.transit))
			}
		default:
			rep := r.Delivered.Add(s.srv)
			r.Replied = tp(rep)
			r.ReplyDelivered = tp(rep.Add(s.transit))
			r.ServerUS = s.srv.Microseconds()
			r.DurationUS = r.ReplyDelivered.Sub(pub).Microseconds()
			r.ReplyBytes = 301
		}
	}
	for i := 1; i <= s.heartbeats && r.Delivered != nil; i++ {
		r.HeartbeatTimes = append(r.HeartbeatTimes, r.Delivered.Add(time.Duration(i)*s.srv/time.Duration(s.heartbeats+1)))
		r.Heartbeats++
	}
	if r.Status == correlate.StatusError {
		r.Error = &correlate.RemoteError{Class: s.errClass, Module: "nova.exception", Message: s.errMsg}
	}
	return r
}

// scenario is one nova boot plus background traffic, as the design doc describes it: nova-api casts to the
// conductor, the conductor calls select_destinations on the scheduler and casts build_and_run_instance to one
// compute, the compute sends a notification, neutron agents report_state, neutron-server fans out port_update.
func (g *gen) scenario(req string) []*correlate.Record {
	return []*correlate.Record{
		g.rec(spec{kind: correlate.KindCast, method: "build_instances", topic: "conductor", caller: novaAPI,
			callee: novaConductor, req: req, greq: req, queue: 400 * time.Microsecond}),
		g.rec(spec{kind: correlate.KindCall, method: "select_destinations", topic: "scheduler", caller: novaConductor,
			callee: novaScheduler, req: req, greq: req, queue: 380 * time.Microsecond, srv: 3600 * time.Microsecond,
			transit: 230 * time.Microsecond}),
		g.rec(spec{kind: correlate.KindCast, method: "build_and_run_instance", topic: "compute", server: "host1",
			caller: novaConductor, callee: novaCompute1, req: req, greq: req, queue: 500 * time.Microsecond}),
		g.rec(spec{kind: correlate.KindNotification, method: "", eventType: "instance.create.start",
			topic: "notifications", caller: novaCompute1, req: req, greq: req}),
		g.rec(spec{kind: correlate.KindCall, method: "report_state", topic: "q-reports-plugin", exchange: "neutron",
			caller: ovsAgent1, callee: neutronServer, queue: 300 * time.Microsecond, srv: 2 * time.Millisecond,
			transit: 200 * time.Microsecond}),
		g.rec(spec{kind: correlate.KindFanout, method: "port_update", topic: "q-agent-notifier-port-update",
			caller: neutronServer, callees: []correlate.Endpoint{*ovsAgent1, *ovsAgent2, *ovsAgent3},
			req: "req-neutron-" + req[4:], queue: 700 * time.Microsecond}),
	}
}
