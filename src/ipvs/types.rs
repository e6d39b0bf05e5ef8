//! Typed IPVS objects: what a virtual service and a real server *are*, independent of how they
//! travel over netlink. Every layer above speaks these types, from the validated spec to the
//! planner's operations; `message` turns them into bytes and back.
//!
//! Values follow `include/uapi/linux/ip_vs.h`. One `Display` per type: a service prints the way
//! `ipvsadm -Ln` lists it (`TCP 10.10.24.88:80`), a real server as its socket address
//! (`10.10.24.21:80`); the command forms (`-t 10.10.24.88:80`) belong to the commands that print
//! them. A sync daemon is the exception: it is nothing but its settings, so it prints as the
//! `ipvsadm --start-daemon` command that asks for them. Observed values are normalised (the kernel-internal `IP_VS_SVC_F_HASHED` bit is dropped)
//! so that they compare equal to desired ones.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
#[derive(
    JsonSchema,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
)]
pub enum Protocol {
    /// `IPPROTO_TCP`.
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    /// `IPPROTO_UDP`.
    #[serde(rename = "UDP")]
    Udp,
    /// `IPPROTO_SCTP`.
    #[serde(rename = "SCTP")]
    Sctp,
}

impl Protocol {
    /// The IP protocol number sent to the kernel.
    pub fn number(self) -> u16 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
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

    /// The ipvsadm option naming a service of this protocol: `-t`, `-u`, `--sctp-service`.
    pub fn ipvsadm_flag(self) -> &'static str {
        match self {
            Protocol::Tcp => "-t",
            Protocol::Udp => "-u",
            Protocol::Sctp => "--sctp-service",
        }
    }
}

impl fmt::Display for Protocol {
    /// `TCP`, `UDP`, `SCTP`: as `ipvsadm -Ln` and Kubernetes write them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// An IPVS scheduler, named as `ipvsadm -s` names it (each is the kernel module `ip_vs_<name>`).
#[derive(
    JsonSchema,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
)]
#[serde(rename_all = "lowercase")]
pub enum Scheduler {
    /// Round robin.
    Rr,
    /// Weighted round robin.
    Wrr,
    /// Least connections.
    Lc,
    /// Weighted least connections (the default, as in ipvsadm).
    #[default]
    Wlc,
    /// Locality-based least connections.
    Lblc,
    /// Locality-based least connections with replication.
    Lblcr,
    /// Destination hashing.
    Dh,
    /// Source hashing.
    Sh,
    /// Shortest expected delay.
    Sed,
    /// Never queue.
    Nq,
    /// Weighted failover.
    Fo,
    /// Weighted overflow.
    Ovf,
    /// Maglev hashing.
    Mh,
    /// Weighted random twos choice.
    Twos,
    /// A scheduler the kernel reported that is none of the above (an out-of-tree module).
    /// Only ever observed, never configured, so it is not part of the API.
    #[serde(skip)]
    #[schemars(skip)]
    Unknown,
}

impl Scheduler {
    /// Every scheduler a spec may name, in the order the CRD lists them.
    pub const ALL: [Scheduler; 14] = [
        Self::Rr,
        Self::Wrr,
        Self::Lc,
        Self::Wlc,
        Self::Lblc,
        Self::Lblcr,
        Self::Dh,
        Self::Sh,
        Self::Sed,
        Self::Nq,
        Self::Fo,
        Self::Ovf,
        Self::Mh,
        Self::Twos,
    ];

    /// The name the kernel and ipvsadm use (`rr`, `wlc`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Rr => "rr",
            Self::Wrr => "wrr",
            Self::Lc => "lc",
            Self::Wlc => "wlc",
            Self::Lblc => "lblc",
            Self::Lblcr => "lblcr",
            Self::Dh => "dh",
            Self::Sh => "sh",
            Self::Sed => "sed",
            Self::Nq => "nq",
            Self::Fo => "fo",
            Self::Ovf => "ovf",
            Self::Mh => "mh",
            Self::Twos => "twos",
            Self::Unknown => "?",
        }
    }

    /// The scheduler of a kernel name; [`Scheduler::Unknown`] for a name outside the list.
    pub fn from_name(name: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .unwrap_or(Self::Unknown)
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
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
pub fn family_of(addr: IpAddr) -> u16 {
    match addr {
        IpAddr::V4(_) => AF_INET,
        IpAddr::V6(_) => AF_INET6,
    }
}

/// Identity of a virtual service: the attributes `DEL_SERVICE` and `GET_DEST` carry, and what
/// `ipvsadm -t VIP:PORT` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServiceKey {
    /// The virtual IP.
    pub vip: IpAddr,
    pub protocol: Protocol,
    /// Virtual port (host order here; big-endian on the wire).
    pub port: u16,
}

