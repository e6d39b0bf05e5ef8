#!/bin/sh
# shellcheck disable=SC1091,SC2086 # guest-only paths; word splitting is intended
# Sourced by e2e-guest.sh: director failover in a cluster. director2 (10.10.24.11, a Node without
# the director label so far) gets the label and an agent; the two agents find each other through
# their heartbeat Leases and fail over to each other (see tests/vm/failover-lib.sh for how the
# client's outage and the long-lived connection are measured).
#   1. director2 joins as standby: status.directors lists director Active, director2 Standby;
#   2. unplanned, CLUSTER_FAILOVER_TRIALS times: kill -9 the active director's agent and take its
#      link down; the standby takes over; the old one comes back as standby;
#   3. the same with the API server stopped, then for an IPv6 VIP;
#   4. kubectl shows the active director, the candidates, their sync daemons, a Failover event;
#   5. the VIP added by hand on the standby's interface: Degraded names its MAC and node;
#   6. planned: SIGTERM to the active director's agent, then the director label taken off the
#      active one: each time the standby takes over first and no request fails; director2 ends
#      with no role and nothing of ours in its kernel.

CLUSTER_FAILOVER_TRIALS=${CLUSTER_FAILOVER_TRIALS:-10}
. /lvs/failover-lib.sh

directors_state() {
	jsonpath web '{range .status.directors[*]}{.node}={.state} {end}' | sed 's/ $//'
}
directors_are() { [ "$(directors_state)" = "$1" ]; }
# expected_directors ACTIVE: what status.directors says with ACTIVE holding the VIP.
expected_directors() {
	if [ "$1" = director ]; then echo "director=Active director2=Standby"; else echo "director=Standby director2=Active"; fi
}
status_director_is() { [ "$(jsonpath web '{.status.director}')" = "$1" ]; }
degraded_message_has() { jsonpath web '{.status.conditions[?(@.type=="Degraded")].message}' | grep -qF "$1"; }
degraded_is() { [ "$(condition web Degraded)" = "$1" ]; }
# takeover_reported: the holder's report names who it took default/web over from: in a full entry,
# or in its short directors entry (`default/web@GEN#UID active MAC tN`: the Nth of spec.takeovers).
takeover_reported() {
	_report=$($K get lvsnodereport "$(holders)" -o 'jsonpath={.spec.services[?(@.object=="default/web")].status.takeover.from}|{.spec.directors[*]}|{.spec.takeovers[*].from}')
	[ -n "${_report%%|*}" ] && return 0
	echo "$_report" | grep -qE '\|.*default/web@[^ ]+ active [^ ]+ t[0-9]+.*\|.+$'
}

restart_director() { start_agent "$1"; }

echo "=== failover: director2 joins as standby"
echo_servers
$K patch lvs web --type=merge -p '{"spec":{"ports":[{"port":80},{"port":7}]}}' >/dev/null
$K label node director2 lvs-operator.io/director=true >/dev/null
start_agent director2
wait_until "status.directors: director Active, director2 Standby" 30 directors_are "director=Active director2=Standby"
expect_eq "director holds the VIP, director2 does not" director "$(holders)"
check "director2 programs IPVS as a hot standby" has_text "-A -t $VIP:7 -s rr" in_ns director2 ipvsadm -Sn
wait_until "web is Ready with two directors" 30 is_ready web
expect_eq "director2's heartbeat Lease publishes its peer address" 10.10.24.11:7408 \
	"$($K -n lvs-operator get lease lvs-agent-director2 -o 'jsonpath={.metadata.annotations.lvs-operator\.io/peer}')"

# lease_writes_start NAME: count the writes of Lease NAME from now on (kubectl --watch-only prints
# one line per change); lease_writes_stop prints how many there were, and over how many seconds.
lease_writes_start() {
	$K -n lvs-operator get lease "$1" --watch-only -o 'jsonpath={.spec.holderIdentity}{"\n"}' >/run/lease-$1.watch 2>/dev/null &
	echo $! >/run/lease-$1.pid
	cut -d' ' -f1 /proc/uptime >/run/lease-$1.t0
}
lease_writes_stop() {
	kill "$(cat /run/lease-$1.pid)" 2>/dev/null
	awk -v t0="$(cat /run/lease-$1.t0)" '{printf "%.0f", $1 - t0}' /proc/uptime
	echo " s: $(grep -c . /run/lease-$1.watch) writes"
}
VIP_LEASE=lvs-vip-$(echo $VIP | tr . -)

