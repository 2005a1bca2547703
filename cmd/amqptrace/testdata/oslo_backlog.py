#!/usr/bin/python3
"""A sick-cloud scenario for amqptrace's end-to-end tests, with the real oslo.messaging (Debian's package).

    oslo_backlog.py server --url URL --exchange X --suffix S     a nova-compute: RPC server (topic compute<S>,
                                                                 server host1) and a notification listener
                                                                 (notifications<S>); prints READY once consuming
    oslo_backlog.py client --url URL --exchange X --suffix S     a nova-api: a cast, a notification and a call
                                                                 (timeout 120 s); prints one JSON line with what
                                                                 it sent and what the call returned
    oslo_backlog.py burst --url URL --exchange X --suffix S --calls N --seconds T
                                                                 a nova-conductor: N monitored report_state calls
                                                                 at once (one thread each, call_monitor_timeout 2),
                                                                 each handled in T s; prints
                                                                 one JSON line when all returned
    oslo_backlog.py parents --url URL --exchange X --suffix S --runs N
                                                                 a nova-api: N times, two calls of one request at
                                                                 once to a server (pool 4) whose handler casts a
                                                                 child while both are open, then one call alone
    oslo_backlog.py notify --url URL --exchange X --suffix S --calls N
                                                                 a nova-compute notifier: N notifications
                                                                 compute.instance.slow.<i>, which the server's
                                                                 listener handles in --seconds each; prints SENT
    oslo_backlog.py late --url URL --exchange X --suffix S --seconds N --timeout T
                                                                 a nova-api whose call to a server that takes N s
                                                                 times out after T s; prints TIMED OUT, then keeps
                                                                 consuming its reply queue until stdin closes

The test starts the server so that its queues exist and were consumed through the proxy, kills it, runs the client
while nobody consumes (the messages back up in the broker), then starts a server again.
"""

import argparse
import json
import os
import sys
import threading
import time

import oslo_messaging
from oslo_config import cfg
from oslo_context import context
from oslo_messaging._drivers import impl_rabbit


def conf_for(args):
    conf = cfg.CONF
    conf([], project="amqptrace-e2e")
    oslo_messaging.set_transport_defaults(control_exchange=args.exchange)
    conf.register_opts(impl_rabbit.rabbit_opts, group="oslo_messaging_rabbit")
    return conf


class Compute:
    target = oslo_messaging.Target(version="1.0")

    def build_and_run_instance(self, ctxt, instance):
        print("%.3f build_and_run_instance %s" % (time.time(), instance), file=sys.stderr, flush=True)

    def get_console_output(self, ctxt, instance):
        return "console of " + instance

    def report_state(self, ctxt, seconds):
        time.sleep(seconds)
        return "reported"

    def handle(self, ctxt, n, seconds):
        # A child cast made while handling: its parent is this call, if the wire can tell.
        time.sleep(seconds)
        self.children.prepare(server="host1").cast(ctxt, "child", of=n)
        time.sleep(seconds)
        return n

    def child(self, ctxt, of):
        pass

    def slow(self, ctxt, seconds):
        time.sleep(seconds)
        return "slow done"


class Notifications:
    def __init__(self, slow_seconds):
        self.consuming = threading.Event()
        self.slow_seconds = slow_seconds

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        print("%.3f notification %s" % (time.time(), event_type), file=sys.stderr, flush=True)
        if event_type == "amqptrace.e2e.listening":
            self.consuming.set()
        if event_type.startswith("compute.instance.slow."):
            time.sleep(self.slow_seconds)  # the listener acknowledges only once this returns
            print("%.3f handled %s" % (time.time(), event_type), file=sys.stderr, flush=True)
        return oslo_messaging.NotificationResult.HANDLED


def server(args):
    conf = conf_for(args)
    if args.pool:
        # The executor's worker pool: with 1, calls that arrive together are handled one after the other.
        from oslo_messaging import server as msg_server
        conf.register_opts(msg_server._pool_opts)  # the server registers them itself, too late for an override
        conf.set_override("executor_thread_pool_size", args.pool)
    transport = oslo_messaging.get_rpc_transport(conf, url=args.url)
    ntransport = oslo_messaging.get_notification_transport(conf, url=args.url)
    endpoint = Compute()
    endpoint.children = oslo_messaging.get_rpc_client(transport, oslo_messaging.Target(topic="compute" + args.suffix))
    rpc = oslo_messaging.get_rpc_server(transport, oslo_messaging.Target(topic="compute" + args.suffix, server="host1"),
                                        [endpoint], executor="threading",
                                        access_policy=oslo_messaging.DefaultRPCAccessPolicy)
    handler = Notifications(args.notify_seconds)
    listener = oslo_messaging.get_notification_listener(
        ntransport, [oslo_messaging.Target(topic="notifications" + args.suffix)], [handler],
        executor="threading")
    rpc.start()
    listener.start()
    # The listener subscribes from its own thread, after start() returns: READY only once a notification sent to
    # ourselves came back, so that the test's kill comes after the proxy saw the subscription.
    notifier = oslo_messaging.Notifier(ntransport, publisher_id="compute.host1", driver="messagingv2",
                                       topics=["notifications" + args.suffix])
    while not handler.consuming.is_set():
        notifier.info({}, "amqptrace.e2e.listening", {})
        handler.consuming.wait(1)
    print("READY", flush=True)
    sys.stdin.read()  # killed by the test, or stopped by closing stdin
    rpc.stop()
    listener.stop()
    rpc.wait()
    listener.wait()


