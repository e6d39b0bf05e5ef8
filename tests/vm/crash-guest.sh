#!/bin/sh
# shellcheck disable=SC1091,SC2086 # guest-only paths; word splitting is intended
# Sourced by dataplane-guest.sh (busybox sh in the VM): kill -9 the agent at many moments of its
# work, then prove that a restart leaves nothing unowned.
#
# A director with 1,000 IPVS services (10 VIPs x 100 ports, 3 DR real servers each) next to a
# foreign service and a foreign address, and a real server with the 10 VIPs on lo next to a
# pre-set (stricter) arp_ignore and a pre-set arp_announce. For each of CRASH_TRIALS moments spread
# over a measured cold run, and again over a removal run:
#   1. start `agent --once`, kill -9 it at that moment;
#   2. run `agent --once` again to the end: it exits 0 (it found no service of its own that it
#      takes for someone else's), and the kernel equals the desired state exactly;
#   3. after the removal run, the IPVS table, the addresses and the sysctls equal what they were
#      before the agent first ran; so everything the killed agent made was in its ledger.

CRASH_TRIALS=${CRASH_TRIALS:-20}
CR=/run/crash
mkdir -p $CR/objects $CR/empty

crash_setup() {
	for ns in crashdir crashrs; do
		$IP netns add $ns
		in_ns $ns $IP link set lo up
		in_ns $ns $IP link add bench0 type dummy
		in_ns $ns $IP addr add 10.40.0.254/16 dev bench0
		in_ns $ns $IP link set bench0 up
	done
	# Someone else's: they must survive every run.
	in_ns crashdir ipvsadm -A -t 10.40.0.99:443 -s wlc
	in_ns crashdir ipvsadm -a -t 10.40.0.99:443 -r 10.40.1.1:443 -m -w 2
	in_ns crashdir $IP addr add 10.40.0.77/32 dev bench0
	in_ns crashrs $IP addr add 10.40.0.66/32 dev lo
	in_ns crashrs sysctl -q -w net.ipv4.conf.all.arp_ignore=2
	in_ns crashrs sysctl -q -w net.ipv4.conf.lo.arp_announce=1
	# Each VIP has 100 ports, in two objects of 50 (an object has at most 64).
	for v in $(seq 1 10); do
		for half in 0 1; do
			first=$((half * 50 + 1))
			cat >>$CR/objects/all.yaml <<-YAML
				---
				apiVersion: lvs-operator.io/v1alpha1
				kind: LvsService
				metadata: {name: crash-$v-$half}
				spec:
				  vip: 10.40.0.$v
				  ports: [$(seq $first $((first + 49)) | sed 's/.*/{port: &}/' | paste -sd, -)]
				  scheduler: rr
				  backends: [{address: 10.40.1.1}, {address: 10.40.1.2}, {address: 10.40.1.3}]
			YAML
		done
	done
}

# crash_snapshot NS: the state the test compares, sorted (drift repair reorders the kernel's lists).
crash_snapshot() {
	in_ns $1 ipvsadm -Sn | sort
	in_ns $1 $IP -o addr show | sed 's/^[0-9]*: //; s/\\.*//' | sort
	for k in conf.lo.arp_ignore conf.all.arp_ignore conf.lo.arp_announce conf.all.arp_announce \
		conf.bench0.accept_local vs.expire_nodest_conn vs.expire_quiescent_template; do
		echo "$k = $(in_ns $1 sysctl -n net.ipv4.$k)"
	done
}

# crash_run NS ROLE OBJECTS: one complete --once run; its exit code.
crash_run() {
	$IP netns exec $1 lvs-operator agent --standalone $3 --role $2 --once \
		--state-dir $CR/state-$1 >>$CR/$1.log 2>&1
}

# crash_killed NS ROLE OBJECTS DELAY: a --once run killed with SIGKILL after DELAY seconds.
crash_killed() {
	$IP netns exec $1 lvs-operator agent --standalone $3 --role $2 --once \
		--state-dir $CR/state-$1 >>$CR/$1.log 2>&1 &
	_pid=$!
	sleep $4
	kill -9 $_pid 2>/dev/null
	wait $_pid 2>/dev/null
}

# crash_time NS ROLE OBJECTS: seconds a complete run takes (hundredths, from /proc/uptime).
crash_time() {
	_t0=$(cut -d' ' -f1 /proc/uptime)
	crash_run "$@" || fail "a complete $2 run in $1 failed: $(tail -n 3 $CR/$1.log)"
	awk -v t0="$_t0" '{printf "%.2f", $1 - t0}' /proc/uptime
}

