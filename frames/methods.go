package frames

import "bytes"

// DecodeMethod decodes a method frame's payload (class id, method id, arguments) into the concrete method type,
// e.g. *BasicPublish, or *UnknownMethod for any (class, method) pair this package does not decode. The result owns
// its memory: no field aliases payload. Bytes after the last argument are ignored, as RabbitMQ's own codec does.
//
// Connection.Start-Ok's SASL response is read only to extract the user name; the password is neither returned nor
// mentioned in an error.
func DecodeMethod(payload []byte) (Method, error) {
	c := cursor{b: payload}
	class, method := c.u16(), c.u16()
	if c.err != nil {
		return nil, c.err
	}
	var m Method
	switch uint32(class)<<16 | uint32(method) {
	case 10<<16 | 10:
		m = &ConnectionStart{VersionMajor: c.u8(), VersionMinor: c.u8(), ServerProperties: c.table(0),
			Mechanisms: c.longstr(), Locales: c.longstr()}
	case 10<<16 | 11:
		m = c.startOK(nil)
	case 10<<16 | 30:
		m = &ConnectionTune{ChannelMax: c.u16(), FrameMax: c.u32(), Heartbeat: c.u16()}
	case 10<<16 | 31:
		m = &ConnectionTuneOK{ChannelMax: c.u16(), FrameMax: c.u32(), Heartbeat: c.u16()}
	case 10<<16 | 40:
		// reserved-1 (capabilities) and reserved-2 (insist) follow; nobody needs them.
		m = &ConnectionOpen{VirtualHost: c.shortstr()}
	case 10<<16 | 41:
		m = &ConnectionOpenOK{}
	case 10<<16 | 50:
		m = &ConnectionClose{ReplyCode: c.u16(), ReplyText: c.shortstr(), FailingClassID: c.u16(), FailingMethodID: c.u16()}
	case 10<<16 | 51:
		m = &ConnectionCloseOK{}
	case 10<<16 | 60:
		m = &ConnectionBlocked{Reason: c.shortstr()}
	case 10<<16 | 61:
		m = &ConnectionUnblocked{}
	case 20<<16 | 10:
		m = &ChannelOpen{}
	case 20<<16 | 11:
		m = &ChannelOpenOK{}
	case 20<<16 | 20:
		m = &ChannelFlow{Active: c.bit()}
	case 20<<16 | 21:
		m = &ChannelFlowOK{Active: c.bit()}
	case 20<<16 | 40:
		m = &ChannelClose{ReplyCode: c.u16(), ReplyText: c.shortstr(), FailingClassID: c.u16(), FailingMethodID: c.u16()}
	case 20<<16 | 41:
		m = &ChannelCloseOK{}
	case 40<<16 | 10:
		c.u16() // reserved-1 (ticket)
		m = &ExchangeDeclare{Exchange: c.shortstr(), Type: c.shortstr(), Passive: c.bit(), Durable: c.bit(),
			AutoDelete: c.bit(), Internal: c.bit(), NoWait: c.bit(), Arguments: c.table(0)}
	case 40<<16 | 11:
		m = &ExchangeDeclareOK{}
	case 50<<16 | 10:
		c.u16() // ticket
		m = &QueueDeclare{Queue: c.shortstr(), Passive: c.bit(), Durable: c.bit(), Exclusive: c.bit(),
			AutoDelete: c.bit(), NoWait: c.bit(), Arguments: c.table(0)}
	case 50<<16 | 11:
		m = &QueueDeclareOK{Queue: c.shortstr(), MessageCount: c.u32(), ConsumerCount: c.u32()}
	case 50<<16 | 20:
		c.u16() // ticket
		m = &QueueBind{Queue: c.shortstr(), Exchange: c.shortstr(), RoutingKey: c.shortstr(), NoWait: c.bit(),
			Arguments: c.table(0)}
	case 50<<16 | 21:
		m = &QueueBindOK{}
	case 50<<16 | 40:
		c.u16() // ticket
		m = &QueueDelete{Queue: c.shortstr(), IfUnused: c.bit(), IfEmpty: c.bit(), NoWait: c.bit()}
	case 50<<16 | 41:
		m = &QueueDeleteOK{MessageCount: c.u32()}
	case 60<<16 | 10:
		m = &BasicQos{PrefetchSize: c.u32(), PrefetchCount: c.u16(), Global: c.bit()}
	case 60<<16 | 11:
		m = &BasicQosOK{}
	case 60<<16 | 20:
		c.u16() // ticket
		m = &BasicConsume{Queue: c.shortstr(), ConsumerTag: c.shortstr(), NoLocal: c.bit(), NoAck: c.bit(),
			Exclusive: c.bit(), NoWait: c.bit(), Arguments: c.table(0)}
	case 60<<16 | 21:
		m = &BasicConsumeOK{ConsumerTag: c.shortstr()}
	case 60<<16 | 30:
		m = &BasicCancel{ConsumerTag: c.shortstr(), NoWait: c.bit()}
	case 60<<16 | 31:
		m = &BasicCancelOK{ConsumerTag: c.shortstr()}
	case 60<<16 | 40:
		c.u16() // ticket
		m = &BasicPublish{Exchange: c.shortstr(), RoutingKey: c.shortstr(), Mandatory: c.bit(), Immediate: c.bit()}
	case 60<<16 | 50:
		m = &BasicReturn{ReplyCode: c.u16(), ReplyText: c.shortstr(), Exchange: c.shortstr(), RoutingKey: c.shortstr()}
	case 60<<16 | 60:
		m = &BasicDeliver{ConsumerTag: c.shortstr(), DeliveryTag: c.u64(), Redelivered: c.bit(),
			Exchange: c.shortstr(), RoutingKey: c.shortstr()}
	case 60<<16 | 70:
		c.u16() // ticket
		m = &BasicGet{Queue: c.shortstr(), NoAck: c.bit()}
	case 60<<16 | 71:
		m = &BasicGetOK{DeliveryTag: c.u64(), Redelivered: c.bit(), Exchange: c.shortstr(),
			RoutingKey: c.shortstr(), MessageCount: c.u32()}
	case 60<<16 | 72:
		m = &BasicGetEmpty{} // reserved-1 (cluster-id) is not kept
	case 60<<16 | 80:
		m = &BasicAck{DeliveryTag: c.u64(), Multiple: c.bit()}
	case 60<<16 | 90:
		m = &BasicReject{DeliveryTag: c.u64(), Requeue: c.bit()}
	case 60<<16 | 120:
		m = &BasicNack{DeliveryTag: c.u64(), Multiple: c.bit(), Requeue: c.bit()}
	case 85<<16 | 10:
		m = &ConfirmSelect{NoWait: c.bit()}
	case 85<<16 | 11:
		m = &ConfirmSelectOK{}
	default:
		return &UnknownMethod{Class: class, Method: method}, nil
	}
	if c.err != nil {
		return nil, &methodError{class: class, method: method, err: c.err}
	}
	return m, nil
}