impl ServiceKey {
    /// `AF_INET` or `AF_INET6`.
    pub fn family(&self) -> u16 {
        family_of(self.vip)
    }

    /// `10.10.24.88:80`, `[2001:db8::88]:80`.
    pub fn socket(&self) -> SocketAddr {
        SocketAddr::new(self.vip, self.port)
    }
}

impl fmt::Display for ServiceKey {
    /// `TCP 10.10.24.88:80` / `UDP [2001:db8::1]:53`, like `ipvsadm -Ln`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.protocol, self.socket())
    }
}

/// Identity of a firewall-mark virtual service, `ipvsadm -f MARK` (one per address family): it
/// takes every packet carrying the mark, whatever its address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MarkKey {
    pub mark: u32,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
}

impl fmt::Display for MarkKey {
    /// `FWM 7` / `FWM 7 IPv6`, like `ipvsadm -Ln`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FWM {}", self.mark)?;
        if self.family == AF_INET6 {
            f.write_str(" IPv6")?;
        }
        Ok(())
    }
}

/// Either identity of a virtual service: what a request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Virtual {
    Service(ServiceKey),
    Mark(MarkKey),
}

impl Virtual {
    /// `AF_INET` or `AF_INET6`.
    pub fn family(&self) -> u16 {
        match self {
            Virtual::Service(k) => k.family(),
            Virtual::Mark(k) => k.family,
        }
    }
}

impl From<ServiceKey> for Virtual {
    fn from(k: ServiceKey) -> Self {
        Virtual::Service(k)
    }
}

impl From<MarkKey> for Virtual {
    fn from(k: MarkKey) -> Self {
        Virtual::Mark(k)
    }
}

impl fmt::Display for Virtual {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Virtual::Service(k) => k.fmt(f),
            Virtual::Mark(k) => k.fmt(f),
        }
    }
}

/// The settings of a virtual service that `ipvsadm -E` can change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceConfig {
    pub scheduler: Scheduler,
    /// `IP_VS_SVC_F_*` bits (never `HASHED`).
    pub flags: u32,
    /// Persistence timeout in seconds; 0 when not persistent.
    pub timeout: u32,
    /// Persistence netmask (`IPVS_SVC_ATTR_NETMASK`), in the kernel's per-family meaning: for
    /// IPv4 the mask as a number (`0xFFFF_FFFF` = /32, the default), for IPv6 a prefix length
    /// (`128`, the default; the kernel rejects 0 and >128).
    pub netmask: u32,
}

impl ServiceConfig {
    /// A non-persistent service with the family's default netmask, which is what ipvsadm sends
    /// when `-M` is not given and what the kernel reports back.
    pub fn new(scheduler: Scheduler, vip: IpAddr) -> Self {
        Self {
            scheduler,
            flags: 0,
            timeout: 0,
            netmask: default_netmask(vip),
        }
    }
}

/// What ipvsadm uses when `-M` is not given: /32 for IPv4, /128 for IPv6.
pub fn default_netmask(vip: IpAddr) -> u32 {
    match vip {
        IpAddr::V4(_) => 0xFFFF_FFFF,
        IpAddr::V6(_) => 128,
    }
}

/// Identity of a real server within its service: `ipvsadm -a ... -r ADDR:PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DestKey {
    pub addr: IpAddr,
    /// Real server port (DR does not rewrite it, but it is part of the identity).
    pub port: u16,
}

impl DestKey {
    pub fn socket(&self) -> SocketAddr {
        SocketAddr::new(self.addr, self.port)
    }
}

impl fmt::Display for DestKey {
    /// `10.10.24.21:80` / `[2001:db8::21]:80`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.socket().fmt(f)
    }
}

/// The settings of a real server that `ipvsadm -e` can change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dest {
    /// Weight; 0 sends no new connections without removing the server.
    pub weight: u32,
    pub forward: Forward,
    /// Upper connection threshold (0 = none), ipvsadm `-x`.
    pub upper_threshold: u32,
    /// Lower connection threshold (0 = none), ipvsadm `-y`.
    pub lower_threshold: u32,
}

impl Dest {
    /// A direct-routing real server with no thresholds (`-g -w WEIGHT`).
    pub fn direct_route(weight: u32) -> Self {
        Self {
            weight,
            forward: Forward::DirectRoute,
            upper_threshold: 0,
            lower_threshold: 0,
        }
    }
}

