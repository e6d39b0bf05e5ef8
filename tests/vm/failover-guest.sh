#!/bin/sh
# shellcheck disable=SC1091,SC2086 # guest-only paths; word splitting is intended
# Sourced by dataplane-guest.sh (busybox sh in the VM): two standalone directors of one VIP,
# director (10.10.24.10) and director2 (10.10.24.11), each started with --peer the other.
#
# Measured as a client feels it: a loop in the client namespace starts a new connection to the
# VIP every 20 ms (each in the background, 1 s at most), and the outage of a failover is the
# longest gap between the starts of two successful ones. A long-lived connection through the
# VIP (port 7, an echo service on every real server) sends a line every 100 ms; it survives a
# failover when every line comes back.
#   1. both start: exactly one holds the VIP;
#   2. unplanned, FAILOVER_TRIALS times: kill -9 the active director's agent and take its link
#      down; the standby takes over; the old one comes back as standby and lets go of the VIP;
#   3. planned: SIGTERM to the active director's agent: the standby takes over first and no
#      request fails (none times out, is reset or refused), the old one exits without the VIP; a
#      connection quiet across the handover survives;
#   4. connection sync daemons, and a second holder of the VIP reported;
#   5. periodic gratuitous ARP heals a client's stale neighbour entry (--garp-refresh 1s);
#   6. an IPv6 VIP: the same unplanned failovers (FAILOVER6_TRIALS), announced with unsolicited
#      neighbour advertisements;
#   7. ten VIPs moved by one failover reach the taker together (within 1 s of the first);
#   8. the heartbeats and failovers in /metrics.

FAILOVER_TRIALS=${FAILOVER_TRIALS:-10}
. /lvs/failover-lib.sh

start_director() {
	$IP netns exec "$1" lvs-operator agent --standalone $OBJ --role director --node-name "$1" \
		--peer "$(ip4 "$(other "$1")")" --resync-period 1s --state-dir "/run/state/$1" \
		--garp-refresh 1s --metrics-addr 127.0.0.1:9090 >>"/run/logs/$1.log" 2>&1 &
	echo $! >"/run/$1.pid"
}

