//! [`Op`]: one change to the kernel, and how `ipvsadm` users read it (`ipvsadm -A -t VIP:80 -s rr`).
//! The vocabulary both the plan and the ledger speak.

use std::fmt;
use std::net::IpAddr;

use super::model::*;

/// One change to the kernel. Each maps to one netlink request or one sysctl write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    AddService {
        key: ServiceKey,
        config: ServiceConfig,
    },
    EditService {
        key: ServiceKey,
        config: ServiceConfig,
    },
    DelService {
        key: ServiceKey,
    },
    AddDest {
        service: ServiceKey,
        dest: DestKey,
        weight: u32,
    },
    EditDest {
        service: ServiceKey,
        dest: DestKey,
        weight: u32,
    },
    /// Weight 0: no new connections; the destination is deleted when its connections end.
    DrainDest {
        service: ServiceKey,
        dest: DestKey,
    },
    DelDest {
        service: ServiceKey,
        dest: DestKey,
    },
    /// A health checks' firewall-mark service (`ipvsadm -A -f MARK -s rr`).
    AddMark {
        key: MarkKey,
    },
    /// Its one real server (`ipvsadm -a -f MARK -r RIP -g -w 1`).
    AddMarkDest {
        key: MarkKey,
        dest: IpAddr,
    },
    DelMarkDest {
        key: MarkKey,
        dest: IpAddr,
    },
    DelMark {
        key: MarkKey,
    },
    /// `ipvsadm --start-daemon master|backup --mcast-interface IF --syncid ID`.
    StartDaemon {
        daemon: SyncDaemon,
    },
    /// `ipvsadm --stop-daemon master|backup`.
    StopDaemon {
        role: SyncRole,
    },
    /// `announce`: send gratuitous ARP / unsolicited neighbour advertisement (director VIPs).
    AddAddress {
        address: HostAddress,
        announce: bool,
    },
    DelAddress {
        address: HostAddress,
    },
    /// Announces a VIP already on its interface (gratuitous ARP / unsolicited neighbour
    /// advertisement): a director that took it quietly while the old holder drained.
    Announce {
        address: HostAddress,
    },
    SetSysctl {
        name: String,
        value: String,
        previous: String,
    },
    RestoreSysctl {
        name: String,
        value: String,
    },
}

impl Op {
    /// Whether this operation touches something of `part` (one object's share of the state).
    pub fn concerns(&self, part: &NodeState) -> bool {
        match self {
            Op::AddService { key, .. }
            | Op::EditService { key, .. }
            | Op::DelService { key }
            | Op::AddDest { service: key, .. }
            | Op::EditDest { service: key, .. }
            | Op::DrainDest { service: key, .. }
            | Op::DelDest { service: key, .. } => part.services.contains_key(key),
            Op::AddMark { key }
            | Op::AddMarkDest { key, .. }
            | Op::DelMarkDest { key, .. }
            | Op::DelMark { key } => part.marks.contains_key(key),
            Op::AddAddress { address, .. }
            | Op::DelAddress { address }
            | Op::Announce { address } => part.addresses.contains(address),
            Op::SetSysctl { name, .. } | Op::RestoreSysctl { name, .. } => {
                part.sysctls.contains_key(name)
            }
            Op::StartDaemon { daemon } => part.daemons.contains_key(&daemon.role),
            Op::StopDaemon { role } => part.daemons.contains_key(role),
        }
    }
}

