// Command amqptrace-bench measures what amqptrace costs compared with talking to RabbitMQ directly and with a plain
// TCP proxy (haproxy in TCP mode). It is what `make bench` runs.
//
// Typical usage:
//
//	make bench                                   # build bin/amqptrace, make sure the broker runs, then:
//	go run ./cmd/amqptrace-bench --amqptrace bin/amqptrace [--rounds 3] [--duration 5s] [--idle-conns 1000]
//	    [--workloads throughput,rpc,idle,large,capture] [--json] [--otlp-endpoint 127.0.0.1:9]
//
// What it does. One invocation runs R rounds. Each round visits the three paths in a fixed order (direct, haproxy,
// amqptrace), so slow drift of the machine (other load, broker state, thermal) hits all three alike. For each path
// it starts a fresh proxy process on a free loopback port (none for direct), runs the per-path workloads through
// it, and stops it. Then the interleaved workloads run: the three paths (fresh proxies) get their own clients at
// once and take turns in short slices, the order rotating every cycle, for R rounds of D per path. Measured path
// after path in separate windows, throughput and RPC latency drifted with the machine by 10-30% between windows:
// haproxy in amqptrace's slot came out at 0.80-1.05 of haproxy in throughput round by round, 0.89 as a median over
// five rounds (a MISS against itself), and at 0.67-1.29 in RPC latency. Interleaved, a path's round sees the same
// machine as the others': haproxy against itself came out at 0.89-1.06 in throughput round by round (8 rounds).
// The workloads are:
//
//   - idle (per path): open N AMQP connections (each with channel 1, like oslo.messaging) through the proxy and
//     divide the proxy's VmRSS growth by N. It runs first on the fresh process so that its baseline is not
//     inflated or deflated by buffers that an earlier workload left in the heap. Both readings are taken the same
//     way for both proxies, the first after the start-up probe's connection, the second as soon as the last
//     connection is open, and neither proxy is asked to collect or trim anything: for amqptrace that counts the
//     garbage its handshakes left that the Go collector has not reclaimed yet, which is memory it holds then.
//     The direct path has no proxy: n/a.
//   - large (per path): 8 MiB bodies, one publisher and one consumer; MB/s (10^6 bytes) publish to consume.
//   - throughput (interleaved, 500 ms slices): 4 publishers with publisher confirms (a pipelined window of
//     outstanding confirms) and 4 consumers with manual acks, 1 KiB bodies, each pair on its own queue; end-to-end
//     msgs/s counted at the consumers. Each slice lets the publishers run 100 ms before it counts, and ends when
//     every message it published has been consumed; neither edge is counted.
//   - rpc (interleaved, 250 ms slices): oslo.messaging-shaped calls. Callers publish a double-encoded JSON
//     envelope to a topic exchange and wait for the confirm and for the reply on their process's reply queue;
//     servers consume the topic queue, ack on receipt and reply on the default exchange (mandatory, confirmed).
//     calls/s, p50 and p99 latency; a slice's calls in flight finish (and count) before the next path starts.
//   - capture (last; needs root, tcpdump and the amqptrace binary): amqptrace's passive mode, which has no
//     haproxy counterpart, so its figures sit in the amqptrace column. Live: `amqptrace capture --interface lo
//     --port <broker port>` runs while the throughput workload's clients talk to the broker directly (R rounds of
//     D); its CPU per message is stated beside the proxy's CPU per message of the throughput rows, and its kernel
//     drops (from its stop line) are judged against 0. Replay: tcpdump records the rpc workload on lo for up to
//     3 s, then `amqptrace replay` reads the file R times on one core (taskset -c 0, GOMAXPROCS=1); MB/s and
//     records/s over each replay's wall time, process start included. See workload_capture.go.
//
// For each workload it reads the proxy's utime+stime from /proc/<pid>/stat at the start and the end of the
// measurement window (for the interleaved workloads, of each of the path's slices) and divides by the messages (or
// calls) of that window. It prints, per workload and metric, the median over rounds of each path, the ratios
// amqptrace/haproxy and amqptrace/direct, and PASS/MISS against the targets (throughput and calls/s ≥ 0.95 ×
// haproxy; p50 and p99 ≤ 1.05 × haproxy; proxy CPU per message ≤ 1.5 × haproxy; ≤ 8 KiB proxy memory per idle
// connection).
//
// What it does not do. It is not a load generator for remote brokers: every byte stays on loopback and the proxies
// bind 127.0.0.1 only. It does not judge the broker: the direct path is a reference, not a target. It does not tune
// the broker; `make bench` runs scripts/ensure-rabbitmq.sh --nofile 20000 first, and when the broker cannot take the
// idle connections asked for, the tool says so and measures with as many as the broker can take.
//
// Ownership and cleanup. Every queue and exchange it declares has a name starting with a per-run prefix
// (amqptrace-bench-<pid>-<random>) or is a reply_<hex> queue it registered; all are deleted after each workload and
// again at exit, also after Ctrl-C (signal.NotifyContext), and they carry x-expires so that a killed run leaves
// nothing behind for long. Proxy processes get SIGTERM, then SIGKILL, and die with the tool (Pdeathsig) if it is
// killed. The tool raises its own RLIMIT_NOFILE, and the children inherit it, so that 10,000 idle connections
// (20,000 proxy sockets) fit.
//
// Development before bin/amqptrace builds: --amqptrace haproxy puts haproxy in the amqptrace slot as well; the
// report then says so on every line that matters.
package main
