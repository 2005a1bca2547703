package frames

// The Method interface for every known method: ids and spec names (spec 1.4-1.8, plus RabbitMQ's extensions).

func (*ConnectionStart) ClassID() uint16  { return 10 }
func (*ConnectionStart) MethodID() uint16 { return 10 }
func (*ConnectionStart) Name() string     { return "connection.start" }

func (*ConnectionStartOK) ClassID() uint16  { return 10 }
func (*ConnectionStartOK) MethodID() uint16 { return 11 }
func (*ConnectionStartOK) Name() string     { return "connection.start-ok" }

func (*ConnectionTune) ClassID() uint16  { return 10 }
func (*ConnectionTune) MethodID() uint16 { return 30 }
func (*ConnectionTune) Name() string     { return "connection.tune" }

func (*ConnectionTuneOK) ClassID() uint16  { return 10 }
func (*ConnectionTuneOK) MethodID() uint16 { return 31 }
func (*ConnectionTuneOK) Name() string     { return "connection.tune-ok" }

func (*ConnectionOpen) ClassID() uint16  { return 10 }
func (*ConnectionOpen) MethodID() uint16 { return 40 }
func (*ConnectionOpen) Name() string     { return "connection.open" }

func (*ConnectionOpenOK) ClassID() uint16  { return 10 }
func (*ConnectionOpenOK) MethodID() uint16 { return 41 }
func (*ConnectionOpenOK) Name() string     { return "connection.open-ok" }

func (*ConnectionClose) ClassID() uint16  { return 10 }
func (*ConnectionClose) MethodID() uint16 { return 50 }
func (*ConnectionClose) Name() string     { return "connection.close" }

func (*ConnectionCloseOK) ClassID() uint16  { return 10 }
func (*ConnectionCloseOK) MethodID() uint16 { return 51 }
func (*ConnectionCloseOK) Name() string     { return "connection.close-ok" }

func (*ConnectionBlocked) ClassID() uint16  { return 10 }
func (*ConnectionBlocked) MethodID() uint16 { return 60 }
func (*ConnectionBlocked) Name() string     { return "connection.blocked" }

func (*ConnectionUnblocked) ClassID() uint16  { return 10 }
func (*ConnectionUnblocked) MethodID() uint16 { return 61 }
func (*ConnectionUnblocked) Name() string     { return "connection.unblocked" }

func (*ChannelOpen) ClassID() uint16  { return 20 }
func (*ChannelOpen) MethodID() uint16 { return 10 }
func (*ChannelOpen) Name() string     { return "channel.open" }

func (*ChannelOpenOK) ClassID() uint16  { return 20 }
func (*ChannelOpenOK) MethodID() uint16 { return 11 }
func (*ChannelOpenOK) Name() string     { return "channel.open-ok" }

func (*ChannelFlow) ClassID() uint16  { return 20 }
func (*ChannelFlow) MethodID() uint16 { return 20 }
func (*ChannelFlow) Name() string     { return "channel.flow" }

func (*ChannelFlowOK) ClassID() uint16  { return 20 }
func (*ChannelFlowOK) MethodID() uint16 { return 21 }
func (*ChannelFlowOK) Name() string     { return "channel.flow-ok" }

func (*ChannelClose) ClassID() uint16  { return 20 }
func (*ChannelClose) MethodID() uint16 { return 40 }
func (*ChannelClose) Name() string     { return "channel.close" }

func (*ChannelCloseOK) ClassID() uint16  { return 20 }
func (*ChannelCloseOK) MethodID() uint16 { return 41 }
func (*ChannelCloseOK) Name() string     { return "channel.close-ok" }

func (*ExchangeDeclare) ClassID() uint16  { return 40 }
func (*ExchangeDeclare) MethodID() uint16 { return 10 }
func (*ExchangeDeclare) Name() string     { return "exchange.declare" }

func (*ExchangeDeclareOK) ClassID() uint16  { return 40 }
func (*ExchangeDeclareOK) MethodID() uint16 { return 11 }
func (*ExchangeDeclareOK) Name() string     { return "exchange.declare-ok" }

func (*QueueDeclare) ClassID() uint16  { return 50 }
func (*QueueDeclare) MethodID() uint16 { return 10 }
func (*QueueDeclare) Name() string     { return "queue.declare" }

func (*QueueDeclareOK) ClassID() uint16  { return 50 }
func (*QueueDeclareOK) MethodID() uint16 { return 11 }
func (*QueueDeclareOK) Name() string     { return "queue.declare-ok" }