// methodError names the method whose arguments failed to decode. Its text is built from ids, offsets and
// lengths only, never from argument bytes.
type methodError struct {
	class, method uint16
	err           error
}

func (e *methodError) Error() string {
	return "frames: method " + itoa(e.class) + "." + itoa(e.method) + ": " + e.err.Error()
}

func (e *methodError) Unwrap() error { return e.err }

func itoa(v uint16) string {
	var b [5]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			return string(b[i:])
		}
	}
}

// saslUser extracts the login name from a Start-Ok response and nothing else.
//
// PLAIN (RFC 4616) is "authzid \x00 authcid \x00 passwd"; amqp091-go and py-amqp send an empty authzid.
// AMQPLAIN is a field table holding LOGIN and PASSWORD, sent WITHOUT the table's 4-byte length (amqp091-go
// auth.go strips it with [4:], py-amqp sasl.py with [4:]); a response that does carry the length is accepted too.
// Other mechanisms (EXTERNAL: the user is the certificate subject) yield "".
// DecodeConnectionStartOK decodes a Connection.Start-Ok payload as DecodeMethod does, except that ClientProperties
// holds only the top-level fields whose name keep accepts: the others are stepped over by their encoded length,
// undecoded, so a caller that wants two or three strings of the client's properties does not build a map of them
// all (with the capabilities table inside) for every connection. A payload DecodeMethod accepts is accepted, with
// the same values for the kept fields; a malformed value inside a field that is not kept may go unnoticed. keep
// must not retain name. A payload of another method is an error.
func DecodeConnectionStartOK(payload []byte, keep func(name []byte) bool) (*ConnectionStartOK, error) {
	c := cursor{b: payload}
	class, method := c.u16(), c.u16()
	if c.err != nil {
		return nil, c.err
	}
	if class != 10 || method != 11 {
		return nil, errf("method (%d,%d) is not connection.start-ok", class, method)
	}
	m := c.startOK(keep)
	if c.err != nil {
		return nil, c.err
	}
	return m, nil
}

