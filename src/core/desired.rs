//! From validated LvsService objects and this node's roles to the [`NodeState`] it should hold.
//!
//! An object is taken whole or not at all: if any of its parts cannot be placed (a port another
//! object already serves, no interface for its VIP), it contributes nothing and gets an error,
//! and the objects around it are unaffected.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::api::{self, LvsService, Scheduler, protocol_name, validate::object_ref};

use super::model::*;

/// What this node does for one object.
#[derive(Debug, Clone)]
pub struct Assignment<'a> {
    /// A validated object.
    pub object: &'a LvsService,
    /// Its real servers with their weights (0 for one being drained).
    pub backends: Vec<(IpAddr, u32)>,
    /// Set when this node is a director for the object.
    pub director: Option<DirectorRole>,
    /// This node is one of the object's real servers.
    pub real_server: bool,
}

/// A director's part in one object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectorRole {
    /// The active director holds the VIP; a standby keeps IPVS programmed without it.
    pub holds_vip: bool,
    /// Interface for the VIP, overriding `spec.directors.interface` (the standalone `--interface`).
    pub interface: Option<String>,
}

impl<'a> Assignment<'a> {
    /// The explicit backends of `spec.backends` (the only source without a cluster).
    pub fn explicit_backends(object: &LvsService) -> Vec<(IpAddr, u32)> {
        object
            .spec
            .backends
            .iter()
            .flatten()
            .filter_map(|b| Some((b.address.parse().ok()?, u32::try_from(b.weight).ok()?)))
            .collect()
    }
}

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
/// VIP's subnet, for directors whose interface is not given. Objects are taken in the order
/// given: on a clash, the earlier keeps the port (callers sort by age).
pub fn desired(
    assignments: &[Assignment<'_>],
    interface_for: &dyn Fn(IpAddr) -> Option<String>,
) -> Desired {
    let mut d = Desired::default();
    let mut owners: BTreeMap<ServiceKey, String> = BTreeMap::new();
    for a in assignments {
        match object_state(a, interface_for, &owners) {
            Ok(part) => {
                for key in part.services.keys() {
                    owners.insert(*key, object_ref(a.object));
                }
                d.state.services.extend(part.services.clone());
                d.state.addresses.extend(part.addresses.iter().cloned());
                d.state.sysctls.extend(part.sysctls.clone());
                d.parts.insert(object_ref(a.object), part);
            }
            Err(message) => d.errors.push(PlacementError {
                object: object_ref(a.object),
                message,
            }),
        }
    }
    d
}

/// [`desired`] without the per-object parts.
pub fn desired_state(
    assignments: &[Assignment<'_>],
    interface_for: &dyn Fn(IpAddr) -> Option<String>,
) -> (NodeState, Vec<PlacementError>) {
    let d = desired(assignments, interface_for);
    (d.state, d.errors)
}

fn object_state(
    a: &Assignment<'_>,
    interface_for: &dyn Fn(IpAddr) -> Option<String>,
    owners: &BTreeMap<ServiceKey, String>,
) -> Result<NodeState, String> {
    let spec = &a.object.spec;
    let vip: IpAddr = spec
        .vip
        .parse()
        .map_err(|_| format!("spec.vip: {:?} is not an IP address", spec.vip))?;
    let mut state = NodeState::default();

    if let Some(role) = &a.director {
        let config = service_config(spec, vip);
        for (i, p) in spec.ports.iter().enumerate() {
            let port = u16::try_from(p.port).map_err(|_| {
                format!("spec.ports[{i}].port: {} is out of range 1..65535", p.port)
            })?;
            let key = ServiceKey {
                vip,
                protocol: p.protocol,
                port,
            };
            if let Some(owner) = owners.get(&key) {
                return Err(format!(
                    "spec.ports[{i}]: {} {} is already served by {owner}",
                    protocol_name(p.protocol),
                    SocketFmt(vip, port)
                ));
            }
            let dests = a
                .backends
                .iter()
                .map(|(addr, weight)| (DestKey { addr: *addr, port }, DestState::dr(*weight)))
                .collect();
            state.services.insert(
                key,
                ServiceState {
                    config: config.clone(),
                    dests,
                },
            );
        }
        if role.holds_vip {
            let ifname = role
                .interface
                .clone()
                .or_else(|| spec.directors.as_ref().and_then(|d| d.interface.clone()))
                .or_else(|| interface_for(vip))
                .ok_or_else(|| {
                    format!(
                        "spec.directors.interface: no interface has an address in the subnet of {vip}; set spec.directors.interface or --interface"
                    )
                })?;
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

/// The IPVS settings of every port of an object, as ipvsadm would send them: the netmask is
/// always set (255.255.255.255 or /128 unless persistence groups clients), which is what the
/// kernel reports back, so an unchanged service compares equal.
pub fn service_config(spec: &api::LvsServiceSpec, vip: IpAddr) -> ServiceConfig {
    let mut flags = 0;
    let (mut timeout, mut netmask) = (0, if vip.is_ipv4() { u32::MAX } else { 128 });
    if let Some(p) = &spec.persistence {
        flags |= SVC_F_PERSISTENT;
        timeout = u32::try_from(p.timeout_seconds).unwrap_or(u32::MAX);
        if let Some(mask) = p
            .netmask
            .as_deref()
            .and_then(|m| api::validate::parse_netmask(vip, m))
        {
            netmask = mask;
        }
    }
    if let Some(f) = &spec.scheduler_flags
        && matches!(spec.scheduler, Scheduler::Sh | Scheduler::Mh)
    {
        if f.fallback {
            flags |= SVC_F_SCHED1;
        }
        if f.port {
            flags |= SVC_F_SCHED2;
        }
    }
    ServiceConfig {
        scheduler: spec.scheduler.name().to_string(),
        flags,
        timeout,
        netmask,
    }
}

/// The IPVS services the assignments could ask for, before any placement check: enough to know
/// which services' destinations to dump.
pub fn wanted_services(assignments: &[Assignment<'_>]) -> std::collections::BTreeSet<ServiceKey> {
    let mut keys = std::collections::BTreeSet::new();
    for a in assignments.iter().filter(|a| a.director.is_some()) {
        let Ok(vip) = a.object.spec.vip.parse::<IpAddr>() else {
            continue;
        };
        for p in &a.object.spec.ports {
            if let Ok(port) = u16::try_from(p.port) {
                keys.insert(ServiceKey {
                    vip,
                    protocol: p.protocol,
                    port,
                });
            }
        }
    }
    keys
}

/// The interface holding an address whose subnet contains `vip` (`eth0` in the reference setup),
/// the way an admin picks the device for `ip addr add VIP/32 dev ...`. Host routes (/32, /128)
/// and `lo` never count: they are VIPs themselves, not a LAN.
pub fn interface_for(
    vip: IpAddr,
    addresses: &std::collections::BTreeSet<HostAddress>,
) -> Option<String> {
    addresses
        .iter()
        .filter(|a| a.ifname != "lo" && a.addr.is_ipv4() == vip.is_ipv4())
        .filter(|a| a.prefix_len < if vip.is_ipv4() { 32 } else { 128 })
        .filter(|a| same_subnet(a.addr, vip, a.prefix_len))
        .max_by_key(|a| a.prefix_len)
        .map(|a| a.ifname.clone())
}

fn same_subnet(a: IpAddr, b: IpAddr, prefix_len: u8) -> bool {
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
