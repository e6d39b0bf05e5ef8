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


# The VIP as a URL's host, and as socat's TCP address ($VIP may be IPv6).
vip_host() { case $VIP in *:*) echo "[$VIP]" ;; *) echo "$VIP" ;; esac; }
vip_socat() { case $VIP in *:*) echo "TCP6:[$VIP]" ;; *) echo "TCP4:$VIP" ;; esac; }

# holders: the directors with the VIP on an eth0 that is up, space-separated.
holders() {
	_h=
	for _d in $DIRECTORS; do
		in_ns $_d $IP -o addr show dev eth0 up | grep -q " $VIP/" && _h="$_h $_d"
	done
	echo ${_h# }
}
# vip_on_every_lo: every real server holds the VIP on lo.
vip_on_every_lo() {
	for _rs in $LVS_REAL_SERVERS; do
		in_ns $_rs $IP addr show dev lo | grep -qF " $VIP/" || return 1
	done
}
one_holder() { [ "$(holders | wc -w)" = 1 ]; }
holds() { [ "$(holders)" = "$1" ]; }

# The client: a new connection every 20 ms, the start time (ms) of each success in /run/ok.ms
# and of each failure in /run/fail.ms, with how it failed: "timeout" (no answer within 1 s: no
# director took the connection), "reset" (a director or real server refused it mid-flow) or
# "error".
client_loop_start() {
	: >/run/ok.ms
	: >/run/fail.ms
	in_ns client sh -c '
		while [ ! -e /run/client.stop ]; do
			(
				t=$(awk "{printf \"%d\", \$1 * 1000}" /proc/uptime)
				e=/tmp/wget.$t.$$
				timeout 1 wget -qO- http://'"$(vip_host)"'/ >/dev/null 2>$e
				rc=$?
				if [ $rc = 0 ]; then
					echo $t >>/run/ok.ms
				elif [ $rc = 124 ] || [ $rc = 143 ]; then
					echo "$t timeout" >>/run/fail.ms
				elif grep -q "reset by peer" $e; then
					echo "$t reset" >>/run/fail.ms
				else
					echo "$t error" >>/run/fail.ms
				fi
				rm -f $e
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
# failed_at FROM TO: when the failed attempts started in [FROM, TO] began, in ms after FROM,
# and how each failed ("1020 reset").
failed_at() { sort -n /run/fail.ms | awk -v from="$1" -v to="$2" '$1 >= from && $1 <= to {print $1 - from, $2}' | tr '\n' ',' | sed 's/,$//; s/,/, /g'; }
# failures KIND FROM TO: the attempts started in [FROM, TO] that failed with KIND.
failures() { awk -v k="$1" -v from="$2" -v to="$3" '$2 == k && $1 >= from && $1 <= to' /run/fail.ms | wc -l; }

# planned_checks LABEL FROM TO: a planned handover in [FROM, TO] costs the client loop nothing.
# The taker adds the VIP without announcing it; both directors send new connections to one real
# server and the taker picks up connections it first sees mid-flow (sloppy_tcp), so one whose SYN
# the old holder scheduled goes on to the same real server; only then is the VIP announced. No
# attempt may time out, be reset or be refused.
planned_checks() {
	for _kind in timeout reset error; do
		check "$1: no client attempt failed ($_kind)" [ "$(failures $_kind $2 $3)" = 0 ]
	done
}

# The long-lived connection: a line every 100 ms for N seconds through the VIP's port 7.
# Lines sent while no director forwards come back once TCP retransmits them (its backoff can
# reach seconds), so socat waits up to 8 s after the last line for the last echo.
echo_start() {
	rm -f /run/echo.out /run/echo.err /run/echo.rc
	in_ns client sh -c "i=0; while [ \$i -lt $(($1 * 10)) ]; do echo line\$i; i=\$((i + 1)); sleep 0.1; done |
		socat -t 8 - $(vip_socat):7 >/run/echo.out 2>/run/echo.err; echo \$? >/run/echo.rc" &
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

# echo_servers: the echo service on port 7 of every real server, IPv4 and IPv6.
echo_servers() {
	for _rs in $LVS_REAL_SERVERS; do
		in_ns $_rs socat TCP4-LISTEN:7,fork,reuseaddr EXEC:cat >/dev/null 2>&1 &
		in_ns $_rs socat TCP6-LISTEN:7,fork,reuseaddr,ipv6only=1 EXEC:cat >/dev/null 2>&1 &
	done
}

# failover_trials N LABEL: N unplanned failovers (kill -9 of the active director's agent, its
# link taken down); prints the outage percentiles and checks them. The caller defines
# `restart_director NS`, which starts the agent in NS again.
failover_trials() {
	: >/run/outage.ms
	_survived=0
	for _t in $(seq $1); do
		_active=$(holders)
		_standby=$(other $_active)
		client_loop_start
		echo_start 5
		sleep 1.5
		_k0=$(now_ms) # not _t0: wait_until sets that
		kill -9 "$(cat /run/$_active.pid)"
		in_ns $_active $IP link set eth0 down
		_i=0
		until holds $_standby || [ $_i -gt 100 ]; do sleep 0.05; _i=$((_i + 1)); done
		_k1=$(now_ms)
		sleep 2
		_k2=$(now_ms)
		client_loop_stop
		_res=$(echo_result)
		case $_res in
		"50 lines back, exit 0") _survived=$((_survived + 1)) ;;
		*) grep -h -E "taking over|letting go|holds it|dead|is back|heard|held before" \
			/run/logs/$_active.log /run/logs/$_standby.log | tail -n 12 ;;
		esac
		_g=$(gap $((_k0 - 1000)) $_k2)
		echo $_g >>/run/outage.ms
		echo "$2 trial $_t: $_active -> $_standby, VIP moved after $((_k1 - _k0)) ms, client outage $_g ms, long-lived connection: $_res"
		# The old director comes back: agent first, then its link.
		restart_director $_active
		sleep 0.5
		in_ns $_active $IP link set eth0 up
		# The link going down took the default routes with it, and the IPv6 address
		# (keep_addr_on_down is off).
		in_ns $_active $IP -6 addr add "$(ip6 $_active)/64" dev eth0 nodad 2>/dev/null
		_i=0
		until in_ns $_active $IP route add default via 10.10.24.1 2>/dev/null || [ $_i -gt 50 ]; do
			sleep 0.1
			_i=$((_i + 1))
		done
		in_ns $_active $IP -6 route add default via fd00:24::1 2>/dev/null
		wait_until "$2 trial $_t: $_active is back as standby, $_standby alone holds the VIP" 20 holds $_standby
		# Under TCG a freshly restarted agent can starve its peer's heartbeats for a moment and
		# take the VIP once more; let that settle before the next trial measures anything.
		sleep 2
		_i=0
		until one_holder || [ $_i -gt 100 ]; do sleep 0.1; _i=$((_i + 1)); done
	done
	echo "$2 (kill -9 + link down), $1 trials: client outage p50 $(percentile 50 /run/outage.ms) ms, p99 $(percentile 99 /run/outage.ms) ms (all: $(sort -n /run/outage.ms | tr '\n' ' '))"
	echo "$2: long-lived connections that survived: $_survived of $1"
	check "$2: p99 outage under 1 s" [ "$(percentile 99 /run/outage.ms)" -lt 1000 ]
	expect_eq "$2: every long-lived connection survived (connection sync)" $1 $_survived
}
