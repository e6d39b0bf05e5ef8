#!/bin/sh
# shellcheck disable=SC1091,SC2046,SC2086 # guest-only paths; splitting $(...), $B, $ST is intended
# Guest script of `make bench` (busybox sh inside the VM; see tests/vm/README.md "Benchmark").
#
# One VIP (10.30.0.1) with ports 1..N, each port M DR destinations 10.30.1.1..M, as LvsService
# objects of <= 64 ports (the last object holds port N alone, so that one backend weight change in
# it is exactly one destination change). The same table as an `ipvsadm -R` file.
#
#   1. cold: agent --once vs ipvsadm -R, each in a FRESH netns (a flushed one keeps the deleted
#      destinations on the trash list and reloads ~5x slower), interleaved, median of BENCH_RUNS
#   2. no-change resync: agent --once again vs ipvsadm -Sn >/dev/null, median of BENCH_RUNS
#   3. one weight change: agent --once; netlink messages and sendmsg/sendto syscalls (strace)
#   4. agent peak RSS during the cold runs (GNU time %M)
#
# Params in /lvs/bench.env: BENCH_N BENCH_M BENCH_RUNS BENCH_STRICT.
set -u
. /lvs/lib.sh
[ -f /lvs/bench.env ] && . /lvs/bench.env
N=${BENCH_N:-10000}
M=${BENCH_M:-10}
RUNS=${BENCH_RUNS:-3}
STRICT=${BENCH_STRICT:-0}
VIP=10.30.0.1
IP=/usr/sbin/ip
GT=/usr/bin/gnutime # GNU time: busybox `time -v` reports ru_maxrss x4 (treats kB as pages)
B=/run/bench
mkdir -p $B
ROWS=$((N * (M + 1)))

T0=$(cut -d' ' -f1 /proc/uptime)
log() { echo "bench [$(awk -v t0="$T0" '{printf "%6.1f", $1 - t0}' /proc/uptime)s] $*"; }
die() { fail "$*"; summary; exit 1; }

# median of the numbers on stdin (one per line)
median() { sort -n | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "inf"}'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN {exit !(a <= b)}'; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN {exit !(a < b)}'; }

if [ "$N" -lt 2 ] || [ "$N" -gt 65535 ]; then die "BENCH_N must be 2..65535, got $N"; fi
if [ "$M" -lt 1 ] || [ "$M" -gt 250 ]; then die "BENCH_M must be 1..250, got $M"; fi
log "N=$N services x M=$M destinations ($ROWS ipvsadm -S lines), $RUNS runs, $(nproc) vCPUs"

# --- generate the table ---------------------------------------------------------------------
# objs.yaml: ports 1..N-1 in objects of 64, port N alone in "bench-last".
# changed.yaml: the same, with backend 10.30.1.1 of bench-last at weight 2.
gen_yaml() {
	awk -v n="$N" -v m="$M" -v vip="$VIP" -v w2="$1" 'BEGIN {
		be = ""
		for (k = 1; k <= m; k++) be = be (k > 1 ? ", " : "") "{address: 10.30.1." k "}"
		be2 = be; sub(/\{address: 10\.30\.1\.1\}/, "{address: 10.30.1.1, weight: 2}", be2)
		o = 0
		for (p = 1; p < n; p += 64) {
			last = p + 63; if (last > n - 1) last = n - 1
			ports = ""
			for (q = p; q <= last; q++) ports = ports (q > p ? ", " : "") "{port: " q "}"
			doc("bench-" o++, ports, be)
		}
		doc("bench-last", "{port: " n "}", w2 ? be2 : be)
	}
	function doc(name, ports, backends) {
		print "---\napiVersion: lvs-operator.io/v1alpha1\nkind: LvsService\nmetadata: {name: " name "}"
		# No health checks: their firewall-mark services are not part of the ipvsadm -R table.
		print "spec:\n  vip: " vip "\n  ports: [" ports "]\n  scheduler: rr\n  backends: [" backends "]\n  healthCheck: {type: None}"
	}'
}
gen_yaml 0 >$B/objs.yaml
gen_yaml 1 >$B/changed.yaml
awk -v n="$N" -v m="$M" -v vip="$VIP" 'BEGIN {
	for (p = 1; p <= n; p++) {
		print "-A -t " vip ":" p " -s rr"
		for (k = 1; k <= m; k++) print "-a -t " vip ":" p " -r 10.30.1." k ":" p " -g -w 1"
	}
}' >$B/restore.txt
log "generated $(grep -c '^kind: LvsService' $B/objs.yaml) objects ($(wc -c <$B/objs.yaml) bytes), restore file $(wc -l <$B/restore.txt) lines"

