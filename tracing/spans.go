package tracing

import (
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"net"
	"strconv"
	"time"

	"github.com/amqptrace/amqptrace/correlate"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// Attribute keys. Standard ones come from the semantic-conventions release pinned in semconv.go, so a rename in
// a later release is a compile-time choice, not a silent drift; TestSemconvNames checks every key we emit against
// that release. Ours share the one prefix "openstack." so they never collide with a future convention.
const (
	keyRPCSystemName = semconv.RPCSystemNameKey
	keyRPCMethod     = semconv.RPCMethodKey
	keyRPCStatusCode = semconv.RPCResponseStatusCodeKey
	keyErrorType     = semconv.ErrorTypeKey

	keyMsgSystem         = semconv.MessagingSystemKey
	keyMsgDestination    = semconv.MessagingDestinationNameKey
	keyMsgSubscription   = semconv.MessagingDestinationSubscriptionNameKey
	keyMsgRoutingKey     = semconv.MessagingRabbitMQDestinationRoutingKeyKey
	keyMsgMessageID      = semconv.MessagingMessageIDKey
	keyMsgConversationID = semconv.MessagingMessageConversationIDKey
	keyMsgOpType         = semconv.MessagingOperationTypeKey
	keyMsgOpName         = semconv.MessagingOperationNameKey
	keyMsgBodySize       = semconv.MessagingMessageBodySizeKey

	keyServerAddress = semconv.ServerAddressKey
	keyServerPort    = semconv.ServerPortKey
	keyPeerAddress   = semconv.NetworkPeerAddressKey
	keyPeerPort      = semconv.NetworkPeerPortKey

	keyExceptionType    = semconv.ExceptionTypeKey
	keyExceptionMessage = semconv.ExceptionMessageKey

	keyOSKind            = attribute.Key("openstack.kind")
	keyOSStatus          = attribute.Key("openstack.status")
	keyOSProtocol        = attribute.Key("openstack.protocol")
	keyOSRequestID       = attribute.Key("openstack.request_id")
	keyOSGlobalRequestID = attribute.Key("openstack.global_request_id")
	keyOSTopic           = attribute.Key("openstack.topic")
	keyOSServer          = attribute.Key("openstack.server")
	keyOSNamespace       = attribute.Key("openstack.namespace")
	keyOSVersion         = attribute.Key("openstack.version")
	keyOSMethod          = attribute.Key("openstack.method")
	keyOSExchange        = attribute.Key("openstack.exchange")
	keyOSQueue           = attribute.Key("openstack.queue")
	keyOSMsgID           = attribute.Key("openstack.msg_id")
	keyOSUniqueID        = attribute.Key("openstack.unique_id")
	keyOSParentID        = attribute.Key("openstack.parent_id")
	keyOSTimeoutMS       = attribute.Key("openstack.timeout_ms")
	keyOSDurationUS      = attribute.Key("openstack.duration_us")
	keyOSQueueWaitUS     = attribute.Key("openstack.queue_wait_us")
	keyOSServerTimeUS    = attribute.Key("openstack.server_time_us")
	keyOSHeartbeats      = attribute.Key("openstack.heartbeats")
	keyOSDeliveries      = attribute.Key("openstack.deliveries")
	keyOSReplyBytes      = attribute.Key("openstack.reply_bytes")
	keyOSLateReply       = attribute.Key("openstack.late_reply")
	keyOSEverDelivered   = attribute.Key("openstack.ever_delivered")
	keyOSReturnCode      = attribute.Key("openstack.return_code")
	keyOSReturnText      = attribute.Key("openstack.return_text")
	keyOSTruncated       = attribute.Key("openstack.truncated")
	keyOSEventType       = attribute.Key("openstack.event_type")
	keyOSPublisherID     = attribute.Key("openstack.publisher_id")
	keyOSPriority        = attribute.Key("openstack.priority")
	keyOSConnection      = attribute.Key("openstack.connection")
	keyOSConsumerIndex   = attribute.Key("openstack.consumer_index")
	// keyOSAck is the consumer's answer that ends a CONSUMER span: ack, reject or requeue (correlate.AckOutcome),
	// or ackNotSeen when the span is the delivery instant.
	keyOSAck         = attribute.Key("openstack.ack")
	keyOSAmends      = attribute.Key("openstack.amends")
	keyOSEventDetail = attribute.Key("openstack.event.detail")
	keyOSEventCount  = attribute.Key("openstack.event.count")
	keyOSCause       = attribute.Key("openstack.cause")
	keyOSParentCands = attribute.Key("openstack.parent_candidates")
	keyOSLateByUS    = attribute.Key("openstack.late_by_us")
)

// Event names.
const (
	eventException = "exception" // semantic conventions: the exception event
	eventConfirm   = "publisher_confirm"
	eventHeartbeat = "heartbeat"
	eventLateReply = "late_reply"
	eventTimeout   = "timeout"
)

// Bounds on what one record may produce, so a pathological record (a fanout to thousands of queues, a call that
// heartbeated for an hour, a multi-megabyte exception message) cannot blow up a batch.
const (
	maxAttrLen            = 1024
	maxHeartbeatEvents    = 32
	maxConsumersPerRecord = 512
)

const (
	rpcSystemOslo = "oslo_messaging"
	rpcSystemAMQP = "amqp"
	msgSystem     = "rabbitmq"
	errTimeout    = "timeout"
	errUnroutable = "unroutable"
	scopeName     = "github.com/amqptrace/amqptrace/tracing"
)

// builder turns records into spans. It owns the resource cache and is used by one goroutine at a time.
type builder struct {
	res   *resources
	scope instrumentation.Scope
	// consumersTrimmed counts CONSUMER spans not built because a record exceeded maxConsumersPerRecord.
	consumersTrimmed uint64
}

func newBuilder(maxServices int) *builder {
	return &builder{res: newResources(maxServices), scope: instrumentation.Scope{Name: scopeName}}
}

// clip makes a string attribute valid UTF-8 and at most maxAttrLen bytes: OTLP is protobuf, and a string field that
// is not UTF-8 fails the whole export request, not just its span.
func clip(s string) string { return correlate.CleanString(s, maxAttrLen) }

// rpcMethod is the conventions' fully-qualified "service/method": the oslo target (topic, namespace) is the
// service, since any server of the topic implements it.
func rpcMethod(r *correlate.Record) string {
	if r.Method == "" {
		return ""
	}
	m := r.Method
	if r.Namespace != nil && *r.Namespace != "" {
		m = *r.Namespace + "." + m
	}
	if r.Topic != "" {
		m = r.Topic + "/" + m
	}
	return clip(m)
}

func rpcSystem(r *correlate.Record) string {
	if r.Protocol == "amqp" {
		return rpcSystemAMQP
	}
	return rpcSystemOslo
}

// errorType is error.type: the remote exception's fully-qualified class, or our low-cardinality outcome name.
func errorType(r *correlate.Record) string {
	switch r.Status {
	case correlate.StatusError:
		if r.Error == nil || r.Error.Class == "" {
			return "_OTHER"
		}
		if r.Error.Module != "" {
			return clip(r.Error.Module + "." + r.Error.Class)
		}
		return clip(r.Error.Class)
	case correlate.StatusTimeout:
		return errTimeout
	case correlate.StatusUnroutable:
		return errUnroutable
	}
	return ""
}

// statusDescription says what went wrong in one line; for timeouts and unroutables it says whether the request
// ever reached a consumer, which is the first question an operator asks.
func statusDescription(r *correlate.Record) string {
	switch r.Status {
	case correlate.StatusError:
		if r.Error == nil {
			return "remote error"
		}
		if r.Error.Message == "" {
			return clip(r.Error.Class)
		}
		return clip(r.Error.Class + ": " + r.Error.Message)
	case correlate.StatusTimeout:
		d := "timeout"
		if r.TimeoutMS > 0 {
			d += " after " + strconv.FormatInt(r.TimeoutMS, 10) + "ms"
		}
		switch {
		case r.LateReply:
			return d + ": request delivered, reply arrived late"
		case r.EverDelivered != nil && !*r.EverDelivered:
			return d + ": request never delivered"
		case r.EverDelivered != nil || r.Delivered != nil:
			return d + ": request delivered, no reply"
		}
		return d + ": delivery not observed"
	case correlate.StatusUnroutable:
		d := "unroutable: request never delivered"
		if r.ReturnCode != 0 {
			d += " (" + strconv.Itoa(r.ReturnCode) + " " + r.ReturnText + ")"
		}
		return clip(d)
	}
	return ""
}

func rpcStatusCode(s correlate.Status) string {
	switch s {
	case correlate.StatusOK:
		return "OK"
	case correlate.StatusError:
		return "ERROR"
	case correlate.StatusTimeout:
		return "TIMEOUT"
	case correlate.StatusUnroutable:
		return "UNROUTABLE"
	}
	return "UNKNOWN"
}

// commonAttrs are the attributes every span of the record carries.
func commonAttrs(r *correlate.Record) []attribute.KeyValue {
	a := make([]attribute.KeyValue, 0, 40)
	if r.Kind != correlate.KindNotification {
		a = append(a, keyRPCSystemName.String(rpcSystem(r)))
		if m := rpcMethod(r); m != "" {
			a = append(a, keyRPCMethod.String(m))
		}
	}
	a = append(a, keyMsgSystem.String(msgSystem))
	if r.RoutingKey != "" {
		a = append(a, keyMsgRoutingKey.String(clip(r.RoutingKey)))
	}
	if id := firstString(r.UniqueID, r.MessageID); id != "" {
		a = append(a, keyMsgMessageID.String(clip(id)))
	}
	if r.MsgID != "" {
		a = append(a, keyMsgConversationID.String(clip(r.MsgID)))
	}
	a = append(a,
		keyOSKind.String(string(r.Kind)),
		keyOSStatus.String(string(r.Status)),
	)
	if r.Protocol != "" {
		a = append(a, keyOSProtocol.String(clip(r.Protocol)))
	}
	a = appendString(a, keyOSRequestID, r.RequestID)
	a = appendString(a, keyOSGlobalRequestID, r.GlobalRequestID)
	a = appendString(a, keyOSMethod, r.Method)
	a = appendString(a, keyOSTopic, r.Topic)
	a = appendStringPtr(a, keyOSServer, r.Server)
	a = appendStringPtr(a, keyOSNamespace, r.Namespace)
	a = appendStringPtr(a, keyOSVersion, r.Version)
	a = append(a, keyOSExchange.String(clip(r.Exchange)))
	a = appendString(a, keyOSQueue, r.Queue)
	a = appendString(a, keyOSMsgID, r.MsgID)
	a = appendString(a, keyOSUniqueID, r.UniqueID)
	a = appendString(a, keyOSParentID, r.ParentID)
	a = appendString(a, keyOSCause, r.Cause)
	if len(r.ParentCandidates) > 0 {
		cands := make([]string, len(r.ParentCandidates))
		for i, c := range r.ParentCandidates {
			cands[i] = clip(c)
		}
		a = append(a, keyOSParentCands.StringSlice(cands))
	}
	if r.TimeoutMS > 0 {
		a = append(a, keyOSTimeoutMS.Int64(r.TimeoutMS))
	}
	a = append(a,
		keyOSDurationUS.Int64(r.DurationUS),
		keyOSQueueWaitUS.Int64(r.QueueUS),
		keyOSDeliveries.Int(r.Deliveries),
	)
	if r.Kind == correlate.KindCall {
		a = append(a,
			keyOSServerTimeUS.Int64(r.ServerUS),
			keyOSHeartbeats.Int(r.Heartbeats),
			keyOSReplyBytes.Int(r.ReplyBytes),
		)
	}
	if r.LateReply {
		a = append(a, keyOSLateReply.Bool(true))
	}
	if r.EverDelivered != nil {
		a = append(a, keyOSEverDelivered.Bool(*r.EverDelivered))
	}
	if r.ReturnCode != 0 {
		a = append(a, keyOSReturnCode.Int(r.ReturnCode))
		a = appendString(a, keyOSReturnText, r.ReturnText)
	}
	if r.Truncated {
		a = append(a, keyOSTruncated.Bool(true))
	}
	a = appendString(a, keyOSEventType, r.EventType)
	a = appendString(a, keyOSPublisherID, r.PublisherID)
	a = appendString(a, keyOSPriority, r.Priority)
	return a
}

func appendString(a []attribute.KeyValue, k attribute.Key, v string) []attribute.KeyValue {
	if v == "" {
		return a
	}
	return append(a, k.String(clip(v)))
}

func appendStringPtr(a []attribute.KeyValue, k attribute.Key, v *string) []attribute.KeyValue {
	if v == nil {
		return a
	}
	return appendString(a, k, *v)
}

func firstString(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

// firstTime returns the first observed timestamp.
func firstTime(ts ...*time.Time) (time.Time, bool) {
	for _, t := range ts {
		if t != nil && !t.IsZero() {
			return *t, true
		}
	}
	return time.Time{}, false
}

// lastTime returns the latest observed timestamp, or zero.
func lastTime(ts ...*time.Time) time.Time {
	var last time.Time
	for _, t := range ts {
		if t != nil && t.After(last) {
			last = *t
		}
	}
	return last
}

// destination is messaging.destination.name: the exchange, "amq.default" for the default exchange (the RabbitMQ
// conventions' name for it). The routing key has its own attribute and the queue is the consumer's subscription,
// so a dashboard grouping by destination gets one series per exchange, not one per server.
func destination(r *correlate.Record) string {
	if r.Exchange == "" {
		return "amq.default"
	}
	return clip(r.Exchange)
}

// netAttrs are the network attributes of one side of the record: server.* is the broker that side's connection went
// to, network.peer.* is the client socket the proxy accepted (the OpenStack process's end of the connection).
func netAttrs(a []attribute.KeyValue, ep *correlate.Endpoint) []attribute.KeyValue {
	if ep == nil {
		return a
	}
	if ep.Broker != "" {
		host, port, err := net.SplitHostPort(ep.Broker)
		if err != nil {
			host = ep.Broker
		}
		a = appendString(a, keyServerAddress, host)
		if n, err := strconv.Atoi(port); err == nil && n > 0 {
			a = append(a, keyServerPort.Int(n))
		}
	}
	a = appendString(a, keyPeerAddress, ep.Host)
	if ep.Port > 0 {
		a = append(a, keyPeerPort.Int(ep.Port))
	}
	return a
}

func sendAttrs(r *correlate.Record) []attribute.KeyValue {
	a := []attribute.KeyValue{
		keyMsgOpType.String("send"),
		keyMsgOpName.String("publish"),
		keyMsgDestination.String(destination(r)),
		keyMsgBodySize.Int(r.RequestBytes),
	}
	return netAttrs(a, r.Caller)
}

func processAttrs(r *correlate.Record, ep *correlate.Endpoint) []attribute.KeyValue {
	a := []attribute.KeyValue{
		keyMsgOpType.String("process"),
		keyMsgOpName.String("consume"),
		keyMsgDestination.String(destination(r)),
		keyMsgBodySize.Int(r.RequestBytes),
	}
	a = appendString(a, keyMsgSubscription, r.Queue)
	return netAttrs(a, ep)
}

func concat(a, b []attribute.KeyValue) []attribute.KeyValue {
	out := make([]attribute.KeyValue, 0, len(a)+len(b))
	return append(append(out, a...), b...)
}

func exceptionEvent(r *correlate.Record, at time.Time) sdktrace.Event {
	attrs := []attribute.KeyValue{keyExceptionType.String(errorType(r))}
	if r.Error != nil && r.Error.Message != "" {
		attrs = append(attrs, keyExceptionMessage.String(clip(r.Error.Message)))
	}
	return sdktrace.Event{Name: eventException, Time: at, Attributes: attrs}
}

func heartbeatEvents(r *correlate.Record) []sdktrace.Event {
	n := min(len(r.HeartbeatTimes), maxHeartbeatEvents)
	ev := make([]sdktrace.Event, 0, n)
	for i := range n {
		ev = append(ev, sdktrace.Event{Name: eventHeartbeat, Time: r.HeartbeatTimes[i]})
	}
	return ev
}

// recordEvents are the record's events (foreign replies, what the broker did) as span events.
func recordEvents(r *correlate.Record) []sdktrace.Event {
	out := make([]sdktrace.Event, 0, len(r.Events))
	for _, e := range r.Events {
		attrs := []attribute.KeyValue{keyOSEventDetail.String(clip(e.Detail))}
		if e.Count > 1 {
			attrs = append(attrs, keyOSEventCount.Int(e.Count))
		}
		out = append(out, sdktrace.Event{Name: e.Type, Time: e.Time, Attributes: attrs})
	}
	return out
}

// errorStatus is the span status for a failed record; ok records leave the status unset, as the conventions ask.
func errorStatus(r *correlate.Record) sdktrace.Status {
	if r.Status == correlate.StatusOK || r.Status == "" {
		return sdktrace.Status{Code: codes.Unset}
	}
	return sdktrace.Status{Code: codes.Error, Description: statusDescription(r)}
}

// parentOf is the span a record's first span nests under: the handling span of Record.ParentID in the process
// that published this record (its caller). Invalid (a root) when ParentID is empty.
func parentOf(r *correlate.Record, tid trace.TraceID) trace.SpanContext {
	if r.ParentID == "" {
		return trace.SpanContext{}
	}
	return trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    tid,
		SpanID:     handleSpanID(r.ParentID, r.Caller),
		TraceFlags: trace.FlagsSampled,
	})
}