# crash_differs NS EXPECTED_FILE WHEN: whether the node differs from the file (printing how).
crash_differs() {
	crash_snapshot $1 >$CR/now
	cmp -s $2 $CR/now && return 1
	echo "kill -9 at $3: after the restart the node differs from $(basename $2):"
	diff $2 $CR/now | head -n 10
}

# crash_partial NS: whether a killed run left the node neither as it was nor as desired.
crash_partial() {
	crash_snapshot $1 >$CR/now
	! cmp -s $CR/before $CR/now && ! cmp -s $CR/desired $CR/now
}

# crash_trials NS ROLE: kill -9 the cold run and the removal run at CRASH_TRIALS moments each.
crash_trials() {
	_ns=$1 _role=$2
	crash_snapshot $_ns >$CR/before
	_cold=$(crash_time $_ns $_role $CR/objects)
	crash_snapshot $_ns >$CR/desired
	_services=$(in_ns $_ns ipvsadm -Sn | grep -c '^-A -t 10.40.0.[0-9]*:[0-9]* -s rr')
	_removal=$(crash_time $_ns $_role $CR/empty)
	if crash_differs $_ns $CR/before "the end of a complete removal run"; then
		fail "$_role: a complete removal run leaves the node as it was"
	else
		pass "$_role: a complete removal run leaves the node as it was"
	fi
	echo "$_role: a cold run takes ${_cold}s (${_services} services), a removal run ${_removal}s; killing each at $CRASH_TRIALS moments"
	_bad_cold=0 _bad_removal=0 _bad_exit=0 _partial_cold=0 _partial_removal=0
	for _i in $(seq 1 $CRASH_TRIALS); do
		_at=$(awk -v t="$_cold" -v i="$_i" -v n="$CRASH_TRIALS" 'BEGIN {printf "%.3f", t * i / (n + 1)}')
		crash_killed $_ns $_role $CR/objects $_at
		crash_partial $_ns && _partial_cold=$((_partial_cold + 1))
		crash_run $_ns $_role $CR/objects || _bad_exit=$((_bad_exit + 1))
		crash_differs $_ns $CR/desired "${_at}s of the cold run" && _bad_cold=$((_bad_cold + 1))
		_at=$(awk -v t="$_removal" -v i="$_i" -v n="$CRASH_TRIALS" 'BEGIN {printf "%.3f", t * i / (n + 1)}')
		crash_killed $_ns $_role $CR/empty $_at
		crash_partial $_ns && _partial_removal=$((_partial_removal + 1))
		crash_run $_ns $_role $CR/empty || _bad_exit=$((_bad_exit + 1))
		crash_differs $_ns $CR/before "${_at}s of the removal run" && _bad_removal=$((_bad_removal + 1))
	done
	echo "$_role: kills that left the node half done: $_partial_cold of $CRASH_TRIALS in the cold run, $_partial_removal of $CRASH_TRIALS in the removal run"
	expect_eq "$_role: $CRASH_TRIALS kills of the cold run, each restart leaves exactly the desired state" 0 $_bad_cold
	expect_eq "$_role: $CRASH_TRIALS kills of the removal run, each restart leaves exactly the state before the agent" 0 $_bad_removal
	expect_eq "$_role: every restart exits 0 (none of its own state taken for someone else's)" 0 $_bad_exit
	if [ $_bad_exit -gt 0 ]; then grep -E 'ERROR|WARN' $CR/$_ns.log | sort | uniq -c | sort -rn | head -n 5; fi
}

echo "=== 6. kill -9 at any moment leaves nothing unowned"
crash_setup
crash_trials crashdir director
check "director: kills landed in the middle of the work (some left the node half done)" [ $_partial_cold -gt 0 ]
check "director: the foreign service survived" has_text "-A -t 10.40.0.99:443 -s wlc" in_ns crashdir ipvsadm -Sn
check "director: the foreign address survived" has_text "10.40.0.77/32" in_ns crashdir $IP addr show dev bench0
crash_trials crashrs backend
expect_eq "backend: the stricter arp_ignore an admin set is kept, and arp_announce is back to the admin's 1" "2 1" \
	"$(in_ns crashrs sysctl -n net.ipv4.conf.all.arp_ignore) $(in_ns crashrs sysctl -n net.ipv4.conf.lo.arp_announce)"
