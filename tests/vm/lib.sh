# Guest-side helpers for VM test scripts. POSIX sh (busybox ash): the guest has
# no bash. Source it with `. /lvs/lib.sh`; /init has already sourced it and run
# topology_up before the guest script starts, but sourcing again is harmless.
#
# Reference LVS-DR topology (one L2 segment, LAN 10.10.24.0/24, fd00:24::/64):
#
#   root namespace = router   br0  10.10.24.1   fd00:24::1   (+ wan0 10.0.2.15 with --net-user)
#   netns client              eth0 10.10.24.5   fd00:24::5
#   netns director            eth0 10.10.24.10  fd00:24::10
#   netns director2           eth0 10.10.24.11  fd00:24::11  (a second director, for failover)
#   netns rs1 / rs2 / rs3     eth0 10.10.24.21-23  fd00:24::21-23, httpd :80 answering "rsN"
#
# Every namespace's eth0 is a veth whose peer (v-NAME) is a port of br0, with
# default routes via the router. The VIP is deliberately NOT configured here:
# that is what the tests (or the agent under test) do.

# Debian's busybox-static is built with FEATURE_SH_STANDALONE/PREFER_APPLETS:
# its sh runs the builtin `ip` applet even though iproute2's ip is first in
# PATH, and the applet lacks netns, nodad, etc. Route `ip` to the real one.
# (Programs exec'ing `ip` through PATH, like `ip netns exec NS ip ...`, are
# fine; a bare `sh -c 'ip ...'` is not, so use /usr/sbin/ip there.)
ip() { /usr/sbin/ip "$@"; }

LVS_NAMESPACES="client director director2 rs1 rs2 rs3"
LVS_REAL_SERVERS="rs1 rs2 rs3"
LVS_PASSED=${LVS_PASSED:-0}
LVS_FAILED=${LVS_FAILED:-0}

# Host part of each namespace's address (same number in v4 and v6).
lvs_host_id() {
	case $1 in
	client) echo 5 ;;
	director) echo 10 ;;
	director2) echo 11 ;;
	rs1) echo 21 ;;
	rs2) echo 22 ;;
	rs3) echo 23 ;;
	*) return 1 ;;
	esac
}

# ip4 NAME / ip6 NAME: the namespace's LAN address.
ip4() { echo "10.10.24.$(lvs_host_id "$1")"; }
ip6() { echo "fd00:24::$(lvs_host_id "$1")"; }

# in_ns NS cmd...: run a command inside a namespace (binary or busybox applet,
# not a shell function; wrap in `sh -c` for pipelines). Not called `in`: that is
# a reserved word in every POSIX shell and cannot name a function.
in_ns() {
	ip netns exec "$@"
}

# http_get NS URL: body of URL fetched from namespace NS (5 s limit).
# Bounded by `timeout` because Debian's static busybox wget segfaults on -T.
http_get() {
	in_ns "$1" timeout 5 wget -qO- "$2"
}

