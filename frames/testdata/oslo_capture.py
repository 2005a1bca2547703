"""Drive real oslo.messaging traffic through the recording relay (see record.go).

Usage: /usr/bin/python3 oslo_capture.py rabbit://guest:guest@127.0.0.1:PORT/ TOPIC

One RPC server (topic TOPIC, server "srv1"), then from a client: one call, one cast, one fanout cast, and one
notification on topic TOPIC_notifications. Exits 0 once the server has seen the cast and the fanout.
"""
import sys
import threading

import oslo_messaging as messaging
from oslo_config import cfg


def main():
    url, topic = sys.argv[1], sys.argv[2]
    # cfg.CONF: oslo.messaging registers some options (oslo_messaging_metrics) only on the global config.
    conf = cfg.CONF
    conf([], project="frames-capture")
    transport = messaging.get_rpc_transport(conf, url=url)
    seen = threading.Event()
    got = []

    class Endpoint(object):
        def echo(self, ctxt, arg):
            return {"echo": arg}

        def note(self, ctxt, arg):
            got.append(arg)
            if len(got) >= 2:
                seen.set()

    target = messaging.Target(topic=topic, server="srv1")
    server = messaging.get_rpc_server(transport, target, [Endpoint()], executor="threading")
    server.start()
    try:
        client = messaging.get_rpc_client(transport, messaging.Target(topic=topic), timeout=30)
        reply = client.call({"request_id": "req-frames-capture"}, "echo", arg="hello")
        assert reply == {"echo": "hello"}, reply
        client.cast({}, "note", arg="cast")
        client.prepare(fanout=True).cast({}, "note", arg="fanout")
        if not seen.wait(30):
            raise SystemExit("server did not see the cast and the fanout")
        ntransport = messaging.get_notification_transport(conf, url=url)
        notifier = messaging.Notifier(ntransport, publisher_id="frames-capture.host1", driver="messaging",
                                      topics=[topic + "_notifications"])
        notifier.info({}, "frames.capture", {"n": 1})
        ntransport.cleanup()
    finally:
        server.stop()
        server.wait()
        transport.cleanup()


if __name__ == "__main__":
    main()
