//! IPVS generic-netlink messages as typed values: the command and attribute
//! numbers of `include/uapi/linux/ip_vs.h`, an emitter producing the exact
//! request bytes, the parser of kernel replies, and the translation of the
//! errno a request got into an error naming its objects.
//!
//! Layout decisions follow `net/netfilter/ipvs/ip_vs_ctl.c` and ipvsadm's
//! libipvs, which is what the kernel side is tested against:
//! * addresses are always sent as 16 bytes (`sizeof(union nf_inet_addr)`),
//!   IPv4 in the first 4 bytes; replies are read by the address family;
//! * ports of services and destinations are big-endian (`nla_put_be16`);
//!   other integers are host-endian, the sync daemon's port included
//!   (`IPVS_DAEMON_ATTR_MCAST_PORT`, `nla_get_u16`/`nla_put_u16`), and the
//!   daemon's IPv4 group is an `in_addr` in network order (`nla_get_in_addr`);
//! * flags go as `struct ip_vs_flags { flags, mask = ~0 }` so the kernel
//!   replaces all flags instead of merging with the old ones;
//! * nests do not carry `NLA_F_NESTED` (neither do the kernel's dumps).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::ipvs::error::{EEXIST, EINVAL, ENODEV, ENOENT, EPERM, ESRCH, IpvsError, KernelError};
use crate::ipvs::types::{
    AF_INET, AF_INET6, Counters, Dest, DestEntry, DestKey, DestStats, ForeignService, Forward,
    Info, MarkKey, Protocol, SVC_F_HASHED, Scheduler, ServiceConfig, ServiceEntry, ServiceKey,
    SyncDaemon, SyncRole, Virtual, family_of,
};
use crate::ipvs::wire::{
    self, Attr, CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME, CTRL_CMD_GETFAMILY, CTRL_CMD_NEWFAMILY,
    GENL_ID_CTRL, MsgWriter, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};

/// `IPVS_GENL_NAME`.
pub const IPVS_GENL_NAME: &str = "IPVS";
/// `IPVS_GENL_VERSION`.
pub const IPVS_GENL_VERSION: u8 = 1;

