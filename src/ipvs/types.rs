//! Typed IPVS objects: what a virtual service and a real server *are*,
//! independent of how they travel over netlink or how ipvsadm prints them.
//!
//! Values follow `include/uapi/linux/ip_vs.h`; the reconciler compares these
//! types directly, so observed values are normalised (e.g. the kernel-internal
//! `IP_VS_SVC_F_HASHED` bit is dropped) to compare equal to desired ones.

use std::fmt;

use crate::core::SocketFmt;
use std::net::IpAddr;

/// `AF_INET`.
pub const AF_INET: u16 = 2;
/// `AF_INET6`.
pub const AF_INET6: u16 = 10;

/// `IP_VS_SVC_F_PERSISTENT`: persistent port (ipvsadm `-p`).
pub const SVC_F_PERSISTENT: u32 = 0x0001;
/// `IP_VS_SVC_F_HASHED`: kernel-internal "in the hash table"; never configured.
pub const SVC_F_HASHED: u32 = 0x0002;
/// `IP_VS_SVC_F_ONEPACKET`: one-packet scheduling (ipvsadm `-o`).
pub const SVC_F_ONEPACKET: u32 = 0x0004;
/// `IP_VS_SVC_F_SCHED1`: `sh-fallback` / `mh-fallback`.
pub const SVC_F_SCHED1: u32 = 0x0008;
/// `IP_VS_SVC_F_SCHED2`: `sh-port` / `mh-port`.
pub const SVC_F_SCHED2: u32 = 0x0010;
/// `IP_VS_SVC_F_SCHED3`: `flag-3`.
pub const SVC_F_SCHED3: u32 = 0x0020;

/// Transport protocol of a virtual service (`IPVS_SVC_ATTR_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// `IPPROTO_TCP`.
    Tcp = 6,
    /// `IPPROTO_UDP`.
    Udp = 17,
    /// `IPPROTO_SCTP`.
    Sctp = 132,
}

impl Protocol {
    /// The IP protocol number sent to the kernel.
    pub fn number(self) -> u16 {
        self as u16
    }

    /// Inverse of [`Protocol::number`]; `None` for protocols we do not manage
    /// (e.g. AH/ESP services created by someone else).
    pub fn from_number(n: u16) -> Option<Self> {
        match n {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            132 => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// Forwarding method of a real server (`IP_VS_CONN_F_FWD_MASK` bits of
/// `IPVS_DEST_ATTR_FWD_METHOD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Forward {
    /// `IP_VS_CONN_F_MASQ` (NAT, ipvsadm `-m`).
    Masq = 0,
    /// `IP_VS_CONN_F_LOCALNODE`.
    Local = 1,
    /// `IP_VS_CONN_F_TUNNEL` (ipvsadm `-i`).
    Tunnel = 2,
    /// `IP_VS_CONN_F_DROUTE` (direct routing, ipvsadm `-g`).
    DirectRoute = 3,
    /// `IP_VS_CONN_F_BYPASS`.
    Bypass = 4,
}

impl Forward {
    /// Decodes the low 3 bits, as the kernel masks with `IP_VS_CONN_F_FWD_MASK`.
    pub fn from_bits(v: u32) -> Option<Self> {
        match v & 0x7 {
            0 => Some(Forward::Masq),
            1 => Some(Forward::Local),
            2 => Some(Forward::Tunnel),
            3 => Some(Forward::DirectRoute),
            4 => Some(Forward::Bypass),
            _ => None,
        }
    }
}

/// The address family of an address, as the kernel's `AF_*` number.
pub fn family_of(addr: &IpAddr) -> u16 {
    match addr {
        IpAddr::V4(_) => AF_INET,
        IpAddr::V6(_) => AF_INET6,
    }
}

/// A virtual service identified by address + protocol + port.
///
/// `netmask` is the persistence netmask, in the kernel's per-family meaning:
/// for IPv4 a mask as a number (`0xFFFF_FFFF` = /32, the default), for IPv6 a
/// prefix length (`128`, the default; the kernel rejects 0 and >128).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Service {
    /// Virtual IP.
    pub addr: IpAddr,
    /// Transport protocol.
    pub protocol: Protocol,
    /// Virtual port (host order here; big-endian on the wire).
    pub port: u16,
    /// Scheduler name, e.g. `rr`, `wlc`, `sh`, `mh` (module `ip_vs_<name>`).
    pub scheduler: String,
    /// `IP_VS_SVC_F_*` bits (never `HASHED`).
    pub flags: u32,
    /// Persistence timeout in seconds (meaningful with `SVC_F_PERSISTENT`).
    pub timeout: u32,
    /// Persistence netmask, see the type docs.
    pub netmask: u32,
}

impl Service {
    /// A non-persistent service with the per-family default netmask.
    pub fn new(addr: IpAddr, protocol: Protocol, port: u16, scheduler: impl Into<String>) -> Self {
        Service {
            addr,
            protocol,
            port,
            scheduler: scheduler.into(),
            flags: 0,
            timeout: 0,
            netmask: default_netmask(&addr),
        }
    }

