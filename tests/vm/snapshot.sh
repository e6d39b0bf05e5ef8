#!/bin/sh
# Guest side: prints the state an admin compares after configuring LVS-DR: the director's IPVS
# table and eth0 addresses, each real server's lo addresses and ARP sysctls. Used by
# dataplane-guest.sh to compare the agent with the seed document's commands, and drift repair.
for ns in director; do
	# The address services clients use; the agent's health checks add firewall-mark services
	# (-f), which dataplane-guest.sh checks on their own.
	echo "## ipvsadm -Sn ($ns), without firewall-mark services"
	/usr/sbin/ip netns exec $ns ipvsadm -Sn | grep -v "^-[Aa] -f "
	echo "## ip -o addr show dev eth0 ($ns)"
	# Sorted: the kernel lists addresses in the order they were added, which drift repair changes.
	/usr/sbin/ip netns exec $ns /usr/sbin/ip -o addr show dev eth0 | sed 's/^[0-9]*: //; s/\\.*//' | sort
done
for rs in rs1 rs2 rs3; do
	echo "## ip -o addr show dev lo ($rs)"
	/usr/sbin/ip netns exec $rs /usr/sbin/ip -o addr show dev lo | sed 's/^[0-9]*: //; s/\\.*//' | sort
	for k in lo.arp_ignore all.arp_ignore lo.arp_announce all.arp_announce; do
		echo "$rs net.ipv4.conf.$k = $(/usr/sbin/ip netns exec $rs sysctl -n net.ipv4.conf.$k)"
	done
done
