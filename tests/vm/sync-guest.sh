#!/bin/sh
# Guest script of `make e2e-sync` (busybox sh inside the VM; see tests/vm/README.md).
#
# IPVS connection synchronisation, started by our netlink client (examples/ipvs_sync.rs, at
# /usr/local/bin/ipvs_sync): a second director, director2 at 10.10.24.11, holds the same virtual
# service as director but not the VIP. director runs the master sync daemon, director2 the backup;
# a long-lived TCP connection through the VIP is learnt by director2 and survives moving the VIP
# to director2. A second connection opened while director2 runs no backup daemon is the control:
# it does not survive. First, the root tests of src/ipvs/kernel_tests.rs (/usr/local/bin/
# lvs-lib-tests), which need this kernel's ip_vs.
set -u
. /lvs/lib.sh
topology_up

VIP=10.10.24.88
SYNC=/usr/local/bin/ipvs_sync
IP=/usr/sbin/ip
mkdir -p /run/logs
# A write to a connection the kernel reset must fail, not kill this shell.
trap '' PIPE

# --- helpers --------------------------------------------------------------------------------

# conn_open NAME OUT_FD IN_FD: a TCP connection from the client to VIP:80 (socat) whose input is
# the fifo this shell writes through OUT_FD and whose output the fifo it reads through IN_FD.
conn_open() {
	mkfifo "/run/$1.in" "/run/$1.out"
	in_ns client socat -d -d - "TCP:$VIP:80" <"/run/$1.in" >"/run/$1.out" 2>"/run/logs/$1.err" &
	echo $! >"/run/$1.pid"
	eval "exec $2>/run/$1.in $3</run/$1.out"
}

# talk OUT_FD IN_FD LINE: sends LINE and prints the reply line (empty when none came in 5 s).
talk() {
	eval "echo \"\$3\" >&$1" 2>/dev/null || return 0
	_reply=
	eval "read -t 5 _reply <&$2"
	echo "$_reply"
}

# client_port: the client's address:port of its one connection to VIP:80 not in $KNOWN.
client_port() {
	in_ns client netstat -tn | awk -v vip="$VIP:80" -v known="${KNOWN:-}" \
		'$5 == vip && $6 == "ESTABLISHED" && index(" " known " ", " " $4 " ") == 0 {print $4}'
}

# client_lost CLIENT: the client no longer has its connection from CLIENT (addr:port).
client_lost() { [ -z "$(in_ns client netstat -tn | awk -v c="$1" '$4 == c')" ]; }

# conn_of NS CLIENT: the `ipvsadm -Lnc` line of NS for the connection from CLIENT (addr:port).
conn_of() { in_ns "$1" ipvsadm -Lnc | awk -v c="$2" '$4 == c'; }

# has_conn NS CLIENT DEST: NS holds the connection CLIENT -> VIP:80 -> DEST, ESTABLISHED.
has_conn() {
	[ -n "$(in_ns "$1" ipvsadm -Lnc |
		awk -v c="$2" -v v="$VIP:80" -v d="$3" '$4 == c && $5 == v && $6 == d && $3 == "ESTABLISHED"')" ]
}

# in_pkts NS DEST: the packets NS's IPVS has forwarded to DEST for VIP:80.
in_pkts() { in_ns "$1" ipvsadm -Ln --stats -t "$VIP:80" | awk -v d="$2" '$2 == d {print $4}'; }
forwarded_some() { [ "$(in_pkts "$1" "$2")" -gt 0 ] 2>/dev/null; }

# --- 0. the root tests of the sync-daemon commands ------------------------------------------
echo "=== 0. cargo's root tests of ipvs::kernel_tests, on this kernel"
if lvs-lib-tests --ignored --test-threads=1 ipvs::kernel_tests >/run/logs/kernel-tests.log 2>&1; then
	pass "ipvs::kernel_tests pass on a kernel with ip_vs"
else
	fail "ipvs::kernel_tests pass on a kernel with ip_vs"
	cat /run/logs/kernel-tests.log
fi
grep -E '^test |^test result' /run/logs/kernel-tests.log

# --- 1. two directors with the same service -------------------------------------------------
echo "=== 1. director2 at 10.10.24.11 on br0, the same IPVS service as director, no VIP"
$IP netns add director2
$IP link add v-director2 type veth peer name eth0 netns director2
$IP link set v-director2 master br0 up
in_ns director2 ip link set lo up
in_ns director2 ip addr add 10.10.24.11/24 dev eth0
in_ns director2 ip link set eth0 up
in_ns director2 ip route add default via 10.10.24.1
check "director2 answers the client at 10.10.24.11" in_ns client ping -c 1 -W 2 10.10.24.11

