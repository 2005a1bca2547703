package frames

import "time"

// Type is the AMQP 0-9-1 frame type octet (spec 4.2.3).
type Type uint8

// Frame types.
const (
	TypeMethod    Type = 1
	TypeHeader    Type = 2
	TypeBody      Type = 3
	TypeHeartbeat Type = 8
)

// Direction says which way bytes flow on a proxied connection.
type Direction uint8

// Directions.
const (
	ClientToServer Direction = iota // client → broker
	ServerToClient                  // broker → client
)

// Frame is one complete AMQP frame as handed to a Handler.
//
// A Frame and every slice it holds are borrowed: they are valid only during the Handler call and are reused (or
// point into the caller's Write buffer) afterwards. Copy what you keep.
type Frame struct {
	Dir     Direction
	Type    Type
	Channel uint16
	// Payload is the frame payload, without the 7-byte header and the frame-end octet.
	Payload []byte
	// ClassID and MethodID are set for method frames (the first four payload octets); zero otherwise.
	ClassID  uint16
	MethodID uint16
	// Offset is the stream offset (in bytes, from the first byte seen in this direction) of the frame's first octet.
	Offset int64
	// Time is when the bytes that completed this frame were read from the socket, as stamped by the proxy before
	// it forwarded them (Decoder.WriteStamped); time.Now() at decode time for plain Write. Stamping at read time
	// keeps causally related frames on different connections in causal order: a broker delivery is read after
	// the publish it carries was read, and a reply is read after the delivery it answers.
	Time time.Time
}

// Handler receives decoded frames. It is called synchronously from Decoder.Write, so it must not block; it must not
// keep f or f.Payload after returning. A panic in a Handler is recovered by the Decoder, which then switches itself
// off like a decode error.
type Handler interface {
	HandleFrame(f *Frame)
}

