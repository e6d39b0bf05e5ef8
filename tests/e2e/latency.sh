#!/bin/sh
# Guest side of make e2e: apply-to-programmed latency, run inside the director's namespace so that
# neither sending an update nor looking at the kernel costs a process start (slow under TCG):
# each update is a PATCH written with busybox nc to a `kubectl proxy` in this namespace, and the
# kernel is read from /proc/net/ip_vs with busybox applets. Prints one latency in ms per update.
#   latency.sh COUNT OUTFILE
set -u
count=$1 out=$2

# Milliseconds since boot, to 10 ms (/proc/uptime has centiseconds).
now_ms() {
	read -r _up _ </proc/uptime
	echo $((${_up%.*} * 1000 + 1${_up#*.} * 10 - 1000))
}

# busybox nc hangs up when its input ends, and the proxy then cancels the request: keep the input
# open until the answer is in (the pipeline runs in the background meanwhile).
patch_weight() {
	_body="[{\"op\":\"replace\",\"path\":\"/spec/backends/0/weight\",\"value\":$1}]"
	{
		printf 'PATCH /apis/lvs-operator.io/v1alpha1/namespaces/default/lvsservices/web HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json-patch+json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' \
			"${#_body}" "$_body"
		sleep 3
	} | nc 127.0.0.1 8001 | head -1 >/run/patch.status
}

# /proc/net/ip_vs names 10.10.24.21:80 as 0A0A1815:0050, followed by the method and the weight.
shows_weight() {
	grep -q "0A0A1815:0050 *Route *$1 " /proc/net/ip_vs
}

kubectl --kubeconfig /lvs/admin.kubeconfig proxy --port 8001 >/run/logs/proxy.log 2>&1 &
proxy=$!
i=0
until printf 'GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' | { cat; sleep 1; } | nc 127.0.0.1 8001 2>/dev/null | grep -q ' 200 '; do
	i=$((i + 1))
	[ $i -gt 60 ] && { echo "latency.sh: kubectl proxy did not come up"; exit 1; }
	sleep 0.5
done

: >"$out"
w=$(sed -n 's/.*0A0A1815:0050 *Route *\([0-9]*\) .*/\1/p' /proc/net/ip_vs | head -1)
for i in $(seq "$count"); do
	w=$((w % 9 + 1))
	t0=$(now_ms)
	patch_weight $w &
	patcher=$!
	n=0
	until shows_weight $w; do
		n=$((n + 1))
		[ $n -gt 100000 ] && break
	done
	echo $(($(now_ms) - t0)) >>"$out"
	wait $patcher
	grep -q ' 200 ' /run/patch.status || echo "latency.sh: PATCH answered: $(cat /run/patch.status)"
done
kill $proxy