/// Declares a `#[repr]` enum mirroring a kernel enum, with raw conversions.
macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident : $t:ident { $($(#[$vm:meta])* $var:ident = $val:expr),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr($t)]
        pub enum $name { $($(#[$vm])* $var = $val),* }
        impl $name {
            /// The kernel's number for this value.
            pub fn raw(self) -> $t { self as $t }
            /// Inverse of [`Self::raw`].
            pub fn from_raw(v: $t) -> Option<Self> {
                match v { $(x if x == $val => Some(Self::$var),)* _ => None }
            }
        }
    };
}

wire_enum! {
    /// `IPVS_CMD_*`: the genl command byte.
    Cmd: u8 {
        /// `IPVS_CMD_NEW_SERVICE`.
        NewService = 1,
        /// `IPVS_CMD_SET_SERVICE`.
        SetService = 2,
        /// `IPVS_CMD_DEL_SERVICE`.
        DelService = 3,
        /// `IPVS_CMD_GET_SERVICE`.
        GetService = 4,
        /// `IPVS_CMD_NEW_DEST`.
        NewDest = 5,
        /// `IPVS_CMD_SET_DEST`.
        SetDest = 6,
        /// `IPVS_CMD_DEL_DEST`.
        DelDest = 7,
        /// `IPVS_CMD_GET_DEST`.
        GetDest = 8,
        /// `IPVS_CMD_NEW_DAEMON`.
        NewDaemon = 9,
        /// `IPVS_CMD_DEL_DAEMON`.
        DelDaemon = 10,
        /// `IPVS_CMD_GET_DAEMON`.
        GetDaemon = 11,
        /// `IPVS_CMD_SET_CONFIG`.
        SetConfig = 12,
        /// `IPVS_CMD_GET_CONFIG`.
        GetConfig = 13,
        /// `IPVS_CMD_SET_INFO` (only used as the `GET_INFO` reply).
        SetInfo = 14,
        /// `IPVS_CMD_GET_INFO`.
        GetInfo = 15,
        /// `IPVS_CMD_ZERO`.
        Zero = 16,
        /// `IPVS_CMD_FLUSH`.
        Flush = 17,
    }
}

wire_enum! {
    /// `IPVS_CMD_ATTR_*`: top-level attributes.
    CmdAttr: u16 {
        /// `IPVS_CMD_ATTR_SERVICE` (nested [`SvcAttr`]).
        Service = 1,
        /// `IPVS_CMD_ATTR_DEST` (nested [`DestAttr`]).
        Dest = 2,
        /// `IPVS_CMD_ATTR_DAEMON` (nested [`DaemonAttr`]).
        Daemon = 3,
        /// `IPVS_CMD_ATTR_TIMEOUT_TCP`.
        TimeoutTcp = 4,
        /// `IPVS_CMD_ATTR_TIMEOUT_TCP_FIN`.
        TimeoutTcpFin = 5,
        /// `IPVS_CMD_ATTR_TIMEOUT_UDP`.
        TimeoutUdp = 6,
    }
}

wire_enum! {
    /// `IPVS_SVC_ATTR_*`: inside `IPVS_CMD_ATTR_SERVICE`.
    SvcAttr: u16 {
        /// `IPVS_SVC_ATTR_AF` (u16).
        Af = 1,
        /// `IPVS_SVC_ATTR_PROTOCOL` (u16).
        Protocol = 2,
        /// `IPVS_SVC_ATTR_ADDR` (16 bytes).
        Addr = 3,
        /// `IPVS_SVC_ATTR_PORT` (be16).
        Port = 4,
        /// `IPVS_SVC_ATTR_FWMARK` (u32).
        Fwmark = 5,
        /// `IPVS_SVC_ATTR_SCHED_NAME` (NUL-terminated string).
        SchedName = 6,
        /// `IPVS_SVC_ATTR_FLAGS` (`struct ip_vs_flags`).
        Flags = 7,
        /// `IPVS_SVC_ATTR_TIMEOUT` (u32 seconds).
        Timeout = 8,
        /// `IPVS_SVC_ATTR_NETMASK` (u32, see [`Service`]).
        Netmask = 9,
        /// `IPVS_SVC_ATTR_STATS` (nested [`StatsAttr`], 32-bit counters).
        Stats = 10,
        /// `IPVS_SVC_ATTR_PE_NAME` (string).
        PeName = 11,
        /// `IPVS_SVC_ATTR_STATS64` (nested [`StatsAttr`], 64-bit counters).
        Stats64 = 12,
    }
}

wire_enum! {
    /// `IPVS_DEST_ATTR_*`: inside `IPVS_CMD_ATTR_DEST`.
    DestAttr: u16 {
        /// `IPVS_DEST_ATTR_ADDR` (16 bytes).
        Addr = 1,
        /// `IPVS_DEST_ATTR_PORT` (be16).
        Port = 2,
        /// `IPVS_DEST_ATTR_FWD_METHOD` (u32).
        FwdMethod = 3,
        /// `IPVS_DEST_ATTR_WEIGHT` (u32).
        Weight = 4,
        /// `IPVS_DEST_ATTR_U_THRESH` (u32).
        UThresh = 5,
        /// `IPVS_DEST_ATTR_L_THRESH` (u32).
        LThresh = 6,
        /// `IPVS_DEST_ATTR_ACTIVE_CONNS` (u32).
        ActiveConns = 7,
        /// `IPVS_DEST_ATTR_INACT_CONNS` (u32).
        InactConns = 8,
        /// `IPVS_DEST_ATTR_PERSIST_CONNS` (u32).
        PersistConns = 9,
        /// `IPVS_DEST_ATTR_STATS` (nested).
        Stats = 10,
        /// `IPVS_DEST_ATTR_ADDR_FAMILY` (u16).
        AddrFamily = 11,
        /// `IPVS_DEST_ATTR_STATS64` (nested).
        Stats64 = 12,
        /// `IPVS_DEST_ATTR_TUN_TYPE` (u8).
        TunType = 13,
        /// `IPVS_DEST_ATTR_TUN_PORT` (be16).
        TunPort = 14,
        /// `IPVS_DEST_ATTR_TUN_FLAGS` (u16).
        TunFlags = 15,
    }
}

wire_enum! {
    /// `IPVS_DAEMON_ATTR_*`: inside `IPVS_CMD_ATTR_DAEMON`. The last five exist from Linux 4.3 on.
    DaemonAttr: u16 {
        /// `IPVS_DAEMON_ATTR_STATE` (u32, [`SyncRole::state`]).
        State = 1,
        /// `IPVS_DAEMON_ATTR_MCAST_IFN` (NUL-terminated string, at most 15 bytes before the NUL).
        McastIfn = 2,
        /// `IPVS_DAEMON_ATTR_SYNC_ID` (u32; the sync protocol carries 8 bits of it).
        SyncId = 3,
        /// `IPVS_DAEMON_ATTR_SYNC_MAXLEN` (u16).
        SyncMaxlen = 4,
        /// `IPVS_DAEMON_ATTR_MCAST_GROUP` (`in_addr`, network order).
        McastGroup = 5,
        /// `IPVS_DAEMON_ATTR_MCAST_GROUP6` (`in6_addr`, 16 bytes).
        McastGroup6 = 6,
        /// `IPVS_DAEMON_ATTR_MCAST_PORT` (u16, host order: unlike service ports).
        McastPort = 7,
        /// `IPVS_DAEMON_ATTR_MCAST_TTL` (u8).
        McastTtl = 8,
    }
}

wire_enum! {
    /// `IPVS_STATS_ATTR_*`: inside `*_ATTR_STATS` / `*_ATTR_STATS64`.
    StatsAttr: u16 {
        /// `IPVS_STATS_ATTR_CONNS`.
        Conns = 1,
        /// `IPVS_STATS_ATTR_INPKTS`.
        Inpkts = 2,
        /// `IPVS_STATS_ATTR_OUTPKTS`.
        Outpkts = 3,
        /// `IPVS_STATS_ATTR_INBYTES`.
        Inbytes = 4,
        /// `IPVS_STATS_ATTR_OUTBYTES`.
        Outbytes = 5,
        /// `IPVS_STATS_ATTR_CPS`.
        Cps = 6,
        /// `IPVS_STATS_ATTR_INPPS`.
        Inpps = 7,
        /// `IPVS_STATS_ATTR_OUTPPS`.
        Outpps = 8,
        /// `IPVS_STATS_ATTR_INBPS`.
        Inbps = 9,
        /// `IPVS_STATS_ATTR_OUTBPS`.
        Outbps = 10,
        /// `IPVS_STATS_ATTR_PAD` (alignment filler for u64s).
        Pad = 11,
    }
}

wire_enum! {
    /// `IPVS_INFO_ATTR_*`: top level of the `GET_INFO` reply.
    InfoAttr: u16 {
        /// `IPVS_INFO_ATTR_VERSION` (u32).
        Version = 1,
        /// `IPVS_INFO_ATTR_CONN_TAB_SIZE` (u32).
        ConnTabSize = 2,
    }
}

/// A request this client sends to the IPVS family: one per `ipvsadm` operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `IPVS_CMD_NEW_SERVICE` (`ipvsadm -A`).
    NewService(Virtual, ServiceConfig),
    /// `IPVS_CMD_SET_SERVICE` (`ipvsadm -E`).
    SetService(Virtual, ServiceConfig),
    /// `IPVS_CMD_DEL_SERVICE` (`ipvsadm -D`).
    DelService(Virtual),
    /// `IPVS_CMD_NEW_DEST` (`ipvsadm -a`).
    NewDest(Virtual, DestKey, Dest),
    /// `IPVS_CMD_SET_DEST` (`ipvsadm -e`).
    SetDest(Virtual, DestKey, Dest),
    /// `IPVS_CMD_DEL_DEST` (`ipvsadm -d`).
    DelDest(Virtual, DestKey),
    /// `IPVS_CMD_GET_SERVICE` as a dump (no attributes).
    GetServices,
    /// `IPVS_CMD_GET_DEST` as a dump; the kernel needs the service nested.
    GetDests(Virtual),
    /// `IPVS_CMD_GET_INFO`.
    GetInfo,
    /// `IPVS_CMD_NEW_DAEMON` (`ipvsadm --start-daemon`).
    NewDaemon(SyncDaemon),
    /// `IPVS_CMD_DEL_DAEMON` (`ipvsadm --stop-daemon`); the kernel needs only the role.
    DelDaemon(SyncRole),
    /// `IPVS_CMD_GET_DAEMON` as a dump (`ipvsadm -L --daemon`); the kernel has no other form.
    GetDaemons,
}

impl Request {
    /// The genl command byte.
    pub fn cmd(&self) -> Cmd {
        match self {
            Request::NewService(..) => Cmd::NewService,
            Request::SetService(..) => Cmd::SetService,
            Request::DelService(_) => Cmd::DelService,
            Request::NewDest(..) => Cmd::NewDest,
            Request::SetDest(..) => Cmd::SetDest,
            Request::DelDest(..) => Cmd::DelDest,
            Request::GetServices => Cmd::GetService,
            Request::GetDests(_) => Cmd::GetDest,
            Request::GetInfo => Cmd::GetInfo,
            Request::NewDaemon(_) => Cmd::NewDaemon,
            Request::DelDaemon(_) => Cmd::DelDaemon,
            Request::GetDaemons => Cmd::GetDaemon,
        }
    }

    /// Whether the kernel answers with a multipart dump ending in `NLMSG_DONE`.
    pub fn is_dump(&self) -> bool {
        matches!(
            self,
            Request::GetServices | Request::GetDests(_) | Request::GetDaemons
        )
    }

    /// `nlmsg_flags`: mutations ask for an ack so success is confirmed per
    /// sequence number; dumps use `NLM_F_DUMP`; `GET_INFO` gets its reply.
    pub fn nlmsg_flags(&self) -> u16 {
        match self {
            r if r.is_dump() => NLM_F_REQUEST | NLM_F_DUMP,
            Request::GetInfo => NLM_F_REQUEST,
            _ => NLM_F_REQUEST | NLM_F_ACK,
        }
    }

    /// Appends this request as one netlink message to `buf` and returns it.
    pub fn emit_into(&self, buf: Vec<u8>, family: u16, seq: u32) -> Vec<u8> {
        let mut w = MsgWriter::new(
            buf,
            family,
            self.nlmsg_flags(),
            seq,
            self.cmd().raw(),
            IPVS_GENL_VERSION,
        );
        match self {
            Request::NewService(k, c) | Request::SetService(k, c) => put_service(&mut w, k, c),
            Request::DelService(k) | Request::GetDests(k) => put_service_key(&mut w, k),
            Request::NewDest(k, d, s) | Request::SetDest(k, d, s) => {
                put_service_key(&mut w, k);
                put_dest(&mut w, d, s);
            }
            Request::DelDest(k, d) => {
                put_service_key(&mut w, k);
                put_dest_key(&mut w, d);
            }
            Request::NewDaemon(d) => put_daemon(&mut w, d),
            Request::DelDaemon(role) => {
                let n = w.begin_nest(CmdAttr::Daemon.raw());
                w.u32(DaemonAttr::State.raw(), role.state());
                w.end_nest(n);
            }
            Request::GetServices | Request::GetInfo | Request::GetDaemons => {}
        }
        w.finish()
    }

    /// This request as one standalone netlink message.
    pub fn emit(&self, family: u16, seq: u32) -> Vec<u8> {
        self.emit_into(Vec::new(), family, seq)
    }

    /// What the kernel's `errno` means for this request: ENOENT on `NEW_SERVICE` is a missing
    /// scheduler module, on a destination command a missing destination; EEXIST and ESRCH on the
    /// daemon commands are the daemon of that role running already or not at all.
    pub fn kernel_error(&self, errno: i32) -> KernelError {
        match (errno, self) {
            (EEXIST, Request::NewDaemon(_)) => KernelError::DaemonRunning,
            (ENODEV, Request::NewDaemon(_)) => KernelError::NoSuchInterface,
            (EINVAL, Request::NewDaemon(_)) => KernelError::DaemonRejected,
            (ESRCH, Request::DelDaemon(_)) => KernelError::NoDaemon,
            (ENOENT, Request::NewService(_, c) | Request::SetService(_, c)) => {
                KernelError::SchedulerUnavailable {
                    scheduler: c.scheduler.name().to_string(),
                }
            }
            (ENOENT, Request::NewDest(..) | Request::SetDest(..) | Request::DelDest(..)) => {
                KernelError::NoSuchDest
            }
            (ESRCH, _) => KernelError::NoSuchService,
            (EEXIST, _) => KernelError::Exists,
            (EPERM, _) => KernelError::PermissionDenied,
            (EINVAL, _) => KernelError::Invalid,
            (e, _) => KernelError::Errno(e),
        }
    }

    /// The error for this request, naming its objects.
    pub fn error(&self, source: KernelError) -> IpvsError {
        match *self {
            Request::NewDaemon(ref daemon) => IpvsError::StartDaemon {
                daemon: daemon.clone(),
                source,
            },
            Request::DelDaemon(role) => IpvsError::StopDaemon { role, source },
            Request::GetDaemons => IpvsError::ListDaemons { source },
            Request::NewService(service, _) => IpvsError::NewService { service, source },
            Request::SetService(service, _) => IpvsError::SetService { service, source },
            Request::DelService(service) => IpvsError::DelService { service, source },
            Request::NewDest(service, dest, _) => IpvsError::NewDest {
                service,
                dest,
                source,
            },
            Request::SetDest(service, dest, _) => IpvsError::SetDest {
                service,
                dest,
                source,
            },
            Request::DelDest(service, dest) => IpvsError::DelDest {
                service,
                dest,
                source,
            },
            Request::GetServices => IpvsError::ListServices { source },
            Request::GetDests(service) => IpvsError::ListDests { service, source },
            Request::GetInfo => IpvsError::Info { source },
        }
    }

    /// Parses one request message, the inverse of [`Request::emit`]: the byte tests and the
    /// round-trip property check the emitter with it.
    #[cfg(test)]
    pub fn parse(msg: &[u8]) -> Result<(Request, u32), IpvsError> {
        let msgs = wire::split_messages(msg)?;
        let [m] = msgs.as_slice() else {
            return Err(IpvsError::malformed("expected exactly one message"));
        };
        let (cmd, _version, attrs) = wire::split_genl(m.payload)?;
        let cmd = Cmd::from_raw(cmd)
            .ok_or_else(|| IpvsError::malformed(format!("unknown IPVS command {cmd}")))?;
        let top = wire::parse_attrs(attrs)?;
        let svc = || {
            find(&top, CmdAttr::Service.raw())
                .ok_or_else(|| IpvsError::malformed("missing IPVS_CMD_ATTR_SERVICE"))
                .and_then(SvcAttrs::parse)
        };
        let dest = || {
            find(&top, CmdAttr::Dest.raw())
                .ok_or_else(|| IpvsError::malformed("missing IPVS_CMD_ATTR_DEST"))
                .and_then(DestAttrs::parse)
        };
        let daemon = || {
            find(&top, CmdAttr::Daemon.raw())
                .ok_or_else(|| IpvsError::malformed("missing IPVS_CMD_ATTR_DAEMON"))
                .and_then(DaemonAttrs::parse)
        };
        let req = match cmd {
            Cmd::NewService => Request::NewService(svc()?.virtual_key()?, svc()?.config()?),
            Cmd::SetService => Request::SetService(svc()?.virtual_key()?, svc()?.config()?),
            Cmd::DelService => Request::DelService(svc()?.virtual_key()?),
            Cmd::GetService => Request::GetServices,
            Cmd::GetDest => Request::GetDests(svc()?.virtual_key()?),
            Cmd::GetInfo => Request::GetInfo,
            Cmd::NewDaemon => Request::NewDaemon(daemon()?.daemon()?),
            Cmd::DelDaemon => Request::DelDaemon(daemon()?.role()?),
            Cmd::GetDaemon => Request::GetDaemons,
            Cmd::NewDest | Cmd::SetDest | Cmd::DelDest => {
                let key = svc()?.virtual_key()?;
                let d = dest()?;
                let fam = key.family();
                match cmd {
                    Cmd::NewDest => Request::NewDest(key, d.key(fam)?, d.dest()?),
                    Cmd::SetDest => Request::SetDest(key, d.key(fam)?, d.dest()?),
                    _ => Request::DelDest(key, d.key(fam)?),
                }
            }
            other => {
                return Err(IpvsError::malformed(format!(
                    "unsupported request {other:?}"
                )));
            }
        };
        Ok((req, m.seq))
    }
}

/// A parsed message of the IPVS family coming from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// One `IPVS_CMD_NEW_SERVICE` part of a `GET_SERVICE` dump.
    Service(ServiceEntry),
    /// One `IPVS_CMD_NEW_DEST` part of a `GET_DEST` dump.
    Dest(DestEntry),
    /// The `IPVS_CMD_SET_INFO` answer to `GET_INFO`.
    Info(Info),
    /// One `IPVS_CMD_NEW_DAEMON` part of a `GET_DAEMON` dump (one per running daemon).
    Daemon(SyncDaemon),
}

impl Reply {
    /// Parses the payload of an IPVS-family message (after `nlmsghdr`).
    ///
    /// `dest_family` is the family of the service a dest dump was for; old
    /// kernels (< 4.3) do not send `IPVS_DEST_ATTR_ADDR_FAMILY`.
    pub fn parse(payload: &[u8], dest_family: u16) -> Result<Reply, IpvsError> {
        let (cmd, _version, attrs) = wire::split_genl(payload)?;
        let top = wire::parse_attrs(attrs)?;
        match Cmd::from_raw(cmd) {
            Some(Cmd::NewService) => {
                let a = find(&top, CmdAttr::Service.raw()).ok_or_else(|| {
                    IpvsError::malformed("service reply without IPVS_CMD_ATTR_SERVICE")
                })?;
                SvcAttrs::parse(a)?.entry().map(Reply::Service)
            }
            Some(Cmd::NewDest) => {
                let a = find(&top, CmdAttr::Dest.raw())
                    .ok_or_else(|| IpvsError::malformed("dest reply without IPVS_CMD_ATTR_DEST"))?;
                DestAttrs::parse(a)?.entry(dest_family).map(Reply::Dest)
            }
            Some(Cmd::NewDaemon) => {
                let a = find(&top, CmdAttr::Daemon.raw()).ok_or_else(|| {
                    IpvsError::malformed("daemon reply without IPVS_CMD_ATTR_DAEMON")
                })?;
                DaemonAttrs::parse(a)?.daemon().map(Reply::Daemon)
            }
            Some(Cmd::SetInfo) => {
                let get = |t: InfoAttr| {
                    find(&top, t.raw())
                        .ok_or_else(|| IpvsError::malformed(format!("info reply without {t:?}")))?
                        .u32()
                };
                Ok(Reply::Info(Info {
                    version: get(InfoAttr::Version)?,
                    conn_table_size: get(InfoAttr::ConnTabSize)?,
                }))
            }
            _ => Err(IpvsError::malformed(format!(
                "unexpected IPVS reply command {cmd}"
            ))),
        }
    }
}

/// `CTRL_CMD_GETFAMILY` for `name` (normally [`IPVS_GENL_NAME`]): how the
/// dynamic family id is learned.
pub fn emit_resolve_family(name: &str, seq: u32) -> Vec<u8> {
    // The controller accepts version 1 requests (libnl and moby send 1).
    let mut w = MsgWriter::new(
        Vec::new(),
        GENL_ID_CTRL,
        NLM_F_REQUEST,
        seq,
        CTRL_CMD_GETFAMILY,
        1,
    );
    w.string(CTRL_ATTR_FAMILY_NAME, name);
    w.finish()
}

/// The family id from a `CTRL_CMD_NEWFAMILY` reply payload (after `nlmsghdr`).
pub fn parse_family_reply(payload: &[u8]) -> Result<u16, IpvsError> {
    let (cmd, _version, attrs) = wire::split_genl(payload)?;
    if cmd != CTRL_CMD_NEWFAMILY {
        return Err(IpvsError::malformed(format!(
            "unexpected controller command {cmd}"
        )));
    }
    let attrs = wire::parse_attrs(attrs)?;
    find(&attrs, CTRL_ATTR_FAMILY_ID)
        .ok_or_else(|| IpvsError::malformed("controller reply without CTRL_ATTR_FAMILY_ID"))?
        .u16()
}

fn find<'a>(attrs: &[Attr<'a>], ty: u16) -> Option<Attr<'a>> {
    attrs.iter().find(|a| a.ty == ty).copied()
}

