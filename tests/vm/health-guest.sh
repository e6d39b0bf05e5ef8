#!/bin/sh
# shellcheck disable=SC2086,SC2154 # sourced by dataplane-guest.sh: its helpers and variables
# Sourced by dataplane-guest.sh (busybox sh in the VM): the director's health checks, with the
# standalone agents of that script (start_all / stop_all, objects in $OBJ).
#
#   1. rs2's web server stops: time until the director stops scheduling it (weight 0), over
#      HEALTH_TRIALS trials, p50 / p99; no client request fails after that; it comes back after
#      successThreshold checks, ramped over slowStart when set.
#   2. rs3 loses the VIP from lo while its web server answers on its own address: a check of its
#      own address (throughVip: false) keeps sending it clients, which fail; the check through the
#      VIP ejects it.
#   3. An HTTP check of a path answering 503 ejects; a server flapping every 300 ms never changes
#      the table faster than the thresholds allow.
#   4. All real servers down: all at weight 0; the table recovers by itself.
#   5. The director's /metrics shows the checks.

HEALTH_TRIALS=${HEALTH_TRIALS:-10}

# now_ms: milliseconds since boot (10 ms resolution, /proc/uptime).
now_ms() { awk '{printf "%d", $1 * 1000}' /proc/uptime; }
# weight_is ADDR W: the director gives ADDR:80 weight W in the VIP's service (lib.sh's weight_of).
weight_is() { [ "$(weight_of $VIP "$1")" = "$2" ]; }
failures() { client_failures "http://$VIP/" "$1"; }
# percentile P FILE: the P-th percentile of the numbers in FILE (nearest rank).
percentile() { sort -n "$2" | awk -v p="$1" '{v[NR] = $1} END {r = int((p * NR + 99) / 100); if (r < 1) r = 1; print v[r]}'; }

health_object() {
	cat >$OBJ/web.yaml <<-YAML
		apiVersion: lvs-operator.io/v1alpha1
		kind: LvsService
		metadata: {name: web}
		spec:
		  vip: $VIP
		  ports: [{port: 80}]
		  scheduler: rr
		  backends: [{address: 10.10.24.21}, {address: 10.10.24.22, weight: ${2:-1}}, {address: 10.10.24.23}]
		  healthCheck: {interval: 200ms, timeout: 150ms, failureThreshold: 2, successThreshold: 2${1:+, $1}}
	YAML
}