topology_up() {
	# Idempotent: init calls it before the guest script, scripts may too.
	[ -e /run/netns/client ] && return 0

	echo 1 >/proc/sys/net/ipv4/ip_forward
	echo 1 >/proc/sys/net/ipv6/conf/all/forwarding

	ip link add br0 type bridge || return 1
	ip addr add 10.10.24.1/24 dev br0
	# nodad: skip the ~1-2 s duplicate address detection, nobody else is here.
	ip -6 addr add fd00:24::1/64 dev br0 nodad
	ip link set br0 up

	for _ns in $LVS_NAMESPACES; do
		_id=$(lvs_host_id "$_ns")
		ip netns add "$_ns" || return 1
		ip link add "v-$_ns" type veth peer name eth0 netns "$_ns" || return 1
		ip link set "v-$_ns" master br0 up
		in_ns "$_ns" ip link set lo up
		in_ns "$_ns" ip addr add "10.10.24.$_id/24" dev eth0
		in_ns "$_ns" ip -6 addr add "fd00:24::$_id/64" dev eth0 nodad
		in_ns "$_ns" ip link set eth0 up
		in_ns "$_ns" ip route add default via 10.10.24.1
		in_ns "$_ns" ip -6 route add default via fd00:24::1
	done

	for _rs in $LVS_REAL_SERVERS; do
		mkdir -p "/srv/$_rs"
		echo "$_rs" >"/srv/$_rs/index.html"
		# busybox httpd daemonizes; without an address in -p it binds [::]:80,
		# which (bindv6only=0) serves IPv4 and IPv6 alike.
		in_ns "$_rs" httpd -p 80 -h "/srv/$_rs" || return 1
	done
	# Wait until every httpd answers locally, so tests never race the daemons.
	for _rs in $LVS_REAL_SERVERS; do
		_i=0
		until [ "$(http_get "$_rs" http://127.0.0.1/ 2>/dev/null)" = "$_rs" ]; do
			_i=$((_i + 1))
			if [ $_i -ge 50 ]; then
				echo "topology_up: httpd in $_rs not answering; state:"
				in_ns "$_rs" /usr/sbin/ip -br addr
				in_ns "$_rs" netstat -lnt
				http_get "$_rs" http://127.0.0.1/
				ps
				return 1
			fi
			sleep 0.1
		done
	done
	echo "topology_up: client director director2 rs1 rs2 rs3 on br0 (10.10.24.0/24, fd00:24::/64)"
}

# --net-user: qemu's user-mode NIC. 10.0.2.2 is the host's loopback as seen
# from the guest (slirp), e.g. a kube-apiserver/kind/envtest on the host.
net_user_up() {
	# The interface backed by a (PCI) device; dummy0, tunl0, veths... are virtual. Not the one
	# run.sh --tap adds (its MAC is fixed).
	_nic=
	for _d in /sys/class/net/*; do
		[ -e "$_d/device" ] && [ "$(cat "$_d/address")" != 52:54:00:0a:63:02 ] && _nic=${_d##*/} && break
	done
	[ -n "$_nic" ] || { echo "net_user_up: no NIC found"; return 1; }
	[ "$_nic" = wan0 ] || ip link set "$_nic" name wan0
	ip addr add 10.0.2.15/24 dev wan0
	ip link set wan0 up
	ip route add default via 10.0.2.2
}

# Lets the namespaces reach 10.0.2.2 through the router by source-NATing the
# LAN onto wan0 (slirp only answers 10.0.2.15).
net_user_masquerade() {
	nft -f - <<-'EOF'
		table ip lvs_vm_nat {
			chain postrouting {
				type nat hook postrouting priority srcnat; policy accept;
				ip saddr 10.10.24.0/24 oifname "wan0" masquerade
			}
		}
	EOF
}

# seed_setup VIP: the seed document's commands, typed by hand as an admin would.
seed_setup() {
	echo "--- director: VIP + virtual service with three DR real servers"
	in_ns director ip addr add "$1/32" broadcast "$1" dev eth0
	in_ns director ipvsadm -A -t "$1:80" -s rr
	for _n in 21 22 23; do
		in_ns director ipvsadm -a -t "$1:80" -r "10.10.24.$_n" -g
	done
	echo "--- real servers: VIP on lo, never answer/announce ARP for it"
	for _rs in $LVS_REAL_SERVERS; do
		for _dev in lo all; do
			in_ns "$_rs" sysctl -q -w "net.ipv4.conf.$_dev.arp_ignore=1"
			in_ns "$_rs" sysctl -q -w "net.ipv4.conf.$_dev.arp_announce=2"
		done
		in_ns "$_rs" ip addr add "$1/32" broadcast "$1" dev lo
	done
}