# --- helpers ----------------------------------------------------------------------------------
fresh_ns() {
	$IP netns add "$1" || die "netns add $1"
	$IP -n "$1" link set lo up
	$IP -n "$1" link add bench0 type dummy
	$IP -n "$1" addr add 10.30.0.254/16 dev bench0
	$IP -n "$1" link set bench0 up
}

# Waits until the VM's CPUs are idle (netns teardown, RCU frees) so runs don't overlap: two
# consecutive 0.5 s samples with >= 80 % idle, at most 30 s.
settle() {
	_i=0
	_ok=0
	while [ $_i -lt 60 ] && [ $_ok -lt 2 ]; do
		set -- $(head -1 /proc/stat)
		_t1=$(($2 + $3 + $4 + $5 + $6 + $7 + $8)) _d1=$5
		sleep 0.5
		set -- $(head -1 /proc/stat)
		_t2=$(($2 + $3 + $4 + $5 + $6 + $7 + $8)) _d2=$5
		if [ $(((_d2 - _d1) * 100)) -ge $(((_t2 - _t1) * 80)) ]; then _ok=$((_ok + 1)); else _ok=0; fi
		_i=$((_i + 1))
	done
}

drop_ns() {
	$IP netns exec "$1" ipvsadm -C
	$IP netns del "$1"
	settle
}

# agent NS STATE YAML TIMEFILE [wrapper...]: one --once converge, stderr to $B/agent.err
agent() {
	_ns=$1 _st=$2 _y=$3 _tf=$4
	shift 4
	$IP netns exec "$_ns" $GT -q -o "$_tf" -f '%e %M' "$@" lvs-operator agent --standalone "$_y" \
		--role director --once --interface bench0 --state-dir "$_st" >$B/agent.out 2>$B/agent.err
}

rows() { $IP netns exec "$1" ipvsadm -Sn | wc -l; }

applied() { grep -c 'applied:' $B/agent.err; }

# --- 1. cold programming ----------------------------------------------------------------------
: >$B/cold.agent
: >$B/cold.ipvsadm
: >$B/cold.rss
settle
r=1
while [ $r -le "$RUNS" ]; do
	ns=ipv$r
	fresh_ns $ns
	log "cold run $r/$RUNS: ipvsadm -R in fresh netns $ns ..."
	$IP netns exec $ns $GT -q -o $B/t -f '%e %M' ipvsadm -R <$B/restore.txt || die "ipvsadm -R failed"
	set -- $(cat $B/t)
	echo "$1" >>$B/cold.ipvsadm
	got=$(rows $ns)
	log "  ipvsadm -R: $1 s, ipvsadm -Sn: $got lines"
	[ "$got" = "$ROWS" ] || die "ipvsadm -R run $r: $got lines, want $ROWS"
	if [ $r = 1 ]; then $IP netns exec $ns ipvsadm -Sn | sort >$B/table.ipvsadm; fi
	drop_ns $ns

	ns=agent$r
	fresh_ns $ns
	log "cold run $r/$RUNS: agent --once in fresh netns $ns ..."
	agent $ns $B/state$r $B/objs.yaml $B/t || { tail -n 20 $B/agent.err; die "agent cold run $r failed"; }
	set -- $(cat $B/t)
	echo "$1" >>$B/cold.agent
	echo "$2" >>$B/cold.rss
	got=$(rows $ns)
	log "  agent: $1 s, peak RSS $2 kB, $(applied) applied: lines, ipvsadm -Sn: $got lines"
	[ "$got" = "$ROWS" ] || die "agent run $r: $got lines, want $ROWS"
	if [ $r = 1 ]; then
		$IP netns exec $ns ipvsadm -Sn | sort >$B/table.agent
		if cmp -s $B/table.agent $B/table.ipvsadm; then
			pass "the agent's table equals ipvsadm -R's ($ROWS lines, sorted ipvsadm -Sn)"
		else
			diff $B/table.ipvsadm $B/table.agent | head -n 10
			fail "the agent's table differs from ipvsadm -R's"
		fi
		has_vip=$($IP -n $ns addr show dev bench0 | grep -c "$VIP/32")
		expect_eq "the agent put the VIP on bench0" 1 "$has_vip"
	fi
	# keep the last agent netns: phases 2 and 3 run on its table
	[ $r = "$RUNS" ] || drop_ns $ns
	r=$((r + 1))
