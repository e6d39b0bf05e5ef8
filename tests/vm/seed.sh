#!/bin/sh
# Guest script: proves the harness by doing the reference LVS-DR setup by hand,
# exactly as an admin would, and checking the kernel really load-balances.
# Run from the repo root:  bash tests/vm/run.sh tests/vm/seed.sh
# (busybox sh in the guest: no bash-isms.)
set -u
. /lvs/lib.sh
topology_up

VIP=10.10.24.88

echo "--- sanity: the LAN works before any LVS config"
for rs in $LVS_REAL_SERVERS; do
	expect_eq "client reaches $rs over IPv4" "$rs" "$(http_get client "http://$(ip4 "$rs")/" 2>&1)"
	expect_eq "client reaches $rs over IPv6" "$rs" "$(http_get client "http://[$(ip6 "$rs")]/" 2>&1)"
done

seed_setup $VIP

echo "--- ipvsadm -Sn"
in_ns director ipvsadm -Sn

echo "--- client: 6 requests to the VIP"
got=
for i in 1 2 3 4 5 6; do
	r=$(http_get client "http://$VIP/" 2>&1)
	echo "request $i -> $r"
	got="$got $r"
done
got=${got# }
# Every real server answered, in a repeating cycle of three.
is_cycle_of_three() {
	[ $# -eq 6 ] && [ "$1" != "$2" ] && [ "$2" != "$3" ] && [ "$1" != "$3" ] &&
		[ "$1 $2 $3" = "$4 $5 $6" ]
}
# shellcheck disable=SC2086 # split into one argument per answer
check "each real server answered once per cycle" is_cycle_of_three $got
# The exact order: ip_vs_rr walks the destination list from its head, and the
# kernel inserts each new destination at the head (list_add_rcu in
# ip_vs_ctl.c), so rr serves the LAST added real server first: adding .21,
# .22, .23 yields rs3, rs2, rs1 (`ipvsadm -Ln` sorts, so it does not show
# this). Pinned here so a kernel change in this behaviour is noticed.
expect_eq "round-robin order (reverse of insertion)" "rs3 rs2 rs1 rs3 rs2 rs1" "$got"

# The client must have learnt the VIP from the director, not from a real server.
vip_mac=$(in_ns client ip neigh show $VIP | awk '{for (i = 1; i < NF; i++) if ($i == "lladdr") print $(i + 1)}')
dir_mac=$(in_ns director cat /sys/class/net/eth0/address)
expect_eq "client ARP entry for VIP is the director's MAC" "$dir_mac" "$vip_mac"

echo "--- ipvsadm -Ln --stats"
# The totals shown are folded in from per-CPU counters by IPVS's rate
# estimator every 2 s, so wait until all 6 connections show up.
# Service line: Prot LocalAddress:Port Conns InPkts OutPkts InBytes OutBytes
service_stats() {
	in_ns director ipvsadm -Ln --stats | awk -v s="$VIP:80" '$1 == "TCP" && $2 == s {print $3, $4, $5}'
}
i=0
while [ "$(service_stats | cut -d' ' -f1)" != 6 ] && [ $i -lt 50 ]; do
	sleep 0.2
	i=$((i + 1))
done
in_ns director ipvsadm -Ln --stats
# shellcheck disable=SC2046 # split into Conns InPkts OutPkts
set -- $(service_stats)
expect_eq "6 connections scheduled" 6 "${1:-}"
check "director saw inbound packets" [ "${2:-0}" -gt 0 ]
# Direct Routing: replies go rs -> client without touching the director.
expect_eq "director saw zero outbound packets (DR)" 0 "${3:-}"

summary
