#!/usr/bin/env bash
# ensure-rabbitmq.sh: make sure a RabbitMQ broker answers on the address the tests and the demo use.
#
#   scripts/ensure-rabbitmq.sh            # start it if stopped, install it if missing
#   scripts/ensure-rabbitmq.sh --nofile N # also make sure the broker may open N files (restarts it if needed)
#
# The broker address comes from AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/). Only a broker on this
# machine is started or installed; a remote AMQP_URL is just checked.
set -euo pipefail

nofile=0
while [ $# -gt 0 ]; do
  case "$1" in
    --nofile) nofile="$2"; shift 2 ;;
    *) echo "usage: $0 [--nofile N]" >&2; exit 2 ;;
  esac
done

url=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}
hostport=${url#*://}; hostport=${hostport#*@}; hostport=${hostport%%/*}
host=${hostport%:*}; port=${hostport##*:}
[ "$host" = "$hostport" ] && port=5672
[ -n "$host" ] || host=127.0.0.1

say() { printf 'ensure-rabbitmq: %s\n' "$*" >&2; }
up() { timeout 2 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

wait_up() {
  for _ in $(seq 1 90); do
    if up && { ! command -v rabbitmqctl >/dev/null || as_root rabbitmqctl -q await_startup >/dev/null 2>&1; }; then
      return 0
    fi
    sleep 1
  done
  return 1
}

local_broker() { case "$host" in 127.*|localhost|::1) return 0 ;; *) return 1 ;; esac; }

broker_nofile() {
  local pid
  pid=$(pgrep -u rabbitmq -f beam.smp | head -n 1 || true)
  [ -n "$pid" ] && awk '/Max open files/ {print $4}' "/proc/$pid/limits" 2>/dev/null
}

start_broker() {
  say "starting RabbitMQ (rabbitmq-server -detached)"
  # The wrapper starts the broker through su, whose PAM session applies /etc/security/limits.d; the ulimit covers a
  # machine whose su has no pam_limits (the broker then inherits this shell's limit).
  if [ "$nofile" -gt 0 ]; then
    as_root sh -c "ulimit -n $nofile 2>/dev/null; exec rabbitmq-server -detached" >/dev/null 2>&1 || true
  else
    as_root rabbitmq-server -detached >/dev/null 2>&1 || true
  fi
  wait_up || { say "RabbitMQ did not come up on $host:$port within 90 s; see /var/log/rabbitmq/"; exit 1; }
}

if ! up; then
  if ! local_broker; then
    say "no broker answers at $host:$port (AMQP_URL=${url%%@*}@…); start it or unset AMQP_URL"; exit 1
  fi
  if ! command -v rabbitmq-server >/dev/null; then
    say "RabbitMQ is not installed: apt-get install -y rabbitmq-server"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq >/dev/null || { say "apt-get update failed: install rabbitmq-server by hand"; exit 1; }
    as_root apt-get install -y -qq rabbitmq-server >/dev/null ||
      { say "could not install rabbitmq-server: install it by hand (Debian: apt-get install rabbitmq-server)"; exit 1; }
  fi
  up || start_broker
fi

if [ "$nofile" -gt 0 ] && local_broker; then
  have=$(broker_nofile || true)
  if [ -n "$have" ] && [ "$have" -lt "$nofile" ]; then
    # The broker is started through su, so PAM's limits apply, not the shell's.
    say "broker may open $have files; raising to $nofile (/etc/security/limits.d/rabbitmq-amqptrace.conf) and restarting"
    printf 'rabbitmq soft nofile %s\nrabbitmq hard nofile %s\n' "$nofile" "$nofile" |
      as_root tee /etc/security/limits.d/rabbitmq-amqptrace.conf >/dev/null
    as_root rabbitmqctl -q shutdown >/dev/null 2>&1 || true
    for _ in $(seq 1 30); do up || break; sleep 1; done
    start_broker
    # Said, not retried: a broker started another way (an init script without PAM) keeps its limit, and a retry
    # would restart it on every run.
    have=$(broker_nofile || true)
    if [ -n "$have" ] && [ "$have" -lt "$nofile" ]; then
      say "the restarted broker may still open only $have files: raise it where this machine starts RabbitMQ" \
        "(ulimit -n $nofile in /etc/default/rabbitmq-server, or LimitNOFILE=$nofile for systemd)"
    fi
  fi
fi
say "RabbitMQ is up at $host:$port"
