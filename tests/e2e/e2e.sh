#!/usr/bin/env bash
# make e2e: lvs-operator against a real kube-apiserver, installed with its Helm chart, running as
# the chart's ServiceAccounts, with its agents programming a real kernel in the VM.
#
# Host side (this script): builds/caches the control plane (tools.sh), starts etcd and
# kube-apiserver (cluster.sh), installs the chart, shows the API server rejecting every invalid
# manifest by field, checks RBAC with the chart's ServiceAccount tokens, creates the Node objects
# of the reference topology, then boots the VM (tests/vm/run.sh --net-user) where
# e2e-guest.sh runs the controller and one agent per node and drives the scenario with kubectl.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/lib.sh"
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${LVS_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/lvs-operator/target}/release/lvs-operator}
export E2E_STATE=${E2E_STATE:-/tmp/lvs-e2e}
[[ -x "$BIN" ]] || { echo "e2e.sh: $BIN missing; run make release" >&2; exit 2; }

passed=0 failed=0
pass() { passed=$((passed + 1)); echo "PASS: $*"; }
fail() { failed=$((failed + 1)); echo "FAIL: $*"; }
step() { echo; echo "=== $*"; }

bash "$HERE/tools.sh" >/dev/null
export PATH="$ROOT/.tools/bin:$PATH"
# restart: a fresh etcd even when an earlier run left its cluster up.
bash "$HERE/cluster.sh" restart >/dev/null
trap 'bash "$HERE/cluster.sh" stop >/dev/null 2>&1 || true' EXIT
export KUBECONFIG=$E2E_STATE/admin.kubeconfig
work=$(mktemp -d)
trap 'bash "$HERE/cluster.sh" stop >/dev/null 2>&1 || true; rm -rf "$work" || true' EXIT

step "install: helm install, then the rendered chart with a server-side dry run"
# The pool: the reference LAN's VIPs and one in no director's subnet (truth 3), for namespace default.
helm install lvs-operator "$ROOT/charts/lvs-operator" --namespace lvs-operator --create-namespace \
  --set-json 'addressPools=[{"name":"lan","addresses":["10.10.24.80/28","10.99.0.1"],"namespaces":["default"]}]' \
  >"$work/helm.out" 2>&1 &&
  pass "helm install lvs-operator charts/lvs-operator (with the address pool lan)" || { cat "$work/helm.out"; fail "helm install"; }
kubectl wait --for condition=established --timeout=60s crd/lvsservices.lvs-operator.io crd/lvsaddresspools.lvs-operator.io >/dev/null &&
  pass "the chart installed the LvsService and LvsAddressPool CRDs" || fail "CRDs not established"
kubectl get lvsaddresspool lan -o jsonpath='{.spec.addresses}' | grep -qF '10.10.24.80/28' &&
  pass "the chart created the pool lan from its values: $(kubectl get lvspool lan --no-headers | cut -c1-80)" ||
  fail "the pool lan from the chart's values"
if kubectl apply --server-side --dry-run=server --force-conflicts -f "$ROOT/deploy/" >"$work/dry.out" 2>&1; then
  pass "kubectl apply --dry-run=server -f deploy/ ($(wc -l <"$work/dry.out") objects)"
else
  cat "$work/dry.out"; fail "server-side dry run of deploy/"
fi

step "validation: the API server rejects every invalid manifest, naming its field"
for f in "$ROOT"/tests/invalid/*.yaml; do
  field=$(sed -n 's/^# expect: //p' "$f")
  if kubectl apply -f "$f" >"$work/out" 2>&1; then
    fail "$(basename "$f") was accepted"
  elif grep -qF -- "$field" "$work/out"; then
    pass "$(basename "$f"): $(grep -F -- "$field" "$work/out" | head -1 | sed 's/.*is invalid: //' | cut -c1-150)"
  else
    fail "$(basename "$f"): expected $field in: $(cat "$work/out")"
  fi
done
if printf '%s\n' 'apiVersion: lvs-operator.io/v1alpha1' 'kind: LvsAddressPool' 'metadata: {name: bad}' \
  'spec: {addresses: ["10.10.24.0/33"]}' | kubectl apply -f - >"$work/out" 2>&1; then
  fail "a pool with 10.10.24.0/33 was accepted"
else
  grep -qF "each address must be a CIDR" "$work/out" &&
    pass "a pool address that is no CIDR, range or address: $(sed 's/.*is invalid: //' "$work/out" | cut -c1-150)" ||
    fail "bad pool address: $(cat "$work/out")"
fi
kubectl apply --dry-run=server -f "$ROOT/tests/valid/" >/dev/null 2>&1 &&
  pass "the reference object and every valid manifest are accepted" || fail "valid manifests rejected"
kubectl explain lvsservice.spec.scheduler >"$work/explain" 2>&1
grep -q "IPVS scheduling algorithm" "$work/explain" &&
  pass "kubectl explain lvsservice.spec.scheduler: $(grep -m1 'IPVS scheduling' "$work/explain" | sed 's/^ *//')" ||
  { cat "$work/explain"; fail "kubectl explain"; }

