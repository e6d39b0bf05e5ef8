//! `plan(desired, observed, ledger)`: the minimal operations from what a node holds to what it
//! should hold, touching only what this agent made.
//!
//! Ownership is the [`Ledger`]'s: a service, address or sysctl enters it when we create or change
//! it, and only what is in it is ever edited back or removed. Something we want that someone else
//! already made (kube-proxy's IPVS service, an admin's address) is left as it is: an address is
//! simply shared, a service is reported as a conflict and not touched.
//!
//! Removed real servers drain as kube-proxy's graceful termination does: weight 0 first, deleted
//! once their active connections reach 0 or the drain timeout passes. When equal, the plan is empty.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::model::*;

/// What this agent made, persisted across restarts so that a new agent adopts its own state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ledger {
    #[serde(default)]
    pub services: BTreeSet<ServiceKey>,
    #[serde(default)]
    pub addresses: BTreeSet<HostAddress>,
    /// Sysctls we changed: the value they had before, and the value we set.
    #[serde(default)]
    pub sysctls: BTreeMap<String, SysctlRecord>,
    /// Destinations being drained and since when (seconds since the Unix epoch).
    #[serde(default)]
    pub draining: Vec<Drain>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SysctlRecord {
    pub previous: String,
    pub ours: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drain {
    pub service: ServiceKey,
    pub dest: DestKey,
    pub since: u64,
}

impl Ledger {
    fn drain_since(&self, service: &ServiceKey, dest: &DestKey) -> Option<u64> {
        self.draining
            .iter()
            .find(|d| d.service == *service && d.dest == *dest)
            .map(|d| d.since)
    }

    /// Records an operation the kernel accepted.
    pub fn record(&mut self, op: &Op, now: u64) {
        match op {
            Op::AddService { key, .. } | Op::EditService { key, .. } => {
                self.services.insert(*key);
            }
            Op::DelService { key } => {
                self.services.remove(key);
                self.draining.retain(|d| d.service != *key);
            }
            Op::AddDest { service, dest, .. }
            | Op::EditDest { service, dest, .. }
            | Op::DelDest { service, dest } => {
                self.draining
                    .retain(|d| !(d.service == *service && d.dest == *dest));
            }
            Op::DrainDest { service, dest } => {
                if self.drain_since(service, dest).is_none() {
                    self.draining.push(Drain {
                        service: *service,
                        dest: *dest,
                        since: now,
                    });
                }
            }
            Op::AddAddress { address, .. } => {
                self.addresses.insert(address.clone());
            }
            Op::DelAddress { address } => {
                self.addresses.remove(address);
            }
            Op::SetSysctl {
                name,
                value,
                previous,
            } => {
                self.sysctls
                    .entry(name.clone())
                    .or_insert_with(|| SysctlRecord {
                        previous: previous.clone(),
                        ours: value.clone(),
                    })
                    .ours = value.clone();
            }
            Op::RestoreSysctl { name, .. } => {
                self.sysctls.remove(name);
            }
        }
    }
}

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
    /// `announce`: send gratuitous ARP / unsolicited neighbour advertisement (director VIPs).
    AddAddress {
        address: HostAddress,
        announce: bool,
    },
    DelAddress {
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
            Op::AddAddress { address, .. } | Op::DelAddress { address } => {
                part.addresses.contains(address)
            }
            Op::SetSysctl { name, .. } | Op::RestoreSysctl { name, .. } => {
                part.sysctls.contains_key(name)
            }
        }
    }
}

impl fmt::Display for Op {
    /// The equivalent `ipvsadm`, `ip` or `sysctl` command, for dry runs and logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::AddService { key, config } => {
                write!(f, "ipvsadm -A {key}{}", ServiceOpts(key, config))
            }
            Op::EditService { key, config } => {
                write!(f, "ipvsadm -E {key}{}", ServiceOpts(key, config))
            }
            Op::DelService { key } => write!(f, "ipvsadm -D {key}"),
            Op::AddDest {
                service,
                dest,
                weight,
            } => write!(f, "ipvsadm -a {service} -r {dest} -g -w {weight}"),
            Op::EditDest {
                service,
                dest,
                weight,
            } => write!(f, "ipvsadm -e {service} -r {dest} -g -w {weight}"),
            Op::DrainDest { service, dest } => write!(f, "ipvsadm -e {service} -r {dest} -g -w 0"),
            Op::DelDest { service, dest } => write!(f, "ipvsadm -d {service} -r {dest}"),
            Op::AddAddress { address, .. } => match address.addr {
                std::net::IpAddr::V4(a) if address.prefix_len == 32 => {
                    write!(f, "ip addr add {a}/32 broadcast {a} dev {}", address.ifname)
                }
                _ => write!(f, "ip addr add {address}"),
            },
            Op::DelAddress { address } => write!(f, "ip addr del {address}"),
            Op::SetSysctl { name, value, .. } | Op::RestoreSysctl { name, value } => {
                write!(f, "sysctl -w {name}={value}")
            }
        }
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

/// The plan for one resync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub ops: Vec<Op>,
    /// Services we want whose identity someone else already uses; we leave theirs alone.
    pub conflicts: Vec<ServiceKey>,
}

