package tracing

import (
	"encoding/json"
	"time"

	"github.com/amqptrace/amqptrace/correlate"
)

// The fixtures below are shaped as oslo.messaging 14 traffic produces them (oslo-wire-format.md): one Nova boot
// request in which nova-api casts build_instances to the conductor; the conductor, while handling it, calls the
// scheduler's select_destinations (with call-monitor heartbeats) and casts build_and_run_instance to compute.host1;
// the compute service, while handling that, calls the conductor's object_action, which fails with
// InstanceNotFound, calls compute.host99 (no such server: the request times out, never delivered), and emits an
// instance.create.start notification. Ids have the wire's shapes: _msg_id/_unique_id plain hex, message_id dashed.

const (
	reqID       = "req-11111111-1111-4111-8111-111111111111"
	globalReqID = "req-22222222-2222-4222-8222-222222222222"
	secretToken = "gAAAAAB-example-token-0000"
)

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 123456000, time.UTC)

func at(us int64) *time.Time {
	t := t0.Add(time.Duration(us) * time.Microsecond)
	return &t
}

func sp(s string) *string { return &s }
func bp(b bool) *bool     { return &b }

var (
	epAPI        = correlate.Endpoint{Service: "nova-api", PID: 1010, Host: "10.0.0.4", Connection: "nova-api:1010:aaaaaaaa-0000-4000-8000-000000000001", User: "nova", Vhost: "/", Port: 40002, Broker: "10.0.0.2:5672"}
	epConductor  = correlate.Endpoint{Service: "nova-conductor", PID: 4242, Host: "10.0.0.5", Connection: "nova-conductor:4242:88888888-8888-4888-8888-888888888888", User: "nova", Vhost: "/", Port: 40003, Broker: "10.0.0.2:5672"}
	epScheduler  = correlate.Endpoint{Service: "nova-scheduler", PID: 5151, Host: "10.0.0.6", Connection: "nova-scheduler:5151:bbbbbbbb-0000-4000-8000-000000000002", User: "nova", Vhost: "/", Port: 40004, Broker: "10.0.0.2:5672"}
	epScheduler2 = correlate.Endpoint{Service: "nova-scheduler", PID: 5252, Host: "10.0.0.7", Connection: "nova-scheduler:5252:bbbbbbbb-0000-4000-8000-000000000003", User: "nova", Vhost: "/", Port: 40005, Broker: "10.0.0.2:5672"}
	epCompute    = correlate.Endpoint{Service: "nova-compute", PID: 6161, Host: "10.0.0.8", Connection: "nova-compute:6161:cccccccc-0000-4000-8000-000000000004", User: "nova", Vhost: "/", Port: 40006, Broker: "10.0.0.2:5672"}
)

func ep(e correlate.Endpoint) *correlate.Endpoint { return &e }

// castBuildInstances: nova-api → conductor (topic queue), namespace compute_task.
func castBuildInstances() *correlate.Record {
	return &correlate.Record{
		ID: 1, Kind: correlate.KindCast, Status: correlate.StatusOK,
		Method: "build_instances", Topic: "conductor", Exchange: "nova", RoutingKey: "conductor",
		Namespace: sp("compute_task"), Version: sp("1.17"),
		UniqueID: "f31e0000000040008000000000000001", RequestID: reqID, GlobalRequestID: globalReqID, Protocol: "oslo",
		Caller: ep(epAPI), Callee: ep(epConductor), Callees: []correlate.Endpoint{epConductor}, Queue: "conductor",
		Published: at(0), Confirmed: at(400), Delivered: at(900),
		QueueUS: 900, RequestBytes: 4200, Deliveries: 1,
		Args: json.RawMessage(`{"_context_auth_token":"` + secretToken + `","admin_password":"hunter2"}`),
	}
}

// callSelectDestinations: conductor → scheduler, made while handling castBuildInstances; two heartbeats.
func callSelectDestinations() *correlate.Record {
	return &correlate.Record{
		ID: 2, Kind: correlate.KindCall, Status: correlate.StatusOK,
		Method: "select_destinations", Topic: "scheduler", Exchange: "nova", RoutingKey: "scheduler",
		Version: sp("4.5"),
		MsgID:   "0123456789ab4cde8f0123456789abcd", UniqueID: "a1a10000000040008000000000000002",
		RequestID: reqID, GlobalRequestID: globalReqID, ParentID: "f31e0000000040008000000000000001", Protocol: "oslo",
		Caller: ep(epConductor), Callee: ep(epScheduler), Callees: []correlate.Endpoint{epScheduler}, Queue: "scheduler",
		Published: at(2000), Confirmed: at(2300), Delivered: at(2380), Replied: at(5980), ReplyDelivered: at(6210),
		Deadline: at(2000 + 60_000_000), TimeoutMS: 60000,
		DurationUS: 4210, QueueUS: 380, ServerUS: 3600,
		Heartbeats: 2, HeartbeatTimes: []time.Time{*at(3380), *at(4380)},
		RequestBytes: 912, ReplyBytes: 301, Deliveries: 1,
	}
}

