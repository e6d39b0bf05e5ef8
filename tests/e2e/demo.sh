#!/usr/bin/env bash
# make demo: the seed document's LVS-DR setup, declared with one LvsService, end to end.
#
# Starts a real kube-apiserver (built from its Go module on first use, then cached), boots a VM
# with Debian's kernel where network namespaces play the director, three real servers and a
# client, runs the controller and one agent per node there, applies the reference LvsService and
# shows what it did. Everything it starts, it stops.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/lib.sh"
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${LVS_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/lvs-operator/target}/release/lvs-operator}
export E2E_STATE=${E2E_STATE:-/tmp/lvs-demo}
say() { printf '\n\033[1m>>> %s\033[0m\n' "$*"; }

[[ -x "$BIN" ]] || { echo "demo.sh: $BIN missing; run make release" >&2; exit 2; }
say "Building (first run only) or reusing kube-apiserver, etcd and kubectl from their Go modules"
bash "$HERE/tools.sh" >/dev/null
export PATH="$ROOT/.tools/bin:$PATH"
say "Starting etcd and kube-apiserver on 127.0.0.1:16443"
bash "$HERE/cluster.sh" start >/dev/null
trap 'say "Stopping the control plane"; bash "$HERE/cluster.sh" stop >/dev/null 2>&1 || true' EXIT
export KUBECONFIG=$E2E_STATE/admin.kubeconfig

say "Installing the LvsService CRD: kubectl apply -f crds/"
kubectl apply -f "$ROOT/crds/"
kubectl wait --for condition=established --timeout=60s crd/lvsservices.lvs-operator.io crd/lvsaddresspools.lvs-operator.io >/dev/null
say "The addresses namespace default may claim: kubectl apply -f tests/e2e/reference-pool.yaml"
kubectl apply -f "$HERE/reference-pool.yaml"
kubectl create namespace lvs-operator >/dev/null

say "Registering the four machines of the seed document as Nodes (director labelled as such)"
create_reference_nodes
kubectl get nodes -L lvs-operator.io/director

say "Booting the VM: a router (10.10.24.1), director (.10), rs1..rs3 (.21-.23) and a client (.5)"
bash "$ROOT/tests/vm/run.sh" --net-user --timeout 600 \
  --add "$BIN:/usr/local/bin/lvs-operator" \
  --add "$ROOT/.tools/bin/kubectl:/usr/local/bin/kubectl" \
  --add "$E2E_STATE/admin-vm.kubeconfig:/lvs/admin.kubeconfig" \
  --add "$ROOT/tests/valid/reference.yaml:/lvs/reference.yaml" \
  "$HERE/demo-guest.sh" 2>/dev/null | grep -v -e '^\[ *[0-9.]*\]' -e '^SeaBIOS' -e '^Booting from' -e '^init:' -e '^topology_up' -e '^LVS-VM-RESULT' -e '^run.sh'