func spanContext(tid trace.TraceID, sid trace.SpanID) trace.SpanContext {
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})
}

// clampEnd keeps a span from ending before it starts (clock skew between the proxy's two directions is not
// possible, but a missing timestamp replaced by a bound can be earlier than the start).
func clampEnd(start, end time.Time) time.Time {
	if end.Before(start) {
		return start
	}
	return end
}

// build appends the spans of r to dst.
func (b *builder) build(r *correlate.Record, dst []sdktrace.ReadOnlySpan) []sdktrace.ReadOnlySpan {
	tid := traceIDFor(traceKey(r))
	if r.Amends != 0 {
		return b.buildFollowUp(r, tid, dst)
	}
	if r.Kind == correlate.KindCall {
		return b.buildCall(r, tid, dst)
	}
	return b.buildOneWay(r, tid, dst)
}

func (b *builder) buildCall(r *correlate.Record, tid trace.TraceID, dst []sdktrace.ReadOnlySpan) []sdktrace.ReadOnlySpan {
	key := rpcKey(r)
	common := commonAttrs(r)
	name := rpcMethod(r)
	if name == "" {
		name = rpcSystem(r)
	}
	status := errorStatus(r)
	etype := errorType(r)
	if etype != "" {
		common = append(common, keyErrorType.String(etype))
	}
	common = append(common, keyRPCStatusCode.String(rpcStatusCode(r.Status)))

	// CLIENT: published → reply delivered, or the best bounds observed.
	start, ok := firstTime(r.Published, r.Delivered, r.Replied, r.ReplyDelivered)
	if !ok {
		return dst // nothing was observed; nothing to draw
	}
	var end time.Time
	switch r.Status {
	case correlate.StatusTimeout:
		// The caller gave up at its deadline; a late reply is an event, not the span's end.
		if r.Deadline != nil {
			end = *r.Deadline
		} else if r.TimeoutMS > 0 {
			end = start.Add(time.Duration(r.TimeoutMS) * time.Millisecond)
		} else {
			end = lastTime(r.Published, r.Confirmed, r.Delivered, r.Replied, r.ReplyDelivered)
		}
	default:
		if t, ok := firstTime(r.ReplyDelivered, r.Replied); ok {
			end = t
		} else {
			end = lastTime(r.Published, r.Confirmed, r.Delivered)
		}
	}
	end = clampEnd(start, end)

	clientAttrs := concat(common, sendAttrs(r))
	if r.Caller != nil {
		clientAttrs = appendString(clientAttrs, keyOSConnection, r.Caller.Connection)
	}
	var clientEvents []sdktrace.Event
	if r.Confirmed != nil {
		clientEvents = append(clientEvents, sdktrace.Event{Name: eventConfirm, Time: *r.Confirmed})
	}
	if r.LateReply {
		if t, ok := firstTime(r.ReplyDelivered, r.Replied); ok {
			clientEvents = append(clientEvents, sdktrace.Event{Name: eventLateReply, Time: t})
		}
	}
	if r.Status == correlate.StatusTimeout {
		clientEvents = append(clientEvents, sdktrace.Event{Name: eventTimeout, Time: end,
			Attributes: []attribute.KeyValue{keyOSEverDelivered.Bool(everDelivered(r))}})
	}
	clientEvents = append(clientEvents, recordEvents(r)...)
	if r.Status == correlate.StatusError {
		clientEvents = append(clientEvents, exceptionEvent(r, end))
	}

	hasServer := r.Delivered != nil || r.Replied != nil
	if !hasServer {
		// No SERVER span to hang heartbeats on: keep them on the CLIENT span.
		clientEvents = append(clientEvents, heartbeatEvents(r)...)
	}

	clientSC := spanContext(tid, spanIDFor(key, roleClient))
	client := tracetest.SpanStub{
		Name:                 name,
		SpanContext:          clientSC,
		Parent:               parentOf(r, tid),
		SpanKind:             trace.SpanKindClient,
		StartTime:            start,
		EndTime:              end,
		Attributes:           clientAttrs,
		Events:               clientEvents,
		Status:               status,
		Resource:             b.res.forEndpoint(r.Caller, r.Source),
		InstrumentationScope: b.scope,
	}
	if hasServer {
		client.ChildSpanCount = 1
	}
	// The CLIENT span belongs to the proxy that saw the caller's side (its publish or its reply delivery). A proxy
	// that saw only the server's side must not draw it: the caller's proxy draws the same span id, and a second,
	// caller-less copy would show up under unknown_service as a duplicate span. The SERVER span still names the
	// CLIENT span as its parent, so the two proxies' spans join.
	if r.Published != nil || r.ReplyDelivered != nil {
		dst = append(dst, client.Snapshot())
	}
	if !hasServer {
		return dst
	}

	// SERVER: request delivered → reply published, as seen on the callee's connections.
	sStart, _ := firstTime(r.Delivered, r.Replied)
	var sEnd time.Time
	if r.Replied != nil {
		sEnd = *r.Replied
	} else if r.Deadline != nil {
		sEnd = *r.Deadline // no reply seen: the server was still busy (or died) at the caller's deadline
	}
	sEnd = clampEnd(sStart, sEnd)
	serverStatus := sdktrace.Status{Code: codes.Unset}
	serverEvents := heartbeatEvents(r)
	if r.Status == correlate.StatusError {
		// The exception was raised in the server: its span fails too.
		serverStatus = status
		serverEvents = append(serverEvents, exceptionEvent(r, sEnd))
	}
	serverAttrs := concat(common, processAttrs(r, r.Callee))
	if r.Callee != nil {
		serverAttrs = appendString(serverAttrs, keyOSConnection, r.Callee.Connection)
	}
	server := tracetest.SpanStub{
		Name:                 name,
		SpanContext:          spanContext(tid, handleSpanID(key, r.Callee)),
		Parent:               clientSC,
		SpanKind:             trace.SpanKindServer,
		StartTime:            sStart,
		EndTime:              sEnd,
		Attributes:           serverAttrs,
		Events:               serverEvents,
		Status:               serverStatus,
		Resource:             b.res.forEndpoint(r.Callee, r.Source),
		InstrumentationScope: b.scope,
	}
	return append(dst, server.Snapshot())
}