// castBuildAndRun: conductor → compute.host1 (server queue), made while handling castBuildInstances.
func castBuildAndRun() *correlate.Record {
	return &correlate.Record{
		ID: 3, Kind: correlate.KindCast, Status: correlate.StatusOK,
		Method: "build_and_run_instance", Topic: "compute", Server: sp("host1"), Exchange: "nova", RoutingKey: "compute.host1",
		Version:  sp("6.0"),
		UniqueID: "b2b20000000040008000000000000003", RequestID: reqID, GlobalRequestID: globalReqID,
		ParentID: "f31e0000000040008000000000000001", Protocol: "oslo",
		Caller: ep(epConductor), Callee: ep(epCompute), Callees: []correlate.Endpoint{epCompute}, Queue: "compute.host1",
		Published: at(7000), Confirmed: at(7200), Delivered: at(7350),
		QueueUS: 350, RequestBytes: 8000, Deliveries: 1,
	}
}

// callObjectActionError: compute → conductor, fails remotely with InstanceNotFound.
func callObjectActionError() *correlate.Record {
	return &correlate.Record{
		ID: 4, Kind: correlate.KindCall, Status: correlate.StatusError,
		Method: "object_action", Topic: "conductor", Exchange: "nova", RoutingKey: "conductor",
		Version: sp("3.0"),
		MsgID:   "bbbbbbbbbbbb4bbb8bbbbbbbbbbbbbbb", UniqueID: "c3c30000000040008000000000000004",
		RequestID: reqID, GlobalRequestID: globalReqID, ParentID: "b2b20000000040008000000000000003", Protocol: "oslo",
		Caller: ep(epCompute), Callee: ep(epConductor), Callees: []correlate.Endpoint{epConductor}, Queue: "conductor",
		Published: at(8000), Confirmed: at(8100), Delivered: at(8150), Replied: at(9150), ReplyDelivered: at(9300),
		Deadline: at(8000 + 60_000_000), TimeoutMS: 60000,
		DurationUS: 1300, QueueUS: 150, ServerUS: 1000,
		Error: &correlate.RemoteError{Class: "InstanceNotFound", Module: "nova.exception",
			Message: "Instance 44444444-4444-4444-8444-444444444444 could not be found."},
		RequestBytes: 700, ReplyBytes: 2100, Deliveries: 1,
	}
}

// callTimeoutNeverDelivered: compute → compute.host99 (no such server): confirmed, never delivered.
func callTimeoutNeverDelivered() *correlate.Record {
	return &correlate.Record{
		ID: 5, Kind: correlate.KindCall, Status: correlate.StatusTimeout,
		Method: "get_console_output", Topic: "compute", Server: sp("host99"), Exchange: "nova", RoutingKey: "compute.host99",
		Version: sp("6.0"),
		MsgID:   "dddddddddddd4ddd8ddddddddddddddd", UniqueID: "d4d40000000040008000000000000005",
		RequestID: reqID, GlobalRequestID: globalReqID, ParentID: "b2b20000000040008000000000000003", Protocol: "oslo",
		Caller:    ep(epCompute),
		Published: at(10000), Confirmed: at(10200), Deadline: at(10000 + 1_500_000), TimeoutMS: 1500,
		DurationUS: 1_500_000, EverDelivered: bp(false), RequestBytes: 650,
	}
}

// notificationCreateStart: compute → notifications.info, consumed by nobody behind the proxy.
func notificationCreateStart() *correlate.Record {
	return &correlate.Record{
		ID: 6, Kind: correlate.KindNotification, Status: correlate.StatusOK,
		Exchange: "nova", RoutingKey: "notifications.info", Topic: "notifications",
		UniqueID: "ffffffffffff4fff8fffffffffffffff", MessageID: "77777777-7777-4777-8777-777777777777",
		RequestID: reqID, GlobalRequestID: globalReqID, Protocol: "oslo",
		EventType: "instance.create.start", PublisherID: "nova-compute:host1", Priority: "INFO",
		Caller: ep(epCompute), Published: at(11000), Confirmed: at(11100), RequestBytes: 3000,
	}
}

// fanoutUpdateAggregates: conductor → scheduler_fanout, delivered to two schedulers. A request of its own.
func fanoutUpdateAggregates() *correlate.Record {
	return &correlate.Record{
		ID: 7, Kind: correlate.KindFanout, Status: correlate.StatusOK,
		Method: "update_aggregates", Topic: "scheduler", Exchange: "scheduler_fanout", RoutingKey: "",
		Version:  sp("4.1"),
		UniqueID: "e5e50000000040008000000000000007", RequestID: "req-33333333-3333-4333-8333-333333333333", Protocol: "oslo",
		Caller: ep(epConductor), Callee: ep(epScheduler),
		Callees:   []correlate.Endpoint{epScheduler, epScheduler2},
		Published: at(20000), Confirmed: at(20100), Delivered: at(20300),
		QueueUS: 300, RequestBytes: 500, Deliveries: 2,
	}
}

func bootRequest() []*correlate.Record {
	return []*correlate.Record{
		castBuildInstances(), callSelectDestinations(), castBuildAndRun(),
		callObjectActionError(), callTimeoutNeverDelivered(), notificationCreateStart(),
	}
}