echo "=== 7. health checks: a dead real server is out in under a second"
rm -f $OBJ/*
health_object
start_all
wait_until "web is programmed with its checks" 20 has_text "-a -t $VIP:80 -r 10.10.24.23:80 -g -w 1" ipvs -Sn
marks=$(ipvs -Sn | grep -c '^-A -f ')
expect_eq "one firewall-mark service per real server, for the checks through the VIP" 3 "$marks"
expect_eq "accept_local on the director's eth0 (the real servers answer from the VIP it holds)" 1 \
	"$(in_ns director sysctl -n net.ipv4.conf.eth0.accept_local)"
# A client reusing the port of a finished connection to an ejected real server is scheduled
# afresh, and a persistence template to one expires.
expect_eq "expire_nodest_conn and expire_quiescent_template on the director" "1 1" \
	"$(in_ns director sysctl -n net.ipv4.vs.expire_nodest_conn) $(in_ns director sysctl -n net.ipv4.vs.expire_quiescent_template)"
sleep 1
expect_eq "every real server passes its checks: weights 1 1 1" "1 1 1" \
	"$(weight_of $VIP 10.10.24.21) $(weight_of $VIP 10.10.24.22) $(weight_of $VIP 10.10.24.23)"
: >/run/eject.ms
late=0
for t in $(seq $HEALTH_TRIALS); do
	t0=$(now_ms)
	httpd_stop rs2
	until weight_is 10.10.24.22 0; do
		sleep 0.02
		[ $(($(now_ms) - t0)) -gt 10000 ] && break
	done
	t1=$(now_ms)
	echo $((t1 - t0)) >>/run/eject.ms
	late=$((late + $(failures 6)))
	httpd_start rs2
	_i=0
	until weight_is 10.10.24.22 1; do
		_i=$((_i + 1))
		[ $_i -gt 200 ] && { fail "trial $t: rs2 did not come back within 10 s"; break; }
		sleep 0.05
	done
done
echo "ejection of a stopped real server (stop -> weight 0), $HEALTH_TRIALS trials, interval 200ms, failureThreshold 2: p50 $(percentile 50 /run/eject.ms) ms, p99 $(percentile 99 /run/eject.ms) ms (all: $(sort -n /run/eject.ms | tr '\n' ' '))"
check "p99 ejection under 1 s" [ "$(percentile 99 /run/eject.ms)" -lt 1000 ]
expect_eq "no client request failed once the dead real server was out ($((HEALTH_TRIALS * 6)) requests)" 0 $late
check "the director logged the ejection, naming the real server and why" \
	grep -q "WARN.*real server 10.10.24.22:80.*is unhealthy: connection refused" /run/logs/director.log

echo "=== 7. a restarted director keeps an ejected real server out"
httpd_stop rs2
wait_until "rs2 ejected" 5 weight_is 10.10.24.22 0
stop_pidfile director
: >/run/logs/director.log
start_agent director director
wait_until "the restarted agent has run 2 resyncs (its /metrics)" 10 resynced_twice director
sleep 1
expect_eq "rs2 stayed at weight 0 through the restart: nothing written" "" "$(grep applied: /run/logs/director.log)"
expect_eq "and no client request failed (9 requests)" 0 "$(failures 9)"
httpd_start rs2
wait_until "rs2 answers again: re-admitted after its passing checks" 5 weight_is 10.10.24.22 1

echo "=== 7. slow start: a real server that comes back ramps up"
health_object "slowStart: 3s" 10
wait_until "rs2 at weight 10" 10 weight_is 10.10.24.22 10
httpd_stop rs2
wait_until "rs2 ejected" 5 weight_is 10.10.24.22 0
httpd_start rs2
seen=
for i in $(seq 40); do
	w=$(weight_of $VIP 10.10.24.22)
	case " $seen " in *" $w "*) ;; *) seen="$seen $w" ;; esac
	[ "$w" = 10 ] && break
	sleep 0.1
done
echo "rs2's weights while it came back: $seen"
check "it ramped through weights between 0 and 10" sh -c "echo '$seen' | tr ' ' '\n' | grep -qE '^[1-9]$'"
check "and reached 10" [ "$(weight_of $VIP 10.10.24.22)" = 10 ]

echo "=== 7. through the VIP: a real server without the VIP on lo"
health_object "throughVip: false"
no_marks() { [ -z "$(ipvs -Sn | grep '^-A -f ')" ]; }
wait_until "the checks of the real servers' own addresses replace those through the VIP" 10 no_marks
stop_pidfile rs3
in_ns rs3 $IP addr del $VIP/32 dev lo
sleep 1.5
expect_eq "a check of rs3's own address still passes: weight 1" 1 "$(weight_of $VIP 10.10.24.23)"
lost=$(failures 9)
echo "with throughVip: false, $lost of 9 client requests failed"
check "so clients sent to rs3 fail" [ "$lost" -gt 0 ]
health_object
wait_until "the check through the VIP ejects rs3" 10 weight_is 10.10.24.23 0
expect_eq "and no client request fails (9 requests)" 0 "$(failures 9)"
check "the log says why" grep -q "real server 10.10.24.23:80 .*is unhealthy" /run/logs/director.log
grep "10.10.24.23:80.*unhealthy" /run/logs/director.log | tail -n 1
start_agent rs3 backend
wait_until "rs3's agent puts the VIP back: rs3 is re-admitted" 10 weight_is 10.10.24.23 1

echo "=== 7. HTTP checks: 503 ejects; a flapping server moves no faster than the thresholds"
# A health endpoint per real server: 503 while /run/sick-RS exists. busybox httpd passes a CGI's
# output through as it is when it starts with a status line.
for rs in $LVS_REAL_SERVERS; do
	mkdir -p /srv/$rs/cgi-bin
	cat >/srv/$rs/cgi-bin/health <<-CGI
		#!/bin/sh
		if [ -e /run/sick-$rs ]; then
			printf 'HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\nsick\n'
		else
			printf 'HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nok\n'
		fi
	CGI
	chmod +x /srv/$rs/cgi-bin/health
done
health_object "type: HTTP, path: /cgi-bin/health"
sleep 1.5
expect_eq "every real server answers 200: weights 1 1 1" "1 1 1" \
	"$(weight_of $VIP 10.10.24.21) $(weight_of $VIP 10.10.24.22) $(weight_of $VIP 10.10.24.23)"
touch /run/sick-rs1
wait_until "rs1 answering 503 is ejected" 5 weight_is 10.10.24.21 0
check "the log names the status" grep -q "real server http 10.10.24.21:80/cgi-bin/health .*is unhealthy: HTTP 503" /run/logs/director.log
grep "10.10.24.21:80.*unhealthy" /run/logs/director.log | tail -n 1
rm /run/sick-rs1
wait_until "rs1 answering 200 again is re-admitted" 5 weight_is 10.10.24.21 1
# The gaps are read from the director's own log, each line stamped when it happened: the
# engine's verdicts, and the kernel writes they caused ("applied: ipvsadm -e ... -w W"). A poll of
# ipvsadm from here is late by as long as one ipvsadm run, and two late or early polls had once
# made 250 ms read as 220.
from=$(($(wc -l </run/logs/director.log) + 1))
(
	for i in $(seq 20); do touch /run/sick-rs1; sleep 0.3; rm -f /run/sick-rs1; sleep 0.3; done
) &
wait $!
sleep 1
tail -n +$from /run/logs/director.log >/run/flap.log
# gaps PATTERN: "COUNT MIN", the number of lines of the flapping window matching PATTERN and the
# least time between two of them, in ms (timestamps within one day: 2026-11-27T20:19:21.754874Z).
gaps() {
	grep -E "$1" /run/flap.log | awk '{
		split(substr($1, 12, 15), t, ":"); ms = int((t[1] * 3600 + t[2] * 60 + t[3]) * 1000)
		if (NR > 1 && (min == "" || ms - last < min)) min = ms - last
		last = ms
	} END {print NR, (min == "" ? 99999 : min)}'
}
v=$(gaps "real server http 10.10.24.21:80/.* is (unhealthy|healthy again)")
verdicts=${v% *} verdict_gap=${v#* }
v=$(gaps "applied: ipvsadm -e -t $VIP:80 -r 10.10.24.21:80 ")
writes=${v% *} write_gap=${v#* }
echo "rs1 flapping every 300 ms for 12 s: $verdicts verdicts, the closest two ${verdict_gap} ms apart;" \
	"$writes weight changes in the kernel, the closest two ${write_gap} ms apart"
check "the flapping moved rs1 in and out (at least two weight changes)" [ "$writes" -ge 2 ]
# A verdict needs 2 checks in a row, 200 ms apart, and the first of them may have taken up to
# its 150 ms timeout: 250 ms at least, less 50 ms of scheduling noise under TCG.
check "never two verdicts closer than the thresholds allow (2 x 200 ms - 150 ms timeout, less noise)" \
	[ "$verdict_gap" -ge 200 ]
check "never two weight changes in the kernel closer than that" [ "$write_gap" -ge 200 ]

echo "=== 7. all real servers down, then back"
health_object
sleep 1
for rs in $LVS_REAL_SERVERS; do httpd_stop $rs; done
all_out() { [ "$(weight_of $VIP 10.10.24.21)$(weight_of $VIP 10.10.24.22)$(weight_of $VIP 10.10.24.23)" = 000 ]; }
wait_until "all three are out" 5 all_out
for rs in $LVS_REAL_SERVERS; do httpd_start $rs; done
all_in() { [ "$(weight_of $VIP 10.10.24.21)$(weight_of $VIP 10.10.24.22)$(weight_of $VIP 10.10.24.23)" = 111 ]; }
wait_until "the table recovers by itself" 5 all_in
expect_eq "and serves (6 requests)" 0 "$(failures 6)"

echo "=== 7. /metrics shows the checks"
metrics=$(in_ns director wget -qO- http://127.0.0.1:9090/metrics)
for series in 'lvs_backend_healthy{' 'lvs_health_check_duration_seconds_bucket{' 'lvs_health_check_transitions_total{to="unhealthy"}'; do
	check "/metrics has $series" sh -c "echo '$metrics' | grep -qF '$series'"
done
echo "$metrics" | grep '^lvs_backend_healthy' | head -n 3
stop_all
rm -f $OBJ/*