    /// `AF_INET` or `AF_INET6`.
    pub fn family(&self) -> u16 {
        family_of(&self.addr)
    }

    /// The identity the kernel looks services up by.
    pub fn key(&self) -> ServiceKey {
        ServiceKey {
            addr: self.addr,
            protocol: self.protocol,
            port: self.port,
        }
    }
}

/// What ipvsadm uses when `-M` is not given: /32 for IPv4, /128 for IPv6.
pub fn default_netmask(addr: &IpAddr) -> u32 {
    match addr {
        IpAddr::V4(_) => 0xFFFF_FFFF,
        IpAddr::V6(_) => 128,
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.key().fmt(f)
    }
}

/// Identity of a service: the attributes `DEL_SERVICE` and `GET_DEST` carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// Virtual IP.
    pub addr: IpAddr,
    /// Transport protocol.
    pub protocol: Protocol,
    /// Virtual port.
    pub port: u16,
}

impl fmt::Display for ServiceKey {
    /// `TCP 10.10.24.88:80` / `UDP [2001:db8::1]:53`, like `ipvsadm -Ln`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.protocol, SocketFmt(self.addr, self.port))
    }
}

/// A real server of a service.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    /// Real server IP.
    pub addr: IpAddr,
    /// Real server port (DR ignores it for rewriting, but it is part of the identity).
    pub port: u16,
    /// Weight; 0 drains the server without removing it.
    pub weight: u32,
    /// Forwarding method.
    pub fwd: Forward,
    /// Upper connection threshold (0 = none), ipvsadm `-x`.
    pub upper_threshold: u32,
    /// Lower connection threshold (0 = none), ipvsadm `-y`.
    pub lower_threshold: u32,
}

impl Destination {
    /// A direct-routing real server with no thresholds.
    pub fn direct_route(addr: IpAddr, port: u16, weight: u32) -> Self {
        Destination {
            addr,
            port,
            weight,
            fwd: Forward::DirectRoute,
            upper_threshold: 0,
            lower_threshold: 0,
        }
    }

    /// The identity the kernel looks destinations up by (within a service).
    pub fn key(&self) -> DestKey {
        DestKey {
            addr: self.addr,
            port: self.port,
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.key().fmt(f)
    }
}

/// Identity of a destination within its service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DestKey {
    /// Real server IP.
    pub addr: IpAddr,
    /// Real server port.
    pub port: u16,
}

impl fmt::Display for DestKey {
    /// `10.10.24.21:80` / `[2001:db8::21]:80`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        SocketFmt(self.addr, self.port).fmt(f)
    }
}

/// Traffic counters from `IPVS_*_ATTR_STATS64` (or `STATS` on old kernels).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections scheduled.
    pub conns: u64,
    /// Incoming packets.
    pub inpkts: u64,
    /// Outgoing packets (0 under DR: replies bypass the director).
    pub outpkts: u64,
    /// Incoming bytes.
    pub inbytes: u64,
    /// Outgoing bytes.
    pub outbytes: u64,
}

