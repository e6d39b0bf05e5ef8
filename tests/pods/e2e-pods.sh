#!/usr/bin/env bash
# make e2e-pods: the chart installed with helm and running as real pods, from the image built here.
#
# Host side (this script): builds the image from the Dockerfile (image.sh) and the pods' sandbox
# image, builds/caches the control plane with kubelet, kube-controller-manager and kube-scheduler
# (tools.sh), starts etcd, kube-apiserver, the controller manager and the scheduler (cluster.sh),
# writes each node's kubelet identity (system:node:NAME), and boots the VM, where pods-guest.sh
# starts a kubelet and containerd per node and drives the scenario with kubectl and helm.
#
# The API server reaches the kubelets (kubectl logs, exec) through a tap device: 10.10.99.1/30
# here, 10.10.99.2 the VM's router, and a route to the VM's LAN 10.10.24.0/24 through it. Only
# addresses inside the VM are ever targets; the tap and the route go when the script ends.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CACHE="${LVS_CACHE:-$HOME/.cache/lvs-operator}"
export E2E_STATE=${E2E_STATE:-/tmp/lvs-pods}
TAP=lvs-pods0
start=$SECONDS
stage() { echo "e2e-pods: $* ($((SECONDS - start)) s)"; }

[[ "$(id -u)" == 0 ]] || { echo "e2e-pods: needs root (a tap device, buildah's storage)" >&2; exit 2; }

tag=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}/\1/p' "$ROOT/charts/lvs-operator/Chart.yaml")
# The checks' lines go to stderr as they come (through the inherited descriptor: opening
# /dev/stderr would truncate a log file it points to); the last line is the archive.
image=$(bash "$HERE/image.sh" "$tag" | tee >(cat >&2) | tail -1)
rebuilt=$(bash "$HERE/image.sh" "$tag-rebuilt" | tee >(cat >&2) | tail -1)
pause=$(bash "$HERE/image.sh" pause | tail -1)
stage "images: $(basename "$image") $(basename "$rebuilt") $(basename "$pause")"

bash "$ROOT/tests/e2e/tools.sh" all node >/dev/null
export PATH="$ROOT/.tools/bin:$PATH"
kubelet=$(readlink -f "$ROOT/.tools/bin/kubelet")
bash "$ROOT/tests/e2e/cluster.sh" restart >/dev/null
work=$(mktemp -d)
cleanup() {
  bash "$ROOT/tests/e2e/cluster.sh" stop >/dev/null 2>&1 || true
  ip route del 10.10.24.0/24 via 10.10.99.2 2>/dev/null || true
  ip link del "$TAP" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
bash "$ROOT/tests/e2e/cluster.sh" controllers-start
stage "control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler"

# The route into the VM (see the header).
ip link del "$TAP" 2>/dev/null || true
ip tuntap add dev "$TAP" mode tap
ip addr add 10.10.99.1/30 dev "$TAP"
ip link set "$TAP" up
ip route replace 10.10.24.0/24 via 10.10.99.2 dev "$TAP"

adds=()
for n in director rs1 rs2 rs3; do
  bash "$ROOT/tests/e2e/cluster.sh" node-kubeconfig "$n" "$work/kubelet-$n.kubeconfig"
  adds+=(--add "$work/kubelet-$n.kubeconfig:/lvs/kubelet-$n.kubeconfig")
done
echo "${E2E_APISERVER_PORT:-16443}" >"$work/api.port"
echo "$tag" >"$work/image.tag"
pods=$CACHE/pods
if [[ ! -x $pods/root/usr/bin/containerd ]]; then
  mkdir -p "$pods/debs"
  (cd "$pods/debs" && apt-get download -qq containerd runc containernetworking-plugins 2>&1 | grep -v unsandboxed || true)
  rm -rf "$pods/root.tmp" && mkdir -p "$pods/root.tmp"
  for d in "$pods"/debs/*.deb; do dpkg-deb -x "$d" "$pods/root.tmp"; done
  rm -rf "$pods/root" && mv "$pods/root.tmp" "$pods/root"
fi
for f in usr/bin/containerd usr/bin/containerd-shim-runc-v2 usr/bin/ctr usr/sbin/runc; do
  adds+=(--add "$pods/root/$f:/$f")
done
for p in bridge host-local loopback; do adds+=(--add "$pods/root/usr/lib/cni/$p:/usr/lib/cni/$p"); done
adds+=(
  --add "$kubelet:/usr/bin/kubelet"
  --add "$(readlink -f "$ROOT/.tools/bin/kubectl"):/usr/bin/kubectl"
  --add "$(readlink -f "$ROOT/.tools/bin/helm"):/usr/bin/helm"
  --add "$E2E_STATE/admin-vm.kubeconfig:/lvs/admin.kubeconfig"
  --add "$E2E_STATE/pki/ca.crt:/lvs/ca.crt"
  --add "$ROOT/charts/lvs-operator:/lvs/chart"
  --add "$ROOT/tests/valid/reference.yaml:/lvs/reference.yaml"
  --add "$image:/lvs/images/lvs-operator.tar"
  --add "$rebuilt:/lvs/images/lvs-operator-rebuilt.tar"
  --add "$pause:/lvs/images/pause.tar"
  --add "$HERE/node.sh:/lvs/node.sh"
  --add "$HERE/containerd.toml:/lvs/containerd.toml"
  --add "$HERE/kubelet.yaml:/lvs/kubelet.yaml"
  --add "$HERE/cni.conflist:/lvs/cni.conflist"
  --add "$work/api.port:/lvs/api.port"
  --add "$work/image.tag:/lvs/image.tag"
)
stage "booting the VM"
rc=0
LVS_VM_MEM=${LVS_VM_MEM:-6144} bash "$ROOT/tests/vm/run.sh" --net-user --tap "$TAP" \
  --timeout "${E2E_PODS_TIMEOUT:-1500}" "${adds[@]}" "$HERE/pods-guest.sh" || rc=$?
stage "done, guest exit code $rc"
exit "$rc"
