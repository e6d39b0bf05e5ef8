#!/usr/bin/env bash
# make bench-cluster: the control path at scale, against a real kube-apiserver (cluster.sh) on
# this host. BENCH_AGENTS agents (50) run as processes with the in-memory data plane (no kernel:
# `--memory-data-plane`), one of them a director; the controller runs beside them; then
# BENCH_OBJECTS LvsServices (1,000), each selecting every other node as its real servers
# (backendNodeSelector role=web), are applied at once. Printed, not asserted:
#   - the time from applying them to all Ready;
#   - API writes per node for one change burst (every object's scheduler changed), from the API
#     server's apiserver_request_total: the agents' report writes, the controller's status writes;
#   - the largest LvsService and LvsNodeReport, as JSON;
#   - the controller's and the agents' RSS.
# Targets (the issue's): all Ready within 60 s on a 2-core machine, at most 2 writes per node per
# change burst, every object under 64 KiB, controller RSS under 128 MiB.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BIN="${CARGO_TARGET_DIR:-$HOME/.cache/lvs-operator/target}/release/lvs-operator"
AGENTS=${BENCH_AGENTS:-50}
OBJECTS=${BENCH_OBJECTS:-1000}
export E2E_STATE=${BENCH_STATE:-/tmp/lvs-bench}
export E2E_APISERVER_PORT=17443 E2E_ETCD_PORT=13379 E2E_ETCD_PEER_PORT=13380
work="$E2E_STATE/bench"
# Agent i serves its metrics on 127.0.0.1:METRICS_BASE+i.
METRICS_BASE=${BENCH_METRICS_BASE:-19000}

[[ -x "$BIN" ]] || { echo "bench-cluster.sh: $BIN missing; run make release" >&2; exit 2; }
bash "$HERE/tools.sh" >/dev/null
export PATH="$ROOT/.tools/bin:$PATH"
bash "$HERE/cluster.sh" start >/dev/null
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  bash "$HERE/cluster.sh" stop >/dev/null 2>&1 || true
}
trap cleanup EXIT
export KUBECONFIG=$E2E_STATE/admin.kubeconfig
rm -rf "$work" && mkdir -p "$work"
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}'; }

kubectl apply --server-side -f "$ROOT/crds/" >/dev/null
kubectl wait --for condition=established --timeout=60s crd --all >/dev/null
kubectl create namespace lvs-operator >/dev/null
kubectl apply -f - >/dev/null <<YAML
apiVersion: lvs-operator.io/v1alpha1
kind: LvsAddressPool
metadata: {name: bench}
spec: {addresses: ["10.30.0.0/16"], namespaces: [default]}
YAML

# Nodes: bench-1 the director (10.30.255.1), the others real servers (10.30.1.N, role=web).
ip_of() { if [[ $1 == 1 ]]; then echo 10.30.255.1; else echo "10.30.$((1 + $1 / 250)).$(($1 % 250 + 1))"; fi; }
for i in $(seq "$AGENTS"); do
  labels="kubernetes.io/hostname: bench-$i"
  [[ $i == 1 ]] && labels="$labels, lvs-operator.io/director: \"true\"" || labels="$labels, role: web"
  printf 'apiVersion: v1\nkind: Node\nmetadata: {name: bench-%s, labels: {%s}}\n' "$i" "$labels"
  echo ---
done | kubectl create -f - >/dev/null
for i in $(seq "$AGENTS"); do
  kubectl patch node "bench-$i" --subresource=status --type=merge \
    -p "{\"status\":{\"addresses\":[{\"type\":\"InternalIP\",\"address\":\"$(ip_of "$i")\"}]}}" >/dev/null
done

"$BIN" controller --kubeconfig "$KUBECONFIG" --leader-election=false --lease-namespace lvs-operator \
  --metrics-addr 127.0.0.1:0 --metrics-secure=false --log-level "${BENCH_CONTROLLER_LOG:-warn}" >"$work/controller.log" 2>&1 &
controller=$!
pids+=("$controller")
agent_pids=()
for i in $(seq "$AGENTS"); do
  "$BIN" agent --node-name "bench-$i" --kubeconfig "$KUBECONFIG" --lease-namespace lvs-operator \
    --state-dir "$work/state-$i" --memory-data-plane "eth0=$(ip_of "$i")/16" \
    --metrics-addr "127.0.0.1:$((METRICS_BASE + i))" --metrics-secure=false --peer-listen 127.0.0.1:0 \
    --resync-period 30s --log-level warn >"$work/agent-$i.log" 2>&1 &
  pids+=("$!")
  agent_pids+=("$!")