impl fmt::Display for Op {
    /// The equivalent `ipvsadm`, `ip` or `sysctl` command, for dry runs and logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::AddService { key, config } => {
                write!(f, "ipvsadm -A {}{}", Named(key), ServiceOpts(key, config))
            }
            Op::EditService { key, config } => {
                write!(f, "ipvsadm -E {}{}", Named(key), ServiceOpts(key, config))
            }
            Op::DelService { key } => write!(f, "ipvsadm -D {}", Named(key)),
            Op::AddDest {
                service,
                dest,
                weight,
            } => write!(f, "ipvsadm -a {} -r {dest} -g -w {weight}", Named(service)),
            Op::EditDest {
                service,
                dest,
                weight,
            } => write!(f, "ipvsadm -e {} -r {dest} -g -w {weight}", Named(service)),
            Op::DrainDest { service, dest } => {
                write!(f, "ipvsadm -e {} -r {dest} -g -w 0", Named(service))
            }
            Op::DelDest { service, dest } => write!(f, "ipvsadm -d {} -r {dest}", Named(service)),
            Op::AddMark { key } => write!(f, "ipvsadm -A {} -s rr", Marked(key)),
            Op::AddMarkDest { key, dest } => {
                write!(f, "ipvsadm -a {} -r {dest} -g -w 1", Marked(key))
            }
            Op::DelMarkDest { key, dest } => write!(f, "ipvsadm -d {} -r {dest}", Marked(key)),
            Op::DelMark { key } => write!(f, "ipvsadm -D {}", Marked(key)),
            Op::StartDaemon { daemon } => write!(f, "{daemon}"),
            Op::StopDaemon { role } => f.write_str(&role.stop_command()),
            Op::AddAddress { address, .. } => match address.addr {
                std::net::IpAddr::V4(a) if address.prefix_len == 32 => {
                    write!(f, "ip addr add {a}/32 broadcast {a} dev {}", address.ifname)
                }
                _ => write!(f, "ip addr add {address}"),
            },
            Op::DelAddress { address } => write!(f, "ip addr del {address}"),
            Op::Announce { address } => match address.addr {
                std::net::IpAddr::V4(a) => write!(f, "arping -U -c 3 -I {} {a}", address.ifname),
                std::net::IpAddr::V6(a) => write!(f, "ndsend {a} {}", address.ifname),
            },
            Op::SetSysctl { name, value, .. } | Op::RestoreSysctl { name, value } => {
                write!(f, "sysctl -w {name}={value}")
            }
        }
    }
}

/// A service as ipvsadm's options name it: `-t 10.10.24.88:80`.
struct Named<'a>(&'a ServiceKey);

impl fmt::Display for Named<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0.protocol.ipvsadm_flag(), self.0.socket())
    }
}

/// A firewall-mark service as ipvsadm's options name it: `-f 7` or `-f 7 -6`.
struct Marked<'a>(&'a MarkKey);

impl fmt::Display for Marked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "-f {}", self.0.mark)?;
        if self.0.family == AF_INET6 {
            f.write_str(" -6")?;
        }
        Ok(())
    }
}

/// The options after `ipvsadm -A -t VIP:PORT`, in the order `ipvsadm -Sn` prints them.
struct ServiceOpts<'a>(&'a ServiceKey, &'a ServiceConfig);

impl fmt::Display for ServiceOpts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.1;
        write!(f, " -s {}", c.scheduler)?;
        let mut sched_flags = Vec::new();
        if c.flags & SVC_F_SCHED1 != 0 {
            sched_flags.push(format!("{}-fallback", c.scheduler));
        }
        if c.flags & SVC_F_SCHED2 != 0 {
            sched_flags.push(format!("{}-port", c.scheduler));
        }
        if !sched_flags.is_empty() {
            write!(f, " -b {}", sched_flags.join(","))?;
        }
        if c.flags & SVC_F_PERSISTENT != 0 {
            write!(f, " -p {}", c.timeout)?;
            match self.0.vip {
                std::net::IpAddr::V4(_) if c.netmask != u32::MAX => {
                    write!(f, " -M {}", std::net::Ipv4Addr::from(c.netmask))?
                }
                std::net::IpAddr::V6(_) if c.netmask != 128 => write!(f, " -M {}", c.netmask)?,
                _ => {}
            }
        }
        Ok(())
    }
}