def client(args):
    conf = conf_for(args)
    transport = oslo_messaging.get_rpc_transport(conf, url=args.url)
    ntransport = oslo_messaging.get_notification_transport(conf, url=args.url)
    ctxt = context.RequestContext(request_id=args.request_id, user_id="e2e-user", project_id="e2e-project")
    compute = oslo_messaging.get_rpc_client(transport, oslo_messaging.Target(topic="compute" + args.suffix))
    notifier = oslo_messaging.Notifier(ntransport, publisher_id="compute.host1", driver="messagingv2",
                                       topics=["notifications" + args.suffix])
    compute.prepare(server="host1").cast(ctxt, "build_and_run_instance", instance="i-backlog")
    notifier.info(ctxt, "compute.instance.create.start", {"instance": "i-backlog"})
    print("SENT", flush=True)
    start = time.time()
    result = compute.prepare(timeout=120).call(ctxt, "get_console_output", instance="i-backlog")
    print(json.dumps({"pid": os.getpid(), "result": result, "elapsed": round(time.time() - start, 3)}), flush=True)
    transport.cleanup()
    ntransport.cleanup()


def burst(args):
    conf = conf_for(args)
    transport = oslo_messaging.get_rpc_transport(conf, url=args.url)
    ctxt = context.RequestContext(request_id=args.request_id, user_id="e2e-user", project_id="e2e-project")
    compute = oslo_messaging.get_rpc_client(transport, oslo_messaging.Target(topic="compute" + args.suffix))
    results = [None] * args.calls
    barrier = threading.Barrier(args.calls)

    def one(i):
        barrier.wait()
        # call_monitor_timeout makes the server heartbeat while a worker handles the call: the wire's only sign
        # of when a worker took it.
        results[i] = compute.prepare(server="host1", timeout=120, call_monitor_timeout=2).call(
            ctxt, "report_state", seconds=args.seconds)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(args.calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"results": results}), flush=True)
    transport.cleanup()


def parents(args):
    conf = conf_for(args)
    transport = oslo_messaging.get_rpc_transport(conf, url=args.url)
    compute = oslo_messaging.get_rpc_client(transport, oslo_messaging.Target(topic="compute" + args.suffix))
    for run in range(args.runs):
        ctxt = context.RequestContext(request_id="req-%08d-0000-4000-8000-%012d" % (run, run), user_id="u",
                                      project_id="p")
        barrier = threading.Barrier(2)

        def one(n):
            barrier.wait()
            compute.prepare(server="host1", timeout=30).call(ctxt, "handle", n="both-%d-%d" % (run, n), seconds=0.2)

        threads = [threading.Thread(target=one, args=(n,)) for n in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    ctxt = context.RequestContext(request_id="req-alone000-0000-4000-8000-000000000000", user_id="u", project_id="p")
    compute.prepare(server="host1", timeout=30).call(ctxt, "handle", n="alone", seconds=0.05)
    print("DONE", flush=True)
    transport.cleanup()


def notify(args):
    conf = conf_for(args)
    ntransport = oslo_messaging.get_notification_transport(conf, url=args.url)
    ctxt = context.RequestContext(request_id=args.request_id, user_id="e2e-user", project_id="e2e-project")
    notifier = oslo_messaging.Notifier(ntransport, publisher_id="compute.host1", driver="messagingv2",
                                       topics=["notifications" + args.suffix])
    for i in range(args.calls):
        notifier.info(ctxt, "compute.instance.slow.%d" % i, {"instance": "i-%d" % i})
    print("SENT", flush=True)
    ntransport.cleanup()


def late(args):
    conf = conf_for(args)
    transport = oslo_messaging.get_rpc_transport(conf, url=args.url)
    ctxt = context.RequestContext(request_id=args.request_id, user_id="e2e-user", project_id="e2e-project")
    compute = oslo_messaging.get_rpc_client(transport, oslo_messaging.Target(topic="compute" + args.suffix))
    try:
        compute.prepare(timeout=args.timeout).call(ctxt, "slow", seconds=args.seconds)
        print("NOT TIMED OUT", flush=True)
    except oslo_messaging.MessagingTimeout:
        print("TIMED OUT", flush=True)
    sys.stdin.read()  # the reply queue stays consumed: the late reply is delivered here
    transport.cleanup()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=["server", "client", "late", "burst", "parents", "notify"])
    ap.add_argument("--notify-seconds", type=float, default=0,
                    help="how long the server's listener handles each compute.instance.slow.* notification")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--pool", type=int, default=0, help="executor_thread_pool_size of a server")
    ap.add_argument("--calls", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--timeout", type=float, default=2)
    ap.add_argument("--url", required=True)
    ap.add_argument("--exchange", required=True)
    ap.add_argument("--suffix", default="")
    ap.add_argument("--request-id", default="req-00000000-0000-4000-8000-000000000000")
    args = ap.parse_args()
    # connection_name is "<program>:<pid>:<uuid>": name the process like the service it plays.
    sys.argv[0] = {"server": "nova-compute", "burst": "nova-conductor", "notify": "nova-compute"}.get(args.role,
                                                                                                  "nova-api")
    {"server": server, "client": client, "late": late, "burst": burst, "parents": parents,
     "notify": notify}[args.role](args)


if __name__ == "__main__":
    main()
