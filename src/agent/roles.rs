//! What this node is for each LvsService, and what it reports: pure functions the in-cluster
//! agent (`cluster`) runs on every resync.
//!
//! A node is a director of an object when it matches the object's director selector (default:
//! label `lvs-operator.io/director=true`), and one of its real servers when one of its
//! InternalIPs is a backend (or the controller named it as a backend's node). Objects claim ports
//! in age order, the same order the controller uses to settle conflicts.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};

use crate::api::{
    BackendStatus, LvsService, NodeRole, NodeStatus, RealServerCheck, TakeoverStatus, selector,
    validate,
};
use crate::core::{RealServer, VirtualService, covers};

use super::converge::Resynced;

/// What the agent needs of its own Node.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub addresses: Vec<IpAddr>,
}

impl NodeInfo {
    pub fn from_node(node: &Node) -> Self {
        let addresses = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| a.type_ == "InternalIP")
            .filter_map(|a| a.address.parse().ok())
            .collect();
        Self {
            name: node.name_any(),
            labels: node.labels().clone(),
            addresses,
        }
    }
}

/// This node's roles for one object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Roles {
    pub director: bool,
    pub real_server: bool,
}

/// What the agent reads of one version of an object, derived once: at every resync a thousand
/// objects would otherwise each be validated, and their selectors and real servers parsed, again.
pub struct Derived {
    /// How users see the object: `namespace/name`.
    pub id: String,
    /// The object validated; `None` when it is not valid.
    pub service: Option<Arc<VirtualService>>,
    /// Its real servers and the weights a director gives them ([`backends_of`]); none when it is
    /// not valid.
    pub backends: Vec<RealServer>,
    /// The controller said no to this generation ([`rejected`]).
    pub rejected: bool,
    /// Its director selector; `None` when it cannot be read (it then selects no node; the
    /// controller reports it on the object).
    director: Option<Selector>,
    /// The nodes the controller named as its real servers' nodes.
    backend_nodes: Vec<String>,
}

impl Derived {
    pub fn of(obj: &LvsService) -> Self {
        let service = validate(obj).ok().map(Arc::new);
        let backends = service
            .as_ref()
            .map(|s| backends_of(obj, s))
            .unwrap_or_default();
        let backend_nodes = (obj.status.iter())
            .flat_map(|s| &s.backends)
            .filter_map(|b| b.node.clone())
            .collect();
        Self {
            id: validate::object_ref(obj),
            service,
            backends,
            rejected: rejected(obj),
            director: selector::director_selector(obj).ok(),
            backend_nodes,
        }
    }

    /// Whether `node` may be a director of the object, and whether it is one of its real
    /// servers: one of its InternalIPs is a real server, or the controller named it as one's node.
    pub fn roles(&self, node: &NodeInfo) -> Roles {
        let director = self
            .director
            .as_ref()
            .is_some_and(|s| s.matches(&node.labels));
        let real_server = self.service.is_some()
            && (self
                .backends
                .iter()
                .any(|b| node.addresses.contains(&b.addr))
                || self.backend_nodes.contains(&node.name));
        Roles {
            director,
            real_server,
        }
    }
}

/// The real servers of an object and the weights this director gives them (before its own
/// health checks).
///
/// An explicit `spec.backends` is used as written, at once (a change reaches the kernel without
/// waiting for the controller), except that a real server the controller holds at weight 0 (its
/// node silent, or without the VIP on `lo`) stays at 0 until the controller lets it go. Otherwise
/// the controller's resolution in `status.backends` is the list, with the weights it computed
/// (0 for a draining one, or one whose node fails it). The controller writes those addresses;
/// one that does not parse is not a real server.
pub fn backends_of(obj: &LvsService, service: &VirtualService) -> Vec<RealServer> {
    let listed: Vec<(IpAddr, &BackendStatus)> = obj
        .status
        .iter()
        .flat_map(|s| &s.backends)
        .filter_map(|b| Some((b.address.parse().ok()?, b)))
        .collect();
    let held_down = |addr: &IpAddr| listed.iter().any(|(a, b)| a == addr && b.weight == 0);
    if let Some(backends) = &service.backends {
        return backends
            .iter()
            .map(|b| RealServer {
                addr: b.addr,
                weight: if held_down(&b.addr) { 0 } else { b.weight },
            })
            .collect();
    }
    listed
        .iter()
        .filter_map(|(addr, b)| {
            Some(RealServer {
                addr: *addr,
                weight: if b.draining {
                    0
                } else {
                    u32::try_from(b.weight).ok()?
                },
            })
        })
        .collect()
}

/// The controller said no to this generation (a VIP conflict, for one).
pub fn rejected(obj: &LvsService) -> bool {
    obj.status.iter().flat_map(|s| &s.conditions).any(|c| {
        c.type_ == "Accepted"
            && c.status == "False"
            && c.observed_generation == obj.metadata.generation
    })
}

