//! Plain values for kernel state: IPVS services and destinations, host addresses, sysctls.
//!
//! The same types describe what a node should hold (desired) and what it holds (observed), so the
//! planner compares like with like. Forwarding is always Direct Routing for what we make; observed
//! destinations of other owners keep whatever they have and are only ever looked at.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub use crate::api::{Protocol, Scheduler};

/// Identity of an IPVS virtual service, as `ipvsadm -t VIP:PORT` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServiceKey {
    pub vip: IpAddr,
    pub protocol: Protocol,
    pub port: u16,
}

impl fmt::Display for ServiceKey {
    /// `-t 10.10.24.88:80`, the way ipvsadm takes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flag = match self.protocol {
            Protocol::Tcp => "-t",
            Protocol::Udp => "-u",
            Protocol::Sctp => "--sctp-service",
        };
        write!(f, "{flag} {}", SocketFmt(self.vip, self.port))
    }
}

/// `10.10.24.88:80` or `[2001:db8::88]:80`, as ipvsadm prints addresses with ports.
pub struct SocketFmt(pub IpAddr, pub u16);

impl fmt::Display for SocketFmt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.1),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.1),
        }
    }
}

/// `IP_VS_SVC_F_PERSISTENT`: the service keeps clients on one real server.
pub const SVC_F_PERSISTENT: u32 = 0x0001;
/// `IP_VS_SVC_F_SCHED1`: `sh-fallback` / `mh-fallback`.
pub const SVC_F_SCHED1: u32 = 0x0008;
/// `IP_VS_SVC_F_SCHED2`: `sh-port` / `mh-port`.
pub const SVC_F_SCHED2: u32 = 0x0010;

/// The settings of a virtual service that `ipvsadm -E` can change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceConfig {
    /// Scheduler name as the kernel reports it (`rr`, `wlc`, ...).
    pub scheduler: String,
    /// `IP_VS_SVC_F_*` flags we set (persistence, scheduler flags). The kernel's own `HASHED`
    /// bit is masked off when observing.
    pub flags: u32,
    /// Persistence timeout in seconds; 0 when not persistent.
    pub timeout: u32,
    /// Persistence netmask (`IPVS_SVC_ATTR_NETMASK`): the IPv4 mask as a number (0xffffff00 for
    /// 255.255.255.0), or an IPv6 prefix length.
    pub netmask: u32,
}

/// A real server of a virtual service: `ipvsadm -a ... -r ADDR:PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DestKey {
    pub addr: IpAddr,
    pub port: u16,
}

impl fmt::Display for DestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        SocketFmt(self.addr, self.port).fmt(f)
    }
}

/// A destination's settings and, when observed, its load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestState {
    pub weight: u32,
    /// Observed only: connections still established through this destination.
    pub active_conns: u32,
    /// Observed only: false when the destination uses another forwarding method than DR.
    pub direct_route: bool,
}

impl DestState {
    pub fn dr(weight: u32) -> Self {
        Self {
            weight,
            active_conns: 0,
            direct_route: true,
        }
    }
}

/// One virtual service and its destinations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// What one node holds, or should hold, of everything this operator manages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeState {
    pub services: BTreeMap<ServiceKey, ServiceState>,
    /// Addresses; observed state lists every address of the host, desired only the VIPs.
    pub addresses: BTreeSet<HostAddress>,
    /// Sysctls by dotted name (`net.ipv4.conf.lo.arp_ignore`) and value.
    pub sysctls: BTreeMap<String, String>,
    /// Observed only: IPVS counters of the services whose destinations were dumped, for metrics.
    /// The planner never reads them.
    pub stats: BTreeMap<ServiceKey, ServiceStats>,
}

/// IPVS counters, as `ipvsadm -Ln --stats` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub connections: u64,
    pub in_packets: u64,
    pub out_packets: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
}

/// A service's counters and its destinations'.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceStats {
    pub service: Counters,
    /// Per destination: counters, active connections, inactive connections.
    pub dests: BTreeMap<DestKey, (Counters, u32, u32)>,
}

/// The sysctls a real server needs, with the values the LVS-DR recipe gives them: answer ARP
/// only for addresses on the receiving interface, and never announce the VIP as a source.
pub const REAL_SERVER_SYSCTLS: [(&str, &str); 4] = [
    ("net.ipv4.conf.lo.arp_ignore", "1"),
    ("net.ipv4.conf.all.arp_ignore", "1"),
    ("net.ipv4.conf.lo.arp_announce", "2"),
    ("net.ipv4.conf.all.arp_announce", "2"),
];
