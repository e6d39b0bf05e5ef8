//! `plan(desired, observed, ledger)`: the minimal operations from what a node holds to what it
//! should hold, touching only what this agent made.
//!
//! Ownership is the [`Ledger`]'s (see `ledger`): only what it holds is ever edited back or removed.
//! Something we want that someone else already made (kube-proxy's IPVS service, an admin's
//! address) is left as it is: an address is simply shared, a service is reported as
//! [`Blocked::ForeignService`] and not touched. A sysctl whose value cannot be read is not written
//! either: its old value could never be restored.
//!
//! Removed real servers drain as kube-proxy's graceful termination does: weight 0 first, deleted
//! once their active connections reach 0 or the drain timeout passes. When equal, the plan is empty.

use std::fmt;

use super::ledger::Ledger;
use super::model::*;
use super::op::Op;

/// The plan for one resync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub ops: Vec<Op>,
    /// What we want and may not do; each is left as it is, and reported.
    pub blocked: Vec<Blocked>,
}

/// Something the desired state asks for that the plan leaves alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    /// An IPVS service we want exists and was made by someone else.
    ForeignService(ServiceKey),
    /// A firewall mark we picked is in use by someone else (it was free when picked).
    ForeignMark(MarkKey),
    /// A sysctl we need could not be read, so its old value could never be put back.
    UnreadableSysctl(String),
    /// A sync daemon of the role we need runs and was not started by us (keepalived's, an
    /// admin's).
    ForeignDaemon(SyncDaemon),
}

impl Blocked {
    /// Whether this touches something of `part` (one object's share of the state).
    pub fn concerns(&self, part: &NodeState) -> bool {
        match self {
            Blocked::ForeignService(key) => part.services.contains_key(key),
            Blocked::ForeignMark(key) => part.marks.contains_key(key),
            Blocked::UnreadableSysctl(name) => part.sysctls.contains_key(name),
            Blocked::ForeignDaemon(d) => part.daemons.contains_key(&d.role),
        }
    }
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Blocked::ForeignService(key) => write!(
                f,
                "IPVS service {key} already exists and was not made by lvs-operator; leaving it alone"
            ),
            Blocked::ForeignMark(key) => write!(
                f,
                "IPVS service {key} already exists and was not made by lvs-operator; leaving it alone"
            ),
            Blocked::UnreadableSysctl(name) => write!(
                f,
                "sysctl {name} cannot be read, so lvs-operator does not change it (it could not restore it)"
            ),
            Blocked::ForeignDaemon(d) => write!(
                f,
                "an IPVS {} sync daemon runs (on {}, syncid {}) that lvs-operator did not start; leaving it alone, so connections are not synced by lvs-operator",
                d.role, d.interface, d.sync_id
            ),
        }
    }
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
                        .is_some_and(|h| h.weight == d.weight && h.forward == d.forward)
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
    let daemons = part.daemons.iter().all(|(role, want)| {
        observed
            .daemons
            .get(role)
            .is_some_and(|have| daemon_matches(want, have))
    });
    services && addresses && sysctls && daemons
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
    let mut mark_ops = Vec::new();
    let mut del_marks = Vec::new();
    let mut restore = Vec::new();
    let mut stop_daemons = Vec::new();
    let mut start_daemons = Vec::new();

    for (role, want) in &desired.daemons {
        match observed.daemons.get(role) {
            None => start_daemons.push(Op::StartDaemon {
                daemon: want.clone(),
            }),
            Some(have) if !ledger.daemons.contains(role) => {
                p.blocked.push(Blocked::ForeignDaemon(have.clone()))
            }
            Some(have) if daemon_matches(want, have) => {}
            Some(_) => {
                stop_daemons.push(Op::StopDaemon { role: *role });
                start_daemons.push(Op::StartDaemon {
                    daemon: want.clone(),
                });
            }
        }
    }
    for role in observed.daemons.keys() {
        if ledger.daemons.contains(role) && !desired.daemons.contains_key(role) {
            stop_daemons.push(Op::StopDaemon { role: *role });
        }
    }

    for (name, value) in &desired.sysctls {
        match observed.sysctls.get(name) {
            None => p.blocked.push(Blocked::UnreadableSysctl(name.clone())),
            Some(current) if sysctl_satisfied(name, value, current) => {}
            Some(current) => sysctl_ops.push(Op::SetSysctl {
                name: name.clone(),
                value: value.clone(),
                previous: current.clone(),
            }),
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
            Some(_) if !ledger.services.contains(key) => {
                p.blocked.push(Blocked::ForeignService(*key))
            }
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

    for (key, want) in &desired.marks {
        match observed.marks.get(key) {
            None => {
                mark_ops.push(Op::AddMark { key: *key });
                for dest in &want.dests {
                    mark_ops.push(Op::AddMarkDest {
                        key: *key,
                        dest: *dest,
                    });
                }
            }
            Some(_) if !ledger.marks.contains(key) => p.blocked.push(Blocked::ForeignMark(*key)),
            Some(have) => {
                for dest in have.dests.difference(&want.dests) {
                    mark_ops.push(Op::DelMarkDest {
                        key: *key,
                        dest: *dest,
                    });
                }
                for dest in want.dests.difference(&have.dests) {
                    mark_ops.push(Op::AddMarkDest {
                        key: *key,
                        dest: *dest,
                    });
                }
            }
        }
    }
    for key in observed.marks.keys() {
        if ledger.marks.contains(key) && !desired.marks.contains_key(key) {
            del_marks.push(Op::DelMark { key: *key });
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
    // before the director takes the VIP; the VIP gone before its services and sysctls go. A
    // director taking over adds the VIP before it swaps its sync daemons (a stop before a start:
    // one per role).
    p.ops = [
        sysctl_ops,
        ipvs_ops,
        mark_ops,
        add_addr,
        del_addr,
        stop_daemons,
        start_daemons,
        del_svc,
        del_marks,
        restore,
    ]
    .concat();
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
            Some(h) if h.weight != d.weight || h.forward != d.forward => ops.push(Op::EditDest {
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