/// Age order, then namespace/name: the order in which objects claim ports.
pub fn by_age(objects: &mut [Arc<LvsService>]) {
    objects.sort_by_cached_key(|o| {
        let ts = o.metadata.creation_timestamp.as_ref().map(|t| t.0);
        (ts, validate::object_ref(o))
    });
}

/// How every VIP Lease's name begins.
pub const LEASE_PREFIX: &str = "lvs-vip-";

/// The Lease deciding which director holds `vip`. An object name must end with a letter or a
/// digit: an IPv6 address written with a trailing `::` gets a `0` (no address is written with
/// `::0`, so no two VIPs share a name).
pub fn lease_name(vip: IpAddr) -> String {
    let mut name = format!("{LEASE_PREFIX}{}", vip.to_string().replace(['.', ':'], "-"));
    if name.ends_with('-') {
        name.push('0');
    }
    name
}

/// What a director reports of an object besides what the resync shows.
#[derive(Debug, Clone, Default)]
pub struct DirectorReport {
    /// The failover gives it the VIP.
    pub holds_vip: bool,
    /// Its health checks' verdicts on the object's real servers.
    pub checks: Vec<RealServerCheck>,
    pub mac: Option<String>,
    pub takeover: Option<TakeoverStatus>,
    pub foreign_holders: Vec<String>,
    pub unreachable_peers: Vec<String>,
}

