#!/bin/bash
# devstack plugin for amqptrace: every service devstack configures reaches RabbitMQ through amqptrace.
#
# devstack looks for devstack/plugin.sh at the root of a plugin's repository; see deploy/openstack.md ("devstack")
# for the two-line local repository that holds this file and its settings. Not run on our build machines (no
# devstack there): it uses only the devstack functions named below and amqptrace flags the tests check.

if is_service_enabled amqptrace; then
	# lib/rpc_backend builds every transport_url with get_transport_url and get_notification_url, and documents
	# redefining them as the interface for plugins (oslo.messaging's own devstack plugins do the same). Only the
	# port changes: each service keeps devstack's user, password and vhost.
	function get_transport_url {
		local virtual_host=$1
		echo "rabbit://$RABBIT_USERID:$RABBIT_PASSWORD@$AMQPTRACE_HOST:$AMQPTRACE_PORT/$virtual_host"
	}
	function get_notification_url {
		local virtual_host=$1
		echo "rabbit://$RABBIT_USERID:$RABBIT_PASSWORD@$AMQPTRACE_HOST:$AMQPTRACE_PORT/$virtual_host"
	}
	export -f get_transport_url get_notification_url

	if [[ "$1" == "stack" && "$2" == "install" ]]; then
		echo_summary "Installing amqptrace"
		if [[ ! -x "$AMQPTRACE_BIN" ]]; then
			# From the source tree named by AMQPTRACE_REPO (a checkout of amqptrace); needs Go.
			git_clone "$AMQPTRACE_REPO" "$AMQPTRACE_DIR" "$AMQPTRACE_BRANCH"
			(cd "$AMQPTRACE_DIR" && make build) || die $LINENO "amqptrace: make build failed"
			sudo install -m 0755 "$AMQPTRACE_DIR/bin/amqptrace" "$AMQPTRACE_BIN"
		fi

	elif [[ "$1" == "stack" && "$2" == "post-config" ]]; then
		# post-config runs before the services start, so amqptrace listens before the first of them connects.
		echo_summary "Starting amqptrace"
		run_process amqptrace "$AMQPTRACE_BIN proxy --listen $AMQPTRACE_HOST:$AMQPTRACE_PORT --upstream $RABBIT_HOST:5672 --http $AMQPTRACE_HOST:$AMQPTRACE_HTTP_PORT --http-token $AMQPTRACE_HTTP_TOKEN --events $AMQPTRACE_EVENTS"

	elif [[ "$1" == "unstack" ]]; then
		stop_process amqptrace
	fi
fi