# httpd_stop RS / httpd_start RS: the real server's web server on port 80 (busybox httpd,
# daemonized by topology_up), stopped and waited for until nothing listens on :80.
httpd_stop() {
	for _pid in $(ip netns pids "$1"); do
		[ "$(tr '\0' ' ' <"/proc/$_pid/cmdline" 2>/dev/null)" = "httpd -p 80 -h /srv/$1 " ] && kill "$_pid"
	done
	_i=0
	while in_ns "$1" netstat -lnt | grep -q ':80 ' && [ $_i -lt 50 ]; do
		sleep 0.02
		_i=$((_i + 1))
	done
}
httpd_start() { in_ns "$1" httpd -p 80 -h "/srv/$1"; }

# client_failures URL N: how many of N requests from the client namespace to URL failed.
client_failures() {
	_f=0
	for _i in $(seq "$2"); do
		timeout 5 /usr/sbin/ip netns exec client wget -qO- "$1" >/dev/null 2>&1 || _f=$((_f + 1))
	done
	echo $_f
}

# weight_of VIP ADDR: the weight the director gives ADDR:80 in VIP:80's IPVS service.
weight_of() { in_ns director ipvsadm -Ln -t "$1:80" | awk -v rs="$2:80" '$2 == rs {print $4}'; }

# stop_pidfile NAME: SIGTERM to the process in /run/NAME.pid, and wait (15 s at most: a director
# hands its VIPs over first) for it to go.
stop_pidfile() {
	kill -TERM "$(cat "/run/$1.pid")" 2>/dev/null
	_i=0
	while kill -0 "$(cat "/run/$1.pid")" 2>/dev/null && [ $_i -lt 150 ]; do
		sleep 0.1
		_i=$((_i + 1))
	done
}

# --- assertions ---------------------------------------------------------------

# uptime_cs: the guest's uptime in centiseconds (busybox date has no sub-second format).
uptime_cs() {
	_u=$(cut -d' ' -f1 /proc/uptime)
	echo $((${_u%.*} * 100 + 1${_u#*.} - 100))
}

# wait_until DESC SECONDS cmd...: polls every 0.2 s, SECONDS × 5 times at most (a slow command
# stretches that); PASS/FAIL with the time it took, as the clock measured it.
wait_until() {
	_desc=$1 _max=$(($2 * 5)) _n=0 _t0=$(uptime_cs)
	shift 2
	while ! "$@" >/dev/null 2>&1; do
		_n=$((_n + 1))
		if [ $_n -ge $_max ]; then
			_d=$(($(uptime_cs) - _t0))
			fail "$_desc (gave up after $((_d / 100)).$((_d % 100 / 10)) s)"
			return 1
		fi
		sleep 0.2
	done
	_d=$(($(uptime_cs) - _t0))
	pass "$_desc (after $((_d / 100)).$((_d % 100 / 10)) s)"
}

# has_text TEXT cmd... / lacks_text TEXT cmd...: whether the command's output contains TEXT.
has_text() {
	_t=$1
	shift
	"$@" 2>&1 | grep -qF -- "$_t"
}
lacks_text() { ! has_text "$@"; }

pass() {
	LVS_PASSED=$((LVS_PASSED + 1))
	echo "PASS: $1"
}

fail() {
	LVS_FAILED=$((LVS_FAILED + 1))
	echo "FAIL: $1"
}

# check NAME cmd...: PASS if the command exits 0. Runs in the current shell
# (not a subshell) so the counters survive.
check() {
	_lvs_check_name=$1
	shift
	if "$@"; then pass "$_lvs_check_name"; else fail "$_lvs_check_name (command: $*)"; fi
}

# expect_eq NAME EXPECTED ACTUAL
expect_eq() {
	if [ "$2" = "$3" ]; then
		pass "$1"
	else
		fail "$1"
		echo "    expected: '$2'"
		echo "    actual:   '$3'"
	fi
}

# summary: prints the closing line CI parsers look for and returns non-zero
# when anything failed, so `summary` can be a guest script's last command.
summary() {
	echo "$LVS_PASSED passed, $LVS_FAILED failed"
	[ "$LVS_FAILED" -eq 0 ] && [ "$LVS_PASSED" -gt 0 ]
}
