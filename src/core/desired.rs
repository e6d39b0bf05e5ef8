//! From validated LvsService objects and this node's roles to the [`NodeState`] it should hold.
//!
//! An object is taken whole or not at all: if any of its parts cannot be placed (a port another
//! object already serves, no interface for its VIP), it contributes nothing and gets an error,
//! and the objects around it are unaffected.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::health::{Admission, weight};
use super::model::*;
use super::service::{RealServer, VirtualService};

/// What this node does for one object.
#[derive(Debug, Clone)]
pub struct Assignment<'a> {
    pub service: &'a VirtualService,
    /// Its real servers with their weights (0 for one being drained).
    pub backends: Vec<RealServer>,
    /// Set when this node is a director for the object.
    pub director: Option<DirectorRole>,
    /// This node is one of the object's real servers.
    pub real_server: bool,
    /// For a director: what its health checks say of each real server on each checked port
    /// (absent: not checked yet, taken at its weight).
    pub health: BTreeMap<(IpAddr, u16), Admission>,
}

/// A director's part in one object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectorRole {
    /// The active director holds the VIP; a standby keeps IPVS programmed without it.
    pub holds_vip: bool,
    /// Interface for the VIP, overriding `spec.directors.interface` (the standalone `--interface`).
    pub interface: Option<String>,
    /// Set on both directors of a planned handover while the VIP moves between them.
    pub handover: Option<Handover>,
}

/// A director's side of a planned handover. While the VIP moves, both directors send every new
/// connection of its TCP services to one real server (the lowest-addressed one in service; the
/// others keep their connections at weight 0), and the taker also schedules a connection it first
/// sees mid-flow (`sloppy_tcp`): a connection whose SYN the old holder scheduled and whose next
/// packets reach the taker then goes to the same real server there. (Otherwise the taker's stack
/// resets it: the kernel syncs a connection only after its third packet, in batches.) Only
/// weights change: swapping a live service's scheduler drops the SYNs that arrive meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handover {
    /// The director handing the VIP over.
    Giving,
    /// The director taking it.
    Taking,
}

/// The sysctl that lets IPVS schedule a TCP connection on a packet other than its SYN.
pub const SLOPPY_TCP: (&str, &str) = ("net.ipv4.vs.sloppy_tcp", "1");

/// An object that could not be placed on this node, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementError {
    pub object: String,
    pub message: String,
}

/// What this node should hold, as a whole and object by object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub state: NodeState,
    /// Each placed object's share of `state`, by `namespace/name`, to tell which objects are
    /// fully programmed.
    pub parts: BTreeMap<String, NodeState>,
    pub errors: Vec<PlacementError>,
}