func everDelivered(r *correlate.Record) bool {
	if r.EverDelivered != nil {
		return *r.EverDelivered
	}
	return r.Delivered != nil
}

// ackNotSeen is openstack.ack on a CONSUMER span whose delivery's answer the proxy did not see (a no-ack
// consumer, one still holding the message at AckWait, or a connection that ended first).
const ackNotSeen = "none"

// buildOneWay draws casts, fanouts and notifications: a PRODUCER span and one CONSUMER span per delivery.
func (b *builder) buildOneWay(r *correlate.Record, tid trace.TraceID, dst []sdktrace.ReadOnlySpan) []sdktrace.ReadOnlySpan {
	key := rpcKey(r)
	common := commonAttrs(r)
	status := errorStatus(r)
	if et := errorType(r); et != "" {
		common = append(common, keyErrorType.String(et))
	}
	what := rpcMethod(r)
	if r.Kind == correlate.KindNotification && r.EventType != "" {
		what = clip(r.EventType)
	}
	if what == "" {
		what = destination(r)
	}

	start, ok := firstTime(r.Published, r.Delivered)
	if !ok {
		return dst
	}
	// The oslo sender blocks until the broker's confirm, so publish → confirm is the send operation's duration.
	end := start
	var events []sdktrace.Event
	if r.Confirmed != nil {
		end = clampEnd(start, *r.Confirmed)
		events = append(events, sdktrace.Event{Name: eventConfirm, Time: *r.Confirmed})
	}
	events = append(events, recordEvents(r)...)

	callees := r.Callees
	if len(callees) == 0 && r.Callee != nil {
		callees = []correlate.Endpoint{*r.Callee}
	}
	if len(callees) == 0 && r.Delivered != nil {
		callees = []correlate.Endpoint{{}} // delivered to someone we could not name
	}
	if len(callees) > maxConsumersPerRecord {
		b.consumersTrimmed += uint64(len(callees) - maxConsumersPerRecord)
		callees = callees[:maxConsumersPerRecord]
	}

	producerSC := spanContext(tid, spanIDFor(key, roleProducer))
	pAttrs := concat(common, sendAttrs(r))
	if r.Caller != nil {
		pAttrs = appendString(pAttrs, keyOSConnection, r.Caller.Connection)
	}
	producer := tracetest.SpanStub{
		Name:                 "publish " + what,
		SpanContext:          producerSC,
		Parent:               parentOf(r, tid),
		SpanKind:             trace.SpanKindProducer,
		StartTime:            start,
		EndTime:              end,
		Attributes:           pAttrs,
		Events:               events,
		Status:               status,
		ChildSpanCount:       len(callees),
		Resource:             b.res.forEndpoint(r.Caller, r.Source),
		InstrumentationScope: b.scope,
	}
	// As for calls: only the proxy that saw the publish draws the PRODUCER span; consumers seen elsewhere still
	// name it as their parent.
	if r.Published != nil {
		dst = append(dst, producer.Snapshot())
	}

	// One CONSUMER per delivery, from the delivery to its consumer's answer (Basic.Ack, Reject or Nack): how long
	// the consumer held the message. For an oslo notification listener that is its handler's run (the answer
	// goes out on the listener's next poll); an oslo RPC server answers on receipt. A delivery whose answer was
	// not seen is the delivery instant, as are the deliveries after the first, which share its timestamp when
	// they have no answer (the record keeps one delivery time).
	cStart := start
	if r.Delivered != nil {
		cStart = *r.Delivered
	}
	seen := make(map[trace.SpanID]struct{}, len(callees))
	for i := range callees {
		ep := &callees[i]
		sid := handleSpanID(key, ep)
		if _, dup := seen[sid]; dup {
			// Two deliveries to one process (two queues of one server): keep both, the first stays the one a
			// child record can find.
			sid = spanIDFor(key, roleHandle, ep.Service, ep.Host, strconv.Itoa(ep.PID), strconv.Itoa(i))
		}
		seen[sid] = struct{}{}
		cAttrs := concat(common, processAttrs(r, ep))
		cAttrs = append(cAttrs, keyOSConsumerIndex.Int(i))
		cAttrs = appendString(cAttrs, keyOSConnection, ep.Connection)
		from, to := cStart, cStart
		if a := r.AnswerTo(i); a != nil {
			from, to = a.Delivered, clampEnd(a.Delivered, a.At)
			cAttrs = append(cAttrs, keyOSAck.String(string(a.Outcome)))
		} else {
			cAttrs = append(cAttrs, keyOSAck.String(ackNotSeen))
		}
		consumer := tracetest.SpanStub{
			Name:                 "consume " + what,
			SpanContext:          spanContext(tid, sid),
			Parent:               producerSC,
			SpanKind:             trace.SpanKindConsumer,
			StartTime:            from,
			EndTime:              to,
			Attributes:           cAttrs,
			Resource:             b.res.forEndpoint(ep, r.Source),
			InstrumentationScope: b.scope,
		}
		dst = append(dst, consumer.Snapshot())
	}
	return dst
}