/// `union nf_inet_addr` as sent: 16 bytes, IPv4 in the first 4.
fn addr_bytes(addr: &IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            b
        }
        IpAddr::V6(a) => a.octets(),
    }
}

fn decode_addr(family: u16, a: Attr<'_>) -> Result<IpAddr, IpvsError> {
    // The kernel sends `union nf_inet_addr` (16 bytes) for both families; a bare 4-byte IPv4
    // address is accepted too, as libnl does.
    match (family, a.payload.len()) {
        (AF_INET, 4 | 16) => Ok(IpAddr::V4(Ipv4Addr::new(
            a.payload[0],
            a.payload[1],
            a.payload[2],
            a.payload[3],
        ))),
        (AF_INET6, 16) => {
            let mut b = [0u8; 16];
            b.copy_from_slice(a.payload);
            Ok(IpAddr::V6(Ipv6Addr::from(b)))
        }
        (f, n) => Err(IpvsError::malformed(format!(
            "address attribute of {n} bytes for family {f}"
        ))),
    }
}

/// The kernel keeps the netmask as raw `__be32`: an IPv4 mask in network
/// order, but for IPv6 it casts the raw value to a host-order prefix length.
fn netmask_bytes(family: u16, netmask: u32) -> [u8; 4] {
    if family == AF_INET6 {
        netmask.to_ne_bytes()
    } else {
        netmask.to_be_bytes()
    }
}

