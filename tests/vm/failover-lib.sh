#!/bin/sh
# shellcheck disable=SC2086 # word splitting is intended
# Guest-side helpers of the failover tests, standalone (failover-guest.sh) and in a cluster
# (tests/e2e/failover-guest.sh): two directors of one VIP, director (10.10.24.10) and director2
# (10.10.24.11), and what a client feels when the VIP moves between them.
#
# The client starts a new connection to the VIP every 20 ms (each in the background, 1 s at
# most); the outage of a failover is the longest gap between the starts of two successful ones.
# A long-lived connection through the VIP (port 7, an echo service on every real server) sends a
# line every 100 ms; it survives a failover when it is not reset and every line comes back.

# now_ms: milliseconds since boot.
now_ms() { awk '{printf "%d", $1 * 1000}' /proc/uptime; }
# percentile P FILE: the P-th percentile of the numbers in FILE (nearest rank).
percentile() { sort -n "$2" | awk -v p="$1" '{v[NR] = $1} END {r = int((p * NR + 99) / 100); if (r < 1) r = 1; print v[r]}'; }

DIRECTORS="director director2"

# other NS: the other director.
other() { if [ "$1" = director ]; then echo director2; else echo director; fi; }


# holders: the directors with the VIP on an eth0 that is up, space-separated.
holders() {
	_h=
	for _d in $DIRECTORS; do
		in_ns $_d $IP -o addr show dev eth0 up | grep -q " $VIP/32 " && _h="$_h $_d"
	done
	echo ${_h# }
}
one_holder() { [ "$(holders | wc -w)" = 1 ]; }
holds() { [ "$(holders)" = "$1" ]; }

# The client: a new connection every 20 ms, the start time (ms) of each success in /run/ok.ms
# and of each failure in /run/fail.ms.
client_loop_start() {
	: >/run/ok.ms
	: >/run/fail.ms
	in_ns client sh -c '
		while [ ! -e /run/client.stop ]; do
			(
				t=$(awk "{printf \"%d\", \$1 * 1000}" /proc/uptime)
				if timeout 1 wget -qO- http://'$VIP'/ >/dev/null 2>&1; then
					echo $t >>/run/ok.ms
				else
					echo $t >>/run/fail.ms
				fi
			) &
			sleep 0.02
		done' &
	_client=$!
}
client_loop_stop() {
	touch /run/client.stop
	wait $_client
	sleep 1.1 # the last attempts finish
	rm -f /run/client.stop
}

# gap FROM TO: the longest gap (ms) between successful starts in [FROM, TO].
gap() {
	sort -n /run/ok.ms | awk -v from="$1" -v to="$2" '
		$1 >= from && $1 <= to { if (prev != "" && $1 - prev > max) max = $1 - prev; prev = $1 }
		END { print max + 0 }'
}
# ok_count FROM TO: successful attempts started in [FROM, TO] (one starts every 20 ms).
ok_count() { awk -v from="$1" -v to="$2" '$1 >= from && $1 <= to' /run/ok.ms | wc -l; }
# failed_at FROM TO: when the failed attempts started in [FROM, TO] began, in ms after FROM.
failed_at() { sort -n /run/fail.ms | awk -v from="$1" -v to="$2" '$1 >= from && $1 <= to {print $1 - from}' | tr '\n' ' ' | sed 's/ $//'; }

# The long-lived connection: a line every 100 ms for N seconds through the VIP's port 7.
# Lines sent while no director forwards come back once TCP retransmits them (its backoff can
# reach seconds), so socat waits up to 8 s after the last line for the last echo.
echo_start() {
	rm -f /run/echo.out /run/echo.err /run/echo.rc
	in_ns client sh -c "i=0; while [ \$i -lt $(($1 * 10)) ]; do echo line\$i; i=\$((i + 1)); sleep 0.1; done |
		socat -t 8 - TCP:$VIP:7 >/run/echo.out 2>/run/echo.err; echo \$? >/run/echo.rc" &
	_echo=$!
}
# echo_result: how many of the lines sent came back, and socat's exit code.
echo_result() {
	# Polled, not waited for: the job may belong to a subshell that cannot wait for it.
	_w=0
	while [ ! -s /run/echo.rc ] && [ $_w -lt 150 ]; do
		sleep 0.1
		_w=$((_w + 1))
	done
	echo "$(wc -l </run/echo.out) lines back, exit $(cat /run/echo.rc 2>/dev/null || echo none)"
}

# echo_servers: the echo service on port 7 of every real server.
echo_servers() {
	for _rs in $LVS_REAL_SERVERS; do
		in_ns $_rs socat TCP-LISTEN:7,fork,reuseaddr EXEC:cat >/dev/null 2>&1 &
	done
}
