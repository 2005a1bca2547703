#!/usr/bin/python3
"""oslo_secrets.py: the real oslo.messaging carrying one of every kind of secret, each a distinct marker.

One process, one transport: an RPC server (threading executor) and a client of it, and a notifier. It makes
  1. a call whose arguments and context carry every category of secret (secret-looking keys in nova's real
     spellings, passwords inside URLs and command lines, a connection_info held as a JSON string, a Fernet token,
     a JWT, a PEM private key) and whose result carries one too;
  2. a call whose server raises an exception whose message carries a database URL with its password and a token;
  3. a notification whose payload carries secrets.
It prints one JSON object: the markers by name (what must never leave amqptrace) and the request id.
"""
import argparse
import json
import sys
import uuid

from oslo_config import cfg
from oslo_context import context
import oslo_messaging

FILL = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo"  # base64url filler: tokens must look real to their rules

MARKERS = {
    "new_pass": "MkNewPass01",
    "adminPass": "MkAdminPass02",
    "metadata admin_pass": "MkMetaPass03",
    "transport_url password": "MkRabbitPw04",
    "database URL password": "MkDbPw05",
    "--password= argument": "MkCmdPw06",
    "CHAP auth_password in connection_info": "MkChapPw07",
    "Fernet auth token (context)": "MkFernetCtx08",
    "JWT in an argument": "MkJwt09",
    "PEM private key": "MkPemKey10",
    "rescue_password": "MkRescuePw11",
    "result token": "MkResultTok12",
    "exception DB URL password": "MkExcDbPw13",
    "exception Fernet token": "MkExcTok14",
    "notification admin_password": "MkNotifPw15",
    "notification URL password": "MkNotifUrl16",
}
M = MARKERS


def fernet(marker):
    return "gAAAAAB" + marker + FILL + FILL


class Endpoint(object):
    target = oslo_messaging.Target(version="1.0")

    def set_admin_password(self, ctxt, **kwargs):
        return {"status": "ok", "token": fernet(M["result token"]), "auth_token": M["result token"]}

    def fail(self, ctxt):
        raise RuntimeError("(pymysql.err.OperationalError) cannot connect to mysql+pymysql://nova:%s@db.example/nova"
                           " while validating token %s" % (M["exception DB URL password"],
                                                          fernet(M["exception Fernet token"])))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--exchange", default="nova")
    ap.add_argument("--suffix", default="")
    args = ap.parse_args()

    conf = cfg.CONF
    conf([], project="amqptrace-e2e-secrets")
    oslo_messaging.set_transport_defaults(control_exchange=args.exchange)
    transport = oslo_messaging.get_rpc_transport(conf, url=args.url)
    ntransport = oslo_messaging.get_notification_transport(conf, url=args.url)
    topic = "secrets" + args.suffix
    server = oslo_messaging.get_rpc_server(transport, oslo_messaging.Target(topic=topic, server="srv1"),
                                           [Endpoint()], executor="threading")
    server.start()
    request_id = "req-" + str(uuid.uuid4())
    ctxt = context.RequestContext(auth_token=fernet(M["Fernet auth token (context)"]), request_id=request_id)
    client = oslo_messaging.get_rpc_client(transport, oslo_messaging.Target(topic=topic), timeout=30)
    connection_info = json.dumps({"driver_volume_type": "iscsi", "data": {
        "target_iqn": "iqn.2010-10.org.openstack:volume-1", "target_portal": "10.0.0.5:3260",
        "auth_method": "CHAP", "auth_username": "chapuser", "auth_password": M["CHAP auth_password in connection_info"]}})
    failures = []
    try:
        client.call(ctxt, "set_admin_password",
                    instance={"uuid": str(uuid.uuid4()), "metadata": {"admin_pass": M["metadata admin_pass"]},
                              "key_name": "mykey"},
                    new_pass=M["new_pass"], adminPass=M["adminPass"], rescue_password=M["rescue_password"],
                    transport_url="rabbit://nova:%s@ctl.example:5672/" % M["transport_url password"],
                    connection="mysql+pymysql://nova:%s@db.example/nova" % M["database URL password"],
                    cmdline="nova-manage --password=%s db sync" % M["--password= argument"],
                    connection_info=connection_info,
                    jwt="eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJub3ZhIn0.%s%s" % (M["JWT in an argument"], FILL),
                    private_key_data="-----BEGIN PRIVATE KEY-----\n%s%s\n-----END PRIVATE KEY-----\n" % (
                        M["PEM private key"], FILL))
    except Exception as e:  # noqa: BLE001 - reported in the manifest
        failures.append("set_admin_password: %r" % e)
    try:
        client.call(ctxt, "fail")
        failures.append("fail: no exception")
    except (RuntimeError, oslo_messaging.RemoteError):
        pass  # builtins exceptions are re-raised as themselves
    except Exception as e:  # noqa: BLE001
        failures.append("fail: %r" % e)
    notifier = oslo_messaging.Notifier(ntransport, publisher_id="nova-api:e2e", driver="messagingv2",
                                       topics=["secrets_notifications" + args.suffix])
    notifier.info(ctxt, "instance.password.set", {
        "admin_password": M["notification admin_password"],
        "transport_url": "rabbit://nova:%s@ctl.example/" % M["notification URL password"]})
    server.stop()
    server.wait()
    transport.cleanup()
    ntransport.cleanup()
    json.dump({"markers": MARKERS, "request_id": request_id, "failures": failures}, sys.stdout)


if __name__ == "__main__":
    main()
