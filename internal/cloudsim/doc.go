// Package cloudsim is the simulated OpenStack cloud behind `amqptrace demo`: a set of fake nova, neutron and
// cinder processes that talk to a RabbitMQ broker (normally through the amqptrace proxy) with oslo.messaging
// 14's exact wire format, so that amqptrace's decoder and correlator cannot tell it from a real deployment.
//
// # What it does
//
// Run connects every simulated process, closes Ready once every RPC server's listener is declared and
// consuming, then runs flows until its context ends (or Config.MaxBoots boots have finished):
//
//   - Instance boots at Config.Rate per second, all messages of one boot under one request context (one
//     request_id and global_request_id, carried from server to server through the _context_* keys, as services
//     do): nova-api casts build_instances (namespace compute_task) to nova-conductor; the conductor calls
//     nova-scheduler's select_destinations (call-monitor _timeout 2, so a slow scheduler sends heartbeat
//     replies) and casts build_and_run_instance to compute.<host>; the compute emits instance.create.start/end
//     notifications and calls the conductor's object_action twice; neutron-server fanout-casts port_update to
//     q-agent-notifier-port-update_fanout, and the agent on that host calls get_devices_details_list and
//     update_device_up on q-plugin; cinder-api casts create_volume to cinder-scheduler, which casts it on to
//     cinder-volume.storage1@lvm, and calls initialize_connection there; finally nova-api calls
//     get_console_output on the chosen compute.
//   - Periodic neutron-openvswitch-agent work: tunnel_sync at start, report_state (topic q-reports-plugin) every
//     5 s / Rate, each with a fresh admin context and no global request id.
//   - Faults, drawn per call: remote exceptions (NoValidHost from the scheduler, InstanceNotFound,
//     PortNotFound, VolumeBackendAPIException), slow servers (2.5 s), and timeouts: a 1.5 s call whose server
//     answers after 3.5 s (a late reply the caller logs and drops, like oslo's "No calling threads waiting for
//     msg_id"), or, for get_console_output, a call to compute.host-gone, which has no server.
//   - A ceilometer-agent-notification listener drains notifications.info/.error so a long demo does not pile
//     them up in the broker.
//
// Nova reaches neutron and cinder over REST in real life; the simulation plays only their AMQP side (the
// neutron-server fanout and the agents' calls, cinder-api's casts and calls), triggered from the compute's
// build handler. Both are documented deviations from a literal "nova-compute calls neutron/cinder over RPC".
//
// # Wire fidelity
//
// Per process: connection_name "<program>:<pid>:<uuid4>" with a fake pid stable for a Seed, AMQPLAIN login,
// locale en_US, py-amqp 5.1.1 client properties; one listener connection per RPC server (topic exchange,
// queues <topic> and <topic>.<server>, auto-delete fanout exchange <topic>_fanout and queue
// <topic>_fanout_<hex> with x-expires 1800000, consumer tags "1", "2", "3", acks on receipt, Queue.Delete of
// the fanout queue at shutdown); a reply listener opened at the first call (reply_<hex>, x-expires, tag "1");
// one sender connection on channel 1 that declares each exchange once, sends Confirm.Select before its first
// publish and waits for every confirm; a separate notification sender that declares <topic>.<priority> and
// its binding before the first notification. Bodies are built as ordered key lists and serialised like
// Python's json.dumps (", " and ": " separators, ensure_ascii) in oslo's key order. Properties are
// content_type application/json, content_encoding utf-8, an empty headers table, delivery_mode 2, priority 0,
// and expiration (the timeout in ms) on calls only. Replies go to the default exchange, mandatory.
//
// amqp091-go cannot send an empty headers table or a zero priority, and it writes its own client
// capabilities. On amqp:// URLs the simulation therefore wraps its own sockets in a small writer-side filter
// (wireFixConn) that rewrites exactly those frames to py-amqp's bytes; with amqps:// it cannot (TLS is layered
// above the dialer) and property flags are amqp091-go's (0xd000/0xd100 instead of 0xf800/0xf900).
//
// Secrets are fake on purpose, to exercise amqptrace's redaction: _context_auth_token is a made-up
// "gAAAAAB…" string (null in notifications, as oslo sanitises it), build_instances carries an admin_password
// argument and initialize_connection returns a CHAP auth_password. None of them is logged here.
//
// # What it does not do
//
// It does not reconnect listeners after a broker failure (senders reopen on the next publish), does not
// compress bodies, does not send heartbeat frames other than amqp091-go's, and does not model the old
// pre-2016 two-message replies. It reads and writes nothing but its own AMQP connections.
//
// # Counting
//
// Counts reports what the cloud sent, by (kind, method, status): Sent by the status it meant (what amqptrace
// should record from the caller's side), Observed by what its callers saw, and Mismatched when those differ
// (an overloaded machine). A message whose outcome was cut short by shutdown or a lost broker is counted with
// status "aborted". Fates are drawn by the caller and handed to the server in process, so the wire carries
// only oslo's fields; ids are random (crypto/rand) so parallel runs with one Seed never share queue names.
//
// # Ownership and lifecycle
//
// A Cloud runs once. Every goroutine it starts (consume loops, handlers, heartbeat tickers, flows) is joined
// before Run returns; Run tears down listeners first, then senders and reply listeners. Delivery bodies are
// bounded (maxBody) before they are parsed, concurrent boots are bounded (maxBootsInFlight, skips counted),
// and logging is per connection or rate-limited, never per message.
package cloudsim