// MessageArgs is what a Basic.Publish or Basic.Deliver says of its message, read in place by DecodeMessageArgs:
// the byte slices alias the payload and are valid only as long as it is (a frame's, during HandleFrame). Fields
// the method does not have are zero.
type MessageArgs struct {
	ClassID, MethodID uint16
	ConsumerTag       []byte // Deliver
	DeliveryTag       uint64 // Deliver
	Redelivered       bool   // Deliver
	Exchange          []byte
	RoutingKey        []byte
	Mandatory         bool // Publish
	Immediate         bool // Publish
}

// DecodeMessageArgs reads a Basic.Publish or Basic.Deliver payload into m without allocating: a message's method
// comes with every message, and its strings are usually the same ones as the last message's, which the caller can
// keep instead of a copy each. It accepts what DecodeMethod accepts for those methods, with the same values; a
// payload of another method is an error.
func DecodeMessageArgs(payload []byte, m *MessageArgs) error {
	c := cursor{b: payload}
	*m = MessageArgs{ClassID: c.u16(), MethodID: c.u16()}
	if c.err != nil {
		return c.err
	}
	switch uint32(m.ClassID)<<16 | uint32(m.MethodID) {
	case 60<<16 | 40:
		c.u16() // ticket
		m.Exchange, m.RoutingKey = c.shortBytes(), c.shortBytes()
		m.Mandatory, m.Immediate = c.bit(), c.bit()
	case 60<<16 | 60:
		m.ConsumerTag, m.DeliveryTag, m.Redelivered = c.shortBytes(), c.u64(), c.bit()
		m.Exchange, m.RoutingKey = c.shortBytes(), c.shortBytes()
	default:
		return errf("method (%d,%d) is not basic.publish or basic.deliver", m.ClassID, m.MethodID)
	}
	if c.err != nil {
		*m = MessageArgs{}
		return c.err
	}
	return nil
}

// startOK reads Start-Ok's arguments; keep filters the client properties (nil keeps them all).
func (c *cursor) startOK(keep func(name []byte) bool) *ConnectionStartOK {
	v := &ConnectionStartOK{}
	if keep == nil {
		v.ClientProperties = c.table(0)
	} else {
		v.ClientProperties = c.tableKeep(keep)
	}
	v.Mechanism = c.shortstr()
	resp := c.longBytes()
	v.Locale = c.shortstr()
	if c.err == nil {
		v.User = saslUser(v.Mechanism, resp)
	}
	return v
}

func saslUser(mechanism string, resp []byte) string {
	switch mechanism {
	case "PLAIN":
		authzid, rest, ok := bytes.Cut(resp, []byte{0})
		if !ok {
			return ""
		}
		user, _, ok := bytes.Cut(rest, []byte{0})
		if !ok {
			return ""
		}
		if len(user) == 0 {
			return string(authzid)
		}
		return string(user)
	case "AMQPLAIN":
		if u, ok := amqplainLogin(resp); ok {
			return u
		}
		if len(resp) >= 4 {
			c := cursor{b: resp}
			if n := c.u32(); uint64(n) == uint64(len(resp)-4) {
				u, _ := amqplainLogin(resp[4:])
				return u
			}
		}
	}
	return ""
}

// amqplainLogin walks the fields of an AMQPLAIN table and returns the LOGIN value. Other values, PASSWORD
// among them, are skipped without being converted to anything that outlives the call.
func amqplainLogin(b []byte) (string, bool) {
	c := cursor{b: b}
	login, found := "", false
	for c.err == nil && c.remaining() > 0 {
		name := c.shortBytes()
		typ := c.u8()
		if c.err != nil {
			break
		}
		if string(name) == "LOGIN" && typ == 'S' {
			login, found = c.longstr(), true
			continue
		}
		// Skip the value: put the type octet back and let skipValue walk it.
		c.off--
		c.skipValue(0)
	}
	return login, found && c.err == nil
}

// skipValue passes over one typed value without building it.
func (c *cursor) skipValue(depth int) {
	if depth >= maxTableDepth {
		c.fail("nesting deeper than %d", maxTableDepth)
		return
	}
	typ := c.u8()
	var n int
	switch typ {
	case 't', 'b', 'B':
		n = 1
	case 's', 'U', 'u':
		n = 2
	case 'I', 'i', 'f':
		n = 4
	case 'l', 'L', 'd', 'T':
		n = 8
	case 'D':
		n = 5
	case 'S', 'x', 'A', 'F':
		c.longBytes()
		return
	case 'V':
		return
	default:
		c.fail("unknown field type 0x%02x at offset %d", typ, c.off-1)
		return
	}
	c.take(n, "field value")
}
