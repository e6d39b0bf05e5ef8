#!/bin/sh
# shellcheck disable=SC2086,SC2154 # sourced by e2e-guest.sh: its helpers and variables ($K, $VIP)
# Sourced by e2e-guest.sh (busybox sh in the VM): the failures a user meets, one by one, and what
# `kubectl get lvs`, `kubectl describe lvs` and the events say about each. The controller runs
# with --node-report-timeout $REPORT_TIMEOUT (s) and the agents renew their heartbeat every
# $HEARTBEAT (s), so that silence is noticed within the test.
#
# Needs from e2e-guest.sh: $K (kubectl as admin), $VIP, $IP, start_agent, stop_pidfile,
# condition, jsonpath, ipvs, show_logs; and the host's control channel at $CONTROL.

# reason NAME TYPE / message NAME TYPE: of a condition.
reason() { jsonpath "$1" "{.status.conditions[?(@.type==\"$2\")].reason}"; }
message() { jsonpath "$1" "{.status.conditions[?(@.type==\"$2\")].message}"; }
is_reason() { [ "$(reason "$1" "$2")" = "$3" ]; }
# columns NAME: VIP PORTS DIRECTOR BACKENDS READY, the columns of `kubectl get lvs` (by their
# JSON paths, so that an empty one shows as <none>).
columns() {
	$K get lvs "$1" --no-headers -o \
		'custom-columns=VIP:.spec.vip,PORTS:.status.ports,DIRECTOR:.status.director,BACKENDS:.status.backendSummary,READY:.status.conditions[?(@.type=="Ready")].status' |
		awk '{print $1, $2, $3, $4, $5}'
}
# warned NAME REASON: a Warning event with that reason on the object.
warned() {
	$K get events --field-selector "involvedObject.name=$1,type=Warning" \
		-o jsonpath='{range .items[*]}{.reason}{"\n"}{end}' 2>/dev/null | grep -qx "$2"
}
# has_message NAME TYPE TEXT: the condition's message contains TEXT.
has_message() { message "$1" "$2" | grep -qF -- "$3"; }
# describe NAME: what `kubectl describe lvs NAME` shows of its status (each real server's health
# and reason, the conditions, the directors) and its events.
describe() {
	echo "--- kubectl describe lvs $1 (status and events)"
	$K describe lvs "$1" | sed -n '/^Status:/,$p' | grep -vE '^\s*Observed Generation:' | head -n 120
}

echo "=== truth 1a. the director's agent stops: nothing may read healthy"
stop_pidfile director
wait_until "Degraded NodeNotReporting names the director" $((REPORT_TIMEOUT + 15)) is_reason web Degraded NodeNotReporting
check "the message says the director has not reported" has_message web Degraded "node director has not reported within ${REPORT_TIMEOUT}s"
expect_eq "status.laggingNodes and laggingNodeCount: the director, 1" "director 1" \
	"$(jsonpath web '{.status.laggingNodes[*]} {.status.laggingNodeCount}')"
expect_eq "Ready False NoActiveDirector" "False NoActiveDirector" "$(condition web Ready) $(reason web Ready)"
expect_eq "kubectl get lvs: no DIRECTOR, BACKENDS 0/3, READY False" "10.10.24.88 80/TCP <none> 0/3 False" "$(columns web)"
wait_until "a Warning event NodeNotReporting" 10 warned web NodeNotReporting
describe web
start_agent director
wait_until "the director's agent is back: Ready again" 30 is_ready web
expect_eq "kubectl get lvs: DIRECTOR director, BACKENDS 3/3" "10.10.24.88 80/TCP director 3/3 True" "$(columns web)"