done
for _ in $(seq 120); do
  [[ $(kubectl -n lvs-operator get leases --no-headers 2>/dev/null | grep -c lvs-agent-) -ge $AGENTS ]] && break
  sleep 0.5
done
echo "$AGENTS agents and the controller up ($(kubectl -n lvs-operator get leases --no-headers | grep -c lvs-agent-) heartbeat Leases)"

writes() { # RESOURCE [SUBRESOURCE] -> write requests the API server has served for it so far
  kubectl get --raw /metrics | awk -v r="resource=\"$1\"" -v sr="subresource=\"${2:-}\"" '
    /^apiserver_request_total\{/ && index($0, r) && index($0, sr) && $0 ~ /verb="(APPLY|PATCH|UPDATE|CREATE|POST|PUT)"/ {s += $NF}
    END {printf "%d", s}'
}
ready_count() {
  kubectl get lvs -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' |
    grep -c '^True$' || true
}
at_generation() { # GEN -> objects whose status observed GEN and are Ready
  kubectl get lvs -o jsonpath='{range .items[*]}{.status.observedGeneration} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' |
    grep -c "^$1 True$" || true
}

cpu_s() { # PID... -> CPU seconds (user + system) they used so far
  local ticks t=0 p
  ticks=$(getconf CLK_TCK)
  for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done
  awk -v t="$t" -v k="$ticks" 'BEGIN {printf "%.0f", t / k}'
}
apiserver=$(pgrep -f "kube-apiserver.*--secure-port=$E2E_APISERVER_PORT" | head -n1)
etcd=$(pgrep -f "etcd .*--data-dir=$E2E_STATE/etcd" | head -n1)
cpu_all() { # -> "API server / etcd / controller / agents" CPU seconds so far
  echo "$(cpu_s "$apiserver") $(cpu_s "$etcd") $(cpu_s "$controller") $(cpu_s "${agent_pids[@]}")"
}
cpu_used() { # BEFORE AFTER -> the difference, as "a / b / c / d"
  awk -v a="$1" -v b="$2" 'BEGIN {split(a, x, " "); split(b, y, " "); printf "%d / %d / %d / %d", y[1] - x[1], y[2] - x[2], y[3] - x[3], y[4] - x[4]}'
}
resyncs() { # -> resyncs all agents have done so far
  local i n=0 r
  for i in $(seq "$AGENTS"); do
    r=$(curl -s "http://127.0.0.1:$((METRICS_BASE + i))/metrics" | awk '$1 == "lvs_operator_agent_resyncs_total" {print $2}')
    n=$((n + ${r:-0}))
  done
  echo "$n"
}

for i in $(seq "$OBJECTS"); do
  cat <<YAML
apiVersion: lvs-operator.io/v1alpha1
kind: LvsService
metadata: {name: web-$i, namespace: default}
spec:
  vip: 10.30.$((100 + i / 250)).$((i % 250 + 1))
  ports: [{port: 80}]
  scheduler: rr
  backendNodeSelector: {matchLabels: {role: web}}
  healthCheck: {type: None}
---
YAML
done >"$work/objects.yaml"
reports_before=$(writes lvsnodereports)
status_before=$(writes lvsservices status)
cpu0=$(cpu_all)
resyncs0=$(resyncs)
t0=$(now)
kubectl apply --server-side -f "$work/objects.yaml" >/dev/null
applied=$(since "$t0")
ready=0
for _ in $(seq 600); do
  ready=$(ready_count)
  [[ $ready -ge $OBJECTS ]] && break
  sleep 1
done
all_ready=$(since "$t0")
cpu1=$(cpu_all)
resyncs1=$(resyncs)
reports_create=$(( $(writes lvsnodereports) - reports_before ))
status_create=$(( $(writes lvsservices status) - status_before ))
echo "applied $OBJECTS LvsServices in ${applied} s; $ready Ready after ${all_ready} s"

# One change burst: every object's scheduler, in one kubectl apply.
sleep 5
reports_before=$(writes lvsnodereports)
status_before=$(writes lvsservices status)
sed -i 's/scheduler: rr/scheduler: wrr/' "$work/objects.yaml"
cpu2=$(cpu_all)
resyncs2=$(resyncs)
t1=$(now)
kubectl apply --server-side -f "$work/objects.yaml" >/dev/null
burst_applied=$(since "$t1")
for _ in $(seq 600); do
  [[ $(at_generation 2) -ge $OBJECTS ]] && break
  sleep 1
done
burst=$(since "$t1")
cpu3=$(cpu_all)
resyncs3=$(resyncs)
sleep 5
report_writes=$(( $(writes lvsnodereports) - reports_before ))
status_writes=$(( $(writes lvsservices status) - status_before ))

largest() { # KIND -> bytes of the largest object as compact JSON (as stored: with its managedFields), and its name (kept in $work)
  kubectl get "$1" -A -o json --show-managed-fields | python3 -c '
import json, sys
items = json.load(sys.stdin)["items"]
size, name, o = max((len(json.dumps(o, separators=(",", ":"))), o["metadata"]["name"], o) for o in items)
json.dump(o, open(sys.argv[1], "w"), indent=1)
print(size, name)' "$work/largest-$1.json"
}
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
agent_rss=$(for p in "${agent_pids[@]}"; do rss_kib "$p"; done | sort -n)
read -r lvs_size lvs_name <<<"$(largest lvs)"
read -r report_size report_name <<<"$(largest lvsnodereports)"

echo
echo "=== bench-cluster: $AGENTS agents (in-memory data plane), $OBJECTS LvsServices selecting $((AGENTS - 1)) real servers each"
printf '%-58s %s\n' "measure" "value (target)"
printf '%-58s %s\n' "apply -> all $OBJECTS Ready" "${all_ready} s (60 s)"
printf '%-58s %s\n' "  of which kubectl apply" "${applied} s"
printf '%-58s %s\n' "  CPU seconds then: API server / etcd / controller / agents" "$(cpu_used "$cpu0" "$cpu1")"
printf '%-58s %s\n' "  resyncs per agent then" "$(awk -v r=$((resyncs1 - resyncs0)) -v n="$AGENTS" 'BEGIN {printf "%.1f", r / n}')"
printf '%-58s %s\n' "report writes while they were created, per node" \
  "$(awk -v w="$reports_create" -v n="$AGENTS" 'BEGIN {printf "%.1f", w / n}')"
printf '%-58s %s\n' "controller status writes per object while they were created" \
  "$(awk -v w="$status_create" -v n="$OBJECTS" 'BEGIN {printf "%.2f", w / n}')"
printf '%-58s %s\n' "change burst (every scheduler) -> all Ready at generation 2" "${burst} s"
printf '%-58s %s\n' "  of which kubectl apply" "${burst_applied} s"
printf '%-58s %s\n' "  CPU seconds then: API server / etcd / controller / agents" "$(cpu_used "$cpu2" "$cpu3")"
printf '%-58s %s\n' "  resyncs per agent then" "$(awk -v r=$((resyncs3 - resyncs2)) -v n="$AGENTS" 'BEGIN {printf "%.1f", r / n}')"
printf '%-58s %s\n' "  report writes per node in that burst" \
  "$(awk -v w="$report_writes" -v n="$AGENTS" 'BEGIN {printf "%.1f", w / n}') (2)"
printf '%-58s %s\n' "  controller status writes per object in that burst" \
  "$(awk -v w="$status_writes" -v n="$OBJECTS" 'BEGIN {printf "%.2f", w / n}')"
printf '%-58s %s\n' "largest LvsService ($lvs_name)" "$((lvs_size / 1024)) KiB, $lvs_size B (64 KiB)"
printf '%-58s %s\n' "largest LvsNodeReport ($report_name)" "$((report_size / 1024)) KiB, $report_size B (64 KiB)"
printf '%-58s %s\n' "controller RSS" "$(( $(rss_kib "$controller") / 1024 )) MiB (128 MiB)"
printf '%-58s %s\n' "agent RSS, median / max" \
  "$(( $(echo "$agent_rss" | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}') / 1024 )) / $(( $(echo "$agent_rss" | tail -n1) / 1024 )) MiB"
printf '%-58s %s\n' "CPU seconds: API server / etcd / controller / all agents" \
  "$(cpu_s "$(pgrep -f "kube-apiserver.*--secure-port=$E2E_APISERVER_PORT" | head -n1)") / $(cpu_s "$(pgrep -f "etcd .*--data-dir=$E2E_STATE/etcd" | head -n1)") / $(cpu_s "$controller") / $(cpu_s "${agent_pids[@]}")"
