#!/bin/sh
# Guest script of `make demo`: narrates the reference scenario inside the VM.
. /lvs/lib.sh
say() { printf '\n>>> %s\n' "$*"; }
K="kubectl --kubeconfig /lvs/admin.kubeconfig"

say "Starting the controller, and an agent on each node (its network namespace)"
lvs-operator controller --kubeconfig /lvs/admin.kubeconfig --lease-namespace lvs-operator \
	--metrics-addr 127.0.0.1:8080 >/run/controller.log 2>&1 &
for n in director rs1 rs2 rs3; do
	/usr/sbin/ip netns exec $n lvs-operator agent --node-name $n --kubeconfig /lvs/admin.kubeconfig \
		--lease-namespace lvs-operator --state-dir /run/state/$n >/run/$n.log 2>&1 &
done

say "The whole seed setup is this one object:"
cat /lvs/reference.yaml
say "kubectl apply -f web.yaml"
$K apply -f /lvs/reference.yaml
$K wait --for condition=Ready --timeout=60s lvs/web >/dev/null
say "kubectl get lvs"
$K get lvs
say "On the director: ipvsadm -Ln and its addresses"
in_ns director ipvsadm -Ln
in_ns director /usr/sbin/ip -brief addr show dev eth0
say "On rs1: the VIP on lo and the ARP sysctls"
in_ns rs1 /usr/sbin/ip -brief addr show dev lo
in_ns rs1 sysctl net.ipv4.conf.all.arp_ignore net.ipv4.conf.all.arp_announce
say "The client asks the VIP six times; the real servers answer in turn"
for i in 1 2 3 4 5 6; do
	echo "GET http://10.10.24.88/  ->  $(http_get client http://10.10.24.88/)"
done
say "Replies went straight from the real servers to the client: the director forwarded only the inbound half"
sleep 2
in_ns director ipvsadm -Ln --stats
say "kubectl delete lvs web: every node's state goes before the object does"
$K delete lvs web
in_ns director ipvsadm -Ln
in_ns rs1 /usr/sbin/ip -brief addr show dev lo
say "Done"
