#!/bin/sh
# shellcheck disable=SC2086,SC2154 # sourced by e2e-guest.sh: its helpers and variables ($K, $IP)
# Sourced by e2e-guest.sh (busybox sh in the VM): real servers from the cluster, as people in a
# cluster use the operator. Nodes picked by a label (rs4, 10.10.24.24, joins the LAN for it),
# a Service's EndpointSlices (written here: no endpoint-slice controller runs), and SCTP through
# the VIP. A real server that leaves drains: the director gives it weight 0 while a connection
# lasts, its node keeps the VIP on lo until that connection ends, then both let go.
#
# Needs from e2e-guest.sh: $K, $IP, start_agent, stop_pidfile, condition, jsonpath, ipvs,
# is_ready, distinct, show_logs; from truth-guest.sh: reason, columns, describe.

NODES_VIP=10.10.24.89
SVC_VIP=10.10.24.90
SCTP_VIP=10.10.24.91

# add_host NAME ID: one more host on the LAN (10.10.24.ID), its httpd answering NAME.
add_host() {
	$IP netns add "$1"
	$IP link add "v-$1" type veth peer name eth0 netns "$1"
	$IP link set "v-$1" master br0 up
	in_ns "$1" $IP link set lo up
	in_ns "$1" $IP addr add "10.10.24.$2/24" dev eth0
	in_ns "$1" $IP link set eth0 up
	in_ns "$1" $IP route add default via 10.10.24.1
	mkdir -p "/srv/$1"
	echo "$1" >"/srv/$1/index.html"
	in_ns "$1" httpd -p 80 -h "/srv/$1"
}
# who_server NS: port 7000 says the host's name, then echoes what it is sent.
who_server() {
	in_ns "$1" socat TCP-LISTEN:7000,fork,reuseaddr SYSTEM:"echo $1; exec cat" >/dev/null 2>&1 &
}
# hold VIP NS: a connection through VIP:7000 that landed on NS, left open; `release` sends one
# more line through it and closes it. False when no attempt reached NS.
hold() {
	_try=0
	while [ $_try -lt 8 ]; do
		rm -f /run/hold.out /run/hold.go
		in_ns client sh -c "(echo hello; while [ ! -e /run/hold.go ]; do sleep 0.2; done; echo again; sleep 1) |
			socat -t 3 - TCP:$1:7000 >/run/hold.out 2>&1" &
		_hold=$!
		sleep 1
		[ "$(head -n 1 /run/hold.out 2>/dev/null)" = "$2" ] && return 0
		touch /run/hold.go
		wait $_hold
		_try=$((_try + 1))
	done
	return 1
}
release() {
	touch /run/hold.go
	wait $_hold
}
# http_requests VIP N: the answers of N requests through VIP, space-separated.
http_requests() {
	_out=
	for _i in $(seq "$2"); do _out="$_out $(http_get client "http://$1/" 2>&1)"; done
	echo ${_out# }
}
summary_is() { [ "$(jsonpath "$1" '{.status.backendSummary}')" = "$2" ]; }
# evented NAME REASON TEXT: an event with that reason on the object whose message has TEXT.
evented() {
	$K get events --field-selector "involvedObject.name=$1,reason=$2" \
		-o jsonpath='{range .items[*]}{.message}{.note}{"\n"}{end}' 2>/dev/null | grep -qF -- "$3"
}
event_text() {
	$K get events --field-selector "involvedObject.name=$1,reason=$2" \
		-o jsonpath='{range .items[*]}{.message}{.note}{"\n"}{end}' 2>/dev/null | tail -n 1
}
on_lo() { has_text "$2/32" in_ns "$1" $IP addr show dev lo; }
not_on_lo() { lacks_text "$2/32" in_ns "$1" $IP addr show dev lo; }

for rs in rs1 rs2 rs3; do who_server $rs; done

echo "=== backends 1. nodes by label: backendNodeSelector role=web"
$K label node rs1 rs2 rs3 role=web >/dev/null
$K apply -f - >/dev/null <<YAML
apiVersion: lvs-operator.io/v1alpha1
kind: LvsService
metadata: {name: nodes}
spec:
  vip: $NODES_VIP
  ports: [{port: 80}, {port: 7000}]
  backendNodeSelector: {matchLabels: {role: web}}
YAML
wait_until "nodes is Ready" 60 is_ready nodes || { $K get lvs nodes -o yaml; show_logs; }
$K get lvs nodes
expect_eq "kubectl get lvs nodes: BACKENDS 3/3, READY True" "3/3 True" \
	"$(columns nodes | awk '{print $4, $5}')"
got=$(http_requests $NODES_VIP 6)
echo "6 requests through $NODES_VIP -> $got"
expect_eq "rs1, rs2 and rs3, selected by their label, answer through the VIP" 3 "$(distinct "$got")"

echo "--- rs4 (10.10.24.24) joins the LAN, its agent starts, then its Node gets the label"
add_host rs4 24
who_server rs4
start_agent rs4
$K label node rs4 role=web >/dev/null
rs4_programmed() {
	_s=$(ipvs -Sn)
	echo "$_s" | grep -qF -- "-t $NODES_VIP:80 -r 10.10.24.24:80" &&
		echo "$_s" | grep -qF -- "-t $NODES_VIP:7000 -r 10.10.24.24:7000"
}
wait_until "the director programs rs4 for both ports" 30 rs4_programmed
wait_until "rs4's agent put $NODES_VIP on its lo" 20 on_lo rs4 $NODES_VIP
wait_until "BACKENDS follows: 4/4" 30 summary_is nodes 4/4
got=$(http_requests $NODES_VIP 8)
echo "8 requests through $NODES_VIP -> $got"
expect_eq "rs1..rs4 answer through the VIP" 4 "$(distinct "$got")"
wait_until "an event says rs4 joined" 20 evented nodes BackendJoined "10.10.24.24 (node rs4) joined"
echo "event: $(event_text nodes BackendJoined)"

echo "--- rs2 loses the label while a client is connected to it"
check "a connection through $NODES_VIP:7000 reaches rs2" hold $NODES_VIP rs2
$K label node rs2 role- >/dev/null
wait_until "BACKENDS follows: 3/3" 30 summary_is nodes 3/3
wait_until "the director drains rs2: weight 0 on the port with the open connection" 20 \
	has_text "-a -t $NODES_VIP:7000 -r 10.10.24.22:7000 -g -w 0" ipvs -Sn
wait_until "and removes it at once from the port without connections" 20 \
	lacks_text "-t $NODES_VIP:80 -r 10.10.24.22:80" ipvs -Sn
ipvs -Ln -t $NODES_VIP:7000
check "rs2 keeps $NODES_VIP on lo while its client is connected" on_lo rs2 $NODES_VIP
release
expect_eq "the open connection went on to its end through the drain" "rs2 hello again" \
	"$(tr '\n' ' ' </run/hold.out | sed 's/ $//')"
wait_until "then the director removes rs2" 30 lacks_text "-r 10.10.24.22:7000" ipvs -Sn
wait_until "and rs2's agent removes $NODES_VIP from its lo" 30 not_on_lo rs2 $NODES_VIP
wait_until "an event says rs2 left" 20 evented nodes BackendLeft "10.10.24.22 (node rs2) left"
echo "event: $(event_text nodes BackendLeft)"
got=$(http_requests $NODES_VIP 6)
echo "6 requests through $NODES_VIP -> $got"
check "rs2 gets no new connection" lacks_text rs2 echo "$got"

echo "--- rs4 loses the label: its VIP and its ARP sysctls go (it serves nothing else)"
$K label node rs4 role- >/dev/null
wait_until "BACKENDS follows: 2/2" 30 summary_is nodes 2/2
wait_until "rs4's agent removes $NODES_VIP from its lo" 30 not_on_lo rs4 $NODES_VIP
arp_of() { echo "$(in_ns "$1" sysctl -n net.ipv4.conf.all.arp_ignore) $(in_ns "$1" sysctl -n net.ipv4.conf.all.arp_announce)"; }
arp_back() { [ "$(arp_of rs4)" = "0 0" ]; }
wait_until "rs4's ARP sysctls are back to 0 0" 20 arp_back
expect_eq "rs4: arp_ignore arp_announce" "0 0" "$(arp_of rs4)"

echo "=== backends 2. a Service's EndpointSlices: backendService web"
# The EndpointSlice web-a: rs1 ready, rs3 with the conditions given.
slice_web_a() {
	$K apply -f - >/dev/null <<YAML
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-a, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 80}]
endpoints:
  - {addresses: [10.10.24.21], conditions: {ready: true}, nodeName: rs1}
  - {addresses: [10.10.24.23], conditions: {$1}, nodeName: rs3}