/// Per-destination counters: connection table state plus traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DestStats {
    /// `IPVS_DEST_ATTR_ACTIVE_CONNS`.
    pub active_conns: u32,
    /// `IPVS_DEST_ATTR_INACT_CONNS`.
    pub inactive_conns: u32,
    /// `IPVS_DEST_ATTR_PERSIST_CONNS`.
    pub persist_conns: u32,
    /// Connections scheduled.
    pub conns: u64,
    /// Incoming packets.
    pub inpkts: u64,
    /// Outgoing packets.
    pub outpkts: u64,
    /// Incoming bytes.
    pub inbytes: u64,
    /// Outgoing bytes.
    pub outbytes: u64,
}

/// A service the kernel has that we do not manage by identity: a fwmark
/// service, or an address service with a protocol outside [`Protocol`].
/// Kept so dumps never fail on them and the operator can report them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignService {
    /// `IPVS_SVC_ATTR_AF`.
    pub family: u16,
    /// `IPVS_SVC_ATTR_FWMARK`, if a fwmark service.
    pub fwmark: Option<u32>,
    /// Raw `IPVS_SVC_ATTR_PROTOCOL` (0 for fwmark services).
    pub protocol: u16,
    /// `IPVS_SVC_ATTR_ADDR`, if present.
    pub addr: Option<IpAddr>,
    /// `IPVS_SVC_ATTR_PORT`.
    pub port: u16,
    /// Scheduler name.
    pub scheduler: String,
    /// `IP_VS_SVC_F_*` without `HASHED`.
    pub flags: u32,
    /// Persistence timeout.
    pub timeout: u32,
    /// Persistence netmask.
    pub netmask: u32,
}

impl fmt::Display for ForeignService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.fwmark, self.addr) {
            (Some(m), _) => write!(
                f,
                "FWM {m}{}",
                if self.family == AF_INET6 { " IPv6" } else { "" }
            ),
            (None, Some(a)) => write!(f, "proto {} {}", self.protocol, SocketFmt(a, self.port)),
            (None, None) => write!(f, "proto {} port {}", self.protocol, self.port),
        }
    }
}

/// One entry of a service dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceEntry {
    /// An address/protocol/port service, the kind this crate manages.
    Service(Service),
    /// Something else (fwmark, unknown protocol); never touched.
    Foreign(ForeignService),
}

/// A service as observed in a `GET_SERVICE` dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedService {
    /// The service itself.
    pub entry: ServiceEntry,
    /// Its counters.
    pub stats: Stats,
}

impl ObservedService {
    /// The managed-kind service, if this is one.
    pub fn service(&self) -> Option<&Service> {
        match &self.entry {
            ServiceEntry::Service(s) => Some(s),
            ServiceEntry::Foreign(_) => None,
        }
    }
}

/// A destination as observed in a `GET_DEST` dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedDest {
    /// The destination itself.
    pub dest: Destination,
    /// Connection and traffic counters.
    pub stats: DestStats,
}

/// `GET_INFO` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Info {
    /// `IP_VS_VERSION_CODE`, e.g. `0x010201` for 1.2.1.
    pub version: u32,
    /// Size of the connection hash table.
    pub conn_table_size: u32,
}

impl fmt::Display for Info {
    /// `IP Virtual Server version 1.2.1 (size=4096)`, like `ipvsadm -L`'s first line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IP Virtual Server version {}.{}.{} (size={})",
            (self.version >> 16) & 0xff,
            (self.version >> 8) & 0xff,
            self.version & 0xff,
            self.conn_table_size
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_bracket_ipv6_addresses() {
        let v4 = Service::new("10.10.24.88".parse().unwrap(), Protocol::Tcp, 80, "rr");
        let v6 = Service::new("2001:db8::1".parse().unwrap(), Protocol::Udp, 53, "rr");
        assert_eq!(v4.to_string(), "TCP 10.10.24.88:80");
        assert_eq!(v6.to_string(), "UDP [2001:db8::1]:53");
        assert_eq!(v4.netmask, 0xFFFF_FFFF);
        assert_eq!(v6.netmask, 128);
    }

    #[test]
    fn info_renders_the_version_like_ipvsadm() {
        let info = Info {
            version: 0x010201,
            conn_table_size: 4096,
        };
        assert_eq!(
            info.to_string(),
            "IP Virtual Server version 1.2.1 (size=4096)"
        );
    }
}