fn decode_netmask(family: u16, a: Attr<'_>) -> Result<u32, IpvsError> {
    if family == AF_INET6 {
        a.u32()
    } else {
        a.be32()
    }
}

fn put_service_key(w: &mut MsgWriter, k: &Virtual) {
    let n = w.begin_nest(CmdAttr::Service.raw());
    put_service_identity(w, k);
    w.end_nest(n);
}

/// An address service is named by family, protocol, address and port; a firewall-mark service
/// by family and mark alone (as ipvsadm sends them).
fn put_service_identity(w: &mut MsgWriter, k: &Virtual) {
    w.u16(SvcAttr::Af.raw(), k.family());
    match k {
        Virtual::Service(k) => {
            w.u16(SvcAttr::Protocol.raw(), k.protocol.number());
            w.attr(SvcAttr::Addr.raw(), &addr_bytes(&k.vip));
            w.be16(SvcAttr::Port.raw(), k.port);
        }
        Virtual::Mark(k) => w.u32(SvcAttr::Fwmark.raw(), k.mark),
    }
}

fn put_service(w: &mut MsgWriter, k: &Virtual, c: &ServiceConfig) {
    let n = w.begin_nest(CmdAttr::Service.raw());
    put_service_identity(w, k);
    // The kernel's full-entry parse requires all four of these (else EINVAL).
    w.string(SvcAttr::SchedName.raw(), c.scheduler.name());
    let mut flags = [0u8; 8];
    flags[..4].copy_from_slice(&c.flags.to_ne_bytes());
    flags[4..].copy_from_slice(&u32::MAX.to_ne_bytes());
    w.attr(SvcAttr::Flags.raw(), &flags);
    w.u32(SvcAttr::Timeout.raw(), c.timeout);
    w.attr(
        SvcAttr::Netmask.raw(),
        &netmask_bytes(k.family(), c.netmask),
    );
    w.end_nest(n);
}