seed_setup $VIP
in_ns director2 ipvsadm -A -t $VIP:80 -s rr
for n in 21 22 23; do in_ns director2 ipvsadm -a -t $VIP:80 -r 10.10.24.$n -g; done
in_ns director2 ipvsadm -Ln
expect_eq "both directors hold VIP:80 rr with rs1-rs3 by direct routing" \
	"$(in_ns director ipvsadm -Sn)" "$(in_ns director2 ipvsadm -Sn)"
check "only director holds the VIP" sh -c "! $IP netns exec director2 $IP -o addr show | grep -q '$VIP/'"

# Line echo servers on port 80 in place of httpd, so that one TCP connection lives as long as we
# like and every reply names the real server ("rs2 hello").
for rs in $LVS_REAL_SERVERS; do
	httpd_stop "$rs"
	in_ns "$rs" socat TCP-LISTEN:80,fork,reuseaddr \
		SYSTEM:"while read l; do echo $rs \$l; done" >"/run/logs/echo-$rs.log" 2>&1 &
done
for rs in $LVS_REAL_SERVERS; do
	wait_until "$rs echoes lines on port 80" 5 \
		sh -c "echo ping | $IP netns exec $rs socat -t 1 - TCP:127.0.0.1:80 | grep -qx '$rs ping'"
done

# --- 2. the sync daemons, started by our code -----------------------------------------------
echo "=== 2. sync daemons started through our netlink client"
echo "br0 multicast_snooping=$(cat /sys/class/net/br0/bridge/multicast_snooping);" \
	"director net.ipv4.vs.sync_threshold=$(in_ns director cat /proc/sys/net/ipv4/vs/sync_threshold | tr '\t' ' ')"
check "our code starts the master sync daemon in director" \
	in_ns director $SYNC start master eth0 --syncid 1
check "our code starts the backup sync daemon in director2" \
	in_ns director2 $SYNC start backup eth0 --syncid 1
for ns in director director2; do
	echo "--- $ns: ipvsadm -L --daemon"
	in_ns $ns ipvsadm -L --daemon
	echo "--- $ns: ipvs_sync list / commands"
	in_ns $ns $SYNC list
	in_ns $ns $SYNC commands
	expect_eq "$ns: our GET_DAEMON dump reads what ipvsadm -L --daemon lists" \
		"$(in_ns $ns ipvsadm -L --daemon)" "$(in_ns $ns $SYNC list)"
done
expect_eq "director lists the master our code started, with the kernel's defaults" \
	"master sync daemon (mcast=eth0, syncid=1, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)" \
	"$(in_ns director ipvsadm -L --daemon)"
expect_eq "director2 lists the backup our code started" \
	"backup sync daemon (mcast=eth0, syncid=1, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)" \
	"$(in_ns director2 ipvsadm -L --daemon)"

# The same daemons started by ipvsadm itself, in a scratch namespace with its own eth0: they must
# list the same. Then the commands our Display prints, given to ipvsadm: the same again.
$IP netns add scratch
$IP -n scratch link add eth0 type veth peer name eth1
$IP -n scratch addr add 192.0.2.1/24 dev eth0
$IP -n scratch link set eth0 up
$IP -n scratch link set eth1 up
ours="$(in_ns director ipvsadm -L --daemon)
$(in_ns director2 ipvsadm -L --daemon)"
in_ns scratch ipvsadm --start-daemon master --mcast-interface eth0 --syncid 1
in_ns scratch ipvsadm --start-daemon backup --mcast-interface eth0 --syncid 1
echo "--- scratch: ipvsadm -L --daemon after ipvsadm --start-daemon master|backup"
in_ns scratch ipvsadm -L --daemon
expect_eq "ipvsadm's own --start-daemon gives the daemons our code started" \
	"$ours" "$(in_ns scratch ipvsadm -L --daemon)"
in_ns scratch ipvsadm --stop-daemon master
in_ns scratch ipvsadm --stop-daemon backup
for ns in director director2; do
	cmd=$(in_ns $ns $SYNC commands)
	echo "--- scratch: $cmd"
	# shellcheck disable=SC2086 # the command's words
	in_ns scratch $cmd
done
expect_eq "the ipvsadm commands our Display prints start the same daemons" \
	"$ours" "$(in_ns scratch ipvsadm -L --daemon)"
$IP netns del scratch