YAML
}
$K apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: None
  ports: [{name: http, port: 80}]
YAML
slice_web_a "ready: true"
$K apply -f - >/dev/null <<YAML
apiVersion: lvs-operator.io/v1alpha1
kind: LvsService
metadata: {name: svc}
spec:
  vip: $SVC_VIP
  ports: [{port: 80}, {port: 7000}]
  backendService: {name: web}
YAML
wait_until "svc is Ready" 60 is_ready svc || { $K get lvs svc -o yaml; show_logs; }
$K get lvs svc
expect_eq "BACKENDS 2/2: the ready endpoints" 2/2 "$(jsonpath svc '{.status.backendSummary}')"
got=$(http_requests $SVC_VIP 4)
echo "4 requests through $SVC_VIP -> $got"
expect_eq "rs1 and rs3 answer through the VIP" "rs1 rs3" "$(echo "$got" | tr ' ' '\n' | sort -u | tr '\n' ' ' | sed 's/ $//')"

echo "--- a second EndpointSlice: rs4 ready, rs2 not ready"
$K apply -f - >/dev/null <<YAML
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-b, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 80}]
endpoints:
  - {addresses: [10.10.24.24], conditions: {ready: true}, nodeName: rs4}
  - {addresses: [10.10.24.22], conditions: {ready: false}, nodeName: rs2}