echo "=== truth 1b. rs2's agent stops and the VIP leaves its lo: rs2 gets no new connections"
stop_pidfile rs2
in_ns rs2 $IP addr del $VIP/32 dev lo
route0() { ipvs -Ln | grep -qE "10\.10\.24\.22:80 +Route +0 "; }
wait_until "the director gives rs2 weight 0" $((REPORT_TIMEOUT + 20)) route0 || { ipvs -Ln; show_logs; }
# The director's checks through the VIP take rs2 out within seconds; the node's silence is named
# once the report timeout has passed.
wait_until "Degraded NodeNotReporting" $((REPORT_TIMEOUT + 20)) is_reason web Degraded NodeNotReporting
check "the message names rs2 and its real server" has_message web Degraded "real server 10.10.24.22 gets no new connections: node rs2 has not reported"
expect_eq "kubectl get lvs: BACKENDS 2/3, still READY" "10.10.24.88 80/TCP director 2/3 True" "$(columns web)"
expect_eq "status.backends: rs2 Unhealthy, weight 0" "Unhealthy 0" \
	"$(jsonpath web '{.status.backends[?(@.address=="10.10.24.22")].health} {.status.backends[?(@.address=="10.10.24.22")].weight}')"
fails=0
for i in $(seq 30); do
	timeout 5 $IP netns exec client wget -qO- http://$VIP/ >/dev/null 2>&1 || fails=$((fails + 1))
done
expect_eq "no client request fails once rs2 is marked (30 requests)" 0 $fails
describe web
start_agent rs2
rs2_back() { [ "$(jsonpath web '{.status.backends[?(@.address=="10.10.24.22")].health}')" = Healthy ]; }
wait_until "rs2's agent puts the VIP back and rs2 is Healthy again" 30 rs2_back
wait_until "the director gives rs2 its weight back" 20 has_text "-r 10.10.24.22:80 -g -w 1" ipvs -Sn

echo "=== truth 2. the API server goes away for 30 s; a change made right after it returns shows in status within 5 s"
gen_before=$(jsonpath web '{.metadata.generation}')
director_lines=$(wc -l </run/logs/director.log)
wget -qO- "$CONTROL/apiserver/stop" >/dev/null || fail "stopping the API server through the host"
sleep 30
wget -qO- "$CONTROL/apiserver/start" >/dev/null || fail "starting the API server through the host"
t0=$(cut -d' ' -f1 /proc/uptime)
until $K patch lvs web --type=merge -p '{"spec":{"scheduler":"wlc"}}' >/dev/null 2>&1; do sleep 0.2; done
caught_up() {
	[ "$(jsonpath web '{.status.observedGeneration}')" = "$((gen_before + 1))" ] &&
		[ "$(condition web Ready)" = True ]
}
wait_until "status follows the change made after the API returned" 30 caught_up
took=$(awk -v t0="$t0" '{printf "%.1f", $1 - t0}' /proc/uptime)
echo "the controller acted on a change made after the API returned in ${took}s (target 5 s)"
check "within 5 s of the API server's return" awk -v t="$took" 'BEGIN {exit !(t <= 5)}'
check "the director applied it" has_text "-A -t $VIP:80 -s wlc" ipvs -Sn
check "the controller logged losing the API server (warn)" grep -q "WARN.*lost the API server" /run/logs/controller.log
check "and getting it back, with how long it was away (info)" grep -q "INFO.*answers again, after" /run/logs/controller.log
check "an agent did the same" grep -q "answers again, after" /run/logs/director.log
grep -h "lost the API server\|answers again\|expired" /run/logs/controller.log | tail -n 4
# The agents could not renew their heartbeats through the outage either: its end is no silence
# of theirs, and no real server may lose its weight for it.
sleep $((HEARTBEAT + 2))
zeroed=$(tail -n +$((director_lines + 1)) /run/logs/director.log | grep -c 'applied: ipvsadm -e .* -w 0$')
expect_eq "no real server got weight 0 when the API server came back" 0 "$zeroed"
expect_eq "kubectl get lvs: BACKENDS 3/3, READY" "10.10.24.88 80/TCP director 3/3 True" "$(columns web)"
describe web
$K patch lvs web --type=merge -p '{"spec":{"scheduler":"rr"}}' >/dev/null

