#!/usr/bin/env bash
# Smoke test of the e2e control plane itself: proves that tools.sh and
# cluster.sh give a working, RBAC-enforcing apiserver before any operator
# test relies on it. Starts the cluster, runs the checks, always stops it.
# Last line: "N passed, M failed"; exit status is non-zero if any failed.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="${E2E_STATE:-/tmp/lvs-e2e}"
passed=0 failed=0

ok()   { passed=$((passed + 1)); echo "ok   - $*"; }
fail() { failed=$((failed + 1)); echo "FAIL - $*"; }
# check DESC CMD... : passes when CMD exits 0; shows its output on failure.
check() {
  local desc="$1" out; shift
  if out="$("$@" 2>&1)"; then ok "$desc"; else fail "$desc"; printf '%s\n' "$out" | sed 's/^/       /'; fi
}

finish() {
  "$HERE/cluster.sh" stop || fail "cluster stop"
  echo "$passed passed, $failed failed"
  [[ $failed -eq 0 ]]
}

bin_dir="$("$HERE/tools.sh" all | tail -n1)" || { fail "build tools (tools.sh)"; echo "$passed passed, $failed failed"; exit 1; }
ok "build tools (tools.sh)"
trap 'trap - EXIT; finish; exit $?' EXIT

if ! "$HERE/cluster.sh" start; then
  fail "cluster start"
  exit 1
fi
ok "cluster start (readyz)"
eval "$("$HERE/cluster.sh" env)"
kubectl() { "$bin_dir/kubectl" "$@"; }

# The version pinned in tools/kubernetes/go.mod, so a bump needs no edit here.
want_version="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$HERE/tools/kubernetes/go.mod")"
both_versions_match() {
  [[ "$(kubectl version -o json | grep -c "\"gitVersion\": \"$want_version\"")" == 2 ]]
}
check "kubectl and server both report $want_version" both_versions_match
system_namespaces_exist() {
  local names; names="$(kubectl get ns -o name)" || return 1
  grep -qx namespace/default <<<"$names" && grep -qx namespace/kube-system <<<"$names"
}
check "kubectl get ns lists default and kube-system" system_namespaces_exist
ns="smoke-$$"
check "create namespace $ns" kubectl create namespace "$ns"
check "create serviceaccount $ns/smoke" kubectl -n "$ns" create serviceaccount smoke

token="$(kubectl -n "$ns" create token smoke --duration=10m 2>&1)"
if [[ "$token" == ey*.*.* ]]; then ok "kubectl create token"; else fail "kubectl create token: $token"; fi

# A kubeconfig that carries only the token: the admin kubeconfig also holds a
# client cert, which the apiserver would authenticate first, hiding the token.
tok_kc="$STATE/smoke-token.kubeconfig"
rm -f "$tok_kc"
kubectl --kubeconfig "$tok_kc" config set-cluster e2e --server "https://127.0.0.1:${E2E_APISERVER_PORT:-16443}" \
  --certificate-authority "$STATE/pki/ca.crt" --embed-certs >/dev/null
kubectl --kubeconfig "$tok_kc" config set-credentials sa --token "$token" >/dev/null
kubectl --kubeconfig "$tok_kc" config set-context e2e --cluster e2e --user sa >/dev/null
kubectl --kubeconfig "$tok_kc" config use-context e2e >/dev/null

token_is_the_sa() {
  [[ "$(kubectl --kubeconfig "$tok_kc" auth whoami -o jsonpath='{.status.userInfo.username}')" \
     == "system:serviceaccount:$ns:smoke" ]]
}
check "token authenticates as system:serviceaccount:$ns:smoke" token_is_the_sa

# RBAC is enforced: a fresh ServiceAccount has no grants. `can-i` prints
# "no" and exits 1 in that case; anything else (an error) is a failure.
answer="$(kubectl --kubeconfig "$tok_kc" -n "$ns" auth can-i list pods 2>&1)"; rc=$?
if [[ "$answer" == "no" && $rc -eq 1 ]]; then ok "SA token: auth can-i list pods = no"
else fail "SA token: auth can-i list pods: expected 'no' (rc 1), got '$answer' (rc $rc)"; fi

token_is_forbidden_pods() {
  local out
  ! out="$(kubectl --kubeconfig "$tok_kc" -n "$ns" get pods 2>&1)" && grep -q Forbidden <<<"$out"
}
check "SA token really gets 403 listing pods" token_is_forbidden_pods

# And the admin (system:masters) can, which shows the "no" above is RBAC and
# not a broken authorizer.
admin_can_list_pods() { [[ "$(kubectl -n "$ns" auth can-i list pods)" == yes ]]; }
check "admin: auth can-i list pods = yes" admin_can_list_pods

# helm talks to this apiserver too (the operator's chart is installed with
# it): install and uninstall helm's own starter chart. No --wait, since
# without a scheduler/kubelet no pod will ever run; the objects just have to
# be accepted by the apiserver.
helm() { "$bin_dir/helm" "$@"; }
want_helm="$(awk '$1 == "require" && $2 == "helm.sh/helm/v3" {print $3}' "$HERE/tools/helm/go.mod")"
helm_version_matches() { [[ "$(helm version --template '{{.Version}}')" == "$want_helm" ]]; }
check "helm reports $want_helm" helm_version_matches
chart_dir="$(mktemp -d)"
check "helm create starter chart" helm create "$chart_dir/starter"
check "helm install into $ns" helm install starter "$chart_dir/starter" -n "$ns"
check "helm release's Deployment exists" kubectl -n "$ns" get deployment starter
check "helm uninstall" helm uninstall starter -n "$ns"
rm -rf "$chart_dir" "$tok_kc"
# The EXIT trap stops the cluster and prints the summary line.
