#!/bin/sh
# shellcheck disable=SC2086,SC2154 # sourced by e2e-guest.sh: its helpers and variables ($K, $VIP)
# Sourced by e2e-guest.sh (busybox sh in the VM), after truth-guest.sh (whose helpers it uses):
# the director's health checks as a cluster user sees them, in `kubectl get lvs`, `kubectl
# describe lvs`, the events and the director agent's /metrics.

weight_is() { [ "$(weight_of $VIP "$1")" = "$2" ]; }
failures() { client_failures "http://$VIP/" "$1"; }
health_of() { jsonpath web "{.status.backends[?(@.address==\"$1\")].health}"; }
health_is() { [ "$(health_of "$1")" = "$2" ]; }

echo "=== checks 1. a real server's web server stops: the director ejects it, and status says why"
$K patch lvs web --type=merge -p '{"spec":{"healthCheck":{"interval":"200ms","timeout":"150ms"}}}' >/dev/null
three_marks() { [ "$(ipvs -Sn | grep -c '^-A -f ')" = 3 ]; }
wait_until "the director checks each real server through the VIP (3 firewall-mark services)" 20 three_marks
wait_until "every real server Healthy" 20 sh -c '[ "$(kubectl --kubeconfig /lvs/admin.kubeconfig get lvs web -o jsonpath="{.status.backends[*].health}")" = "Healthy Healthy Healthy" ]'
t0=$(awk '{printf "%d", $1 * 1000}' /proc/uptime)
httpd_stop rs2
wait_until "the director gives rs2 weight 0" 5 weight_is 10.10.24.22 0
echo "rs2 out $(($(awk '{printf "%d", $1 * 1000}' /proc/uptime) - t0)) ms after its web server stopped"
wait_until "status: rs2 Unhealthy" 20 health_is 10.10.24.22 Unhealthy
expect_eq "its reason" "health check failed: port 80: connection refused" \
	"$(jsonpath web '{.status.backends[?(@.address=="10.10.24.22")].reason}')"
expect_eq "kubectl get lvs: BACKENDS 2/3, still READY" "10.10.24.88 80/TCP director 2/3 True" "$(columns web)"
# rs2's own agent sees it too (nothing listens on :80): a NodeError, named first.
expect_eq "Degraded NodeError (rs2's agent sees nothing listening)" "True NodeError" "$(condition web Degraded) $(reason web Degraded)"
check "and the message has the director's verdict too" sh -c "kubectl --kubeconfig /lvs/admin.kubeconfig get lvs web -o jsonpath='{.status.conditions[?(@.type==\"Degraded\")].message}' | grep -q 'real server 10.10.24.22 gets no new connections: health check failed: port 80: connection refused'"
wait_until "a Warning event BackendUnhealthy" 10 warned web BackendUnhealthy
expect_eq "no client request fails (9 requests)" 0 "$(failures 9)"
describe web
httpd_start rs2
wait_until "rs2 back: Healthy, weight 1" 20 sh -c "[ \"\$(kubectl --kubeconfig /lvs/admin.kubeconfig get lvs web -o jsonpath='{.status.backends[?(@.address==\"10.10.24.22\")].health}')\" = Healthy ]"
check "the director gives it weight 1 again" weight_is 10.10.24.22 1
normal_event() {
	$K get events --field-selector "involvedObject.name=web,type=Normal" \
		-o jsonpath='{range .items[*]}{.reason}{"\n"}{end}' 2>/dev/null | grep -qx BackendHealthy
}
wait_until "a Normal event BackendHealthy" 10 normal_event

echo "=== checks 2. every real server down: Ready False NoHealthyBackend, and back by itself"
for rs in rs1 rs2 rs3; do httpd_stop $rs; done
wait_until "Ready False NoHealthyBackend" 20 is_reason web Ready NoHealthyBackend
echo "message: $(message web Ready)"
expect_eq "kubectl get lvs: BACKENDS 0/3" "10.10.24.88 80/TCP director 0/3 False" "$(columns web)"
describe web
for rs in rs1 rs2 rs3; do httpd_start $rs; done
wait_until "Ready again with 3/3, with no one's help" 30 sh -c '[ "$(kubectl --kubeconfig /lvs/admin.kubeconfig get lvs web -o jsonpath="{.status.backendSummary}")" = 3/3 ]'
expect_eq "and serving (6 requests)" 0 "$(failures 6)"

echo "=== checks 3. the director agent's /metrics"
in_ns director wget -qO- http://127.0.0.1:9090/metrics >/run/director.metrics
for series in 'lvs_backend_healthy{real_server="10.10.24.22",port="80",kind="tcp",vip="10.10.24.88"} 1' 'lvs_health_check_transitions_total{to="unhealthy"}' 'lvs_health_check_duration_seconds_count{kind="tcp",result="pass"}'; do
	check "/metrics has $series" grep -qF "$series" /run/director.metrics
done
$K patch lvs web --type=json -p '[{"op":"remove","path":"/spec/healthCheck"}]' >/dev/null
