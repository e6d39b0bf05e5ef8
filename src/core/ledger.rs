//! The [`Ledger`]: what this agent made, so that it changes and removes only that.
//!
//! A service, address or sysctl enters the ledger when the agent creates or changes it, and only
//! what is in it is ever edited back or removed; everything else on the node belongs to someone
//! else (kube-proxy, keepalived, an admin).
//!
//! The ledger is written ahead of the kernel. Before a resync writes anything, the creations it is
//! about to make go into [`Ledger::intents`] and the ledger is saved; the kernel's answers then
//! turn each into ownership ([`Ledger::record`]). A crash in between leaves intents on disk, and
//! the next resync [`settle`](Ledger::settle)s them against what the kernel holds: an intent the
//! kernel shows carried out *exactly* (the same service with the same settings, the address, the
//! sysctl at our value) is adopted; anything else is not ours. The same step forgets what is gone
//! from the kernel, so a stale entry can never claim something another owner makes later.
//! Deletions need no intent: one the kernel carried out is simply gone at the next settle.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::model::*;
use super::op::Op;

/// What this agent made, persisted across restarts so that a new agent adopts its own state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ledger {
    #[serde(default)]
    pub services: BTreeSet<ServiceKey>,
    /// The health checks' firewall-mark services.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub marks: BTreeSet<MarkKey>,
    #[serde(default)]
    pub addresses: BTreeSet<HostAddress>,
    /// Sysctls we changed: the value they had before, and the value we set.
    #[serde(default)]
    pub sysctls: BTreeMap<String, SysctlRecord>,
    /// Destinations being drained and since when (seconds since the Unix epoch).
    #[serde(default)]
    pub draining: Vec<Drain>,
    /// Real-server VIPs on `lo` no object wants any more, kept while clients still have
    /// connections to them, and since when (seconds since the Unix epoch).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub lingering: BTreeMap<IpAddr, u64>,
    /// The connection-sync daemons we started.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub daemons: BTreeSet<SyncRole>,
    /// Creations written ahead of the kernel and not yet confirmed by it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub intents: Vec<Intent>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SysctlRecord {
    /// The value read before we first wrote ours: what goes back when we no longer need it.
    pub previous: String,
    pub ours: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drain {
    pub service: ServiceKey,
    pub dest: DestKey,
    pub since: u64,
}

/// A creation about to be made: the part of an [`Op`] that makes something ours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Intent {
    AddService {
        key: ServiceKey,
        config: ServiceConfig,
    },
    AddMark {
        key: MarkKey,
    },
    StartDaemon {
        role: SyncRole,
    },
    AddAddress {
        address: HostAddress,
    },
    SetSysctl {
        name: String,
        value: String,
        previous: String,
    },
}

impl Intent {
    /// The intent behind `op`, when `op` creates something.
    pub fn of(op: &Op) -> Option<Intent> {
        match op {
            Op::AddService { key, config } => Some(Intent::AddService {
                key: *key,
                config: config.clone(),
            }),
            Op::AddMark { key } => Some(Intent::AddMark { key: *key }),
            Op::StartDaemon { daemon } => Some(Intent::StartDaemon { role: daemon.role }),
            Op::AddAddress { address, .. } => Some(Intent::AddAddress {
                address: address.clone(),
            }),
            Op::SetSysctl {
                name,
                value,
                previous,
            } => Some(Intent::SetSysctl {
                name: name.clone(),
                value: value.clone(),
                previous: previous.clone(),
            }),
            _ => None,
        }
    }
}

impl Ledger {
    pub fn drain_since(&self, service: &ServiceKey, dest: &DestKey) -> Option<u64> {
        self.draining
            .iter()
            .find(|d| d.service == *service && d.dest == *dest)
            .map(|d| d.since)
    }

    /// Brings the ledger in line with the kernel before planning: adopts every pending intent the
    /// kernel shows carried out exactly, drops the others, and forgets services and addresses that
    /// are gone and sysctls that are no longer ours (someone set another value since, and we do
    /// not want ours back).
    pub fn settle(&mut self, observed: &NodeState, desired: &NodeState) {
        for intent in std::mem::take(&mut self.intents) {
            match intent {
                Intent::AddService { key, config } => {
                    if observed
                        .services
                        .get(&key)
                        .is_some_and(|s| s.config == config)
                    {
                        self.services.insert(key);
                    }
                }
                Intent::AddMark { key } => {
                    // A mark the range gave us was free when we made it: one there now is ours.
                    if observed.marks.contains_key(&key) {
                        self.marks.insert(key);
                    }
                }
                Intent::StartDaemon { role } => {
                    // One daemon per role per network namespace: one there now is the one we
                    // started (a foreign one would have made ours fail).
                    if observed.daemons.contains_key(&role) {
                        self.daemons.insert(role);
                    }
                }
                Intent::AddAddress { address } => {
                    if observed.addresses.contains(&address) {
                        self.addresses.insert(address);
                    }
                }
                Intent::SetSysctl {
                    name,
                    value,
                    previous,
                } => {
                    if observed.sysctls.get(&name) == Some(&value) {
                        self.sysctls.entry(name).or_insert(SysctlRecord {
                            previous,
                            ours: value,
                        });
                    }
                }
            }
        }
        self.services
            .retain(|key| observed.services.contains_key(key));
        self.marks.retain(|key| observed.marks.contains_key(key));
        self.daemons
            .retain(|role| observed.daemons.contains_key(role));
        self.addresses.retain(|a| observed.addresses.contains(a));
        let services = &self.services;
        self.draining.retain(|d| {
            services.contains(&d.service)
                && observed
                    .services
                    .get(&d.service)
                    .is_some_and(|s| s.dests.contains_key(&d.dest))
        });
        self.sysctls.retain(|name, record| {
            desired.sysctls.contains_key(name)
                || observed
                    .sysctls
                    .get(name)
                    .is_none_or(|have| *have == record.ours)
        });
    }

    /// Writes ahead what `ops` will create; true when there is anything to write.
    pub fn intend(&mut self, ops: &[Op]) -> bool {
        self.intents = ops.iter().filter_map(Intent::of).collect();
        !self.intents.is_empty()
    }

    /// Takes the kernel's answers to `ops`: each success changes ownership; the intent of a
    /// creation that failed stays until the next [`settle`](Ledger::settle), because a failure
    /// without an answer (a timeout) may still have been carried out.
    pub fn confirm(&mut self, ops: &[Op], succeeded: &[bool], now: u64) {
        self.intents.clear();
        for (op, ok) in ops.iter().zip(succeeded) {
            if *ok {
                self.record(op, now);
            } else if let Some(intent) = Intent::of(op) {
                self.intents.push(intent);
            }
        }
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
            Op::AddMark { key } => {
                self.marks.insert(*key);
            }
            Op::DelMark { key } => {
                self.marks.remove(key);
            }
            Op::AddMarkDest { .. } | Op::DelMarkDest { .. } | Op::Announce { .. } => {}
            Op::StartDaemon { daemon } => {
                self.daemons.insert(daemon.role);
            }
            Op::StopDaemon { role } => {
                self.daemons.remove(role);
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