YAML
wait_until "BACKENDS follows: 3/3" 30 summary_is svc 3/3
wait_until "the director programs rs4 from the second slice" 20 has_text "-t $SVC_VIP:80 -r 10.10.24.24:80" ipvs -Sn
check "the not-ready rs2 gets no share" lacks_text "-t $SVC_VIP:80 -r 10.10.24.22:80" ipvs -Sn
got=$(http_requests $SVC_VIP 6)
echo "6 requests through $SVC_VIP -> $got"
expect_eq "rs1, rs3 and rs4 answer; rs2 does not" "rs1 rs3 rs4" "$(echo "$got" | tr ' ' '\n' | sort -u | tr '\n' ' ' | sed 's/ $//')"

echo "--- rs3's endpoint turns terminating while a client is connected to it"
check "a connection through $SVC_VIP:7000 reaches rs3" hold $SVC_VIP rs3
slice_web_a "ready: false, serving: true, terminating: true"
draining_rs3() { [ "$(jsonpath svc '{.status.backends[?(@.address=="10.10.24.23")].draining}')" = true ]; }
wait_until "status.backends says rs3 drains" 30 draining_rs3
wait_until "the director gives rs3 weight 0" 20 has_text "-a -t $SVC_VIP:7000 -r 10.10.24.23:7000 -g -w 0" ipvs -Sn
echo "kubectl get lvs svc: $(columns svc)"
wait_until "an event says rs3 drains" 20 evented svc BackendDraining "10.10.24.23 (node rs3) drains"
echo "event: $(event_text svc BackendDraining)"
check "rs3 keeps $SVC_VIP on lo while it drains" on_lo rs3 $SVC_VIP
got=$(http_requests $SVC_VIP 6)
echo "6 requests through $SVC_VIP -> $got"
check "the terminating rs3 gets no new connection" lacks_text rs3 echo "$got"
release
expect_eq "the connection to the terminating rs3 went on to its end" "rs3 hello again" \
	"$(tr '\n' ' ' </run/hold.out | sed 's/ $//')"

echo "--- the Service is deleted"
$K delete service web >/dev/null
not_found() { [ "$(condition svc Ready)" = False ] && $K get lvs svc -o jsonpath='{.status.conditions[*].reason}' | grep -qw ServiceNotFound; }
wait_until "svc reads Ready=False with reason ServiceNotFound" 30 not_found
msg=$($K get lvs svc -o jsonpath='{.status.conditions[?(@.reason=="ServiceNotFound")].message}' | head -c 300)
echo "message: $msg"
check "the message names the Service" sh -c "echo '$msg' | grep -qF 'Service default/web'"

echo "=== backends 3. SCTP through the VIP"
in_ns rs1 socat SCTP-LISTEN:9000,fork,reuseaddr SYSTEM:"echo rs1 over SCTP" >/dev/null 2>&1 &
$K apply -f - >/dev/null <<YAML
apiVersion: lvs-operator.io/v1alpha1
kind: LvsService
metadata: {name: sctp}
spec:
  vip: $SCTP_VIP
  ports: [{port: 9000, protocol: SCTP}]
  backends: [{address: 10.10.24.21}]
  healthCheck: {type: TCP, port: 80}
YAML
wait_until "sctp is Ready" 60 is_ready sctp || { $K get lvs sctp -o yaml; show_logs; }
$K get lvs sctp
check "the director has the SCTP service" has_text "-A --sctp-service $SCTP_VIP:9000" ipvs -Sn
ipvs -Ln --sctp-service $SCTP_VIP:9000
# SCTP has no half-close: a client that shuts its side ends the association before the answer,
# so it keeps sending for a second.
got=$(in_ns client sh -c "(echo hi; sleep 1) | timeout 10 socat -t 2 - SCTP:$SCTP_VIP:9000" 2>/dev/null)
echo "an SCTP association to $SCTP_VIP:9000 -> $got"
expect_eq "rs1 answers over SCTP through the VIP" "rs1 over SCTP" "$got"

echo "--- clean up: the three objects, the labels, rs4's agent"
$K delete lvs nodes svc sctp --wait=false >/dev/null
$K delete endpointslice web-a web-b >/dev/null
gone_all() { [ -z "$($K get lvs nodes svc sctp -o name --ignore-not-found 2>/dev/null)" ]; }
wait_until "nodes, svc and sctp are deleted once every agent cleaned up" 60 gone_all || show_logs
for v in $NODES_VIP $SVC_VIP $SCTP_VIP; do
	check "the director has no service left on $v" lacks_text "$v:" ipvs -Sn
done
$K label node rs1 rs3 role- >/dev/null
stop_pidfile rs4
