#!/usr/bin/env bash
# ensure-test-deps.sh: install what the test suite talks to, from Debian's packages, when it is missing:
# RabbitMQ (scripts/ensure-rabbitmq.sh), the real oslo.messaging library (python3-oslo.messaging, run with
# /usr/bin/python3), Debian's chromium for the UI tests, systemd for `systemd-analyze verify` of the unit, and
# haproxy, the plain TCP proxy the bench compares against (its tests run it), and tcpdump and tshark, which
# write the pcap and pcapng files the capture tests replay (tshark's debconf question, whether non-root users may
# capture, is answered "no" by the noninteractive frontend), and prometheus for promtool, which checks and
# unit-tests the shipped alert rules (deploy/prometheus), and logrotate, which checks the shipped snippet.
# Jaeger is built separately by scripts/jaeger.sh (it is a Go module, not a Debian package).
# The broker may open 20,000 files: the memory test's 2,000 slow clients are 2,000 broker connections, and
# RabbitMQ's default of 1,024 files (832 sockets) refuses them; ensure-rabbitmq.sh restarts it only when its limit
# is lower.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

say() { printf 'ensure-test-deps: %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

missing=()
/usr/bin/python3 -c 'import oslo_messaging' >/dev/null 2>&1 || missing+=(python3-oslo.messaging)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v tcpdump >/dev/null 2>&1 || missing+=(tcpdump)
command -v tshark >/dev/null 2>&1 || missing+=(tshark)
command -v logrotate >/dev/null 2>&1 || [ -x /usr/sbin/logrotate ] || missing+=(logrotate)

if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! { as_root apt-get update -qq >/dev/null && as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
    say "could not install ${missing[*]}: install them by hand (apt-get install ${missing[*]})"
    exit 1
  fi
fi
"$here/ensure-rabbitmq.sh" --nofile 20000
