#!/bin/sh
# Guest script of `make e2e-dataplane` (busybox sh inside the VM; see tests/vm/README.md).
# Drives the standalone agent only, in the reference topology: the director namespace runs
# `--role director`, rs1..rs3 run `--role backend`, all reading the same objects directory.
set -u
. /lvs/lib.sh
topology_up

VIP=10.10.24.88
VIP6=fd00:24::88
OBJ=/run/objects
mkdir -p $OBJ /run/state /run/logs

# --- helpers --------------------------------------------------------------------------------

IP=/usr/sbin/ip

# agent_once NS ROLE PATH: one converge, stderr to /run/logs/once.err; returns the exit code.
agent_once() {
	$IP netns exec "$1" lvs-operator agent --standalone "$3" --role "$2" --once \
		--state-dir "/run/state/$1" >/run/logs/once.out 2>/run/logs/once.err
}

# start_agent NS ROLE: the long-running agent, resyncing every second, /metrics on the
# namespace's own 127.0.0.1:9090.
start_agent() {
	$IP netns exec "$1" lvs-operator agent --standalone $OBJ --role "$2" --resync-period 1s \
		--state-dir "/run/state/$1" --metrics-addr 127.0.0.1:9090 >>"/run/logs/$1.log" 2>&1 &
	echo $! >"/run/$1.pid"
}

# resyncs NS: the resyncs the agent in NS has run since it started, from its /metrics (empty when
# it does not answer).
resyncs() {
	in_ns "$1" wget -qO- http://127.0.0.1:9090/metrics 2>/dev/null |
		awk '$1 == "lvs_operator_agent_resyncs_total" {print $2}'
}
resynced_twice() { [ "$(resyncs "$1")" -ge 2 ] 2>/dev/null; }

start_all() {
	start_agent director director
	for rs in $LVS_REAL_SERVERS; do start_agent "$rs" backend; done
}

stop_all() {
	stop_pidfile director
	for rs in $LVS_REAL_SERVERS; do stop_pidfile "$rs"; done
}

ipvs() { in_ns director ipvsadm "$@"; }

snapshot() { sh /lvs/snapshot.sh; }

