#!/bin/sh
# Guest script of `make e2e-pods` (busybox sh in the VM; see e2e-pods.sh). Namespaces director and
# rs1..rs3 are the Nodes of those names, each with its own kubelet and containerd (with runc and
# the bridge CNI plugin, from Debian's packages) in its network namespace and in a mount namespace
# of its own, so a node's kubelet, runtime and hostPath directories are that node's alone. The
# chart is installed with helm; its pods run the image built from the
# Dockerfile, imported into each runtime. kubectl and helm here are the admin user.
set -u
. /lvs/lib.sh

VIP=10.10.24.88
K="kubectl --kubeconfig /lvs/admin.kubeconfig"
KN="$K -n lvs-operator"
NODES="director rs1 rs2 rs3"
API_PORT=$(cat /lvs/api.port)
TAG=$(cat /lvs/image.tag)
mkdir -p /run/logs
T0=$(date +%s)
elapsed() { echo "$(($(date +%s) - T0)) s"; }

echo "=== the host's route to the LAN (the API server reaches each kubelet at its node address)"
_nic=
for _d in /sys/class/net/*; do
	[ -e "$_d/device" ] && [ "$(cat "$_d/address")" = 52:54:00:0a:63:02 ] && _nic=${_d##*/}
done
[ -n "$_nic" ] || { echo "no tap NIC"; exit 1; }
ip link set "$_nic" name host0
ip addr add 10.10.99.2/30 dev host0
ip link set host0 up

echo "=== cgroup v2 for the kubelets: one subtree per node"
mkdir -p /sys/fs/cgroup
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ctrls=$(sed 's/\([a-z_]*\)/+\1/g' /sys/fs/cgroup/cgroup.controllers)
echo "$ctrls" >/sys/fs/cgroup/cgroup.subtree_control
for n in $NODES; do
	mkdir -p "/sys/fs/cgroup/$n"
	echo "$ctrls" >"/sys/fs/cgroup/$n/cgroup.subtree_control"
done
echo "controllers: $ctrls"

# The nodes' disks: one tmpfs (overlayfs upper directories need one, the initramfs is not).
mkdir -p /nodes
mount -t tmpfs -o size=3g tmpfs /nodes

start_node() {
	_n=$1
	_id=$(lvs_host_id "$_n")
	_d=/nodes/$_n
	mkdir -p "$_d/cni-net"
	sed -e "s/@ID@/$_id/g" /lvs/cni.conflist >"$_d/cni-net/10-pods.conflist"
	sed -e "s/@NODE@/$_n/g" /lvs/kubelet.yaml >"$_d/kubelet.yaml"
	_labels=
	[ "$_n" = director ] && _labels=lvs-operator.io/director=true
	# What kube-proxy would do for the one Service pods need: the API server's ClusterIP
	# (10.96.0.1:443) to the API server (10.0.2.2 through the router); and the pods' traffic
	# source-NATed onto the node's address.
	in_ns "$_n" nft -f - <<-EOF
		table ip pods {
			chain prerouting { type nat hook prerouting priority -100; ip daddr 10.96.0.1 tcp dport 443 dnat to 10.0.2.2:$API_PORT; }
			chain output { type nat hook output priority -100; ip daddr 10.96.0.1 tcp dport 443 dnat to 10.0.2.2:$API_PORT; }
			chain postrouting { type nat hook postrouting priority 100; ip saddr 10.244.$_id.0/24 oifname "eth0" masquerade; }
		}
	EOF
	in_ns "$_n" sh -c 'echo 1 >/proc/sys/net/ipv4/ip_forward'
	ip netns exec "$_n" sh /lvs/node.sh "$_n" "10.10.24.$_id" "$_labels" >"/run/logs/node-$_n.log" 2>&1 &
}

