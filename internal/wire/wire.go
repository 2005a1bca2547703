// Package wire builds AMQP 0-9-1 frames for tests and fuzz seeds: the protocol header, method frames, content
// headers with properties and field tables, body frames split at a frame_max, heartbeats.
//
// It is deliberately small and trusting: functions return fresh []byte, panic on values a field cannot hold (a
// short string over 255 bytes, an unsupported table value), and do not validate protocol state. It is stdlib only
// and imports nothing of ours, so frames, correlate and end-to-end tests can all use it without cycles.
//
// Typical use:
//
//	b := wire.Concat(
//		wire.ProtocolHeader(),
//		wire.StartOKPlain(wire.Table{"connection_name": "nova-api:42:uuid"}, "guest", "guest"),
//		wire.TuneOK(2047, 131072, 60),
//		wire.Publish(1, "nova", "scheduler", false),
//		wire.Header(1, uint64(len(body)), wire.Properties{ContentType: "application/json"}),
//	)
//	b = append(b, wire.Body(1, body, 131072)...)
package wire

import (
	"encoding/binary"
	"fmt"
	"math"
	"sort"
	"time"
)

// FrameEnd closes every frame.
const FrameEnd = 0xCE

// Frame types.
const (
	TypeMethod    = 1
	TypeHeader    = 2
	TypeBody      = 3
	TypeHeartbeat = 8
)

// Table is a field table. Values: bool, int8, uint8, int16, uint16, int32, uint32, int64, int (as 'I' if it fits,
// else 'l'), float32, float64, Decimal, string, []byte, []any, time.Time, Table, nil. Keys are written sorted, so
// output is deterministic.
type Table map[string]any

// Decimal is a decimal field: Value / 10^Scale.
type Decimal struct {
	Scale uint8
	Value int32
}

// ProtocolHeader returns "AMQP\x00\x00\x09\x01".
func ProtocolHeader() []byte { return []byte{'A', 'M', 'Q', 'P', 0, 0, 9, 1} }

// Frame wraps a payload: type, channel, size, payload, 0xCE.
func Frame(typ byte, channel uint16, payload []byte) []byte {
	b := make([]byte, 0, 8+len(payload))
	b = append(b, typ)
	b = binary.BigEndian.AppendUint16(b, channel)
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	b = append(b, payload...)
	return append(b, FrameEnd)
}

// Heartbeat returns a heartbeat frame (channel 0, empty payload).
func Heartbeat() []byte { return Frame(TypeHeartbeat, 0, nil) }