# --- 3. a long-lived connection, learnt by director2 ----------------------------------------
echo "=== 3. connection A through the VIP, learnt by director2"
conn_open a 3 4
first=$(talk 3 4 "a1")
RS_A=${first%% *}
echo "connection A: '$first'"
case $RS_A in rs1 | rs2 | rs3) pass "connection A is answered by $RS_A" ;; *) fail "connection A is answered by a real server (got '$first')" ;; esac
DEST_A="$(ip4 "$RS_A" 2>/dev/null):80"
# sync_threshold "3 50": a connection is synced at its 3rd inbound packet and every 50th after;
# SYN, ACK and a few lines are more than enough.
for i in 2 3 4 5; do expect_eq "connection A: line a$i comes back from $RS_A" "$RS_A a$i" "$(talk 3 4 "a$i")"; done
A=$(client_port)
KNOWN=$A
echo "connection A is $A -> $VIP:80 -> $DEST_A"
echo "--- director: ipvsadm -Lnc"
in_ns director ipvsadm -Lnc
check "director holds connection A, ESTABLISHED" has_conn director "$A" "$DEST_A"
wait_until "director2 learns connection A from the sync daemons" 15 has_conn director2 "$A" "$DEST_A"
echo "--- director2: ipvsadm -Lnc"
in_ns director2 ipvsadm -Lnc

# --- 4. the control: a connection director2 never learns ------------------------------------
echo "=== 4. connection B while director2 runs no backup daemon (the control)"
check "our code stops the backup sync daemon in director2" in_ns director2 $SYNC stop backup
expect_eq "director2 lists no daemon any more" "" "$(in_ns director2 ipvsadm -L --daemon)"
check "stopping it twice says none runs" has_text "stop backup sync daemon: none runs in this network namespace (ESRCH)" \
	in_ns director2 $SYNC stop backup
conn_open b 5 6
first=$(talk 5 6 "b1")
RS_B=${first%% *}
DEST_B="$(ip4 "$RS_B" 2>/dev/null):80"
for i in 2 3 4 5; do talk 5 6 "b$i" >/dev/null; done
B=$(client_port)
echo "connection B is $B -> $VIP:80 -> $DEST_B ('$first')"
check "director holds connection B, ESTABLISHED" has_conn director "$B" "$DEST_B"
# The master flushes its sync buffer at least every 2 s; give it 5.
sleep 5
expect_eq "director2 has not learnt connection B" "" "$(conn_of director2 "$B")"

# --- 5. the switch ----------------------------------------------------------------------------
echo "=== 5. the VIP moves from director to director2"
in_ns director ip addr del $VIP/32 dev eth0
in_ns director2 ip addr add $VIP/32 broadcast $VIP dev eth0
MAC2=$(in_ns director2 cat /sys/class/net/eth0/address)
# Gratuitous ARP (busybox arping -U): the client replaces director's MAC for the VIP at once.
in_ns director2 busybox arping -U -c 2 -w 2 -I eth0 -s $VIP $VIP >/dev/null
wait_until "the client's ARP entry for the VIP moves to director2 ($MAC2)" 5 \
	has_text "lladdr $MAC2" in_ns client ip neigh show $VIP
expect_eq "connection A keeps working after the switch: the reply still comes from $RS_A" \
	"$RS_A after-switch" "$(talk 3 4 "after-switch")"
expect_eq "connection A, a second line after the switch" "$RS_A still-here" "$(talk 3 4 "still-here")"
wait_until "director2 forwarded connection A's packets to $DEST_A" 5 forwarded_some director2 "$DEST_A"
expect_eq "connection B, which director2 never learnt, does not survive the switch (no reply)" \
	"" "$(talk 5 6 "after-switch")"
wait_until "director2 resets connection B: the client's socket is gone" 5 client_lost "$B"
check "connection A is still open on the client" \
	sh -c "$IP netns exec client netstat -tn | grep -q ' $A .*ESTABLISHED'"
echo "--- director2: ipvsadm -Lnc after the switch"
in_ns director2 ipvsadm -Lnc
echo "--- director2: ipvsadm -Ln --stats"
in_ns director2 ipvsadm -Ln --stats
echo "--- client: connection B's socat says"
grep -E ' [EFW] |exiting' /run/logs/b.err

# --- 6. cleanup through our code --------------------------------------------------------------
echo "=== 6. the master stops"
check "our code stops the master sync daemon in director" in_ns director $SYNC stop master
expect_eq "director lists no daemon any more" "" "$(in_ns director $SYNC list)"
exec 3>&- 4<&- 5>&- 6<&-
kill "$(cat /run/a.pid)" "$(cat /run/b.pid)" 2>/dev/null

summary