step "nodes of the reference topology: director, director2 and rs1..rs4 with their InternalIPs"
create_reference_nodes
kubectl get nodes -o wide | cut -c1-100

step "identities: the chart's ServiceAccounts, and what the API server refuses them"
ca=$(base64 -w0 <"$E2E_STATE/pki/ca.crt")
NODES="director director2 rs1 rs2 rs3 rs4"
# Each agent runs with the token of a Pod of its own on its node, as the DaemonSet's pods do (no
# kubelet runs them: the API server binds the token to the Pod and names its node in the token).
for n in $NODES; do
  kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: lvs-agent-$n, namespace: lvs-operator}
spec:
  nodeName: $n
  serviceAccountName: lvs-operator-agent
  containers: [{name: agent, image: "lvs-operator:e2e"}]
YAML
done
kubeconfig_for() { # SA SERVER [POD]
  local token
  token=$(kubectl create token "$1" -n lvs-operator --duration=2h ${3:+--bound-object-kind Pod --bound-object-name "$3"})
  cat <<YAML
apiVersion: v1
kind: Config
clusters: [{name: e2e, cluster: {server: "$2", certificate-authority-data: $ca}}]
users: [{name: $1, user: {token: $token}}]
contexts: [{name: e2e, context: {cluster: e2e, user: $1}}]
current-context: e2e
YAML
}
kubeconfig_for lvs-operator-controller https://127.0.0.1:16443 >"$work/controller-host.kubeconfig"
kubeconfig_for lvs-operator-controller https://10.0.2.2:16443 >"$work/controller.kubeconfig"
kubeconfig_for lvs-operator-agent https://127.0.0.1:16443 lvs-agent-rs1 >"$work/agent-host.kubeconfig"
kubeconfig_for lvs-operator-agent https://127.0.0.1:16443 >"$work/agent-unbound-host.kubeconfig"
vm_agents=()
for n in $NODES; do
  kubeconfig_for lvs-operator-agent https://10.0.2.2:16443 "lvs-agent-$n" >"$work/agent-$n.kubeconfig"
  vm_agents+=(--add "$work/agent-$n.kubeconfig:/lvs/agent-$n.kubeconfig")
done
who=$(kubectl --kubeconfig "$work/agent-host.kubeconfig" auth whoami -o jsonpath='{.status.userInfo.username} {.status.userInfo.extra.authentication\.kubernetes\.io/node-name}')
[[ $who == "system:serviceaccount:lvs-operator:lvs-operator-agent [\"rs1\"]" ]] && pass "rs1's agent runs as $who" || fail "agent identity: $who"
# refused DESC TEXT CMD...: the API server must refuse CMD saying TEXT; its message is quoted.
refused() {
  local desc=$1 text=$2; shift 2
  if "$@" >"$work/out" 2>&1; then
    fail "$desc was allowed"
  elif grep -qF -- "$text" "$work/out"; then
    pass "$desc is refused: $(tr '\n' ' ' <"$work/out" | sed 's/^Error from server[^:]*: //' | cut -c1-260)"
  else
    fail "$desc: expected \"$text\" in: $(cat "$work/out")"
  fi
}
for n in rs1 rs2; do
  printf '%s\n' 'apiVersion: lvs-operator.io/v1alpha1' 'kind: LvsNodeReport' "metadata: {name: $n}" \
    'spec: {services: []}' >"$work/report-$n.yaml"
done
printf '%s\n' 'apiVersion: coordination.k8s.io/v1' 'kind: Lease' \
  'metadata: {name: lvs-agent-rs2, namespace: lvs-operator}' 'spec: {holderIdentity: rs2}' >"$work/lease-rs2.yaml"