# requests N [URL]: the real servers that answered N requests from the client, space-separated.
requests() {
	_out=
	for _i in $(seq "$1"); do _out="$_out $(http_get client "${2:-http://$VIP/}" 2>&1)"; done
	echo ${_out# }
}

count_of() { echo "$2" | tr ' ' '\n' | grep -c "^$1\$"; }
distinct() { echo "$1" | tr ' ' '\n' | sort -u | wc -l; }

reference_object() {
	cat <<-YAML
		apiVersion: lvs-operator.io/v1alpha1
		kind: LvsService
		metadata: {name: web}
		spec:
		  vip: $VIP
		  ports: [{port: 80, protocol: TCP}]
		  scheduler: ${1:-rr}
		  backends: [{address: 10.10.24.21, weight: ${2:-1}}, {address: 10.10.24.22}, {address: 10.10.24.23}]
		${3:-}
	YAML
}

# --- 1. the agent's kernel state equals the seed document's ---------------------------------
echo "=== 1. seed commands by hand vs. the agent"
seed_setup $VIP
snapshot >/run/seed.snapshot
# No traffic through the hand-made table: its connection entries (and the deleted destinations
# they pin on the kernel's trash list) would outlive it and steer the agent's first requests.
# Undo it all, back to a bare LAN.
ipvs -D -t $VIP:80
in_ns director ip addr del $VIP/32 dev eth0
for rs in $LVS_REAL_SERVERS; do
	in_ns "$rs" ip addr del $VIP/32 dev lo
	for dev in lo all; do
		in_ns "$rs" sysctl -q -w net.ipv4.conf.$dev.arp_ignore=0
		in_ns "$rs" sysctl -q -w net.ipv4.conf.$dev.arp_announce=0
	done
done
snapshot >/run/bare.snapshot

cp /lvs/reference.yaml $OBJ/web.yaml
check "director agent --once exits 0" agent_once director director $OBJ
cat /run/logs/once.err
for rs in $LVS_REAL_SERVERS; do
	check "$rs agent --once exits 0" agent_once "$rs" backend $OBJ
done
snapshot >/run/agent.snapshot
cat /run/agent.snapshot
if diff -u /run/seed.snapshot /run/agent.snapshot; then
	pass "IPVS table, director addresses, lo addresses and ARP sysctls equal the seed commands'"
else
	fail "agent state differs from the seed commands' (diff above)"
fi
expect_eq "besides, the director made a firewall-mark service per real server for its checks through the VIP" 3 \
	"$(ipvs -Sn | grep -c '^-A -f ')"
check "a second --once changes nothing" agent_once director director $OBJ
expect_eq "second --once logs no change" "" "$(grep applied: /run/logs/once.err)"

# --- 2. traffic through the VIP, replies straight from the real servers ---------------------
echo "=== 2. traffic"
order=$(requests 6)
echo "agent: 6 requests -> $order"
# What rr promises: each real server its share (not the order, an implementation detail).
expect_eq "round robin: rs1, rs2 and rs3 each answered 2 of 6" "2 2 2" \
	"$(count_of rs1 "$order") $(count_of rs2 "$order") $(count_of rs3 "$order")"
service_stats() { ipvs -Ln --stats | awk -v s="$VIP:80" '$1 == "TCP" && $2 == s {print $3, $4, $5}'; }
conns_are() { [ "$(service_stats | cut -d' ' -f1)" = "$1" ]; }
# The rate estimator folds per-CPU counters into these totals every 2 s.
wait_until "IPVS counted the 6 connections" 10 conns_are 6
ipvs -Ln --stats
set -- $(service_stats)
check "director saw the inbound packets" [ "${2:-0}" -gt 0 ]
expect_eq "director saw no outbound packet: replies went straight to the client (DR)" 0 "${3:-}"

# --- 3. weights, persistence, a second port, UDP, IPv6 ---------------------------------------
echo "=== 3. wrr, persistence, second port, UDP, IPv6 (long-running agents, 1 s resync)"
foreign_setup() {
	# Someone else's service and addresses: they must survive everything below.
	ipvs -A -t 10.10.24.99:443 -s wlc
	ipvs -a -t 10.10.24.99:443 -r 10.10.24.21:443 -m -w 2
	in_ns director ip addr add 10.10.24.77/32 dev eth0
	in_ns rs1 ip addr add 10.10.24.66/32 dev lo
}
foreign_setup
start_all

reference_object wrr 3 >$OBJ/web.yaml
wait_until "scheduler and weight changes reach the kernel" 10 has_text "-a -t $VIP:80 -r 10.10.24.21:80 -g -w 3" ipvs -Sn
has_text "-A -t $VIP:80 -s wrr" ipvs -Sn && pass "service edited to wrr in place" || fail "service not wrr"
got=$(requests 10)
echo "wrr 3:1:1, 10 requests -> $got"
expect_eq "wrr: rs1 got 6 of 10" 6 "$(count_of rs1 "$got")"
expect_eq "wrr: rs2 got 2 of 10" 2 "$(count_of rs2 "$got")"

reference_object rr 1 "  persistence: {timeoutSeconds: 60}" >$OBJ/web.yaml
wait_until "persistence reaches the kernel (-p 60)" 10 has_text "-A -t $VIP:80 -s rr -p 60" ipvs -Sn
got=$(requests 6)
echo "persistent, 6 requests -> $got"
expect_eq "persistence: one real server for the client" 1 "$(distinct "$got")"

cat >$OBJ/multi.yaml <<YAML
apiVersion: lvs-operator.io/v1alpha1
kind: LvsService
metadata: {name: multi}
spec:
  vip: $VIP
  ports: [{port: 8080}, {port: 5353, protocol: UDP}]
  scheduler: rr
  backends: [{address: 10.10.24.21}, {address: 10.10.24.22}, {address: 10.10.24.23}]
YAML
cat >$OBJ/web6.yaml <<YAML
apiVersion: lvs-operator.io/v1alpha1
kind: LvsService
metadata: {name: web6}
spec:
  vip: "$VIP6"
  ports: [{port: 80}]
  scheduler: rr
  persistence: {timeoutSeconds: 30, netmask: "64"}
  backends: [{address: "fd00:24::21"}, {address: "fd00:24::22"}, {address: "fd00:24::23"}]
YAML
for rs in $LVS_REAL_SERVERS; do
	in_ns "$rs" httpd -p 8080 -h "/srv/$rs"
	# Bound to the VIP so replies leave from it (an unbound UDP socket would answer from eth0's address).
	in_ns "$rs" socat -T 2 UDP-RECVFROM:5353,bind=$VIP,fork SYSTEM:"echo $rs" &
done
wait_until "second port and UDP service programmed" 10 has_text "-A -u $VIP:5353 -s rr" ipvs -Sn
wait_until "IPv6 VIP on the director's eth0" 10 has_text "$VIP6/128" in_ns director /usr/sbin/ip -6 addr show dev eth0
wait_until "IPv6 VIP on rs3's lo" 10 has_text "$VIP6/128" in_ns rs3 /usr/sbin/ip -6 addr show dev lo
sleep 1
ipvs -Sn
got=$(requests 3 http://$VIP:8080/)
echo "port 8080, 3 requests -> $got"
expect_eq "second port on the same VIP: three real servers" 3 "$(distinct "$got")"
got=
for i in 1 2 3; do got="$got $(echo ping | in_ns client socat -T 2 - UDP:$VIP:5353)"; done
echo "UDP 5353, 3 datagrams -> $got"
expect_eq "UDP: three real servers answered" 3 "$(distinct "${got# }")"
# The IPv6 persistence netmask is a prefix length the kernel keeps in host order: what it reports
# back must equal what the agent sent, or every resync would rewrite the service.
check "IPv6 persistence netmask /64 in the kernel" has_text "-A -t [$VIP6]:80 -s rr -p 30 -M 64" ipvs -Sn
applied_web6() { grep -c "applied: .*\[$VIP6\]:80 -s" /run/logs/director.log; }
n=$(applied_web6)
sleep 3
expect_eq "the IPv6 persistent service reads back equal: no rewrite over 3 resyncs" "$n" "$(applied_web6)"
# The default TCP checks of an IPv6 VIP's real servers go to their own addresses, from the
# director's global address (never its link-local one).
expect_eq "the IPv6 real servers pass their checks: weights 1 1 1" "1 1 1" \
	"$(for a in 21 22 23; do weight_of "[$VIP6]" "[fd00:24::$a]"; done | tr '\n' ' ' | sed 's/ $//')"
grep "fd00:24::2.*unhealthy" /run/logs/director.log | tail -n 1
got=$(requests 3 "http://[$VIP6]/")
echo "IPv6 persistent, 3 requests -> $got"
expect_eq "IPv6 VIP with a /64 persistence netmask: one real server for the client" 1 "$(distinct "$got")"

# --- 4. drift, ownership, restarts, draining, removal -----------------------------------------
echo "=== 4. drift repair"
reference_object >$OBJ/web.yaml
wait_until "persistence removed" 10 lacks_text "-p 60" ipvs -Sn
snapshot >/run/steady.snapshot
ipvs -D -t $VIP:80
in_ns director ip addr del $VIP/32 dev eth0
in_ns rs1 sysctl -q -w net.ipv4.conf.all.arp_ignore=0
back_to_steady() { snapshot >/run/now.snapshot && cmp -s /run/now.snapshot /run/steady.snapshot; }
wait_until "deleted service, VIP and sysctl repaired at the next resync" 10 back_to_steady || {
	diff -u /run/steady.snapshot /run/now.snapshot
	tail -n 20 /run/logs/director.log /run/logs/rs1.log
}

echo "=== 4. restart under load"
# /usr/sbin/ip: busybox's timeout would run its own `ip` applet, which has no netns.
(
	fails=0
	for i in $(seq 40); do
		timeout 5 /usr/sbin/ip netns exec client wget -qO- http://$VIP/ >/dev/null 2>&1 || fails=$((fails + 1))
		sleep 0.1
	done
	echo $fails >/run/loop.fails
) &
loop=$!
sleep 1
stop_pidfile director
check "SIGTERM: the service outlives the agent" has_text "-A -t $VIP:80 -s rr" ipvs -Sn
check "SIGTERM: the VIP outlives the agent" has_text "$VIP/32" in_ns director /usr/sbin/ip addr show dev eth0
check "SIGTERM: the agent is gone (its /metrics does not answer)" [ -z "$(resyncs director)" ]
sleep 1
: >/run/logs/director.log
start_agent director director
wait $loop
expect_eq "no failed request while the director agent stopped and restarted" 0 "$(cat /run/loop.fails)"
# Proof that the restarted agent is alive and has looked at the kernel, before trusting silence.
wait_until "the restarted agent has run 2 resyncs (its /metrics)" 10 resynced_twice director
expect_eq "the restarted agent adopted its state: no change written" "" "$(grep applied: /run/logs/director.log)"

echo "=== 4. a removed backend drains"
(sleep 45 | in_ns client nc $VIP 80 >/dev/null) &
idle=$!
wait_until "an idle connection is established through the VIP" 10 has_text ESTABLISHED ipvs -Lnc
# ipvsadm -Lnc: pro expire state source virtual destination
victim=$(ipvs -Lnc | awk '$3 == "ESTABLISHED" {split($6, a, ":"); print a[1]; exit}')
echo "idle connection goes to $victim"
others=
for n in 21 22 23; do
	[ "10.10.24.$n" = "$victim" ] || others="$others${others:+, }{address: 10.10.24.$n}"
done
sed "s/^  backends: .*/  backends: [$others]/" /lvs/reference.yaml >/run/web.yaml
mv /run/web.yaml $OBJ/web.yaml
grep backends $OBJ/web.yaml
draining() { ipvs -Ln | grep -q "$victim:80 *Route *0 *1 "; }
wait_until "$victim drains: weight 0, its connection kept" 10 draining
ipvs -Ln
got=$(requests 4)
echo "while draining, 4 requests -> $got"
expect_eq "no new connection goes to the draining server" 0 "$(count_of "rs${victim##*.2}" "$got")"
expect_eq "the other real servers answer all 4" 4 "$(echo "$got" | tr ' ' '\n' | grep -c '^rs[123]$')"
# The client closes its connection (busybox has killall, not pkill).
killall nc 2>/dev/null
kill $idle 2>/dev/null
wait_until "$victim deleted once its connection ended" 20 lacks_text "-r $victim:80 -g" ipvs -Sn || {
	ipvs -Ln
	ipvs -Lnc
	ps | grep -v ']$'
	tail -n 5 /run/logs/director.log
}

echo "=== 4. removed objects are cleaned up, nothing else"
rm $OBJ/web6.yaml $OBJ/multi.yaml
wait_until "IPv6 VIP removed from the director" 10 lacks_text "$VIP6" in_ns director /usr/sbin/ip -6 addr show dev eth0
wait_until "UDP service removed" 10 lacks_text "5353" ipvs -Sn
rm $OBJ/web.yaml
wait_until "the last VIP left rs1's lo" 10 lacks_text "$VIP/32" in_ns rs1 /usr/sbin/ip addr show dev lo
only_foreign_left() {
	[ "$(ipvs -Sn)" = "$(printf -- '-A -t 10.10.24.99:443 -s wlc\n-a -t 10.10.24.99:443 -r 10.10.24.21:443 -m -w 2')" ]
}
wait_until "director: only the foreign service is left" 10 only_foreign_left
ipvs -Sn
check "foreign address on the director survived" has_text 10.10.24.77/32 in_ns director /usr/sbin/ip addr show dev eth0
check "foreign address on rs1's lo survived" has_text 10.10.24.66/32 in_ns rs1 /usr/sbin/ip addr show dev lo
expect_eq "rs1 ARP sysctls restored to their values before the agent" "0 0 0 0" \
	"$(for k in lo.arp_ignore all.arp_ignore lo.arp_announce all.arp_announce; do in_ns rs1 sysctl -n net.ipv4.conf.$k; done | tr '\n' ' ' | sed 's/ $//')"
stop_all

# --- 5. bad input ------------------------------------------------------------------------------
echo "=== 5. bad input: every invalid manifest is rejected by name and field, the kernel unchanged"
cp /lvs/reference.yaml $OBJ/web.yaml
agent_once director director $OBJ
agent_once rs1 backend $OBJ
before=$(snapshot)
mkdir -p /run/bad
for f in /lvs/invalid/*.yaml; do
	name=$(sed -n 's/^metadata: {name: \(.*\)}$/\1/p' "$f")
	field=$(sed -n 's/^# expect: //p' "$f")
	rm -f /run/bad/*
	cp /lvs/reference.yaml /run/bad/web.yaml
	cp "$f" /run/bad/
	agent_once director director /run/bad
	rc=$?
	line=$(grep -E "ERROR .*[: ]$name: " /run/logs/once.err | head -1 | sed 's/.*ERROR [^ ]* //')
	if [ $rc -ne 0 ] && echo "$line" | grep -qF -- "$name: $field"; then
		pass "$(basename "$f"): $line"
	else
		fail "$(basename "$f"): exit $rc, expected '$name: $field', got: $(cat /run/logs/once.err)"
	fi
	agent_once rs1 backend /run/bad || true
done
after=$(snapshot)
expect_eq "the kernel is unchanged by every invalid manifest, and web is still served" "$before" "$after"
agent_once director director /run/bad
expect_eq "each problem is said once" 1 "$(grep -c 'ERROR' /run/logs/once.err)"

. /lvs/health-guest.sh
. /lvs/failover-guest.sh

. /lvs/crash-guest.sh

summary