func (*QueueBind) ClassID() uint16  { return 50 }
func (*QueueBind) MethodID() uint16 { return 20 }
func (*QueueBind) Name() string     { return "queue.bind" }

func (*QueueBindOK) ClassID() uint16  { return 50 }
func (*QueueBindOK) MethodID() uint16 { return 21 }
func (*QueueBindOK) Name() string     { return "queue.bind-ok" }

func (*QueueDelete) ClassID() uint16  { return 50 }
func (*QueueDelete) MethodID() uint16 { return 40 }
func (*QueueDelete) Name() string     { return "queue.delete" }

func (*QueueDeleteOK) ClassID() uint16  { return 50 }
func (*QueueDeleteOK) MethodID() uint16 { return 41 }
func (*QueueDeleteOK) Name() string     { return "queue.delete-ok" }

func (*BasicQos) ClassID() uint16  { return 60 }
func (*BasicQos) MethodID() uint16 { return 10 }
func (*BasicQos) Name() string     { return "basic.qos" }

func (*BasicQosOK) ClassID() uint16  { return 60 }
func (*BasicQosOK) MethodID() uint16 { return 11 }
func (*BasicQosOK) Name() string     { return "basic.qos-ok" }

func (*BasicConsume) ClassID() uint16  { return 60 }
func (*BasicConsume) MethodID() uint16 { return 20 }
func (*BasicConsume) Name() string     { return "basic.consume" }

func (*BasicConsumeOK) ClassID() uint16  { return 60 }
func (*BasicConsumeOK) MethodID() uint16 { return 21 }
func (*BasicConsumeOK) Name() string     { return "basic.consume-ok" }

func (*BasicCancel) ClassID() uint16  { return 60 }
func (*BasicCancel) MethodID() uint16 { return 30 }
func (*BasicCancel) Name() string     { return "basic.cancel" }

func (*BasicCancelOK) ClassID() uint16  { return 60 }
func (*BasicCancelOK) MethodID() uint16 { return 31 }
func (*BasicCancelOK) Name() string     { return "basic.cancel-ok" }

func (*BasicPublish) ClassID() uint16  { return 60 }
func (*BasicPublish) MethodID() uint16 { return 40 }
func (*BasicPublish) Name() string     { return "basic.publish" }

func (*BasicReturn) ClassID() uint16  { return 60 }
func (*BasicReturn) MethodID() uint16 { return 50 }
func (*BasicReturn) Name() string     { return "basic.return" }

func (*BasicDeliver) ClassID() uint16  { return 60 }
func (*BasicDeliver) MethodID() uint16 { return 60 }
func (*BasicDeliver) Name() string     { return "basic.deliver" }

func (*BasicGet) ClassID() uint16  { return 60 }
func (*BasicGet) MethodID() uint16 { return 70 }
func (*BasicGet) Name() string     { return "basic.get" }

func (*BasicGetOK) ClassID() uint16  { return 60 }
func (*BasicGetOK) MethodID() uint16 { return 71 }
func (*BasicGetOK) Name() string     { return "basic.get-ok" }

func (*BasicGetEmpty) ClassID() uint16  { return 60 }
func (*BasicGetEmpty) MethodID() uint16 { return 72 }
func (*BasicGetEmpty) Name() string     { return "basic.get-empty" }

func (*BasicAck) ClassID() uint16  { return 60 }
func (*BasicAck) MethodID() uint16 { return 80 }
func (*BasicAck) Name() string     { return "basic.ack" }

func (*BasicReject) ClassID() uint16  { return 60 }
func (*BasicReject) MethodID() uint16 { return 90 }
func (*BasicReject) Name() string     { return "basic.reject" }

func (*BasicNack) ClassID() uint16  { return 60 }
func (*BasicNack) MethodID() uint16 { return 120 }
func (*BasicNack) Name() string     { return "basic.nack" }

func (*ConfirmSelect) ClassID() uint16  { return 85 }
func (*ConfirmSelect) MethodID() uint16 { return 10 }
func (*ConfirmSelect) Name() string     { return "confirm.select" }

func (*ConfirmSelectOK) ClassID() uint16  { return 85 }
func (*ConfirmSelectOK) MethodID() uint16 { return 11 }
func (*ConfirmSelectOK) Name() string     { return "confirm.select-ok" }

// ClassID returns the class id read from the frame.
func (m *UnknownMethod) ClassID() uint16 { return m.Class }

// MethodID returns the method id read from the frame.
func (m *UnknownMethod) MethodID() uint16 { return m.Method }

// Name is "unknown"; the ids say which method it was.
func (m *UnknownMethod) Name() string { return "unknown" }