echo "=== truth 3. summaries that match what serves"
# Someone else's IPVS service on the VIP:port an object wants.
ipvs -A -t 10.10.24.89:80 -s wlc
$K apply -f - >/dev/null <<YAML
apiVersion: lvs-operator.io/v1alpha1
kind: LvsService
metadata: {name: blocked}
spec:
  vip: 10.10.24.89
  ports: [{port: 80}]
  scheduler: rr
  backends: [{address: 10.10.24.21}]
YAML
wait_until "a foreign IPVS service in the way: Degraded NodeError" 30 is_reason blocked Degraded NodeError
check "the message names the foreign service" has_message blocked Degraded "IPVS service TCP 10.10.24.89:80 already exists and was not made by lvs-operator"
expect_eq "Ready False NotProgrammed" "False NotProgrammed" "$(condition blocked Ready) $(reason blocked Ready)"
expect_eq "BACKENDS 0/1: nothing serves" "0/1" "$(jsonpath blocked '{.status.backendSummary}')"
sleep 4
expect_eq "the director's agent logged it once, not at every resync" 1 \
	"$(grep -c 'IPVS service TCP 10.10.24.89:80 already exists' /run/logs/director.log)"
describe blocked
$K delete lvs blocked --wait=false >/dev/null
ipvs -D -t 10.10.24.89:80

# A VIP in none of the director's subnets, on two ports.
$K apply -f - >/dev/null <<YAML
apiVersion: lvs-operator.io/v1alpha1
kind: LvsService
metadata: {name: nosubnet}
spec:
  vip: 10.99.0.1
  ports: [{port: 80}, {port: 8080}]
  scheduler: rr
  backends: [{address: 10.10.24.21}]
YAML
wait_until "a VIP in no subnet of the director: Ready False NoActiveDirector" 30 is_reason nosubnet Ready NoActiveDirector
# The director's error follows within a report (a node's report waits for a burst to pause).
wait_until "the message says which field to set" 10 has_message nosubnet Ready "no interface has an address in the subnet of 10.99.0.1; set spec.directors.interface"
sleep 3
expect_eq "kubectl get lvs: every port, no DIRECTOR, BACKENDS 0/1" "10.99.0.1 80/TCP,8080/TCP <none> 0/1 False" "$(columns nosubnet)"
check "no event claims the director holds the VIP" sh -c "! kubectl --kubeconfig /lvs/admin.kubeconfig get events --field-selector involvedObject.name=nosubnet -o jsonpath='{.items[*].note}' | grep -q 'holds the VIP now'"
describe nosubnet
$K delete lvs nosubnet --wait=false >/dev/null

echo "=== truth 4. reasons that say what to do"
$K apply -f - >/dev/null <<YAML
apiVersion: lvs-operator.io/v1alpha1
kind: LvsService
metadata: {name: fromsvc}
spec:
  vip: 10.10.24.90
  ports: [{port: 80}]
  backendService: {name: nothere}
YAML
wait_until "a missing Service: Ready False ServiceNotFound" 30 is_reason fromsvc Ready ServiceNotFound
check "the message names the Service" has_message fromsvc Ready "Service default/nothere, which does not exist"
expect_eq "Degraded True ServiceNotFound" "True ServiceNotFound" "$(condition fromsvc Degraded) $(reason fromsvc Degraded)"
wait_until "a Warning event ServiceNotFound" 10 warned fromsvc ServiceNotFound
describe fromsvc
$K delete lvs fromsvc --wait=false >/dev/null

$K apply -f - >/dev/null <<YAML
apiVersion: lvs-operator.io/v1alpha1
kind: LvsService
metadata: {name: nodirector}
spec:
  vip: 10.10.24.91
  ports: [{port: 80}]
  backends: [{address: 10.10.24.21}]
  directors: {nodeSelector: {matchLabels: {role: lb}}}