/// The desired state of this node. `interface_for` finds the interface holding an address in a
/// VIP's subnet, for directors whose interface is not given; `marks` are the health checks'
/// firewall-mark services (see `health`). Objects are taken in the order given: on a clash, the
/// earlier keeps the port (callers sort by age).
pub fn desired(
    assignments: &[Assignment<'_>],
    interface_for: &dyn Fn(IpAddr) -> Option<String>,
    marks: &BTreeMap<IpAddr, MarkKey>,
) -> Desired {
    let mut d = Desired::default();
    d.state.marks = marks
        .iter()
        .map(|(dest, key)| {
            let state = MarkState {
                dests: [*dest].into(),
            };
            (*key, state)
        })
        .collect();
    let mut owners: BTreeMap<ServiceKey, &str> = BTreeMap::new();
    for a in assignments {
        let id = a.service.id.as_str();
        match object_state(a, interface_for, &owners) {
            Ok(part) => {
                for key in part.services.keys() {
                    owners.insert(*key, id);
                }
                d.state.services.extend(part.services.clone());
                d.state.addresses.extend(part.addresses.iter().cloned());
                d.state.sysctls.extend(part.sysctls.clone());
                d.parts.insert(id.to_string(), part);
            }
            Err(message) => d.errors.push(PlacementError {
                object: id.to_string(),
                message,
            }),
        }
    }
    d
}

fn object_state(
    a: &Assignment<'_>,
    interface_for: &dyn Fn(IpAddr) -> Option<String>,
    owners: &BTreeMap<ServiceKey, &str>,
) -> Result<NodeState, String> {
    let service = a.service;
    let vip = service.vip;
    let mut state = NodeState::default();

    if let Some(role) = &a.director {
        // A standby that is also one of the object's real servers has the VIP on `lo`: with the
        // VIP's services programmed, its IPVS would schedule again each connection the active
        // director sends it, and one sent back to the active director bounces between the two
        // for good (the DR loop). It programs them when it takes the VIP. (The kernel's
        // `backup_only` would stop the loop too, but it turns all of IPVS off on a node whose
        // backup sync daemon runs: its through-VIP health checks and any VIP it is active for.)
        let schedules = role.holds_vip || !a.real_server;
        let pinned = role.holds_vip && role.handover.is_some();
        for (i, (key, port)) in service.keys().zip(&service.ports).enumerate() {
            if let Some(owner) = owners.get(&key) {
                return Err(format!(
                    "spec.ports[{i}]: {key} is already served by {owner}"
                ));
            }
            if !schedules {
                continue;
            }
            let checked = service.checked_port(*port);
            let mut dests: BTreeMap<DestKey, DestState> = a
                .backends
                .iter()
                .map(|b| {
                    let dest = DestKey {
                        addr: b.addr,
                        port: key.port,
                    };
                    let admission = checked.and_then(|p| a.health.get(&(b.addr, p)).copied());
                    (dest, DestState::dr(weight(b.weight, admission)))
                })
                .collect();
            if pinned && key.protocol == Protocol::Tcp {
                pin(&mut dests);
            }
            state.services.insert(
                key,
                ServiceState {
                    config: service.config.clone(),
                    dests,
                },
            );
        }
        if pinned && role.handover == Some(Handover::Taking) {
            let (name, value) = SLOPPY_TCP;
            state.sysctls.insert(name.to_string(), value.to_string());
        }
        if service.health.is_some() {
            for (name, value) in CHECKED_DIRECTOR_SYSCTLS {
                state.sysctls.insert(name.to_string(), value.to_string());
            }
        }
        if role.holds_vip {
            let ifname = role
                .interface
                .clone()
                .or_else(|| service.interface.clone())
                .or_else(|| interface_for(vip))
                .ok_or_else(|| {
                    format!(
                        "spec.directors.interface: no interface has an address in the subnet of {vip}; set spec.directors.interface (or the agent's --interface)"
                    )
                })?;
            // Through-VIP probes are answered from the VIP, which the active director holds
            // itself: the kernel drops such packets as martians unless accept_local is on
            // (Seesaw sets it for the same reason).
            if vip.is_ipv4() && service.health.as_ref().is_some_and(|h| h.through_vip) {
                state
                    .sysctls
                    .insert(format!("net.ipv4.conf.{ifname}.accept_local"), "1".into());
            }
            state.addresses.insert(HostAddress::vip(ifname, vip));
        }
    }

    if a.real_server {
        state.addresses.insert(HostAddress::vip("lo", vip));
        if vip.is_ipv4() {
            for (name, value) in REAL_SERVER_SYSCTLS {
                state.sysctls.insert(name.to_string(), value.to_string());
            }
        }
    }
    Ok(state)
}

/// Leaves weight only to the lowest-addressed destination that has some (see [`Handover`]).
fn pin(dests: &mut BTreeMap<DestKey, DestState>) {
    let Some(keep) = dests.iter().find(|(_, d)| d.weight > 0).map(|(k, _)| *k) else {
        return;
    };
    for (k, d) in dests.iter_mut() {
        if *k != keep {
            d.weight = 0;
        }
    }
}

/// The connection-sync daemons of a director with peers (`sync_id` is their `--syncid`): a
/// master when it holds a VIP, a backup when it stands by for one, each on that VIP's interface,
/// as keepalived's `lvs_sync_daemon` runs them. A director that holds some VIPs and stands by for
/// others runs both (one of each per network namespace).
pub fn sync_daemons(
    assignments: &[Assignment<'_>],
    interface_for: &dyn Fn(IpAddr) -> Option<String>,
    sync_id: u8,
) -> BTreeMap<SyncRole, SyncDaemon> {
    let mut daemons = BTreeMap::new();
    for a in assignments {
        let Some(role) = &a.director else { continue };
        let sync = if role.holds_vip {
            SyncRole::Master
        } else {
            SyncRole::Backup
        };
        let ifname = role
            .interface
            .clone()
            .or_else(|| a.service.interface.clone())
            .or_else(|| interface_for(a.service.vip));
        if let Some(ifname) = ifname {
            daemons
                .entry(sync)
                .or_insert_with(|| SyncDaemon::new(sync, ifname, sync_id));
        }
    }
    daemons
}

/// The IPVS services the assignments could ask for, before any placement check: enough to know
/// which services' destinations to dump.
pub fn wanted_services(assignments: &[Assignment<'_>]) -> BTreeSet<ServiceKey> {
    assignments
        .iter()
        .filter(|a| a.director.is_some())
        .flat_map(|a| a.service.keys())
        .collect()
}

/// The interface holding an address whose subnet contains `vip` (`eth0` in the reference setup),
/// the way an admin picks the device for `ip addr add VIP/32 dev ...`. Host routes (/32, /128)
/// and `lo` never count: they are VIPs themselves, not a LAN. For one lookup; a resync asks
/// [`Lans`].
pub fn interface_for(vip: IpAddr, addresses: &BTreeSet<HostAddress>) -> Option<String> {
    Lans::of(addresses).interface_for(vip)
}

/// The real servers this node probes through a VIP (each needs a mark): those of every object it
/// directs whose checks go through the VIP.
pub fn wanted_marks(assignments: &[Assignment<'_>]) -> BTreeSet<IpAddr> {
    assignments
        .iter()
        .filter(|a| a.director.is_some())
        .filter(|a| a.service.health.as_ref().is_some_and(|h| h.through_vip))
        .flat_map(|a| a.backends.iter().map(|b| b.addr))
        .filter(|addr| !addr.is_unspecified())
        .collect()
}

/// Keeps out the real servers a previous run ejected: a checked real server the checks have no
/// verdict on yet (the agent just started, or its check changed) that the kernel holds at weight
/// 0 though configured higher stays at 0 until its checks pass, rather than getting clients
/// back in the meantime. The agent starts such checks Unhealthy.
pub fn hold_ejected(desired: &mut Desired, assignments: &[Assignment<'_>], observed: &NodeState) {
    for a in assignments.iter().filter(|a| a.director.is_some()) {
        let service = a.service;
        for (key, port) in service.keys().zip(&service.ports) {
            let Some(checked) = service.checked_port(*port) else {
                continue;
            };
            let Some(have) = observed.services.get(&key) else {
                continue;
            };
            for b in &a.backends {
                let dest = DestKey {
                    addr: b.addr,
                    port: key.port,
                };
                let at_zero = have.dests.get(&dest).is_some_and(|d| d.weight == 0);
                if b.weight == 0 || !at_zero || a.health.contains_key(&(b.addr, checked)) {
                    continue;
                }
                let states = [
                    desired.state.services.get_mut(&key),
                    desired
                        .parts
                        .get_mut(&service.id)
                        .and_then(|p| p.services.get_mut(&key)),
                ];
                for s in states.into_iter().flatten() {
                    if let Some(d) = s.dests.get_mut(&dest) {
                        d.weight = 0;
                    }
                }
            }
        }
    }
}

/// Keeps the real-server VIPs on `lo` that no object wants any more but that clients still use
/// (an established connection to the VIP): the address and the ARP sysctls stay until those
/// connections end or `timeout` seconds pass, so a node that leaves a selector drains as a
/// director's removed real server does (weight 0, then gone) instead of cutting its clients off.
/// `directed` are the VIPs some director may still send clients of (those of the objects that
/// exist), when the caller knows them: a VIP outside it has no director left, whose clients can
/// no longer reach this node, so it goes at once (a deleted object, a changed VIP). Returns the
/// addresses kept; `ledger.lingering` says since when.
pub fn linger(
    desired: &mut Desired,
    ledger: &mut super::Ledger,
    observed: &NodeState,
    directed: Option<&BTreeSet<IpAddr>>,
    now: u64,
    timeout: u64,
) -> Vec<IpAddr> {
    let mut since = BTreeMap::new();
    for a in ledger.addresses.iter().filter(|a| a.ifname == "lo") {
        let in_use = observed.connected.contains(&a.addr) && observed.addresses.contains(a);
        let reachable = directed.is_none_or(|d| d.contains(&a.addr));
        if desired.state.addresses.contains(a) || !in_use || !reachable {
            continue;
        }
        let start = ledger.lingering.get(&a.addr).copied().unwrap_or(now);
        if now.saturating_sub(start) >= timeout {
            continue;
        }
        since.insert(a.addr, start);
        desired.state.addresses.insert(a.clone());
    }
    if !since.is_empty() {
        for (name, value) in REAL_SERVER_SYSCTLS {
            (desired.state.sysctls)
                .entry(name.to_string())
                .or_insert_with(|| value.to_string());
        }
    }
    ledger.lingering = since;
    ledger.lingering.keys().copied().collect()
}
