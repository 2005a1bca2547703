#!/usr/bin/python3
"""2012-era nova rpc (Folsom's nova/openstack/common/rpc impl_kombu), written with kombu for amqptrace's tests.

    folsom_rpc.py server --url URL --exchange X --topic T      consumes T on topic exchange X; prints READY
    folsom_rpc.py client --url URL --exchange X --topic T      two calls (one answered, one failing) and a cast;
                                                               prints one JSON line with what came back

The wire format is Folsom's, not oslo.messaging's: plain JSON bodies with no envelope and no _unique_id; a call
carries _msg_id and no _reply_q; the caller declares a direct exchange and a queue named after the _msg_id and
consumes it; the server publishes {"result", "failure"} and then {"result": null, "failure": null, "ending": true}
to that exchange, without the _msg_id in the body. A failure is Folsom's serialized exception, JSON in a string.
"""

import argparse
import json
import sys
import time
import uuid

import kombu


def server(args):
    conn = kombu.Connection(args.url)
    exchange = kombu.Exchange(args.exchange, type="topic", durable=False, auto_delete=False)
    queue = kombu.Queue(args.topic, exchange, routing_key=args.topic, durable=False, auto_delete=False)
    producer = kombu.Producer(conn.channel())

    def reply(msg_id, body):
        direct = kombu.Exchange(msg_id, type="direct", durable=False, auto_delete=True)
        producer.publish(body, exchange=direct, routing_key=msg_id, serializer="json")

    def on_message(body, message):
        message.ack()
        msg_id = body.get("_msg_id")
        if msg_id is None:
            return  # a cast
        if body.get("method") == "fail":
            failure = json.dumps({"class": "InstanceNotFound", "module": "nova.exception",
                                  "message": "Instance i-9 could not be found.", "tb": ["Traceback..."]})
            reply(msg_id, {"result": None, "failure": failure})
        else:
            reply(msg_id, {"result": "info of " + body["args"]["instance"], "failure": None})
        reply(msg_id, {"result": None, "failure": None, "ending": True})

    with kombu.Consumer(conn.channel(), queues=[queue], callbacks=[on_message], accept=["json"]):
        print("READY", flush=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                conn.drain_events(timeout=1)
            except TimeoutError:
                pass
            except OSError:
                break


def client(args):
    conn = kombu.Connection(args.url)
    exchange = kombu.Exchange(args.exchange, type="topic", durable=False, auto_delete=False)
    producer = kombu.Producer(conn.channel(), exchange=exchange)
    ctx = {"_context_request_id": "req-f0150000-0000-4000-8000-000000000000", "_context_user_id": "admin"}
    out = {}

    def call(method, instance):
        msg_id = uuid.uuid4().hex
        direct = kombu.Exchange(msg_id, type="direct", durable=False, auto_delete=True)
        q = kombu.Queue(msg_id, direct, routing_key=msg_id, durable=False, auto_delete=True, exclusive=True)
        got = []
        with kombu.Consumer(conn.channel(), queues=[q], callbacks=[lambda b, m: (m.ack(), got.append(b))],
                            accept=["json"]):
            body = dict(ctx, method=method, args={"instance": instance}, _msg_id=msg_id)
            producer.publish(body, routing_key=args.topic, serializer="json")
            deadline = time.time() + 30
            while not any(b.get("ending") for b in got) and time.time() < deadline:
                try:
                    conn.drain_events(timeout=1)
                except TimeoutError:
                    pass
        out[method] = {"msg_id": msg_id, "replies": got}

    call("get_info", "i-1")
    call("fail", "i-9")
    producer.publish(dict(ctx, method="run_instance", args={"instance": "i-3"}), routing_key=args.topic,
                     serializer="json")
    print(json.dumps(out), flush=True)
    conn.release()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=["server", "client"])
    ap.add_argument("--url", required=True)
    ap.add_argument("--exchange", required=True)
    ap.add_argument("--topic", required=True)
    args = ap.parse_args()
    sys.argv[0] = "nova-compute" if args.role == "server" else "nova-api"
    server(args) if args.role == "server" else client(args)


if __name__ == "__main__":
    main()