done
pass "every cold run produced $ROWS ipvsadm -Sn lines (agent and ipvsadm -R)"
NS=agent$RUNS
STATE=$B/state$RUNS

# --- 2. no-change resync ----------------------------------------------------------------------
: >$B/resync.agent
: >$B/resync.ipvsadm
r=1
while [ $r -le "$RUNS" ]; do
	log "resync run $r/$RUNS ..."
	agent $NS $STATE $B/objs.yaml $B/t || { tail -n 20 $B/agent.err; die "agent resync run $r failed"; }
	set -- $(cat $B/t)
	echo "$1" >>$B/resync.agent
	n_applied=$(applied)
	$IP netns exec $NS $GT -q -o $B/t -f '%e %M' ipvsadm -Sn >/dev/null
	set -- $1 $(cat $B/t)
	echo "$2" >>$B/resync.ipvsadm
	log "  agent --once (no change): $1 s, $n_applied applied: lines; ipvsadm -Sn: $2 s"
	expect_eq "resync run $r writes nothing (applied: lines)" 0 "$n_applied"
	r=$((r + 1))
done

# strace: which netlink messages a run sends (sendmsg/sendto only; -s 65536 so that strace
# decodes every netlink message of a batch). Every sendmsg/sendto line is one syscall; each
# "nlmsg_len=" is one netlink message; dump requests carry NLM_F_DUMP (strace prints 0x300 for
# the generic netlink IPVS family it cannot name); the agent asks for an ACK on every write, so
# NLM_F_ACK messages are the writes. Besides dumps a run sends two lookups (CTRL_CMD_GETFAMILY
# "IPVS" and IPVS_CMD_GET_INFO). The no-change run is the baseline of the one-change run: the
# difference in syscalls and in non-dump messages is what the change cost.
ST="strace -f -qq --seccomp-bpf -s 65536 -e trace=sendmsg,sendto"
count_trace() {
	_sys=$(grep -E 'send(msg|to)\(' "$1" | grep -vc 'resumed>')
	_msgs=$(grep -o 'nlmsg_len=' "$1" | wc -l)
	_dumps=$(grep -oE 'nlmsg_flags=[A-Z_|]*(NLM_F_DUMP|0x300)' "$1" | wc -l)
	_acks=$(grep -oE 'nlmsg_flags=[A-Z_|]*NLM_F_ACK' "$1" | wc -l)
	echo "$_sys $_msgs $_dumps $((_msgs - _dumps)) $_acks"
}
show_non_dumps() {
	grep -vE 'nlmsg_flags=[A-Z_|]*(NLM_F_DUMP|0x300)' "$1" | cut -c1-240
}
log "strace of a no-change run ..."
agent $NS $STATE $B/objs.yaml $B/t $ST -o $B/strace.nochange || die "agent under strace (no change) failed"
set -- $(count_trace $B/strace.nochange)
NC_SYS=$1 NC_MSGS=$2 NC_DUMPS=$3 NC_OTHER=$4 NC_ACKS=$5 NC_APPLIED=$(applied)
log "  no change: $NC_SYS sendmsg/sendto syscalls, $NC_MSGS netlink messages: $NC_DUMPS dump requests, $NC_OTHER others, $NC_ACKS with NLM_F_ACK; $NC_APPLIED applied: lines"
echo "non-dump messages of the no-change run:"
show_non_dumps $B/strace.nochange
expect_eq "no-change run: no applied: line" 0 "$NC_APPLIED"
expect_eq "no-change run: no write (NLM_F_ACK) message" 0 "$NC_ACKS"

# --- 3. one destination change ----------------------------------------------------------------
log "one weight change (10.30.1.1 of port $N to weight 2) under strace ..."
agent $NS $STATE $B/changed.yaml $B/t $ST -o $B/strace.change || { tail -n 20 $B/agent.err; die "agent (one change) failed"; }
set -- $(count_trace $B/strace.change)
CH_SYS=$1 CH_MSGS=$2 CH_DUMPS=$3 CH_OTHER=$4 CH_ACKS=$5 CH_APPLIED=$(applied)
grep applied: $B/agent.err
log "  one change: $CH_SYS sendmsg/sendto syscalls, $CH_MSGS netlink messages: $CH_DUMPS dump requests, $CH_OTHER others, $CH_ACKS with NLM_F_ACK; $CH_APPLIED applied: lines"
echo "non-dump messages of the one-change run:"
show_non_dumps $B/strace.change
W_SYS=$((CH_SYS - NC_SYS))
W_MSGS=$((CH_OTHER - NC_OTHER))
expect_eq "one change: exactly 1 applied: line" 1 "$CH_APPLIED"
expect_eq "one change: exactly 1 write (NLM_F_ACK) message" 1 "$CH_ACKS"
expect_eq "one change: 1 non-dump message more than the no-change run" 1 "$W_MSGS"
expect_eq "one change: 1 sendmsg/sendto syscall more than the no-change run" 1 "$W_SYS"
check "the kernel has the new weight" sh -c \
	"$IP netns exec $NS ipvsadm -Ln -t $VIP:$N | grep -qE '10\.30\.1\.1:$N +Route +2 '"