echo "=== failover: unplanned"
lease_writes_start $VIP_LEASE
failover_trials $CLUSTER_FAILOVER_TRIALS "unplanned failover"
echo "API writes of failover: the VIP Lease $VIP_LEASE over $CLUSTER_FAILOVER_TRIALS takeovers, $(lease_writes_stop $VIP_LEASE)"
wait_until "web is Ready again" 30 is_ready web

echo "=== failover: unplanned, with the API server stopped"
wget -qO- "$CONTROL/apiserver/stop" >/dev/null || fail "stopping the API server through the host"
failover_trials 5 "unplanned failover without the API server"
wget -qO- "$CONTROL/apiserver/start" >/dev/null || fail "starting the API server through the host"
wait_until "the API server answers again" 60 $K get --raw /readyz
wait_until "web is Ready again once the API server is back" 60 is_ready web

echo "=== failover: an IPv6 VIP (the nodes are dual stack)"
$K patch lvsaddresspool lan --type=merge -p '{"spec":{"addresses":["10.10.24.80/28","10.99.0.1","fd00:24::88"]}}' >/dev/null
$K apply -f - >/dev/null <<YAML
apiVersion: lvs-operator.io/v1alpha1
kind: LvsService
metadata: {name: web6}
spec:
  vip: "fd00:24::88"
  ports: [{port: 80}, {port: 7}]
  backends: [{address: "fd00:24::21"}, {address: "fd00:24::22"}, {address: "fd00:24::23"}]
YAML
VIP4=$VIP
VIP=fd00:24::88 # what failover-lib's helpers read
wait_until "one of the two directors holds $VIP" 30 one_holder
wait_until "every real server holds $VIP on lo" 30 vip_on_every_lo
wait_until "web6 is Ready" 30 is_ready web6
lease6_names_holder() { [ "$($K -n lvs-operator get lease lvs-vip-fd00-24--88 -o 'jsonpath={.spec.holderIdentity}')" = "$(holders)" ]; }
wait_until "its VIP Lease lvs-vip-fd00-24--88 names the holder" 10 lease6_names_holder
failover_trials 3 "IPv6 unplanned failover"
VIP=$VIP4
$K delete lvs web6 >/dev/null
no_vip6() { for _d in $DIRECTORS; do has_text fd00:24::88 in_ns $_d $IP -6 addr show dev eth0 && return 1; done; return 0; }
wait_until "web6's VIP left both directors" 30 no_vip6
$K patch lvsaddresspool lan --type=merge -p '{"spec":{"addresses":["10.10.24.80/28","10.99.0.1"]}}' >/dev/null
wait_until "web is Ready" 30 is_ready web