// buildFollowUp draws a reply that came after its call's record (Record.Amends): the call's CLIENT span was exported
// long ago, as a timeout, and a span cannot take events once it is sent, so the reply is a span of its own under
// it (same ids: the CLIENT span's id is derived from the call), from the reply's publish to its delivery.
func (b *builder) buildFollowUp(r *correlate.Record, tid trace.TraceID, dst []sdktrace.ReadOnlySpan) []sdktrace.ReadOnlySpan {
	start, ok := firstTime(r.Replied, r.ReplyDelivered)
	if !ok {
		return dst
	}
	key := rpcKey(r)
	attrs := concat(commonAttrs(r), []attribute.KeyValue{keyOSAmends.Int64(int64(min(r.Amends, 1<<62))),
		keyOSLateByUS.Int64(r.LateByUS)})
	var events []sdktrace.Event
	status := sdktrace.Status{Code: codes.Unset}
	end := lastTime(r.Replied, r.ReplyDelivered)
	if r.Status == correlate.StatusError {
		status = errorStatus(r)
		events = append(events, exceptionEvent(r, end))
	}
	name := rpcMethod(r)
	if name == "" {
		name = rpcSystem(r)
	}
	span := tracetest.SpanStub{
		Name:                 name + " " + eventLateReply,
		SpanContext:          spanContext(tid, spanIDFor(key, roleLate)),
		Parent:               spanContext(tid, spanIDFor(key, roleClient)),
		SpanKind:             trace.SpanKindInternal,
		StartTime:            start,
		EndTime:              clampEnd(start, end),
		Attributes:           attrs,
		Events:               events,
		Status:               status,
		Resource:             b.res.forEndpoint(r.Caller, r.Source),
		InstrumentationScope: b.scope,
	}
	return append(dst, span.Snapshot())
}