fn put_dest_key(w: &mut MsgWriter, d: &DestKey) {
    let n = w.begin_nest(CmdAttr::Dest.raw());
    w.attr(DestAttr::Addr.raw(), &addr_bytes(&d.addr));
    w.be16(DestAttr::Port.raw(), d.port);
    w.u16(DestAttr::AddrFamily.raw(), family_of(d.addr));
    w.end_nest(n);
}

fn put_dest(w: &mut MsgWriter, k: &DestKey, d: &Dest) {
    let n = w.begin_nest(CmdAttr::Dest.raw());
    w.attr(DestAttr::Addr.raw(), &addr_bytes(&k.addr));
    w.be16(DestAttr::Port.raw(), k.port);
    // The kernel's full-entry parse requires FWD_METHOD, WEIGHT, U/L_THRESH.
    w.u32(DestAttr::FwdMethod.raw(), d.forward as u32);
    w.u32(DestAttr::Weight.raw(), d.weight);
    w.u32(DestAttr::UThresh.raw(), d.upper_threshold);
    w.u32(DestAttr::LThresh.raw(), d.lower_threshold);
    // Sent explicitly (as ipvsadm does) so a mixed-family dest is never
    // silently taken as the service's family.
    w.u16(DestAttr::AddrFamily.raw(), family_of(k.addr));
    w.end_nest(n);
}