/// Whether an observed sysctl value already does what `desired` asks: a stricter value an admin
/// chose (`arp_ignore=2`) is kept rather than loosened.
fn sysctl_satisfied(name: &str, desired: &str, observed: &str) -> bool {
    if observed == desired {
        return true;
    }
    name.ends_with(".arp_ignore") && desired == "1" && observed == "2"
}

/// Whether `observed` holds everything in `part` (one object's share of the desired state):
/// its services with their settings and destinations' weights, its addresses, its sysctls.
pub fn covers(observed: &NodeState, part: &NodeState) -> bool {
    let services = part.services.iter().all(|(key, want)| {
        observed.services.get(key).is_some_and(|have| {
            have.config == want.config
                && want.dests.iter().all(|(dest, d)| {
                    have.dests
                        .get(dest)
                        .is_some_and(|h| h.weight == d.weight && h.direct_route)
                })
        })
    });
    let addresses = part
        .addresses
        .iter()
        .all(|a| observed.addresses.contains(a));
    let sysctls = part.sysctls.iter().all(|(name, value)| {
        observed
            .sysctls
            .get(name)
            .is_some_and(|have| sysctl_satisfied(name, value, have))
    });
    services && addresses && sysctls
}

/// The operations that turn `observed` into `desired`, never touching what the ledger does not
/// hold. `now` and `drain_timeout` are seconds.
pub fn plan(
    desired: &NodeState,
    observed: &NodeState,
    ledger: &Ledger,
    now: u64,
    drain_timeout: u64,
) -> Plan {
    let mut p = Plan::default();
    let mut sysctl_ops = Vec::new();
    let mut ipvs_ops = Vec::new();
    let mut add_addr = Vec::new();
    let mut del_addr = Vec::new();
    let mut del_svc = Vec::new();
    let mut restore = Vec::new();

    for (name, value) in &desired.sysctls {
        let current = observed.sysctls.get(name).map(String::as_str).unwrap_or("");
        if !sysctl_satisfied(name, value, current) {
            sysctl_ops.push(Op::SetSysctl {
                name: name.clone(),
                value: value.clone(),
                previous: current.to_string(),
            });
        }
    }
    for (name, rec) in &ledger.sysctls {
        if desired.sysctls.contains_key(name) {
            continue;
        }
        // Restore only what still holds our value: a value someone set after us is theirs.
        if observed.sysctls.get(name) == Some(&rec.ours) {
            restore.push(Op::RestoreSysctl {
                name: name.clone(),
                value: rec.previous.clone(),
            });
        }
    }

    for (key, want) in &desired.services {
        match observed.services.get(key) {
            None => {
                ipvs_ops.push(Op::AddService {
                    key: *key,
                    config: want.config.clone(),
                });
                for (dest, d) in &want.dests {
                    ipvs_ops.push(Op::AddDest {
                        service: *key,
                        dest: *dest,
                        weight: d.weight,
                    });
                }
            }
            Some(_) if !ledger.services.contains(key) => p.conflicts.push(*key),
            Some(have) => {
                if have.config != want.config {
                    ipvs_ops.push(Op::EditService {
                        key: *key,
                        config: want.config.clone(),
                    });
                }
                plan_dests(*key, want, have, ledger, now, drain_timeout, &mut ipvs_ops);
            }
        }
    }
    for key in observed.services.keys() {
        if ledger.services.contains(key) && !desired.services.contains_key(key) {
            del_svc.push(Op::DelService { key: *key });
        }
    }

    for address in &desired.addresses {
        if !observed.addresses.contains(address) {
            add_addr.push(Op::AddAddress {
                address: address.clone(),
                announce: address.ifname != "lo",
            });
        }
    }
    for address in &ledger.addresses {
        if !desired.addresses.contains(address) && observed.addresses.contains(address) {
            del_addr.push(Op::DelAddress {
                address: address.clone(),
            });
        }
    }

    // Order matters for traffic: ARP sysctls before a real server takes the VIP on lo; IPVS ready
    // before the director takes the VIP; the VIP gone before its services and sysctls go.
    p.ops = [sysctl_ops, ipvs_ops, add_addr, del_addr, del_svc, restore].concat();
    p
}

fn plan_dests(
    key: ServiceKey,
    want: &ServiceState,
    have: &ServiceState,
    ledger: &Ledger,
    now: u64,
    drain_timeout: u64,
    ops: &mut Vec<Op>,
) {
    for (dest, d) in &want.dests {
        match have.dests.get(dest) {
            None => ops.push(Op::AddDest {
                service: key,
                dest: *dest,
                weight: d.weight,
            }),
            Some(h) if h.weight != d.weight || !h.direct_route => ops.push(Op::EditDest {
                service: key,
                dest: *dest,
                weight: d.weight,
            }),
            Some(_) => {}
        }
    }
    for (dest, h) in &have.dests {
        if want.dests.contains_key(dest) {
            continue;
        }
        let expired = ledger
            .drain_since(&key, dest)
            .is_some_and(|since| now.saturating_sub(since) >= drain_timeout);
        if h.active_conns == 0 || expired {
            ops.push(Op::DelDest {
                service: key,
                dest: *dest,
            });
        } else if h.weight != 0 || ledger.drain_since(&key, dest).is_none() {
            ops.push(Op::DrainDest {
                service: key,
                dest: *dest,
            });
        }
    }
}