// WriteEnder is an optional interface of a Handler. EndWrite is called after every Decoder write, once the frames
// that write completed (possibly none) have been handed over, from the goroutine that wrote. A handler that hands
// its results on in batches (one hand-off per write rather than per frame) flushes here. A panic in EndWrite
// switches decoding off like a panic in HandleFrame.
type WriteEnder interface {
	EndWrite(dir Direction)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(f *Frame)

// HandleFrame calls h(f).
func (h HandlerFunc) HandleFrame(f *Frame) { h(f) }

// Table is an AMQP field table. Values are: bool, int8, uint8, int16, uint16, int32, uint32, int64, float32, float64,
// Decimal, string, []byte (byte array 'x'), []any (array 'A'), time.Time (timestamp 'T', UTC), Table (nested 'F'),
// nil (void 'V'). The type letters follow RabbitMQ's 0-9-1 errata, see tables.go.
type Table map[string]any

// Decimal is the AMQP decimal-value field: Value / 10^Scale.
type Decimal struct {
	Scale uint8
	Value int32
}

// Properties holds the fourteen basic-class content properties (spec 1.8.2). Flags says which were present.
type Properties struct {
	Flags           uint16
	ContentType     string
	ContentEncoding string
	Headers         Table
	DeliveryMode    uint8
	Priority        uint8
	CorrelationID   string
	ReplyTo         string
	Expiration      string
	MessageID       string
	Timestamp       time.Time
	Type            string
	UserID          string
	AppID           string
	ClusterID       string
}

// Property flag bits, in spec order from the high bit.
const (
	FlagContentType     uint16 = 0x8000
	FlagContentEncoding uint16 = 0x4000
	FlagHeaders         uint16 = 0x2000
	FlagDeliveryMode    uint16 = 0x1000
	FlagPriority        uint16 = 0x0800
	FlagCorrelationID   uint16 = 0x0400
	FlagReplyTo         uint16 = 0x0200
	FlagExpiration      uint16 = 0x0100
	FlagMessageID       uint16 = 0x0080
	FlagTimestamp       uint16 = 0x0040
	FlagType            uint16 = 0x0020
	FlagUserID          uint16 = 0x0010
	FlagAppID           uint16 = 0x0008
	FlagClusterID       uint16 = 0x0004
)

// ContentHeader is a decoded content-header frame payload.
type ContentHeader struct {
	ClassID    uint16
	Weight     uint16
	BodySize   uint64
	Properties Properties
}

// Method is a decoded method frame. Every concrete method type below implements it.
type Method interface {
	ClassID() uint16
	MethodID() uint16
	// Name is the spec name, e.g. "basic.publish".
	Name() string
}

// Class ids.
const (
	ClassConnection uint16 = 10
	ClassChannel    uint16 = 20
	ClassExchange   uint16 = 40
	ClassQueue      uint16 = 50
	ClassBasic      uint16 = 60
	ClassConfirm    uint16 = 85
	ClassTx         uint16 = 90
)

// ConnectionStart (10,10), broker → client.
type ConnectionStart struct {
	VersionMajor, VersionMinor uint8
	ServerProperties           Table
	Mechanisms                 string
	Locales                    string
}

// ConnectionStartOK (10,11). The SASL response is never exposed: only the user name is extracted from PLAIN
// ("\x00user\x00pass") or AMQPLAIN (a table with LOGIN and PASSWORD); the password never leaves this package.
type ConnectionStartOK struct {
	ClientProperties Table
	Mechanism        string
	User             string
	Locale           string
}

// ConnectionTune (10,30) and ConnectionTuneOK (10,31).
type ConnectionTune struct {
	ChannelMax uint16
	FrameMax   uint32
	Heartbeat  uint16
}

// ConnectionTuneOK (10,31).
type ConnectionTuneOK struct {
	ChannelMax uint16
	FrameMax   uint32
	Heartbeat  uint16
}

// ConnectionOpen (10,40).
type ConnectionOpen struct{ VirtualHost string }

// ConnectionOpenOK (10,41).
type ConnectionOpenOK struct{}

// ConnectionClose (10,50).
//
// The failing method's ids are FailingClassID/FailingMethodID: a struct cannot have a field and a method (Method's
// ClassID/MethodID) with the same name.
type ConnectionClose struct {
	ReplyCode                       uint16
	ReplyText                       string
	FailingClassID, FailingMethodID uint16 // the failing method, if any
}

// ConnectionCloseOK (10,51).
type ConnectionCloseOK struct{}

// ConnectionBlocked (10,60), a RabbitMQ extension.
type ConnectionBlocked struct{ Reason string }

// ConnectionUnblocked (10,61).
type ConnectionUnblocked struct{}

// ChannelOpen (20,10).
type ChannelOpen struct{}

// ChannelOpenOK (20,11).
type ChannelOpenOK struct{}

// ChannelFlow (20,20).
type ChannelFlow struct{ Active bool }

// ChannelFlowOK (20,21).
type ChannelFlowOK struct{ Active bool }

// ChannelClose (20,40).
type ChannelClose struct {
	ReplyCode                       uint16
	ReplyText                       string
	FailingClassID, FailingMethodID uint16 // the failing method, if any
}

// ChannelCloseOK (20,41).
type ChannelCloseOK struct{}

// ExchangeDeclare (40,10).
type ExchangeDeclare struct {
	Exchange   string
	Type       string
	Passive    bool
	Durable    bool
	AutoDelete bool
	Internal   bool
	NoWait     bool
	Arguments  Table
}

// ExchangeDeclareOK (40,11).
type ExchangeDeclareOK struct{}

// QueueDeclare (50,10).
type QueueDeclare struct {
	Queue      string
	Passive    bool
	Durable    bool
	Exclusive  bool
	AutoDelete bool
	NoWait     bool
	Arguments  Table
}

// QueueDeclareOK (50,11).
type QueueDeclareOK struct {
	Queue         string
	MessageCount  uint32
	ConsumerCount uint32
}

// QueueBind (50,20).
type QueueBind struct {
	Queue      string
	Exchange   string
	RoutingKey string
	NoWait     bool
	Arguments  Table
}

// QueueBindOK (50,21).
type QueueBindOK struct{}

// QueueDelete (50,40).
type QueueDelete struct {
	Queue    string
	IfUnused bool
	IfEmpty  bool
	NoWait   bool
}

// QueueDeleteOK (50,41).
type QueueDeleteOK struct{ MessageCount uint32 }

// BasicQos (60,10).
type BasicQos struct {
	PrefetchSize  uint32
	PrefetchCount uint16
	Global        bool
}

// BasicQosOK (60,11).
type BasicQosOK struct{}

// BasicConsume (60,20).
type BasicConsume struct {
	Queue       string
	ConsumerTag string
	NoLocal     bool
	NoAck       bool
	Exclusive   bool
	NoWait      bool
	Arguments   Table
}

// BasicConsumeOK (60,21).
type BasicConsumeOK struct{ ConsumerTag string }

// BasicCancel (60,30); sent by either peer (the broker sends it when a consumed queue is deleted).
type BasicCancel struct {
	ConsumerTag string
	NoWait      bool
}

// BasicCancelOK (60,31).
type BasicCancelOK struct{ ConsumerTag string }

// BasicPublish (60,40).
type BasicPublish struct {
	Exchange   string
	RoutingKey string
	Mandatory  bool
	Immediate  bool
}

// BasicReturn (60,50).
type BasicReturn struct {
	ReplyCode  uint16
	ReplyText  string
	Exchange   string
	RoutingKey string
}

// BasicDeliver (60,60).
type BasicDeliver struct {
	ConsumerTag string
	DeliveryTag uint64
	Redelivered bool
	Exchange    string
	RoutingKey  string
}

// BasicGet (60,70).
type BasicGet struct {
	Queue string
	NoAck bool
}

// BasicGetOK (60,71).
type BasicGetOK struct {
	DeliveryTag  uint64
	Redelivered  bool
	Exchange     string
	RoutingKey   string
	MessageCount uint32
}

// BasicGetEmpty (60,72).
type BasicGetEmpty struct{}

// BasicAck (60,80): from the broker a publisher confirm, from the client a consumer ack.
type BasicAck struct {
	DeliveryTag uint64
	Multiple    bool
}

// BasicReject (60,90).
type BasicReject struct {
	DeliveryTag uint64
	Requeue     bool
}

// BasicNack (60,120), a RabbitMQ extension.
type BasicNack struct {
	DeliveryTag uint64
	Multiple    bool
	Requeue     bool
}

// ConfirmSelect (85,10).
type ConfirmSelect struct{ NoWait bool }

// ConfirmSelectOK (85,11).
type ConfirmSelectOK struct{}

// UnknownMethod is any other method: recognised by its ids and passed over.
type UnknownMethod struct{ Class, Method uint16 }