echo "=== 8. two directors: failover"
stop_all
echo_servers
rm -f $OBJ/* /run/state/director/* /run/state/director2/*
in_ns director $IP addr del $VIP/32 dev eth0 2>/dev/null
cat >$OBJ/web.yaml <<-YAML
	apiVersion: lvs-operator.io/v1alpha1
	kind: LvsService
	metadata: {name: web}
	spec:
	  vip: $VIP
	  ports: [{port: 80}, {port: 7}]
	  scheduler: rr
	  backends: [{address: 10.10.24.21}, {address: 10.10.24.22}, {address: 10.10.24.23}]
	  healthCheck: {interval: 500ms, timeout: 300ms}
YAML
for rs in $LVS_REAL_SERVERS; do start_agent $rs backend; done
for d in $DIRECTORS; do start_director $d; done
wait_until "one of the two directors holds the VIP" 20 one_holder
sleep 2
expect_eq "and only one, after 2 s more" 1 "$(holders | wc -w)"
active=$(holders)
standby=$(other $active)
echo "active: $active, standby: $standby"
check "both program IPVS (the standby is hot)" has_text "-A -t $VIP:80 -s rr" in_ns $standby ipvsadm -Sn
check "the client is served" [ -n "$(http_get client http://$VIP/)" ]

echo "=== 8. unplanned failover: kill -9 and link down, $FAILOVER_TRIALS trials"
restart_director() { start_director "$1"; }
failover_trials $FAILOVER_TRIALS "unplanned failover"
check "the takeover is logged with how long the old director was silent" \
	grep -q "taking over from .* (silent for [0-9]* ms)" /run/logs/director.log /run/logs/director2.log

echo "=== 8. planned handover: SIGTERM with a ready standby"
active=$(holders)
standby=$(other $active)
client_loop_start
echo_start 4
sleep 1.5
t0=$(now_ms)
stop_pidfile $active
t1=$(now_ms)
sleep 1.5
t2=$(now_ms)
client_loop_stop
expect_eq "the standby holds the VIP, the old director let go" "$standby" "$(holders)"
echo "planned handover: the agent handed over and exited $((t1 - t0)) ms after SIGTERM"
check "the agent exited within 3 s of SIGTERM" [ $((t1 - t0)) -lt 3500 ]
expected=$(((t2 - t0 + 1000) / 20))
got=$(ok_count $((t0 - 1000)) $t2)
res=$(echo_result)
echo "planned handover: $got successful new connections from 1 s before SIGTERM to 1.5 s after the standby took over (one started every 20 ms at most, $expected at best); longest gap between two $(gap $((t0 - 1000)) $t2) ms; long-lived connection: $res"
failed=$(failed_at $((t0 - 1000)) $t2)
echo "planned handover: failed attempts (ms after 1 s before SIGTERM): ${failed:-none}"
planned_checks "planned handover" $((t0 - 1000)) $t2
expect_eq "the long-lived connection survived the handover" "40 lines back, exit 0" "$res"
check "the handover is logged" grep -q "handing over to $standby" /run/logs/$active.log
check "both sent new connections to one real server while the VIP moved" \
	grep -q "$standby has it on its interface; sending new connections to one real server" /run/logs/$active.log
check "the taker announced the VIP once the old holder had" grep -q "$active has drained it; announcing it" /run/logs/$standby.log
# unpinned NS: NS's VIP:80 sends to every real server again, and sloppy_tcp is back to 0.
unpinned() {
	[ "$(in_ns $1 ipvsadm -Ln -t $VIP:80 | awk '$1 == "->" && $2 != "RemoteAddress:Port" {print $4}' | tr '\n' ' ')" = "1 1 1 " ] &&
		[ "$(in_ns $1 cat /proc/sys/net/ipv4/vs/sloppy_tcp)" = 0 ]
}
wait_until "$standby schedules as the spec says again: weights 1 1 1, sloppy_tcp 0" 10 unpinned $standby
start_director $active
sleep 2
expect_eq "the old director restarted as standby: still one holder" "$standby" "$(holders)"

echo "=== 8. planned handover: a connection quiet across it survives"
# No other traffic: the kernel's master sends a partly filled sync buffer only 2 to 3 s after its
# first entry. The connection is synced at its third packet, the handover follows at once, and its
# next lines come 5 s later: they pass only if the old holder's master kept running to send it and
# the new holder's backup kept running to receive it.
active=$(holders)
standby=$(other $active)
rm -f /run/quiet.out /run/quiet.rc
in_ns client sh -c "(echo a1; echo a2; echo a3; sleep 5; echo b1; echo b2; echo b3) |
	socat -t 3 - $(vip_socat):7 >/run/quiet.out 2>/run/quiet.err; echo \$? >/run/quiet.rc" &
sleep 0.3
stop_pidfile $active
wait_until "the quiet connection is done" 15 test -s /run/quiet.rc
expect_eq "the quiet connection: every line came back, socat exit 0" "a1 a2 a3 b1 b2 b3 0" \
	"$(tr '\n' ' ' </run/quiet.out)$(cat /run/quiet.rc)"
cat /run/quiet.err
start_director $active
sleep 2
expect_eq "the old director restarted as standby" "$standby" "$(holders)"

echo "=== 8. connection sync and one holder"
active=$(holders)
standby=$(other $active)
check "$active runs the master sync daemon" has_text "master sync daemon (mcast=eth0, syncid=0" in_ns $active ipvsadm -L --daemon
check "$standby runs the backup sync daemon" has_text "backup sync daemon (mcast=eth0, syncid=0" in_ns $standby ipvsadm -L --daemon
mac=$(in_ns $standby cat /sys/class/net/eth0/address)
in_ns $standby $IP addr add $VIP/32 dev eth0
wait_until "$active reports the second holder, naming $standby's MAC $mac" 15 \
	grep -q "$VIP: $mac (director $standby) also answers ARP for it" /run/logs/$active.log
in_ns $active wget -qO- http://127.0.0.1:9090/metrics >/run/metrics.txt
check "/metrics of $active: lvs_director_foreign_holders 1" grep -qF "lvs_director_foreign_holders{vip=\"$VIP\"} 1" /run/metrics.txt
in_ns $standby $IP addr del $VIP/32 dev eth0
wait_until "the second holder gone, $active says so" 15 grep -q "resolved: $VIP: $mac" /run/logs/$active.log

echo "=== 8. periodic gratuitous ARP (--garp-refresh 1s)"
# A neighbour entry the takeover's announcement never reached: the client thinks the VIP is at
# a MAC nobody has. Nothing but a gratuitous ARP from the holder corrects it without traffic.
active=$(holders)
mac=$(in_ns $active cat /sys/class/net/eth0/address)
in_ns client $IP neigh replace $VIP lladdr 02:00:00:00:00:01 dev eth0 nud stale
client_has_mac() { has_text "lladdr $1" in_ns client $IP neigh show $VIP dev eth0; }
wait_until "the client's stale entry for $VIP is back to $active's MAC $mac" 5 client_has_mac $mac
in_ns client $IP neigh show $VIP dev eth0

echo "=== 8. an IPv6 VIP fails over the same way (unsolicited neighbour advertisements)"
cat >$OBJ/web6.yaml <<-YAML
	apiVersion: lvs-operator.io/v1alpha1
	kind: LvsService
	metadata: {name: web6}
	spec:
	  vip: "$VIP6"
	  ports: [{port: 80}, {port: 7}]
	  scheduler: rr
	  backends: [{address: "fd00:24::21"}, {address: "fd00:24::22"}, {address: "fd00:24::23"}]
	  healthCheck: {interval: 500ms, timeout: 300ms}
YAML
VIP4=$VIP
VIP=$VIP6 # what failover-lib's helpers read
wait_until "one of the two directors holds $VIP" 20 one_holder
wait_until "every real server holds $VIP on lo" 20 vip_on_every_lo
served6() { [ -n "$(http_get client "http://[$VIP]/")" ]; }
wait_until "the client is served through [$VIP]" 20 served6
failover_trials ${FAILOVER6_TRIALS:-5} "IPv6 unplanned failover"
VIP=$VIP4
rm $OBJ/web6.yaml

echo "=== 8. ten VIPs move together"
# A director that takes many VIPs at once adds each at once: the repeats of each VIP's
# announcement go out beside the next ones (awaited in turn, they held the tenth back by 1.8 s).
for i in 0 1 2 3 4 5 6 7 8 9; do
	cat <<-YAML
		---
		apiVersion: lvs-operator.io/v1alpha1
		kind: LvsService
		metadata: {name: many$i}
		spec:
		  vip: 10.10.24.10$i
		  ports: [{port: 80}]
		  backends: [{address: 10.10.24.21}]
		  healthCheck: {type: None}
	YAML
done >$OBJ/many.yaml
# ten_on NS: how many of the ten VIPs NS has on its eth0.
ten_on() { in_ns $1 $IP -o -4 addr show dev eth0 | grep -cE 'inet 10\.10\.24\.10[0-9]/32'; }
ten_held() { [ $(($(ten_on director) + $(ten_on director2))) = 10 ]; }
wait_until "the ten VIPs are held (spread over both directors)" 20 ten_held
# Failovers first, until one director holds all ten (a director that comes back stands by; how
# the ten were first spread, and what a restart in the middle of that leaves, varies).
holds_ten() { [ "$(ten_on "$1")" = 10 ]; }
for round in 1 2 3; do
	failover_trials 1 "ten VIPs, gathering $round"
	sleep 2
	echo "ten VIPs after gathering $round: director $(ten_on director), director2 $(ten_on director2); $VIP on $(holders)"
	holds_ten "$(holders)" && break
done
check "$(holders) holds all ten" holds_ten "$(holders)"
taker=$(other "$(holders)")
expect_eq "$taker holds none of them before the failover" 0 "$(ten_on $taker)"
rm -f /run/ten.times
(
	first=
	end=$(($(now_ms) + 10000))
	while [ "$(now_ms)" -lt $end ]; do
		n=$(ten_on $taker)
		t=$(now_ms)
		[ -z "$first" ] && [ "${n:-0}" -gt 0 ] && first=$t
		[ "$n" = 10 ] && break
		t=none
	done
	echo "${first:-none} $t" >/run/ten.times
) &
failover_trials 1 "ten VIPs"
wait_until "the taker's first and last of the ten are recorded" 15 test -s /run/ten.times
read -r first last </run/ten.times
echo "ten VIPs: $taker had the first on eth0 at $first ms, all ten at $last ms (uptime)"
check "$taker took all ten" [ "$last" != none ]
check "all ten within 1 s of the first (announcements no longer awaited in turn)" \
	sh -c "[ $last != none ] && [ \$(($last - $first)) -lt 1000 ]"
rm $OBJ/many.yaml
none_of_ten() { [ $(($(ten_on director) + $(ten_on director2))) = 0 ]; }
wait_until "the ten VIPs left both directors" 20 none_of_ten

echo "=== 8. /metrics"
active=$(holders)
standby=$(other $active)
in_ns $active wget -qO- http://127.0.0.1:9090/metrics >/run/metrics.txt
for want in "lvs_director_active{vip=\"$VIP\"} 1" "lvs_director_peer_up{peer=\"$standby\"} 1" \
	"lvs_director_failovers_total{vip=\"$VIP\"}" "lvs_director_peer_rtt_seconds{peer=\"$standby\"}" \
	'lvs_director_sync_daemon{role="master"} 1'; do
	check "/metrics of $active has $want" grep -qF "$want" /run/metrics.txt
done
grep -E "^lvs_director_(peer_rtt_seconds|failovers_total)" /run/metrics.txt
stop_all
for d in $DIRECTORS; do stop_pidfile $d; done