YAML
wait_until "no node may direct: Ready False NoDirectorNodes" 30 is_reason nodirector Ready NoDirectorNodes
check "the message names the selector to satisfy" has_message nodirector Ready "no node matches spec.directors.nodeSelector (role=lb)"
wait_until "a Warning event NoDirectorNodes" 10 warned nodirector NoDirectorNodes
describe nodirector
$K delete lvs nodirector --wait=false >/dev/null

echo "=== truth 5. the losing side of a VIP conflict never touches a node"
$K patch lvs web --type=json -p '[{"op":"remove","path":"/spec/backends/2"}]' >/dev/null
wait_until "rs3 is no real server of web any more" 20 lacks_text "$VIP/32" in_ns rs3 $IP addr show dev lo
sysctls_before=$(in_ns rs3 sysctl -n net.ipv4.conf.all.arp_ignore net.ipv4.conf.all.arp_announce | tr '\n' ' ')
$K apply -f - >/dev/null <<YAML
apiVersion: lvs-operator.io/v1alpha1
kind: LvsService
metadata: {name: loser}
spec:
  vip: $VIP
  ports: [{port: 80}]
  backends: [{address: 10.10.24.23}]
YAML
touched=0
for i in $(seq 25); do
	has_text "$VIP/32" in_ns rs3 $IP addr show dev lo && touched=$((touched + 1))
	sleep 0.2
done
expect_eq "rs3 never held the loser's VIP on lo (25 looks over 5 s)" 0 $touched
expect_eq "rs3's ARP sysctls never changed" "$sysctls_before" "$(in_ns rs3 sysctl -n net.ipv4.conf.all.arp_ignore net.ipv4.conf.all.arp_announce | tr '\n' ' ')"
expect_eq "the loser is rejected: Accepted False VIPConflict" "False VIPConflict" "$(condition loser Accepted) $(reason loser Accepted)"
describe loser
$K delete lvs loser >/dev/null
$K patch lvs web --type=json -p '[{"op":"add","path":"/spec/backends/-","value":{"address":"10.10.24.23"}}]' >/dev/null
wait_until "web is Ready with 3/3 again" 30 sh -c "[ \"\$(kubectl --kubeconfig /lvs/admin.kubeconfig get lvs web -o jsonpath='{.status.backendSummary}')\" = 3/3 ]"

echo "=== truth 6. address pools: a VIP no pool admits never touches a node"
# The chart made one pool, lan (10.10.24.80/28 and 10.99.0.1, namespace default). outside claims an
# address of no pool; team-b/tenant one of lan's, from a namespace lan does not admit.
$K create namespace team-b >/dev/null
$K apply -f - >/dev/null <<YAML
apiVersion: lvs-operator.io/v1alpha1
kind: LvsService
metadata: {name: outside, namespace: default}
spec:
  vip: 10.10.24.200
  ports: [{port: 80}]
  backends: [{address: 10.10.24.21}]
---
apiVersion: lvs-operator.io/v1alpha1
kind: LvsService
metadata: {name: tenant, namespace: team-b}
spec:
  vip: 10.10.24.92
  ports: [{port: 80}]
  backends: [{address: 10.10.24.21}]
YAML
# anywhere ADDR: whether any node has ADDR as a VIP (director's eth0 or IPVS table, any lo).
anywhere() {
	has_text "$1" in_ns director ipvsadm -Sn && return 0
	has_text "$1/32" in_ns director $IP addr show dev eth0 && return 0
	for _n in rs1 rs2 rs3; do has_text "$1/32" in_ns $_n $IP addr show dev lo && return 0; done
	return 1
}
nowhere() { ! anywhere "$1"; }
touched=0
for i in $(seq 25); do
	anywhere 10.10.24.200 && touched=$((touched + 1))
	anywhere 10.10.24.92 && touched=$((touched + 1))
	sleep 0.2