printf '%s\n' 'apiVersion: coordination.k8s.io/v1' 'kind: Lease' \
  'metadata: {name: lvs-operator-controller, namespace: lvs-operator}' 'spec: {holderIdentity: vm-controller}' |
  kubectl apply -f - >/dev/null
kubectl apply -f "$ROOT/tests/valid/reference.yaml" >/dev/null
as_rs1() { kubectl --kubeconfig "$work/agent-host.kubeconfig" "$@"; }
if as_rs1 apply --server-side --field-manager=lvs-operator-agent -f "$work/report-rs1.yaml" >"$work/out" 2>&1; then
  pass "rs1's agent writes its own LvsNodeReport: $(cat "$work/out")"
else
  fail "rs1's agent writing its own report: $(cat "$work/out")"
fi
refused "rs1's agent writing rs2's LvsNodeReport" "may write only its own LvsNodeReport (rs1), not rs2" \
  as_rs1 apply --server-side --field-manager=lvs-operator-agent -f "$work/report-rs2.yaml"
refused "rs1's agent writing an LvsService's status" Forbidden \
  as_rs1 patch lvs web --subresource=status --type=merge -p '{"status":{"backends":[{"address":"10.10.24.99"}]}}'
refused "rs1's agent taking the controller's leader Lease" "may write only its heartbeat Lease lvs-agent-rs1" \
  as_rs1 -n lvs-operator patch lease lvs-operator-controller --type=merge -p '{"spec":{"holderIdentity":"rs1"}}'
refused "rs1's agent writing rs2's heartbeat Lease" "not lvs-agent-rs2" as_rs1 apply -f "$work/lease-rs2.yaml"
refused "rs1's agent reading a Secret" Forbidden as_rs1 -n lvs-operator get secrets
refused "an agent token bound to no Pod writing a report" "names no node" \
  kubectl --kubeconfig "$work/agent-unbound-host.kubeconfig" apply --server-side --field-manager=lvs-operator-agent -f "$work/report-rs1.yaml"
kubectl -n lvs-operator delete lease lvs-operator-controller >/dev/null 2>&1 || true
kubectl delete lvsnodereport rs1 >/dev/null 2>&1 || true
if kubectl --kubeconfig "$work/agent-host.kubeconfig" delete lvs web >"$work/out" 2>&1; then
  fail "the agent deleted an LvsService"
else
  grep -q Forbidden "$work/out" && pass "agent may not delete an LvsService: $(cut -c1-140 "$work/out")" || fail "agent delete: $(cat "$work/out")"
fi
if kubectl --kubeconfig "$work/agent-host.kubeconfig" patch lvsaddresspool lan --type=merge -p '{"spec":{"namespaces":null}}' >"$work/out" 2>&1; then
  fail "the agent changed an address pool"
else
  grep -q Forbidden "$work/out" && pass "agent may not change an address pool: $(cut -c1-140 "$work/out")" || fail "agent pool patch: $(cat "$work/out")"
fi
if kubectl --kubeconfig "$work/controller-host.kubeconfig" get secrets -n lvs-operator >"$work/out" 2>&1; then
  fail "the controller read Secrets"
else
  grep -q Forbidden "$work/out" && pass "controller may not read Secrets: $(cut -c1-140 "$work/out")" || fail "controller secrets: $(cat "$work/out")"
fi
kubectl delete lvs web --wait=false >/dev/null
# Nobody runs the controller yet, so nothing removes its finalizer: clear it by hand.
kubectl patch lvs web --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true

step "metrics: HTTPS, and only for tokens allowed to get /metrics (the controller on this host)"
# The controller's /metrics with the chart's defaults (--metrics-secure): a TokenReview and a
# SubjectAccessReview per new token, with its own ServiceAccount's rights.
"$BIN" controller --kubeconfig "$work/controller-host.kubeconfig" --leader-election=false \
  --lease-namespace lvs-operator --identity host-controller --metrics-addr 127.0.0.1:18443 \
  >"$work/controller-host.log" 2>&1 &
host_controller=$!
kubectl -n lvs-operator create serviceaccount prometheus >/dev/null
kubectl create clusterrolebinding lvs-e2e-prometheus --clusterrole=lvs-operator-metrics-reader \
  --serviceaccount=lvs-operator:prometheus >/dev/null
