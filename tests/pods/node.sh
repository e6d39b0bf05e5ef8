#!/bin/sh
# One Node of make e2e-pods, started by pods-guest.sh inside the node's network namespace
# (`ip netns exec NODE sh node.sh NODE IP LABELS`): containerd and a kubelet, in a mount namespace
# of their own where the node's directories under /nodes/NODE appear at the paths both use, so
# four nodes share one VM without sharing a runtime, a kubelet root or a hostPath.
set -u
n=$1 ip=$2 labels=$3
d=/nodes/$n
for p in /var/lib/kubelet /var/lib/containerd /run/containerd /var/log/pods /var/log/containers \
	/var/lib/cni /etc/cni/net.d /var/lib/lvs-operator /run/runc; do
	mkdir -p "$p" "$d$p"
done
# Mounts made here stay here, and the kubelet's volume mounts reach containerd's containers.
mount --make-rprivate /
for p in /var/lib/kubelet /var/lib/containerd /run/containerd /var/log/pods /var/log/containers \
	/var/lib/cni /var/lib/lvs-operator /run/runc; do
	mount --bind "$d$p" "$p"
done
mount --bind "$d/cni-net" /etc/cni/net.d
mount --make-rshared /var/lib/kubelet
# `ip netns exec` mounted a sysfs of this network namespace over /sys; the cgroup hierarchy
# goes back on top of it.
mount -t cgroup2 cgroup2 /sys/fs/cgroup

echo "node $n: starting containerd"
containerd --config /lvs/containerd.toml >"$d/containerd.log" 2>&1 &
i=0
until ctr version >/dev/null 2>&1; do
	i=$((i + 1))
	[ $i -lt 300 ] || { echo "node $n: containerd did not start"; tail -20 "$d/containerd.log"; exit 1; }
	sleep 0.2
done
for img in /lvs/images/*.tar; do
	ctr -n k8s.io images import "$img" >/dev/null || echo "node $n: import of $img failed"
done
echo "node $n: images: $(ctr -n k8s.io images ls -q | tr '\n' ' ')"
echo "node $n: starting kubelet"
exec kubelet --config "$d/kubelet.yaml" --kubeconfig "/lvs/kubelet-$n.kubeconfig" \
	--hostname-override "$n" --node-ip "$ip" ${labels:+--node-labels "$labels"} --v=1