done
expect_eq "neither VIP reached any node (25 looks over 5 s)" 0 $touched
wait_until "a VIP in no pool: Accepted False VIPNotAllowed" 30 is_reason outside Accepted VIPNotAllowed
check "the message names the pools" has_message outside Accepted "spec.vip 10.10.24.200 is in no LvsAddressPool (pools: lan)"
wait_until "a Warning event VIPNotAllowed" 10 warned outside VIPNotAllowed
wait_until "a namespace the pool does not admit: VIPNotAllowed" 30 sh -c "[ \"\$($K -n team-b get lvs tenant -o 'jsonpath={.status.conditions[?(@.type==\"Accepted\")].reason}')\" = VIPNotAllowed ]"
tenant_message=$($K -n team-b get lvs tenant -o 'jsonpath={.status.conditions[?(@.type=="Accepted")].message}')
echo "message: $tenant_message"
expect_eq "the message names the pool and the namespace" \
	"spec.vip 10.10.24.92 is in LvsAddressPool lan, which does not admit namespace team-b: ask an administrator to add it to the pool's spec.namespaces" \
	"$tenant_message"
$K patch lvsaddresspool lan --type=json -p '[{"op":"add","path":"/spec/namespaces/-","value":"team-b"}]' >/dev/null
wait_until "once the pool admits team-b, its agent programs tenant" 30 anywhere 10.10.24.92
$K delete lvs outside --wait=false >/dev/null
$K -n team-b delete lvs tenant >/dev/null
$K patch lvsaddresspool lan --type=json -p '[{"op":"remove","path":"/spec/namespaces/1"}]' >/dev/null
wait_until "tenant's state is gone once it is deleted" 30 nowhere 10.10.24.92

echo "=== truth 6b. no spec.vip: the controller allocates one from the pool and keeps it"
$K apply -f - >/dev/null <<YAML
apiVersion: lvs-operator.io/v1alpha1
kind: LvsService
metadata: {name: auto}
spec:
  ports: [{port: 8080}]
  backends: [{address: 10.10.24.21}]
YAML
auto_vip() { jsonpath auto '{.status.vip}'; }
wait_until "auto gets a VIP in status.vip" 30 sh -c "[ -n \"\$($K get lvs auto -o 'jsonpath={.status.vip}')\" ]"
vip_auto=$(auto_vip)
echo "allocated: $vip_auto"
check "it is an address of the pool lan (10.10.24.80/28) no other object uses" \
	sh -c "echo $vip_auto | grep -qE '^10\.10\.24\.(8[1-9]|9[0-4])$' && [ $vip_auto != $VIP ]"
$K get lvs auto
expect_eq "kubectl get lvs shows it in the VIP column" "$vip_auto" "$($K get lvs auto --no-headers | awk '{print $2}')"
wait_until "the director programs it" 30 has_text "-A -t $vip_auto:8080" ipvs -Sn
# A controller that allocated afresh would now pick 10.10.24.94, the pool's first address.
$K patch lvsaddresspool lan --type=merge -p '{"spec":{"addresses":["10.10.24.94","10.10.24.80/28","10.99.0.1"]}}' >/dev/null
stop_pidfile controller
start_controller
sleep 3
$K annotate lvs auto lvs-operator.io/poke=1 --overwrite >/dev/null
sleep 2
expect_eq "a restarted controller keeps the same VIP (its pool now lists 10.10.24.94 first)" "$vip_auto" "$(auto_vip)"
$K patch lvsaddresspool lan --type=merge -p '{"spec":{"addresses":["10.10.24.80/28","10.99.0.1"]}}' >/dev/null
$K delete lvs auto >/dev/null
wait_until "auto's VIP leaves the director once it is deleted" 30 nowhere "$vip_auto"