/// Traffic counters from `IPVS_*_ATTR_STATS64` (or `STATS` on old kernels), as
/// `ipvsadm -Ln --stats` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Connections scheduled.
    pub connections: u64,
    pub in_packets: u64,
    /// 0 under DR: replies bypass the director.
    pub out_packets: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
}

/// A real server's connection table state and traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DestStats {
    /// `IPVS_DEST_ATTR_ACTIVE_CONNS`: established connections.
    pub active_conns: u32,
    /// `IPVS_DEST_ATTR_INACT_CONNS`.
    pub inactive_conns: u32,
    /// `IPVS_DEST_ATTR_PERSIST_CONNS`.
    pub persist_conns: u32,
    pub traffic: Counters,
}

/// A service the kernel has that is of no kind this crate manages: an address service of a
/// protocol outside [`Protocol`] (AH, ESP). Kept so that dumps never fail on them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignService {
    /// `IPVS_SVC_ATTR_AF`.
    pub family: u16,
    /// Raw `IPVS_SVC_ATTR_PROTOCOL`.
    pub protocol: u16,
    /// `IPVS_SVC_ATTR_ADDR`, if present.
    pub addr: Option<IpAddr>,
    /// `IPVS_SVC_ATTR_PORT`.
    pub port: u16,
}

impl fmt::Display for ForeignService {
    /// `proto 50 10.0.0.1:0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            Some(a) => write!(
                f,
                "proto {} {}",
                self.protocol,
                SocketAddr::new(a, self.port)
            ),
            None => write!(f, "proto {} port {}", self.protocol, self.port),
        }
    }
}

/// One entry of a service dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceEntry {
    /// An address/protocol/port service, with its counters.
    Service {
        key: ServiceKey,
        config: ServiceConfig,
        counters: Counters,
    },
    /// A firewall-mark service.
    Mark { key: MarkKey, config: ServiceConfig },
    /// Something else (an unknown protocol); never touched.
    Foreign(ForeignService),
}

/// One entry of a destination dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestEntry {
    pub key: DestKey,
    pub dest: Dest,
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

/// `IP_VS_SYNC_GROUP`: the IPv4 multicast group a sync daemon uses unless told otherwise.
pub const DEFAULT_SYNC_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 81);
/// `IP_VS_SYNC_PORT`: the UDP port a sync daemon uses unless told otherwise.
pub const DEFAULT_SYNC_PORT: u16 = 8848;
/// `IP_VS_IFNAME_MAXLEN - 1`: the longest interface name the kernel takes for a sync daemon.
pub const SYNC_IFNAME_MAX: usize = 15;

/// Which half of connection synchronisation a sync daemon plays (`IPVS_DAEMON_ATTR_STATE`): the
/// master sends the connections its director schedules, the backup learns them so that it can
/// take over established connections. One of each may run per network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncRole {
    /// `IP_VS_STATE_MASTER`.
    Master,
    /// `IP_VS_STATE_BACKUP`.
    Backup,
}

impl SyncRole {
    /// The kernel's `IP_VS_STATE_*` bit.
    pub fn state(self) -> u32 {
        match self {
            SyncRole::Master => 1,
            SyncRole::Backup => 2,
        }
    }

    /// Inverse of [`SyncRole::state`].
    pub fn from_state(state: u32) -> Option<Self> {
        match state {
            1 => Some(SyncRole::Master),
            2 => Some(SyncRole::Backup),
            _ => None,
        }
    }

    /// `ipvsadm --stop-daemon backup`: the command that stops the daemon of this role.
    pub fn stop_command(self) -> String {
        format!("ipvsadm --stop-daemon {self}")
    }
}

impl fmt::Display for SyncRole {
    /// `master` / `backup`, as ipvsadm names them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SyncRole::Master => "master",
            SyncRole::Backup => "backup",
        })
    }
}