/// This node's status entry for an object after a resync, or `None` when it has no role.
/// `selfcheck` is what a real server's check of its own setup found wrong.
pub fn node_status(
    obj: &LvsService,
    node: &str,
    roles: Roles,
    r: &Resynced,
    director: DirectorReport,
    selfcheck: Option<String>,
) -> Option<NodeStatus> {
    let holds_vip = director.holds_vip;
    if !(roles.director || roles.real_server) || obj.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let id = validate::object_ref(obj);
    let mut error = r
        .desired
        .errors
        .iter()
        .find(|e| e.object == id)
        .map(|e| e.message.clone());
    let part = r.desired.parts.get(&id);
    let programmed = part.is_some_and(|p| covers(&r.after, p));
    if error.is_none() && !programmed {
        // What went wrong with this object's own services, addresses or sysctls.
        let failure = r
            .converged
            .failed
            .iter()
            .find(|(op, _)| part.is_some_and(|p| op.concerns(p)));
        let blocked = r
            .converged
            .plan
            .blocked
            .iter()
            .find(|b| part.is_some_and(|p| b.concerns(p)));
        error = failure
            .map(|(op, e)| format!("{op}: {e}"))
            .or_else(|| blocked.map(ToString::to_string));
    }
    let selfcheck = selfcheck.filter(|_| roles.real_server && programmed);
    if error.is_none() {
        error = selfcheck.clone();
    }
    // Active means holding the VIP for real: the Lease and the address in the kernel. A director
    // that won the Lease but could not place the VIP (no interface for it) is not serving.
    let holds_address = part.is_some_and(|p| {
        p.addresses
            .iter()
            .any(|a| a.ifname != "lo" && r.after.addresses.contains(a))
    });
    let mut role_list = Vec::new();
    if roles.director {
        role_list.push(NodeRole::Director);
    }
    if roles.real_server {
        role_list.push(NodeRole::Backend);
    }
    let active = roles.director && holds_vip && holds_address;
    let director = if roles.director {
        director
    } else {
        DirectorReport::default()
    };
    Some(NodeStatus {
        node: node.to_string(),
        roles: role_list,
        observed_generation: obj.metadata.generation.unwrap_or_default(),
        active,
        programmed,
        arp_verified: roles.real_server && programmed && selfcheck.is_none(),
        error,
        checks: director.checks,
        sync: if roles.director {
            r.after.daemons.keys().map(ToString::to_string).collect()
        } else {
            Vec::new()
        },
        mac: director.mac,
        takeover: director.takeover.filter(|_| active),
        foreign_holders: director.foreign_holders,
        unreachable_peers: director.unreachable_peers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BackendStatus, LvsServiceStatus, manifest};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn web() -> LvsService {
        manifest::parse_documents("t", include_str!("../../tests/valid/reference.yaml"))
            .remove(0)
            .unwrap()
    }

    fn node(labels: &[(&str, &str)], ip: &str) -> NodeInfo {
        NodeInfo {
            name: "n1".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            addresses: vec![ip.parse().unwrap()],
        }
    }

    #[test]
    fn a_node_labelled_director_directs_and_a_node_holding_a_backend_address_serves() {
        let o = web();
        assert_eq!(
            Derived::of(&o).roles(&node(
                &[("lvs-operator.io/director", "true")],
                "10.10.24.10"
            )),
            Roles {
                director: true,
                real_server: false
            }
        );
        assert_eq!(
            Derived::of(&o).roles(&node(&[], "10.10.24.22")),
            Roles {
                director: false,
                real_server: true
            }
        );
        assert_eq!(
            Derived::of(&o).roles(&node(
                &[("lvs-operator.io/director", "false")],
                "10.10.24.9"
            )),
            Roles::default()
        );
    }

    #[test]
    fn resolved_backends_come_from_status_when_the_spec_lists_none() {
        let mut o = web();
        o.spec.backends = None;
        o.spec.backend_service = Some(crate::api::BackendServiceRef { name: "web".into() });
        o.status = Some(LvsServiceStatus {
            backends: vec![
                BackendStatus {
                    address: "10.10.24.31".into(),
                    node: Some("w1".into()),
                    weight: 1,
                    ..Default::default()
                },
                BackendStatus {
                    address: "10.10.24.32".into(),
                    weight: 1,
                    draining: true,
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
        assert_eq!(
            backends_of(&o, &validate(&o).unwrap()),
            vec![
                RealServer {
                    addr: "10.10.24.31".parse().unwrap(),
                    weight: 1
                },
                RealServer {
                    addr: "10.10.24.32".parse().unwrap(),
                    weight: 0
                }
            ]
        );
        let mut w1 = node(&[], "192.168.0.1");
        w1.name = "w1".into();
        assert!(
            Derived::of(&o).roles(&w1).real_server,
            "named as the backend's node"
        );
    }

    #[test]
    fn only_a_rejection_of_the_current_generation_counts() {
        let mut o = web();
        o.metadata.generation = Some(2);
        let cond = |g| Condition {
            type_: "Accepted".into(),
            status: "False".into(),
            reason: "VIPConflict".into(),
            message: String::new(),
            observed_generation: Some(g),
            last_transition_time: Time(Default::default()),
        };
        o.status = Some(LvsServiceStatus {
            conditions: vec![cond(1)],
            ..Default::default()
        });
        assert!(!rejected(&o));
        o.status = Some(LvsServiceStatus {
            conditions: vec![cond(2)],
            ..Default::default()
        });
        assert!(rejected(&o));
    }

    #[test]
    fn older_objects_claim_ports_first_and_names_break_ties() {
        let mut a = web();
        a.metadata.name = Some("b".into());
        let mut b = web();
        b.metadata.name = Some("a".into());
        let mut c = web();
        c.metadata.name = Some("z".into());
        c.metadata.creation_timestamp = Some(Time(Default::default()));
        let mut v = vec![Arc::new(a), Arc::new(b), Arc::new(c)];
        by_age(&mut v);
        let names: Vec<_> = v.iter().map(|o| o.name_any()).collect();
        assert_eq!(
            names,
            vec!["a", "b", "z"],
            "no timestamp sorts first, then by name"
        );
    }

    #[test]
    fn lease_names_are_valid_object_names() {
        assert_eq!(
            lease_name("10.10.24.88".parse().unwrap()),
            "lvs-vip-10-10-24-88"
        );
        assert_eq!(
            lease_name("fd00:24::88".parse().unwrap()),
            "lvs-vip-fd00-24--88"
        );
        // A name may not end with `-` (the API server refuses it).
        assert_eq!(
            lease_name("2001:db8:0:88::".parse().unwrap()),
            "lvs-vip-2001-db8-0-88--0"
        );
    }

    #[test]
    fn a_node_reports_programmed_when_the_kernel_holds_its_share_and_names_its_own_failure() {
        use crate::core::{HostAddress, NodeState, Op};
        let mut o = web();
        o.metadata.namespace = Some("default".into());
        o.metadata.generation = Some(4);
        let vip = HostAddress::vip("lo", "10.10.24.88".parse().unwrap());
        let mut part = NodeState::default();
        part.addresses.insert(vip.clone());
        let mut r = Resynced::default();
        r.desired.parts.insert("default/web".into(), part.clone());
        r.after = part.clone();
        let rs = Roles {
            director: false,
            real_server: true,
        };
        let entry = node_status(&o, "rs1", rs, &r, DirectorReport::default(), None).unwrap();
        assert_eq!(
            (
                entry.programmed,
                entry.arp_verified,
                entry.observed_generation
            ),
            (true, true, 4)
        );
        assert_eq!(entry.error, None);

        r.after = NodeState::default();
        let unrelated = HostAddress::vip("lo", "10.10.24.99".parse().unwrap());
        r.converged.failed.push((
            Op::AddAddress {
                address: unrelated,
                announce: false,
            },
            "EPERM".into(),
        ));
        r.converged.failed.push((
            Op::AddAddress {
                address: vip,
                announce: false,
            },
            "needs CAP_NET_ADMIN".into(),
        ));
        let entry = node_status(&o, "rs1", rs, &r, DirectorReport::default(), None).unwrap();
        assert!(!entry.programmed);
        assert_eq!(
            entry.error.as_deref(),
            Some("ip addr add 10.10.24.88/32 broadcast 10.10.24.88 dev lo: needs CAP_NET_ADMIN")
        );
        assert_eq!(
            node_status(
                &o,
                "rs1",
                Roles::default(),
                &r,
                DirectorReport::default(),
                None
            ),
            None,
            "no role, no entry"
        );
    }
}