scrape() { # TOKEN -> HTTP code, body in $work/scrape
  curl -sk --max-time 10 -o "$work/scrape" -w '%{http_code}' ${1:+-H "Authorization: Bearer $1"} \
    https://127.0.0.1:18443/metrics
}
for _ in $(seq 50); do [[ $(curl -sk -o /dev/null -w '%{http_code}' https://127.0.0.1:18443/healthz) == 200 ]] && break; sleep 0.2; done
code=$(curl -sk -o /dev/null -w '%{http_code}' https://127.0.0.1:18443/healthz)
[[ $code == 200 ]] && pass "/healthz over HTTPS needs no token (the kubelet's probes): $code" || fail "/healthz: $code"
code=$(scrape "")
[[ $code == 401 ]] && pass "an unauthenticated scrape is refused: $code $(cat "$work/scrape")" || fail "no token: $code $(cat "$work/scrape")"
code=$(scrape "$(kubectl create token lvs-operator-agent -n lvs-operator --duration=10m)")
[[ $code == 403 ]] && pass "a token not allowed to get /metrics is refused: $code $(cat "$work/scrape")" || fail "agent token: $code $(cat "$work/scrape")"
code=$(scrape "$(kubectl create token prometheus -n lvs-operator --duration=10m)")
if [[ $code == 200 ]] && grep -q lvs_operator_controller_reconciles_total "$work/scrape"; then
  pass "a token bound to the chart's metrics-reader ClusterRole scrapes: $code, $(wc -l <"$work/scrape") lines"
else
  fail "prometheus token: $code $(head -c 300 "$work/scrape")"
fi
kill "$host_controller" 2>/dev/null; wait "$host_controller" 2>/dev/null || true
kubectl delete clusterrolebinding lvs-e2e-prometheus >/dev/null

step "the VM: controller and agents with those identities, the scenario driven with kubectl"
# socat: the echo service and the long-lived connection of the failover tests.
command -v socat >/dev/null || { apt-get update -qq && apt-get install -y -qq socat >/dev/null; }
cp "$E2E_STATE/admin-vm.kubeconfig" "$work/admin.kubeconfig"
# The guest's way to stop and start this host's API server (an outage scenario).
control_port=${E2E_CONTROL_PORT:-16480}
echo "$control_port" >"$work/control.port"
python3 "$HERE/control.py" "$control_port" 2>"$work/control.log" &
control_pid=$!
trap 'kill $control_pid 2>/dev/null || true; bash "$HERE/cluster.sh" stop >/dev/null 2>&1 || true; rm -rf "$work" || true' EXIT
set +e
# E2E_GUEST: another guest script in this directory (while working on one part of the scenario).
bash "$ROOT/tests/vm/run.sh" --net-user --timeout "${LVS_VM_TIMEOUT:-1500}" \
  --add "$BIN:/usr/local/bin/lvs-operator" \
  --add "$ROOT/.tools/bin/kubectl:/usr/local/bin/kubectl" \
  --add "$work/controller.kubeconfig:/lvs/controller.kubeconfig" \
  "${vm_agents[@]}" \
  --add "$work/admin.kubeconfig:/lvs/admin.kubeconfig" \
  --add "$ROOT/tests/valid/reference.yaml:/lvs/reference.yaml" \
  --add "$HERE/latency.sh:/lvs/latency.sh" \
  --add "$HERE/truth-guest.sh:/lvs/truth-guest.sh" \
  --add "$HERE/checks-guest.sh:/lvs/checks-guest.sh" \
  --add "$HERE/failover-guest.sh:/lvs/failover-guest.sh" \
  --add "$HERE/backends-guest.sh:/lvs/backends-guest.sh" \
  --add "$ROOT/tests/vm/failover-lib.sh:/lvs/failover-lib.sh" \
  --add "$(command -v socat):/usr/bin/socat" \
  --add "$work/control.port:/lvs/control.port" \
  "$HERE/${E2E_GUEST:-e2e-guest.sh}" | tee "$work/vm.out"
vm=${PIPESTATUS[0]}
set -e
guest=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$work/vm.out" | tail -1)
passed=$((passed + ${guest%% passed*}))
failed=$((failed + $(echo "$guest" | sed 's/.* \([0-9]*\) failed.*/\1/')))
[[ $vm == 0 ]] || { [[ $failed -gt 0 ]] || failed=1; echo "the VM exited $vm"; }
echo
echo "$passed passed, $failed failed"
[[ $failed == 0 ]]