/// A connection-synchronisation daemon (`IPVS_CMD_ATTR_DAEMON`): what `ipvsadm --start-daemon`
/// asks for and `ipvsadm -L --daemon` lists.
///
/// The optional settings (Linux >= 4.3) are `None` when not asked for, and the kernel then picks
/// them: group [`DEFAULT_SYNC_GROUP`], port [`DEFAULT_SYNC_PORT`], TTL 1, and a message length
/// that fits the interface's MTU (1472 for a master). A kernel that knows them reports the values
/// it uses, so an observed daemon has them all set; an older kernel reports `None`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SyncDaemon {
    pub role: SyncRole,
    /// The interface multicast goes out of (master) or is received on (backup),
    /// `--mcast-interface`; at most [`SYNC_IFNAME_MAX`] bytes.
    pub interface: String,
    /// `--syncid`: a master stamps it on every message, a backup keeps only messages with its
    /// own (0 takes all). The sync protocol carries 8 bits, hence `u8` (ipvsadm allows 0-255).
    pub sync_id: u8,
    /// `--sync-maxlen`: the largest sync message's UDP payload.
    pub max_len: Option<u16>,
    /// `--mcast-group`: an IPv4 or IPv6 multicast group.
    pub group: Option<IpAddr>,
    /// `--mcast-port`: the UDP port (a master with several sync threads uses port + thread).
    pub port: Option<u16>,
    /// `--mcast-ttl`.
    pub ttl: Option<u8>,
}

impl SyncDaemon {
    /// A daemon with the kernel's defaults for everything optional, like
    /// `ipvsadm --start-daemon ROLE --mcast-interface IF --syncid ID`.
    pub fn new(role: SyncRole, interface: impl Into<String>, sync_id: u8) -> Self {
        Self {
            role,
            interface: interface.into(),
            sync_id,
            max_len: None,
            group: None,
            port: None,
            ttl: None,
        }
    }
}

impl fmt::Display for SyncDaemon {
    /// `ipvsadm --start-daemon master --mcast-interface eth0 --syncid 7`, with `--sync-maxlen`,
    /// `--mcast-group`, `--mcast-port` and `--mcast-ttl` for the settings that are set: the
    /// command that starts this daemon.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ipvsadm --start-daemon {} --mcast-interface {} --syncid {}",
            self.role, self.interface, self.sync_id
        )?;
        if let Some(n) = self.max_len {
            write!(f, " --sync-maxlen {n}")?;
        }
        if let Some(g) = self.group {
            write!(f, " --mcast-group {g}")?;
        }
        if let Some(p) = self.port {
            write!(f, " --mcast-port {p}")?;
        }
        if let Some(t) = self.ttl {
            write!(f, " --mcast-ttl {t}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_print_like_ipvsadm_lists_them_with_ipv6_in_brackets() {
        let v4 = ServiceKey {
            vip: "10.10.24.88".parse().unwrap(),
            protocol: Protocol::Tcp,
            port: 80,
        };
        let v6 = ServiceKey {
            vip: "2001:db8::1".parse().unwrap(),
            protocol: Protocol::Udp,
            port: 53,
        };
        assert_eq!(v4.to_string(), "TCP 10.10.24.88:80");
        assert_eq!(v6.to_string(), "UDP [2001:db8::1]:53");
        assert_eq!(
            ServiceConfig::new(Scheduler::Rr, v4.vip).netmask,
            0xFFFF_FFFF
        );
        assert_eq!(ServiceConfig::new(Scheduler::Rr, v6.vip).netmask, 128);
    }

    #[test]
    fn scheduler_names_round_trip_and_unknown_ones_are_kept_apart() {
        for s in Scheduler::ALL {
            assert_eq!(Scheduler::from_name(s.name()), s);
        }
        assert_eq!(Scheduler::from_name("my_sched"), Scheduler::Unknown);
    }

    #[test]
    fn sync_daemons_print_as_the_ipvsadm_command_that_starts_them() {
        let master = SyncDaemon::new(SyncRole::Master, "eth0", 7);
        assert_eq!(
            master.to_string(),
            "ipvsadm --start-daemon master --mcast-interface eth0 --syncid 7"
        );
        let backup = SyncDaemon {
            max_len: Some(1400),
            group: Some("ff15::81".parse().unwrap()),
            port: Some(9000),
            ttl: Some(2),
            ..SyncDaemon::new(SyncRole::Backup, "eth1", 0)
        };
        assert_eq!(
            backup.to_string(),
            "ipvsadm --start-daemon backup --mcast-interface eth1 --syncid 0 \
             --sync-maxlen 1400 --mcast-group ff15::81 --mcast-port 9000 --mcast-ttl 2"
        );
        assert_eq!(
            SyncRole::Backup.stop_command(),
            "ipvsadm --stop-daemon backup"
        );
    }

    #[test]
    fn sync_roles_are_the_kernels_state_bits() {
        for role in [SyncRole::Master, SyncRole::Backup] {
            assert_eq!(SyncRole::from_state(role.state()), Some(role));
        }
        assert_eq!(SyncRole::Master.state(), 1);
        assert_eq!(SyncRole::Backup.state(), 2);
        assert_eq!(SyncRole::from_state(3), None);
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