// Concat joins frames into one stream.
func Concat(parts ...[]byte) []byte {
	var n int
	for _, p := range parts {
		n += len(p)
	}
	b := make([]byte, 0, n)
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// Arg encodes one method argument; Method writes them in order. Use the typed helpers: Octet, Short, Long, LongLong, ShortStr, LongStr,
// Bits (consecutive bits packed into one octet) and TableArg.
type Arg func([]byte) []byte

// Octet is a uint8 argument.
func Octet(v uint8) Arg { return func(b []byte) []byte { return append(b, v) } }

// Short is a uint16 argument.
func Short(v uint16) Arg { return func(b []byte) []byte { return binary.BigEndian.AppendUint16(b, v) } }

// Long is a uint32 argument.
func Long(v uint32) Arg { return func(b []byte) []byte { return binary.BigEndian.AppendUint32(b, v) } }

// LongLong is a uint64 argument.
func LongLong(v uint64) Arg {
	return func(b []byte) []byte { return binary.BigEndian.AppendUint64(b, v) }
}

// ShortStr is a short string argument (at most 255 bytes).
func ShortStr(s string) Arg { return func(b []byte) []byte { return appendShortStr(b, s) } }

// LongStr is a long string argument.
func LongStr(s string) Arg { return func(b []byte) []byte { return appendLongStr(b, s) } }

// Bits packs consecutive bit arguments into octets, first bit in the lowest position (spec 4.2.5.2).
func Bits(v ...bool) Arg {
	return func(b []byte) []byte {
		for i := 0; i < len(v); i += 8 {
			var o byte
			for j := 0; j < 8 && i+j < len(v); j++ {
				if v[i+j] {
					o |= 1 << j
				}
			}
			b = append(b, o)
		}
		return b
	}
}

// TableArg is a field-table argument (with its 4-byte length).
func TableArg(t Table) Arg { return func(b []byte) []byte { return AppendTable(b, t) } }

// Raw appends bytes as they are.
func Raw(p []byte) Arg { return func(b []byte) []byte { return append(b, p...) } }

// MethodPayload is class id, method id, then the arguments.
func MethodPayload(class, method uint16, args ...Arg) []byte {
	b := binary.BigEndian.AppendUint16(nil, class)
	b = binary.BigEndian.AppendUint16(b, method)
	for _, a := range args {
		b = a(b)
	}
	return b
}

// Method returns a method frame.
func Method(channel, class, method uint16, args ...Arg) []byte {
	return Frame(TypeMethod, channel, MethodPayload(class, method, args...))
}

// Start is Connection.Start (broker → client) as RabbitMQ sends it.
func Start(serverProps Table) []byte {
	return Method(0, 10, 10, Octet(0), Octet(9), TableArg(serverProps), LongStr("AMQPLAIN PLAIN"), LongStr("en_US"))
}

// StartOKPlain is Connection.Start-Ok with a PLAIN response "\x00user\x00password".
func StartOKPlain(clientProps Table, user, password string) []byte {
	return Method(0, 10, 11, TableArg(clientProps), ShortStr("PLAIN"), LongStr("\x00"+user+"\x00"+password),
		ShortStr("en_US"))
}

// StartOKAMQPlain is Connection.Start-Ok with an AMQPLAIN response: a table of LOGIN and PASSWORD without the
// table's 4-byte length, as py-amqp and amqp091-go send it.
func StartOKAMQPlain(clientProps Table, user, password string) []byte {
	t := AppendTable(nil, Table{"LOGIN": user, "PASSWORD": password})
	return Method(0, 10, 11, TableArg(clientProps), ShortStr("AMQPLAIN"), LongStr(string(t[4:])), ShortStr("en_US"))
}

// Tune is Connection.Tune (broker → client).
func Tune(channelMax uint16, frameMax uint32, heartbeat uint16) []byte {
	return Method(0, 10, 30, Short(channelMax), Long(frameMax), Short(heartbeat))
}

// TuneOK is Connection.Tune-Ok (client → broker).
func TuneOK(channelMax uint16, frameMax uint32, heartbeat uint16) []byte {
	return Method(0, 10, 31, Short(channelMax), Long(frameMax), Short(heartbeat))
}

// Open is Connection.Open.
func Open(vhost string) []byte { return Method(0, 10, 40, ShortStr(vhost), ShortStr(""), Bits(false)) }

// OpenOK is Connection.Open-Ok.
func OpenOK() []byte { return Method(0, 10, 41, ShortStr("")) }

// ChannelOpen is Channel.Open.
func ChannelOpen(ch uint16) []byte { return Method(ch, 20, 10, ShortStr("")) }

// ChannelOpenOK is Channel.Open-Ok.
func ChannelOpenOK(ch uint16) []byte { return Method(ch, 20, 11, LongStr("")) }

// ExchangeDeclare is Exchange.Declare; passive, auto-delete, internal and no-wait are false.
func ExchangeDeclare(ch uint16, exchange, kind string, durable bool, args Table) []byte {
	return Method(ch, 40, 10, Short(0), ShortStr(exchange), ShortStr(kind), Bits(false, durable, false, false, false),
		TableArg(args))
}

// QueueDeclare is Queue.Declare.
func QueueDeclare(ch uint16, queue string, durable, exclusive, autoDelete bool, args Table) []byte {
	return Method(ch, 50, 10, Short(0), ShortStr(queue), Bits(false, durable, exclusive, autoDelete, false),
		TableArg(args))
}

// QueueDeclareOK is Queue.Declare-Ok.
func QueueDeclareOK(ch uint16, queue string, messages, consumers uint32) []byte {
	return Method(ch, 50, 11, ShortStr(queue), Long(messages), Long(consumers))
}

// QueueBind is Queue.Bind.
func QueueBind(ch uint16, queue, exchange, key string, args Table) []byte {
	return Method(ch, 50, 20, Short(0), ShortStr(queue), ShortStr(exchange), ShortStr(key), Bits(false),
		TableArg(args))
}

// Consume is Basic.Consume.
func Consume(ch uint16, queue, tag string, noAck, exclusive bool, args Table) []byte {
	return Method(ch, 60, 20, Short(0), ShortStr(queue), ShortStr(tag), Bits(false, noAck, exclusive, false),
		TableArg(args))
}

// ConsumeOK is Basic.Consume-Ok.
func ConsumeOK(ch uint16, tag string) []byte { return Method(ch, 60, 21, ShortStr(tag)) }

// Cancel is Basic.Cancel.
func Cancel(ch uint16, tag string, noWait bool) []byte {
	return Method(ch, 60, 30, ShortStr(tag), Bits(noWait))
}

// Publish is Basic.Publish.
func Publish(ch uint16, exchange, key string, mandatory bool) []byte {
	return Method(ch, 60, 40, Short(0), ShortStr(exchange), ShortStr(key), Bits(mandatory, false))
}

// Return is Basic.Return.
func Return(ch uint16, code uint16, text, exchange, key string) []byte {
	return Method(ch, 60, 50, Short(code), ShortStr(text), ShortStr(exchange), ShortStr(key))
}

// Deliver is Basic.Deliver.
func Deliver(ch uint16, tag string, deliveryTag uint64, redelivered bool, exchange, key string) []byte {
	return Method(ch, 60, 60, ShortStr(tag), LongLong(deliveryTag), Bits(redelivered), ShortStr(exchange),
		ShortStr(key))
}

// GetOK is Basic.Get-Ok.
func GetOK(ch uint16, deliveryTag uint64, redelivered bool, exchange, key string, remaining uint32) []byte {
	return Method(ch, 60, 71, LongLong(deliveryTag), Bits(redelivered), ShortStr(exchange), ShortStr(key),
		Long(remaining))
}

// Ack is Basic.Ack.
func Ack(ch uint16, deliveryTag uint64, multiple bool) []byte {
	return Method(ch, 60, 80, LongLong(deliveryTag), Bits(multiple))
}

// Nack is Basic.Nack.
func Nack(ch uint16, deliveryTag uint64, multiple, requeue bool) []byte {
	return Method(ch, 60, 120, LongLong(deliveryTag), Bits(multiple, requeue))
}

// Reject is Basic.Reject.
func Reject(ch uint16, deliveryTag uint64, requeue bool) []byte {
	return Method(ch, 60, 90, LongLong(deliveryTag), Bits(requeue))
}

// ConfirmSelect is Confirm.Select.
func ConfirmSelect(ch uint16) []byte { return Method(ch, 85, 10, Bits(false)) }

// Properties are the basic-class content properties; empty strings, zero numbers, nil Headers and a zero
// Timestamp are left out (their flag bits unset).
type Properties struct {
	ContentType, ContentEncoding string
	Headers                      Table
	DeliveryMode, Priority       uint8
	CorrelationID, ReplyTo       string
	Expiration, MessageID        string
	Timestamp                    time.Time
	Type, UserID, AppID          string
	ClusterID                    string
}

// HeaderPayload is a basic-class content-header payload.
func HeaderPayload(bodySize uint64, p Properties) []byte {
	var flags uint16
	var v []byte
	str := func(bit uint16, s string) {
		if s != "" {
			flags |= bit
			v = appendShortStr(v, s)
		}
	}
	str(0x8000, p.ContentType)
	str(0x4000, p.ContentEncoding)
	if p.Headers != nil {
		flags |= 0x2000
		v = AppendTable(v, p.Headers)
	}
	if p.DeliveryMode != 0 {
		flags |= 0x1000
		v = append(v, p.DeliveryMode)
	}
	if p.Priority != 0 {
		flags |= 0x0800
		v = append(v, p.Priority)
	}
	str(0x0400, p.CorrelationID)
	str(0x0200, p.ReplyTo)
	str(0x0100, p.Expiration)
	str(0x0080, p.MessageID)
	if !p.Timestamp.IsZero() {
		flags |= 0x0040
		v = binary.BigEndian.AppendUint64(v, uint64(p.Timestamp.Unix()))
	}
	str(0x0020, p.Type)
	str(0x0010, p.UserID)
	str(0x0008, p.AppID)
	str(0x0004, p.ClusterID)
	b := binary.BigEndian.AppendUint16(nil, 60)
	b = binary.BigEndian.AppendUint16(b, 0)
	b = binary.BigEndian.AppendUint64(b, bodySize)
	b = binary.BigEndian.AppendUint16(b, flags)
	return append(b, v...)
}

// Header returns a basic-class content-header frame.
func Header(ch uint16, bodySize uint64, p Properties) []byte {
	return Frame(TypeHeader, ch, HeaderPayload(bodySize, p))
}

// Body returns body frames for body, each payload at most frameMax − 8 bytes (frame_max counts the 7-byte header
// and the end octet). frameMax 0 means one frame. An empty body gives no frame, as clients send none.
func Body(ch uint16, body []byte, frameMax uint32) []byte {
	max := len(body)
	if frameMax != 0 {
		max = int(frameMax) - 8
	}
	var b []byte
	for len(body) > 0 {
		n := min(max, len(body))
		b = append(b, Frame(TypeBody, ch, body[:n])...)
		body = body[n:]
	}
	return b
}

// Message is Publish + Header + Body frames.
func Message(ch uint16, exchange, key string, p Properties, body []byte, frameMax uint32) []byte {
	return Concat(Publish(ch, exchange, key, false), Header(ch, uint64(len(body)), p), Body(ch, body, frameMax))
}

// AppendTable appends a field table with its 4-byte length.
func AppendTable(b []byte, t Table) []byte {
	at := len(b)
	b = append(b, 0, 0, 0, 0)
	keys := make([]string, 0, len(t))
	for k := range t {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b = appendShortStr(b, k)
		b = appendValue(b, t[k])
	}
	binary.BigEndian.PutUint32(b[at:], uint32(len(b)-at-4))
	return b
}

func appendValue(b []byte, v any) []byte {
	switch v := v.(type) {
	case bool:
		if v {
			return append(b, 't', 1)
		}
		return append(b, 't', 0)
	case int8:
		return append(b, 'b', byte(v))
	case uint8:
		return append(b, 'B', v)
	case int16:
		return binary.BigEndian.AppendUint16(append(b, 's'), uint16(v))
	case uint16:
		return binary.BigEndian.AppendUint16(append(b, 'u'), v)
	case int32:
		return binary.BigEndian.AppendUint32(append(b, 'I'), uint32(v))
	case int:
		if v >= math.MinInt32 && v <= math.MaxInt32 {
			return binary.BigEndian.AppendUint32(append(b, 'I'), uint32(int32(v)))
		}
		return binary.BigEndian.AppendUint64(append(b, 'l'), uint64(v))
	case uint32:
		return binary.BigEndian.AppendUint32(append(b, 'i'), v)
	case int64:
		return binary.BigEndian.AppendUint64(append(b, 'l'), uint64(v))
	case float32:
		return binary.BigEndian.AppendUint32(append(b, 'f'), math.Float32bits(v))
	case float64:
		return binary.BigEndian.AppendUint64(append(b, 'd'), math.Float64bits(v))
	case Decimal:
		return binary.BigEndian.AppendUint32(append(b, 'D', v.Scale), uint32(v.Value))
	case string:
		return appendLongStr(append(b, 'S'), v)
	case []byte:
		return appendLongStr(append(b, 'x'), string(v))
	case []any:
		b = append(b, 'A', 0, 0, 0, 0)
		at := len(b) - 4
		for _, e := range v {
			b = appendValue(b, e)
		}
		binary.BigEndian.PutUint32(b[at:], uint32(len(b)-at-4))
		return b
	case time.Time:
		return binary.BigEndian.AppendUint64(append(b, 'T'), uint64(v.Unix()))
	case Table:
		return AppendTable(append(b, 'F'), v)
	case nil:
		return append(b, 'V')
	}
	panic(fmt.Sprintf("wire: unsupported table value %T", v))
}

func appendShortStr(b []byte, s string) []byte {
	if len(s) > 255 {
		panic("wire: short string over 255 bytes")
	}
	return append(append(b, byte(len(s))), s...)
}

func appendLongStr(b []byte, s string) []byte {
	return append(binary.BigEndian.AppendUint32(b, uint32(len(s))), s...)
}