/// In the order `ip_vs_genl_fill_daemon` writes them, so that a request and a dump part of the
/// same daemon carry the same attributes. `ip_vs_genl_new_daemon` requires the first three.
fn put_daemon(w: &mut MsgWriter, d: &SyncDaemon) {
    let n = w.begin_nest(CmdAttr::Daemon.raw());
    w.u32(DaemonAttr::State.raw(), d.role.state());
    w.string(DaemonAttr::McastIfn.raw(), &d.interface);
    w.u32(DaemonAttr::SyncId.raw(), u32::from(d.sync_id));
    if let Some(len) = d.max_len {
        w.u16(DaemonAttr::SyncMaxlen.raw(), len);
    }
    if let Some(port) = d.port {
        w.u16(DaemonAttr::McastPort.raw(), port);
    }
    if let Some(ttl) = d.ttl {
        w.u8(DaemonAttr::McastTtl.raw(), ttl);
    }
    match d.group {
        Some(IpAddr::V4(g)) => w.attr(DaemonAttr::McastGroup.raw(), &g.octets()),
        Some(IpAddr::V6(g)) => w.attr(DaemonAttr::McastGroup6.raw(), &g.octets()),
        None => {}
    }
    w.end_nest(n);
}

fn parse_counters(a: Attr<'_>) -> Result<Counters, IpvsError> {
    let mut s = Counters::default();
    for c in a.nested()? {
        let slot = match StatsAttr::from_raw(c.ty) {
            Some(StatsAttr::Conns) => &mut s.connections,
            Some(StatsAttr::Inpkts) => &mut s.in_packets,
            Some(StatsAttr::Outpkts) => &mut s.out_packets,
            Some(StatsAttr::Inbytes) => &mut s.in_bytes,
            Some(StatsAttr::Outbytes) => &mut s.out_bytes,
            // Skipped on purpose: the rate estimates (CPS, INPPS, ...) are not used, PAD is
            // alignment, and a counter a future kernel adds is not ours to guess at.
            _ => continue,
        };
        *slot = c.uint()?;
    }
    Ok(s)
}

/// The attributes of one nested service, each optional until converted.
#[derive(Debug, Clone, Default)]
struct SvcAttrs<'a> {
    af: Option<u16>,
    protocol: Option<u16>,
    addr: Option<Attr<'a>>,
    port: Option<u16>,
    fwmark: Option<u32>,
    sched: Option<String>,
    flags: Option<u32>,
    timeout: Option<u32>,
    netmask: Option<Attr<'a>>,
    stats: Option<Counters>,
    stats64: Option<Counters>,
}