node_ready() {
	[ "$($K get node "$1" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}
pods_ready() {
	_want=$1
	_got=$($KN get pods --no-headers 2>/dev/null | awk '$2 == "1/1" && $3 == "Running"' | wc -l)
	[ "$_got" -ge "$_want" ]
}
show_state() {
	$K get nodes -o wide
	$KN get pods -o wide
	$KN get events --sort-by=.lastTimestamp | tail -20
	for n in $NODES; do
		echo "--- node $n"
		tail -n 25 "/run/logs/node-$n.log"
	done
}

echo "=== kubelet and containerd per node"
for n in $NODES; do start_node "$n"; done
for n in $NODES; do
	wait_until "node $n Ready" 240 node_ready "$n" || show_state
done
echo "nodes Ready $(elapsed) after the guest script started"
$K get nodes -o wide

echo "=== ip_vs unloaded: the director's agent pod has to modprobe it (the host's /lib/modules, read-only)"
for m in $(lsmod | awk '$1 ~ /^ip_vs_/ {print $1}'); do rmmod "$m"; done
rmmod ip_vs
check "ip_vs is not loaded before the agents start" sh -c "! lsmod | grep -q '^ip_vs '"

echo "=== helm install, as a user would: a namespace labelled for the privileged Pod Security level"
$K create namespace lvs-operator
$K label namespace lvs-operator pod-security.kubernetes.io/enforce=privileged
check "helm install lvs-operator /lvs/chart --set image.tag=$TAG (with the address pool lan)" \
	helm --kubeconfig /lvs/admin.kubeconfig install lvs-operator /lvs/chart --namespace lvs-operator \
	--set image.tag="$TAG" \
	--set-json 'addressPools=[{"name":"lan","addresses":["10.10.24.80/28"],"namespaces":["default"]}]'
# Four agents (one per node) and the controller's two replicas.
wait_until "the 4 agent pods and the controller pods are Running and Ready" 300 pods_ready 6 || show_state
echo "pods Ready $(elapsed) after the guest script started"
$KN get pods -o wide
for p in $($KN get pods -o name); do
	if ! $KN logs "$p" >/run/logs/pod.log 2>&1; then
		fail "kubectl logs $p: $(head -2 /run/logs/pod.log)"
	elif grep -q "$(printf '\033')" /run/logs/pod.log; then
		fail "kubectl logs $p holds terminal escape codes: $(head -2 /run/logs/pod.log)"
	elif [ -s /run/logs/pod.log ]; then
		pass "kubectl logs $p is plain text: $(head -1 /run/logs/pod.log | cut -c1-140)"
	else
		fail "kubectl logs $p is empty"
	fi
done

echo "=== the seed scenario, programmed by the pods"
$K apply -f /lvs/reference.yaml
ready() { [ "$($K get lvs web -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')" = True ]; }
wait_until "kubectl get lvs web: READY True" 120 ready || show_state
$K get lvs
got=
for i in 1 2 3 4 5 6; do got="$got $(http_get client "http://$VIP/" 2>&1)"; done
echo "6 requests through the VIP ->$got"
expect_eq "rs1, rs2 and rs3 answer through the VIP" "rs1 rs2 rs3" "$(echo $got | tr ' ' '\n' | sort -u | tr '\n' ' ' | sed 's/ $//')"
check "ip_vs is loaded again (modprobe in the agent's container)" sh -c "lsmod | grep -q '^ip_vs '"
agent_on() { $KN get pods -l app.kubernetes.io/component=agent --field-selector "spec.nodeName=$1" -o name | head -1; }
dpod=$(agent_on director)
$KN exec "${dpod#pod/}" -- ipvsadm -Ln >/run/logs/exec.out 2>&1
cat /run/logs/exec.out
# The service's own block: the lines after "TCP VIP:80 rr" up to the next service (the FWM services
# after it are the through-VIP health checks).
vs_block() { awk -v vs="TCP  $VIP:80 rr" '$0 ~ /^[A-Z]/ {on = index($0, vs) == 1} on' /run/logs/exec.out; }
expect_eq "kubectl exec $dpod -- ipvsadm -Ln: TCP $VIP:80 rr with rs1..rs3 as Route real servers" \
	"10.10.24.21:80 Route 10.10.24.22:80 Route 10.10.24.23:80 Route" "$(vs_block | awk '/->/ && $3 == "Route" {printf "%s%s %s", sep, $2, $3; sep=" "}')"

echo "=== the controller pod: non-root, read-only root file system"
cpod=$($KN get pods -l app.kubernetes.io/component=controller -o name | head -1)
expect_eq "$cpod runs as uid 65532" 65532 "$($KN exec "${cpod#pod/}" -- id -u 2>&1)"
check "$cpod cannot write its root file system" \
	sh -c "! $KN exec ${cpod#pod/} -- sh -c 'echo x > /probe' 2>/run/logs/ro.out"
echo "    $(cat /run/logs/ro.out | head -1)"
expect_eq "the agent pod runs as root, privileged (as the chart documents)" "0" "$($KN exec "${dpod#pod/}" -- id -u 2>&1)"

echo "=== rolling update of the agents to a rebuilt image while a client loops on the VIP"
in_ns client sh -c "while :; do if timeout 3 wget -qO- http://$VIP/ >/dev/null 2>&1; then echo ok; else echo FAIL; fi; sleep 0.2; done" >/run/logs/loop.out 2>&1 &
loop=$!
old=$($KN get pods -l app.kubernetes.io/component=agent -o jsonpath='{range .items[*]}{.metadata.name}{" "}{end}')
LEDGER=/nodes/director/var/lib/lvs-operator/ledger.json
check "the director's ledger is on the node, in the agent's hostPath ($LEDGER)" test -s $LEDGER
ledger_before=$(sha256sum <$LEDGER)
r0=$(date +%s)
$KN set image daemonset/lvs-operator-agent "agent=lvs-operator:$TAG-rebuilt"
rolled() {
	$KN rollout status daemonset/lvs-operator-agent --timeout=2s >/dev/null 2>&1
}
wait_until "the DaemonSet rolled out to lvs-operator:$TAG-rebuilt" 400 rolled || show_state
agent_images() {
	$KN get pods -l app.kubernetes.io/component=agent \
		-o jsonpath='{range .items[*]}{.spec.containers[0].image}{"\n"}{end}' | sort -u
}
expect_eq "every agent pod runs the rebuilt image" "lvs-operator:$TAG-rebuilt" "$(agent_images)"
echo "rollout: the four agents replaced one at a time (each Ready, i.e. resynced, before the next) in $(($(date +%s) - r0)) s"
sleep 2
kill $loop
total=$(wc -l </run/logs/loop.out)
failed=$(grep -c FAIL /run/logs/loop.out)
echo "client loop during the rollout: $total requests, $failed failed"
expect_eq "0 failed requests through the VIP during the rollout ($total requests)" 0 "$failed"
$KN get pods -o wide
new=$($KN get pods -l app.kubernetes.io/component=agent -o jsonpath='{range .items[*]}{.metadata.name}{" "}{end}')
for p in $old; do
	case " $new " in *" $p "*) fail "agent pod $p was not replaced" ;; esac
done
dpod=$(agent_on director)
check "kubectl logs $dpod (the new director agent)" sh -c "$KN logs ${dpod#pod/} >/run/logs/new-agent.log 2>&1"
expect_eq "the new director agent adopted the ledger on the node: it wrote nothing (no applied: line)" "" \
	"$(grep 'applied:' /run/logs/new-agent.log)"
expect_eq "the ledger on the node is the same file, byte for byte, after the rollout" "$ledger_before" "$(sha256sum <$LEDGER)"
grep -i adopt /run/logs/new-agent.log | head -3

echo "=== helm uninstall with the LvsService still present (README: the data plane stays)"
# Each agent's last words, for when the data plane does not survive.
for p in $($KN get pods -l app.kubernetes.io/component=agent -o name); do
	$KN logs -f "$p" >"/run/logs/last-${p#pod/}.log" 2>&1 &
done
helm --kubeconfig /lvs/admin.kubeconfig uninstall lvs-operator -n lvs-operator
gone() { [ "$($KN get pods --no-headers 2>/dev/null | wc -l)" = 0 ]; }
wait_until "helm uninstall removed every pod" 180 gone || show_state
$KN get pods
got=
for i in 1 2 3 4 5 6; do got="$got $(http_get client "http://$VIP/" 2>&1)"; done
echo "6 requests through the VIP ->$got"
seen=$(echo $got | tr ' ' '\n' | sort -u | tr '\n' ' ' | sed 's/ $//')
expect_eq "the VIP still serves rs1 rs2 rs3 with no agent running" "rs1 rs2 rs3" "$seen"
if [ "$seen" != "rs1 rs2 rs3" ]; then
	in_ns director ipvsadm -Ln
	for n in director rs1 rs2 rs3; do echo "$n: $(in_ns "$n" ip -br addr show | tr '\n' ' ')"; done
	for f in /run/logs/last-*.log; do
		echo "--- $f"
		tail -n 12 "$f"
	done
fi
check "the LvsService and its CRD are still there" $K get lvs web
check "the chart's address pool lan is still there (helm.sh/resource-policy: keep)" $K get lvspool lan
echo "run time in the VM: $(elapsed)"
summary