# --- report -----------------------------------------------------------------------------------
COLD_A=$(median <$B/cold.agent)
COLD_I=$(median <$B/cold.ipvsadm)
RES_A=$(median <$B/resync.agent)
RES_I=$(median <$B/resync.ipvsadm)
RSS_KB=$(sort -n $B/cold.rss | tail -n1)
RSS_MB=$(awk -v k="$RSS_KB" 'BEGIN {printf "%.1f", k / 1024}')
COLD_R=$(ratio "$COLD_A" "$COLD_I")
RES_R=$(ratio "$RES_A" "$RES_I")
ok() { if "$@"; then echo yes; else echo NO; fi; }
OK_COLD=$(ok le "$COLD_R" 0.5)
OK_RES=$(ok le "$RES_R" 1.0)
OK_NC=$(ok [ "$NC_APPLIED" = 0 -a "$NC_ACKS" = 0 ])
OK_W=$(ok [ "$CH_APPLIED" = 1 -a "$CH_ACKS" = 1 -a "$W_MSGS" = 1 -a "$W_SYS" = 1 ])
OK_RSS=$(ok lt "$RSS_MB" 64)

echo
echo "BENCH raw: N=$N M=$M runs=$RUNS rows=$ROWS vcpus=$(nproc)"
echo "BENCH raw: cold agent s: $(tr '\n' ' ' <$B/cold.agent)"
echo "BENCH raw: cold ipvsadm -R s: $(tr '\n' ' ' <$B/cold.ipvsadm)"
echo "BENCH raw: cold agent peak RSS kB: $(tr '\n' ' ' <$B/cold.rss)"
echo "BENCH raw: resync agent s: $(tr '\n' ' ' <$B/resync.agent)"
echo "BENCH raw: resync ipvsadm -Sn s: $(tr '\n' ' ' <$B/resync.ipvsadm)"
echo "BENCH raw: strace no-change: syscalls=$NC_SYS messages=$NC_MSGS dumps=$NC_DUMPS non-dump=$NC_OTHER acked-writes=$NC_ACKS applied=$NC_APPLIED"
echo "BENCH raw: strace one-change: syscalls=$CH_SYS messages=$CH_MSGS dumps=$CH_DUMPS non-dump=$CH_OTHER acked-writes=$CH_ACKS applied=$CH_APPLIED"
echo
echo "BENCH | measurement ($N x $M) | agent | baseline | ratio | target | ok |"
echo "BENCH | --- | --- | --- | --- | --- | --- |"
echo "BENCH | cold programming, fresh netns (median of $RUNS) | $COLD_A s | $COLD_I s (ipvsadm -R) | $COLD_R | <= 0.5 | $OK_COLD |"
echo "BENCH | no-change resync (median of $RUNS) | $RES_A s | $RES_I s (ipvsadm -Sn) | $RES_R | <= 1.0 | $OK_RES |"
echo "BENCH | netlink writes, no-change resync | $NC_ACKS (applied: $NC_APPLIED; $NC_SYS syscalls, $NC_DUMPS dump requests) | - | - | 0 | $OK_NC |"
echo "BENCH | netlink writes, one destination change | $CH_ACKS (applied: $CH_APPLIED; vs no-change +$W_MSGS message, +$W_SYS syscall) | - | - | 1 | $OK_W |"
echo "BENCH | agent peak RSS, cold run (max of $RUNS) | $RSS_MB MiB | - | - | < 64 MiB | $OK_RSS |"

if [ "$STRICT" = 1 ]; then
	for v in $OK_COLD $OK_RES $OK_RSS; do [ $v = yes ] || fail "a performance target was missed (BENCH_STRICT=1)"; done
fi
summary
