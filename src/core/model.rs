//! Plain values for kernel state: IPVS services and destinations, host addresses, sysctls.
//!
//! The same types describe what a node should hold (desired) and what it holds (observed), so the
//! planner compares like with like. Forwarding is always Direct Routing for what we make; observed
//! destinations of other owners keep whatever they have and are only ever looked at.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

pub use crate::ipvs::types::{AF_INET, AF_INET6, SVC_F_PERSISTENT, SVC_F_SCHED1, SVC_F_SCHED2};
pub use crate::ipvs::{
    Counters, DestKey, DestStats, Forward, MarkKey, Protocol, Scheduler, ServiceConfig, ServiceKey,
    SyncDaemon, SyncRole,
};

/// What the planner reads of a destination: its weight and, when observed, its forwarding
/// method and load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DestState {
    pub weight: u32,
    /// Observed only: connections still established through this destination.
    pub active_conns: u32,
    /// Direct Routing for what we make; observed destinations may have been switched.
    pub forward: Forward,
}

impl DestState {
    /// A Direct Routing destination (`-g -w WEIGHT`).
    pub fn dr(weight: u32) -> Self {
        Self {
            weight,
            active_conns: 0,
            forward: Forward::DirectRoute,
        }
    }
}

/// One virtual service and its destinations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceState {
    pub config: ServiceConfig,
    pub dests: BTreeMap<DestKey, DestState>,
}

/// An address on an interface: `ip addr add ADDR/PREFIX dev IFNAME`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HostAddress {
    pub ifname: String,
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl HostAddress {
    /// A VIP as a host route: /32 for IPv4, /128 for IPv6.
    pub fn vip(ifname: impl Into<String>, addr: IpAddr) -> Self {
        let prefix_len = if addr.is_ipv4() { 32 } else { 128 };
        Self {
            ifname: ifname.into(),
            addr,
            prefix_len,
        }
    }
}

impl fmt::Display for HostAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} dev {}", self.addr, self.prefix_len, self.ifname)
    }
}

/// A firewall-mark service of the health checks (`ipvsadm -A -f MARK`, one Direct Routing real
/// server, `-a -f MARK -r RIP -g`): a probe carrying the mark goes through IPVS to that real
/// server, whatever its destination address, so a probe sent to the VIP reaches it exactly as a
/// client's packet does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MarkState {
    /// Its real servers: one for ours; observed only for ours (the others are not ours to read).
    pub dests: BTreeSet<IpAddr>,
}

/// What one node holds, or should hold, of everything this operator manages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeState {
    pub services: BTreeMap<ServiceKey, ServiceState>,
    /// Firewall-mark services; observed state lists every one of the node.
    pub marks: BTreeMap<MarkKey, MarkState>,
    /// Addresses; observed state lists every address of the host, desired only the VIPs.
    pub addresses: BTreeSet<HostAddress>,
    /// Sysctls by dotted name (`net.ipv4.conf.lo.arp_ignore`) and value.
    pub sysctls: BTreeMap<String, String>,
    /// Observed only: IPVS counters of the services whose destinations were dumped, for metrics.
    /// The planner never reads them.
    pub stats: BTreeMap<ServiceKey, ServiceStats>,
    /// Observed only, on real servers: the listening sockets, for their self-check.
    pub listeners: BTreeSet<Listener>,
    /// Observed only, with the listeners: the local addresses of established TCP connections,
    /// so a VIP on `lo` that clients still use lingers until they are done.
    pub connected: BTreeSet<IpAddr>,
    /// IPVS connection-sync daemons (`ipvsadm --start-daemon`): on directors with peers, a master
    /// where the node holds a VIP and a backup where it stands by.
    pub daemons: BTreeMap<SyncRole, SyncDaemon>,
}

/// Whether an observed daemon is the one wanted: the kernel fills in the settings left to it
/// (group, port, TTL, message length), so only those asked for are compared.
pub fn daemon_matches(want: &SyncDaemon, have: &SyncDaemon) -> bool {
    fn same<T: PartialEq>(want: &Option<T>, have: &Option<T>) -> bool {
        want.is_none() || want == have
    }
    want.role == have.role
        && want.interface == have.interface
        && want.sync_id == have.sync_id
        && same(&want.max_len, &have.max_len)
        && same(&want.group, &have.group)
        && same(&want.port, &have.port)
        && same(&want.ttl, &have.ttl)
}

/// A listening socket of the node: its protocol and local address.
pub type Listener = (Protocol, SocketAddr);

/// A service's counters and its destinations'.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceStats {
    pub service: Counters,
    pub dests: BTreeMap<DestKey, DestStats>,
}

/// The sysctls a director with health checks sets (kube-proxy's IPVS mode sets the same): a
/// client reusing the port of a finished connection to an ejected (weight 0) real server is
/// scheduled afresh instead of being sent to it, and a persistence template that leads to an
/// ejected real server expires, so a persistent client moves on.
pub const CHECKED_DIRECTOR_SYSCTLS: [(&str, &str); 2] = [
    ("net.ipv4.vs.expire_nodest_conn", "1"),
    ("net.ipv4.vs.expire_quiescent_template", "1"),
];

/// The sysctls a real server needs, with the values the LVS-DR recipe gives them: answer ARP
/// only for addresses on the receiving interface, and never announce the VIP as a source.
pub const REAL_SERVER_SYSCTLS: [(&str, &str); 4] = [
    ("net.ipv4.conf.lo.arp_ignore", "1"),
    ("net.ipv4.conf.all.arp_ignore", "1"),
    ("net.ipv4.conf.lo.arp_announce", "2"),
    ("net.ipv4.conf.all.arp_announce", "2"),
];

/// A node's addresses that are subnets, not host routes: where VIPs go and probes leave from.
/// A director holding a thousand VIPs as /32s has a handful of these; looking for each VIP's LAN
/// among all its addresses cost a resync a million comparisons.
#[derive(Debug, Clone, Default)]
pub struct Lans(Vec<HostAddress>);

impl Lans {
    pub fn of(addresses: &BTreeSet<HostAddress>) -> Self {
        let host = |a: &IpAddr| if a.is_ipv4() { 32 } else { 128 };
        Self(
            (addresses.iter())
                .filter(|a| a.prefix_len < host(&a.addr))
                .cloned()
                .collect(),
        )
    }

    /// The interface holding an address whose subnet contains `vip`, the longest prefix first;
    /// never `lo`.
    pub fn interface_for(&self, vip: IpAddr) -> Option<String> {
        (self.0.iter())
            .filter(|a| a.ifname != "lo" && a.addr.is_ipv4() == vip.is_ipv4())
            .filter(|a| same_subnet(a.addr, vip, a.prefix_len))
            .max_by_key(|a| a.prefix_len)
            .map(|a| a.ifname.clone())
    }

    /// The subnets' addresses, to pick a probe's source from (`health::source_for`).
    pub fn addresses(&self) -> &[HostAddress] {
        &self.0
    }
}

/// Whether `a` and `b` are in one subnet of `prefix_len` bits (false across families).
pub fn same_subnet(a: IpAddr, b: IpAddr, prefix_len: u8) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix_len))
                .unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix_len))
                .unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}
