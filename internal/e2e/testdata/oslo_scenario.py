#!/usr/bin/python3
"""A short, real oslo.messaging scenario for amqptrace's end-to-end tests.

Run with Debian's python3-oslo.messaging (/usr/bin/python3):

    oslo_scenario.py --url rabbit://user:pass@127.0.0.1:5673/vhost --exchange e2e_x [--suffix _abc]

The orchestrator (no --role) starts one process per role so that each has its own connection_name
("<program>:<pid>:<uuid>", program = sys.argv[0], which each role sets to a Nova-like service name):

  nova-conductor   RPC server topic conductor, server ctl1; its `schedule` method makes a nested call
  nova-compute     RPC server topic compute, server host1.example.org (a dotted FQDN)
  nova-compute     RPC server topic compute, server host2
  nova-api         the client: calls, casts, a fanout, failures, timeouts, a late reply, a big argument,
                   call-monitor heartbeats and notifications, all under ONE RequestContext

Every role wraps the driver's Connection._publish to log what it really put on the wire (exchange, routing key,
_msg_id, _unique_id, method, ending); the orchestrator prints one JSON manifest on stdout: the actions with their
expected outcome, and every publish of every process. Logs go to stderr. Exit status 0 means every action behaved
as expected from the caller's side (the manifest's "failures" lists the rest).
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import uuid

ROLE_SERVICE = {
    "conductor": "nova-conductor",
    "compute1": "nova-compute",
    "compute2": "nova-compute",
    "api": "nova-api",
}

# Secrets the Go test looks for in every output of the proxy. They must travel on the wire (that is the point) and
# never come out of amqptrace.
AUTH_TOKEN = "gAAAAAB-secret-token"
ADMIN_PASSWORD = "Adm1n-pa55-9c1e7d"

PUBLISHES = []
_PUB_LOCK = threading.Lock()
_CURRENT = threading.local()


def _patch_publish():
    """Log every message this process publishes, as the driver hands it to kombu."""
    from oslo_messaging._drivers import impl_rabbit

    orig = impl_rabbit.Connection._publish

    def _publish(self, exchange, msg, routing_key=None, timeout=None, transport_options=None):
        inner = msg
        if isinstance(msg, dict) and "oslo.message" in msg:
            inner = json.loads(msg["oslo.message"])
        entry = {
            "exchange": getattr(exchange, "name", ""),
            "routing_key": routing_key or "",
            "msg_id": inner.get("_msg_id"),
            "unique_id": inner.get("_unique_id"),
            "method": inner.get("method"),
            "event_type": inner.get("event_type"),
            "ending": inner.get("ending"),
            "reply": "ending" in inner or "failure" in inner,
            "time": time.time(),
        }
        action = getattr(_CURRENT, "action", None)
        if action is not None and not entry["reply"]:
            action.setdefault("publishes", []).append(entry)
        with _PUB_LOCK:
            PUBLISHES.append(entry)
        return orig(self, exchange, msg, routing_key=routing_key, timeout=timeout,
                    transport_options=transport_options)

    impl_rabbit.Connection._publish = _publish


def _conf(args):
    import oslo_messaging
    from oslo_config import cfg
    from oslo_messaging._drivers import impl_rabbit

    # The global CONF: oslo.messaging registers some of its options (metrics) only there.
    conf = cfg.CONF
    conf([], project="amqptrace-e2e")
    oslo_messaging.set_transport_defaults(control_exchange=args.exchange)
    conf.register_opts(impl_rabbit.rabbit_opts, group="oslo_messaging_rabbit")
    # A small heartbeat so that heartbeat frames cross the proxy during the scenario.
    conf.set_override("heartbeat_timeout_threshold", 4, group="oslo_messaging_rabbit")
    return conf


def _log(role, *a):
    print("%.3f [%s %d] %s" % (time.time(), role, os.getpid(), " ".join(str(x) for x in a)), file=sys.stderr,
          flush=True)


# ---------------------------------------------------------------------------------------------------------------
# servers


class Conductor:
    def __init__(self, transport, args):
        import oslo_messaging
        self.slow_done = threading.Event()
        self.actions = []
        self._lock = threading.Lock()
        self.compute_topic = "compute" + args.suffix
        self.compute = oslo_messaging.get_rpc_client(
            transport, oslo_messaging.Target(topic=self.compute_topic, server="host1.example.org"))

    def ping(self, ctxt, **kw):
        return {"pong": "ctl1", "args": sorted(kw)}

    def record_event(self, ctxt, name):
        return None

    def fail(self, ctxt, what):
        raise ValueError("e2e failure: %s" % what)

    def slow(self, ctxt, seconds):
        try:
            time.sleep(seconds)
        finally:
            self.slow_done.set()
        return "late"

    def wait_slow_done(self, ctxt, limit):
        return self.slow_done.wait(limit)

    def long_running(self, ctxt, seconds):
        time.sleep(seconds)
        return "done"

    def schedule(self, ctxt, instance):
        # A nested call made while handling another call of the same request.
        action = {"kind": "call", "method": "ping", "topic": self.compute_topic, "server": "host1.example.org",
                  "status": "ok", "caller": "nova-conductor", "callee": "nova-compute", "parent": "schedule"}
        _CURRENT.action = action
        try:
            self.compute.prepare(timeout=10).call(ctxt, "ping", instance=instance)
        finally:
            _CURRENT.action = None
        with self._lock:
            self.actions.append(action)
        return "scheduled"


class Compute:
    def __init__(self, host):
        self.host = host
        self.refreshed = threading.Event()

    def ping(self, ctxt, **kw):
        return {"pong": self.host}

    def build(self, ctxt, instance):
        return None

    def refresh(self, ctxt):
        self.refreshed.set()
        return None

    def echo_size(self, ctxt, blob):
        return len(blob)


def run_server(args):
    import oslo_messaging

    role = args.role
    conf = _conf(args)
    transport = oslo_messaging.get_rpc_transport(conf, url=args.url)
    if role == "conductor":
        endpoint = Conductor(transport, args)
        target = oslo_messaging.Target(topic="conductor" + args.suffix, server="ctl1")
    else:
        host = "host1.example.org" if role == "compute1" else "host2"
        endpoint = Compute(host)
        target = oslo_messaging.Target(topic="compute" + args.suffix, server=host)
    server = oslo_messaging.get_rpc_server(transport, target, [endpoint], executor="threading",
                                           access_policy=oslo_messaging.DefaultRPCAccessPolicy)
    server.start()  # declares and consumes the topic, server and fanout queues before returning
    print("READY", flush=True)
    _log(role, "ready", target)
    sys.stdin.read()  # the orchestrator closes stdin to stop us
    _log(role, "stopping")
    server.stop()
    server.wait()
    transport.cleanup()
    _log(role, "stopped")
    out = {"role": role, "service": ROLE_SERVICE[role], "pid": os.getpid(), "publishes": PUBLISHES,
           "actions": getattr(endpoint, "actions", [])}
    if role != "conductor":
        out["refreshed"] = endpoint.refreshed.is_set()
    print(json.dumps(out), flush=True)


# ---------------------------------------------------------------------------------------------------------------
# client


def run_client(args):
    import oslo_messaging
    from oslo_context import context

    conf = _conf(args)
    transport = oslo_messaging.get_rpc_transport(conf, url=args.url)
    ntransport = oslo_messaging.get_notification_transport(conf, url=args.url)
    ctxt = context.RequestContext(auth_token=AUTH_TOKEN, request_id=args.request_id,
                                  global_request_id=args.global_request_id, user_id="e2e-user",
                                  project_id="e2e-project", roles=["member"])
    conductor = oslo_messaging.get_rpc_client(transport, oslo_messaging.Target(topic="conductor" + args.suffix))
    compute = oslo_messaging.get_rpc_client(transport, oslo_messaging.Target(topic="compute" + args.suffix))
    notifier = oslo_messaging.Notifier(ntransport, publisher_id="nova-api:e2e", driver="messagingv2",
                                       topics=["notifications" + args.suffix])

    actions = []
    failures = []

    def act(expect, fn):
        action = dict(expect)
        action.setdefault("caller", "nova-api")
        _CURRENT.action = action
        start = time.time()
        try:
            result = fn()
            action["outcome"] = "ok"
            action["result"] = result if isinstance(result, (int, str, bool)) or result is None else "object"
        except oslo_messaging.MessagingTimeout:
            action["outcome"] = "timeout"
        except ValueError as e:
            action["outcome"] = "error"
            action["outcome_error"] = type(e).__name__
        except Exception as e:  # noqa: BLE001 - reported in the manifest
            action["outcome"] = "unexpected"
            action["outcome_error"] = "%s: %s" % (type(e).__name__, e)
        finally:
            _CURRENT.action = None
        action["elapsed"] = round(time.time() - start, 3)
        if action["outcome"] != action["status"]:
            failures.append("%s %s: expected %s, got %s (%s)" % (
                action["kind"], action["method"], action["status"], action["outcome"],
                action.get("outcome_error", "")))
        actions.append(action)
        _log("api", action["kind"], action["method"], "->", action["outcome"], action["elapsed"], "s")

    T = "conductor" + args.suffix
    C = "compute" + args.suffix
    N = "notifications" + args.suffix
    # Plain calls, to the shared topic queue and to servers (one with a dotted FQDN).
    act({"kind": "call", "method": "ping", "topic": T, "server": None, "status": "ok", "callee": "nova-conductor"},
        lambda: conductor.prepare(timeout=10).call(ctxt, "ping"))
    act({"kind": "call", "method": "ping", "topic": T, "server": "ctl1", "status": "ok",
         "callee": "nova-conductor", "secret_arg": True},
        lambda: conductor.prepare(server="ctl1", timeout=10).call(ctxt, "ping", admin_password=ADMIN_PASSWORD))
    act({"kind": "call", "method": "ping", "topic": C, "server": "host1.example.org", "status": "ok",
         "callee": "nova-compute"},
        lambda: compute.prepare(server="host1.example.org", timeout=10).call(ctxt, "ping"))
    act({"kind": "call", "method": "ping", "topic": C, "server": "host2", "status": "ok", "callee": "nova-compute"},
        lambda: compute.prepare(server="host2", timeout=10).call(ctxt, "ping"))
    # A remote exception (builtins.ValueError is re-raised as is on the caller side).
    act({"kind": "call", "method": "fail", "topic": T, "server": None, "status": "error",
         "error_class": "ValueError", "error_module": "builtins", "callee": "nova-conductor"},
        lambda: conductor.prepare(timeout=10).call(ctxt, "fail", what="on purpose"))
    # A call nobody consumes: the routing key has no queue.
    act({"kind": "call", "method": "ping", "topic": C, "server": "host99", "status": "timeout",
         "ever_delivered": False, "callee": None},
        lambda: compute.prepare(server="host99", timeout=1).call(ctxt, "ping"))
    # A reply after the caller's timeout: the server sleeps 2.5 s, the caller waits 1 s.
    act({"kind": "call", "method": "slow", "topic": T, "server": "ctl1", "status": "timeout", "late": True,
         "ever_delivered": True, "callee": "nova-conductor"},
        lambda: conductor.prepare(server="ctl1", timeout=1).call(ctxt, "slow", seconds=2.5))
    # Wait (by condition, not by sleep) until the slow method has finished, so its late reply crosses the wire while
    # this process still consumes its reply queue.
    act({"kind": "call", "method": "wait_slow_done", "topic": T, "server": "ctl1", "status": "ok",
         "callee": "nova-conductor"},
        lambda: conductor.prepare(server="ctl1", timeout=10).call(ctxt, "wait_slow_done", limit=8))
    # An argument over 256 KiB: body frames split at frame_max - 8 in both directions.
    act({"kind": "call", "method": "echo_size", "topic": C, "server": "host2", "status": "ok", "big": True,
         "callee": "nova-compute"},
        lambda: compute.prepare(server="host2", timeout=10).call(ctxt, "echo_size", blob="x" * (300 * 1024)))
    # Call-monitor heartbeats: _timeout=2 makes the server send ending=false replies every second for ~3.5 s.
    act({"kind": "call", "method": "long_running", "topic": T, "server": "ctl1", "status": "ok",
         "heartbeats_min": 1, "callee": "nova-conductor"},
        lambda: conductor.prepare(server="ctl1", timeout=10, call_monitor_timeout=2).call(
            ctxt, "long_running", seconds=3.5))
    # A call whose handling makes a nested call (nova-conductor -> nova-compute, same request).
    act({"kind": "call", "method": "schedule", "topic": T, "server": "ctl1", "status": "ok",
         "callee": "nova-conductor"},
        lambda: conductor.prepare(server="ctl1", timeout=10).call(ctxt, "schedule", instance="i-2"))
    # Casts, after the nested call: a process that handled a cast of a request may still be handling it (the wire
    # never says when a cast's handler returns), so what it publishes later in that request has no unambiguous
    # parent. Before `schedule`, they would make its nested call's parent ambiguous, rightly.
    act({"kind": "cast", "method": "record_event", "topic": T, "server": None, "status": "ok",
         "callee": "nova-conductor"},
        lambda: conductor.cast(ctxt, "record_event", name="first"))
    act({"kind": "cast", "method": "record_event", "topic": T, "server": "ctl1", "status": "ok",
         "callee": "nova-conductor"},
        lambda: conductor.prepare(server="ctl1").cast(ctxt, "record_event", name="second"))
    act({"kind": "cast", "method": "build", "topic": C, "server": "host1.example.org", "status": "ok",
         "callee": "nova-compute"},
        lambda: compute.prepare(server="host1.example.org").cast(ctxt, "build", instance="i-1"))
    # A fanout to both compute servers.
    act({"kind": "fanout", "method": "refresh", "topic": C, "server": None, "status": "ok", "deliveries": 2,
         "callee": "nova-compute"},
        lambda: compute.prepare(fanout=True).cast(ctxt, "refresh"))
    # Notifications (messagingv2 envelope), one publish per topic.
    act({"kind": "notification", "method": "", "event_type": "instance.create.start", "priority": "INFO",
         "topic": N, "server": None, "status": "ok", "callee": None},
        lambda: notifier.info(ctxt, "instance.create.start", {"instance": "i-1"}))
    act({"kind": "notification", "method": "", "event_type": "compute.exception", "priority": "ERROR",
         "topic": N, "server": None, "status": "ok", "callee": None},
        lambda: notifier.error(ctxt, "compute.exception", {"instance": "i-1"}))

    transport.cleanup()
    ntransport.cleanup()
    print(json.dumps({"role": "api", "service": "nova-api", "pid": os.getpid(), "publishes": PUBLISHES,
                      "actions": actions, "failures": failures}), flush=True)


# ---------------------------------------------------------------------------------------------------------------
# orchestrator


def orchestrate(args):
    me = os.path.abspath(__file__)
    base = [sys.executable, me, "--url", args.url, "--exchange", args.exchange, "--suffix", args.suffix,
            "--request-id", args.request_id, "--global-request-id", args.global_request_id]
    servers = []
    for role in ("conductor", "compute1", "compute2"):
        p = subprocess.Popen(base + ["--role", role], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
        servers.append((role, p))
    failures = []
    _log("orchestrator", "started servers")
    for role, p in servers:
        line = p.stdout.readline().strip()
        if line != "READY":
            failures.append("%s did not start: %r" % (role, line))
    results = []
    if not failures:
        c = subprocess.run(base + ["--role", "api"], stdout=subprocess.PIPE, text=True, timeout=120)
        if c.returncode != 0:
            failures.append("api exited %d" % c.returncode)
        try:
            results.append(json.loads(c.stdout.strip().splitlines()[-1]))
        except (ValueError, IndexError):
            failures.append("api printed no manifest")
    for role, p in servers:  # stop them all at once: each takes a second or two to shut down
        p.stdin.close()
    for role, p in servers:
        try:
            out = p.stdout.read()
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            failures.append("%s did not stop" % role)
        if p.returncode != 0:
            failures.append("%s exited %d" % (role, p.returncode))
        try:
            results.append(json.loads(out.strip().splitlines()[-1]))
        except (ValueError, IndexError):
            failures.append("%s printed no manifest" % role)

    actions = []
    for r in results:
        failures.extend(r.get("failures", []))
        actions.extend(r.get("actions", []))
    for r in results:
        if r["role"] in ("compute1", "compute2") and not r.get("refreshed"):
            failures.append("%s never got the fanout" % r["role"])
    manifest = {
        "exchange": args.exchange,
        "suffix": args.suffix,
        "request_id": args.request_id,
        "global_request_id": args.global_request_id,
        "auth_token": AUTH_TOKEN,
        "admin_password": ADMIN_PASSWORD,
        "processes": [{"role": r["role"], "service": r["service"], "pid": r["pid"],
                       "publishes": r["publishes"]} for r in results],
        "actions": actions,
        "failures": failures,
    }
    print(json.dumps(manifest, indent=1), flush=True)
    return 0 if not failures else 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True, help="transport_url, e.g. rabbit://guest:guest@127.0.0.1:5673/")
    ap.add_argument("--exchange", default="nova", help="control_exchange")
    ap.add_argument("--suffix", default="", help="appended to every topic (isolation on a shared vhost)")
    ap.add_argument("--request-id", default="req-" + str(uuid.uuid4()))
    ap.add_argument("--global-request-id", default="req-" + str(uuid.uuid4()))
    ap.add_argument("--role", choices=sorted(ROLE_SERVICE))
    args = ap.parse_args()
    if args.role is None:
        sys.exit(orchestrate(args))
    # connection_name is "<basename(sys.argv[0])>:<pid>:<uuid>": name the process after its role.
    sys.argv[0] = ROLE_SERVICE[args.role]
    _patch_publish()
    if args.role == "api":
        run_client(args)
    else:
        run_server(args)


if __name__ == "__main__":
    main()