impl<'a> SvcAttrs<'a> {
    fn parse(nest: Attr<'a>) -> Result<Self, IpvsError> {
        let mut s = SvcAttrs::default();
        for a in nest.nested()? {
            match SvcAttr::from_raw(a.ty) {
                Some(SvcAttr::Af) => s.af = Some(a.u16()?),
                Some(SvcAttr::Protocol) => s.protocol = Some(a.u16()?),
                Some(SvcAttr::Addr) => s.addr = Some(a),
                Some(SvcAttr::Port) => s.port = Some(a.be16()?),
                Some(SvcAttr::Fwmark) => s.fwmark = Some(a.u32()?),
                Some(SvcAttr::SchedName) => s.sched = Some(a.string()?),
                Some(SvcAttr::Flags) => {
                    // struct ip_vs_flags { flags, mask }: the mask is always ~0 in dumps;
                    // HASHED is kernel bookkeeping, dropped so observed == desired.
                    let raw: [u8; 8] = a.payload.try_into().map_err(|_| {
                        IpvsError::malformed(format!(
                            "IPVS_SVC_ATTR_FLAGS has {} bytes, struct ip_vs_flags has 8",
                            a.payload.len()
                        ))
                    })?;
                    let flags = u32::from_ne_bytes([raw[0], raw[1], raw[2], raw[3]]);
                    s.flags = Some(flags & !SVC_F_HASHED);
                }
                Some(SvcAttr::Timeout) => s.timeout = Some(a.u32()?),
                Some(SvcAttr::Netmask) => s.netmask = Some(a),
                Some(SvcAttr::Stats) => s.stats = Some(parse_counters(a)?),
                Some(SvcAttr::Stats64) => s.stats64 = Some(parse_counters(a)?),
                // Skipped on purpose: the persistence engine name (PE_NAME) is not managed here,
                // and an attribute a future kernel adds must not break the dump.
                Some(SvcAttr::PeName) | None => {}
            }
        }
        Ok(s)
    }

    fn family(&self) -> Result<u16, IpvsError> {
        self.af
            .ok_or_else(|| IpvsError::malformed("service without IPVS_SVC_ATTR_AF"))
    }

    fn addr(&self) -> Result<Option<IpAddr>, IpvsError> {
        let family = self.family()?;
        self.addr.map(|a| decode_addr(family, a)).transpose()
    }

    fn netmask(&self) -> Result<u32, IpvsError> {
        match self.netmask {
            Some(a) => decode_netmask(self.family()?, a),
            None => Ok(0),
        }
    }

    fn key(&self) -> Result<ServiceKey, IpvsError> {
        let proto = self
            .protocol
            .ok_or_else(|| IpvsError::malformed("service without IPVS_SVC_ATTR_PROTOCOL"))?;
        Ok(ServiceKey {
            vip: self
                .addr()?
                .ok_or_else(|| IpvsError::malformed("service without IPVS_SVC_ATTR_ADDR"))?,
            protocol: Protocol::from_number(proto)
                .ok_or_else(|| IpvsError::malformed(format!("unsupported protocol {proto}")))?,
            port: self
                .port
                .ok_or_else(|| IpvsError::malformed("service without IPVS_SVC_ATTR_PORT"))?,
        })
    }

    /// The identity, of whichever kind the attributes name.
    fn virtual_key(&self) -> Result<Virtual, IpvsError> {
        match self.fwmark.filter(|&m| m != 0) {
            Some(mark) => Ok(Virtual::Mark(MarkKey {
                mark,
                family: self.family()?,
            })),
            None => self.key().map(Virtual::Service),
        }
    }

    fn config(&self) -> Result<ServiceConfig, IpvsError> {
        Ok(ServiceConfig {
            scheduler: Scheduler::from_name(self.sched.as_deref().unwrap_or("")),
            flags: self.flags.unwrap_or(0),
            timeout: self.timeout.unwrap_or(0),
            netmask: self.netmask()?,
        })
    }

    /// A dump entry: an address service of a known protocol, a firewall-mark service, or else
    /// kept as foreign rather than failing the whole dump.
    fn entry(&self) -> Result<ServiceEntry, IpvsError> {
        if self.fwmark.is_some_and(|m| m != 0) {
            let Virtual::Mark(key) = self.virtual_key()? else {
                unreachable!("a fwmark names a mark service");
            };
            return Ok(ServiceEntry::Mark {
                key,
                config: self.config()?,
            });
        }
        if self.protocol.and_then(Protocol::from_number).is_none() {
            return Ok(ServiceEntry::Foreign(ForeignService {
                family: self.family()?,
                protocol: self.protocol.unwrap_or(0),
                addr: self.addr()?,
                port: self.port.unwrap_or(0),
            }));
        }
        Ok(ServiceEntry::Service {
            key: self.key()?,
            config: self.config()?,
            // STATS64 (kernel >= 4.x) does not wrap; prefer it.
            counters: self.stats64.or(self.stats).unwrap_or_default(),
        })
    }
}

/// The attributes of one nested destination.
#[derive(Debug, Clone, Default)]
struct DestAttrs<'a> {
    addr: Option<Attr<'a>>,
    port: Option<u16>,
    fwd: Option<u32>,
    weight: Option<u32>,
    u_thresh: Option<u32>,
    l_thresh: Option<u32>,
    active: Option<u32>,
    inactive: Option<u32>,
    persist: Option<u32>,
    family: Option<u16>,
    stats: Option<Counters>,
    stats64: Option<Counters>,
}