echo "=== failover: what kubectl shows"
# From here to the next takeover, nothing changes hands: the VIP Lease is not written at all, and
# each director renews its heartbeat Lease once per 10 s.
lease_writes_start $VIP_LEASE
lease_writes_start lvs-agent-director
active=$(holders)
standby=$(other $active)
wait_until "status.director is the node that holds the VIP ($active)" 30 status_director_is $active
$K get lvs web
wait_until "status.directors: $active Active, $standby Standby" 30 directors_are "$(expected_directors $active)"
# A director keeps both daemons for a few seconds after a takeover or a handover (SYNC_GRACE).
sync_daemons_are() {
	[ "$(jsonpath web "{.status.directors[?(@.node==\"$active\")].sync[*]} {.status.directors[?(@.node==\"$standby\")].sync[*]}")" = "$1" ]
}
wait_until "the sync daemons in status: master on $active, backup on $standby" 30 \
	sync_daemons_are 'master backup'
$K describe lvs web | sed -n '/^Events:/,$p' | grep -E "Failover|DirectorChanged" | tail -n 3
check "kubectl describe shows a Failover event naming both directors and the silence" \
	sh -c "$K describe lvs web | grep -E 'Failover .* took the VIP over from .*heartbeats stopped \\([0-9]+ ms without one\\)'"
wait_until "the active director's takeover is in its LvsNodeReport" 10 takeover_reported
$K get lvsnodereport "$(holders)" -o yaml | sed -n '/^spec:/,$p' | head -n 30

echo "=== failover: a second holder of the VIP"
mac=$(in_ns $standby cat /sys/class/net/eth0/address)
in_ns $standby $IP addr add $VIP/32 dev eth0
wait_until "Degraded names the second holder: $mac ($standby)" 30 \
	degraded_message_has "$mac ($standby) also answers ARP for $VIP"
expect_eq "with the reason DuplicateVIPHolder" DuplicateVIPHolder \
	"$(jsonpath web '{.status.conditions[?(@.type=="Degraded")].reason}')"
check "and a Warning event" sh -c "$K describe lvs web | grep -q 'Warning  DuplicateVIPHolder'"
in_ns $standby $IP addr del $VIP/32 dev eth0
wait_until "Degraded clears once it is gone" 30 degraded_is False
echo "API writes without a takeover: the VIP Lease $VIP_LEASE in $(lease_writes_stop $VIP_LEASE); director's heartbeat Lease in $(lease_writes_stop lvs-agent-director)"

echo "=== failover: the standby is also a real server"
# Its VIP is then on its lo. Were the VIP's IPVS services programmed there too, the standby
# would schedule again what the active director sends it, and a connection sent back bounces
# between the two for good (the DR loop): a share of the clients would fail. It programs them
# when it takes the VIP.
mkdir -p /srv/$standby && echo $standby >/srv/$standby/index.html
in_ns $standby httpd -p 80 -h /srv/$standby
own=$(ip4 $standby)
$K patch lvs web --type=json -p "[{\"op\":\"add\",\"path\":\"/spec/backends/-\",\"value\":{\"address\":\"$own\"}}]" >/dev/null
sends_standby() { in_ns $active ipvsadm -Ln -t $VIP:80 | grep -qE "$own:80 +Route +[1-9]"; }
wait_until "the active director $active sends $standby its share" 30 sends_standby
wait_until "$standby holds the VIP on lo as a real server" 30 has_text "$VIP/32" in_ns $standby $IP addr show dev lo
check "$standby has no IPVS service for the VIP while it stands by" lacks_text "$VIP:80" in_ns $standby ipvsadm -Sn
answers=$(requests 24)
echo "24 requests through the VIP: $answers"
expect_eq "every one answered by a real server (none lost in a loop)" 0 \
	"$(echo "$answers" | tr ' ' '\n' | grep -cvE "^(rs1|rs2|rs3|$standby)\$")"
check "$standby answers its share" sh -c "echo '$answers' | grep -qw $standby"
$K patch lvs web --type=json -p "[{\"op\":\"test\",\"path\":\"/spec/backends/3/address\",\"value\":\"$own\"},{\"op\":\"remove\",\"path\":\"/spec/backends/3\"}]" >/dev/null
wait_until "$standby is a real server no more: the VIP left its lo" 30 lacks_text "$VIP/32" in_ns $standby $IP addr show dev lo
wait_until "$standby programs the VIP's services again as a hot standby" 30 has_text "-A -t $VIP:80" in_ns $standby ipvsadm -Sn
wait_until "web is Ready again" 30 is_ready web

echo "=== failover: planned, SIGTERM with a ready standby"
planned() {
	_active=$1
	_standby=$(other $_active)
	client_loop_start
	echo_start 4
	sleep 1.5
	_h0=$(now_ms) # not _t0: wait_until sets that
	shift
	"$@"
	wait_until "$_standby took over from $_active" 10 holds $_standby
	sleep 1.5
	_t2=$(now_ms)
	client_loop_stop
	_res=$(echo_result)
	_failed=$(failed_at $((_h0 - 1000)) $_t2)
	echo "planned ($*): $(ok_count $((_h0 - 1000)) $_t2) new connections succeeded, failed: ${_failed:-none} (ms after 1 s before the handover), longest gap between successes $(gap $((_h0 - 1000)) $_t2) ms; long-lived connection: $_res"
	planned_checks "planned ($*)" $((_h0 - 1000)) $_t2
	expect_eq "planned ($*): the long-lived connection survived" "40 lines back, exit 0" "$_res"
}
active=$(holders)
planned $active stop_pidfile $active
start_agent $active
sleep 3
expect_eq "the stopped director restarted as standby" "$(other $active)" "$(holders)"

echo "=== failover: planned, the director label taken off"
# End with director alone, as the rest of e2e expects: hand the VIP to director2 first if needed.
if [ "$(holders)" = director ]; then planned director stop_pidfile director; start_agent director; sleep 3; fi
# (planned prints its checks: only the label command's own output goes to /dev/null)
unlabel_director2() { $K label node director2 lvs-operator.io/director- >/dev/null; }
planned director2 unlabel_director2
gone_from_director2() { [ -z "$(in_ns director2 ipvsadm -Sn)" ]; }
wait_until "director2 removed its IPVS services once it no longer directs" 20 gone_from_director2
wait_until "status.directors lists director alone" 30 directors_are "director=Active"
stop_pidfile director2
$K patch lvs web --type=merge -p '{"spec":{"ports":[{"port":80}]}}' >/dev/null
wait_until "web is Ready with director alone" 30 is_ready web