impl<'a> DestAttrs<'a> {
    fn parse(nest: Attr<'a>) -> Result<Self, IpvsError> {
        let mut d = DestAttrs::default();
        for a in nest.nested()? {
            match DestAttr::from_raw(a.ty) {
                Some(DestAttr::Addr) => d.addr = Some(a),
                Some(DestAttr::Port) => d.port = Some(a.be16()?),
                Some(DestAttr::FwdMethod) => d.fwd = Some(a.u32()?),
                Some(DestAttr::Weight) => d.weight = Some(a.u32()?),
                Some(DestAttr::UThresh) => d.u_thresh = Some(a.u32()?),
                Some(DestAttr::LThresh) => d.l_thresh = Some(a.u32()?),
                Some(DestAttr::ActiveConns) => d.active = Some(a.u32()?),
                Some(DestAttr::InactConns) => d.inactive = Some(a.u32()?),
                Some(DestAttr::PersistConns) => d.persist = Some(a.u32()?),
                Some(DestAttr::AddrFamily) => d.family = Some(a.u16()?),
                Some(DestAttr::Stats) => d.stats = Some(parse_counters(a)?),
                Some(DestAttr::Stats64) => d.stats64 = Some(parse_counters(a)?),
                // Skipped on purpose: tunnel settings do not apply to Direct Routing, and an
                // attribute a future kernel adds must not break the dump.
                Some(DestAttr::TunType | DestAttr::TunPort | DestAttr::TunFlags) | None => {}
            }
        }
        Ok(d)
    }

    fn key(&self, svc_family: u16) -> Result<DestKey, IpvsError> {
        let family = self.family.unwrap_or(svc_family);
        let raw = self
            .addr
            .ok_or_else(|| IpvsError::malformed("destination without IPVS_DEST_ATTR_ADDR"))?;
        Ok(DestKey {
            addr: decode_addr(family, raw)?,
            port: self
                .port
                .ok_or_else(|| IpvsError::malformed("destination without IPVS_DEST_ATTR_PORT"))?,
        })
    }

    fn dest(&self) -> Result<Dest, IpvsError> {
        let fwd = self.fwd.unwrap_or(0);
        Ok(Dest {
            weight: self.weight.unwrap_or(0),
            forward: Forward::from_bits(fwd)
                .ok_or_else(|| IpvsError::malformed(format!("unknown forwarding method {fwd}")))?,
            upper_threshold: self.u_thresh.unwrap_or(0),
            lower_threshold: self.l_thresh.unwrap_or(0),
        })
    }

    fn entry(&self, svc_family: u16) -> Result<DestEntry, IpvsError> {
        Ok(DestEntry {
            key: self.key(svc_family)?,
            dest: self.dest()?,
            stats: DestStats {
                active_conns: self.active.unwrap_or(0),
                inactive_conns: self.inactive.unwrap_or(0),
                persist_conns: self.persist.unwrap_or(0),
                traffic: self.stats64.or(self.stats).unwrap_or_default(),
            },
        })
    }
}

/// The attributes of one nested sync daemon.
#[derive(Debug, Clone, Default)]
struct DaemonAttrs {
    state: Option<u32>,
    interface: Option<String>,
    sync_id: Option<u32>,
    max_len: Option<u16>,
    group: Option<IpAddr>,
    port: Option<u16>,
    ttl: Option<u8>,
}

impl DaemonAttrs {
    fn parse(nest: Attr<'_>) -> Result<Self, IpvsError> {
        let mut d = DaemonAttrs::default();
        for a in nest.nested()? {
            match DaemonAttr::from_raw(a.ty) {
                Some(DaemonAttr::State) => d.state = Some(a.u32()?),
                Some(DaemonAttr::McastIfn) => d.interface = Some(a.string()?),
                Some(DaemonAttr::SyncId) => d.sync_id = Some(a.u32()?),
                Some(DaemonAttr::SyncMaxlen) => d.max_len = Some(a.u16()?),
                Some(DaemonAttr::McastGroup) => {
                    d.set_group(Ipv4Addr::from(a.exact::<4>("in_addr")?).into())?;
                }
                Some(DaemonAttr::McastGroup6) => {
                    d.set_group(Ipv6Addr::from(a.exact::<16>("in6_addr")?).into())?;
                }
                Some(DaemonAttr::McastPort) => d.port = Some(a.u16()?),
                Some(DaemonAttr::McastTtl) => d.ttl = Some(a.u8()?),
                // Skipped on purpose: an attribute a future kernel adds must not break the dump.
                None => {}
            }
        }
        Ok(d)
    }

    /// The kernel writes one of `MCAST_GROUP` and `MCAST_GROUP6`, by the group's family.
    fn set_group(&mut self, group: IpAddr) -> Result<(), IpvsError> {
        match self.group.replace(group) {
            Some(_) => Err(IpvsError::malformed(
                "daemon with both IPVS_DAEMON_ATTR_MCAST_GROUP and _GROUP6",
            )),
            None => Ok(()),
        }
    }

    fn role(&self) -> Result<SyncRole, IpvsError> {
        let state = self
            .state
            .ok_or_else(|| IpvsError::malformed("daemon without IPVS_DAEMON_ATTR_STATE"))?;
        SyncRole::from_state(state)
            .ok_or_else(|| IpvsError::malformed(format!("unknown sync daemon state {state}")))
    }

    fn daemon(&self) -> Result<SyncDaemon, IpvsError> {
        let sync_id = self
            .sync_id
            .ok_or_else(|| IpvsError::malformed("daemon without IPVS_DAEMON_ATTR_SYNC_ID"))?;
        Ok(SyncDaemon {
            role: self.role()?,
            interface: self
                .interface
                .clone()
                .ok_or_else(|| IpvsError::malformed("daemon without IPVS_DAEMON_ATTR_MCAST_IFN"))?,
            sync_id: u8::try_from(sync_id).map_err(|_| {
                IpvsError::malformed(format!(
                    "sync id {sync_id} does not fit the sync protocol's 8 bits"
                ))
            })?,
            max_len: self.max_len,
            group: self.group,
            port: self.port,
            ttl: self.ttl,
        })
    }
}
