//! From an LvsService and what the cluster holds (Nodes, EndpointSlices) to its real servers and
//! the nodes that have a part in it.
//!
//! Pure functions over plain slices: the reconciler hands in what its reflector stores hold, the
//! tests hand in literals. [`resolve_backends`] answers "which addresses, with which weights";
//! [`expected_nodes`] answers "which nodes must report before the object counts as programmed".
//! The conditions module turns both, with the agents' reports, into status.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use kube::ResourceExt;
use kube::core::SelectorExt;

pub use crate::api::selector::{SelectorError, director_selector, parse_selector};

use crate::api::LvsService;
use crate::core::VirtualService;

/// The label the EndpointSlice controller puts on every slice of a Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One real server as resolved from the spec; the status flags come later, from the agents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedBackend {
    pub address: IpAddr,
    /// The cluster node that has this address, when there is one.
    pub node: Option<String>,
    /// The weight the director should use; 0 while draining.
    pub weight: i32,
    /// The endpoint is terminating but still serving: existing connections finish, no new ones.
    pub draining: bool,
}

/// The nodes with a part in one object, by role.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpectedNodes {
    /// Nodes matching the director selector: each programs IPVS (one of them also holds the VIP).
    pub directors: BTreeSet<String>,
    /// Nodes that are real servers: each holds the VIP on `lo` with the ARP sysctls.
    pub real_servers: BTreeSet<String>,
}

impl ExpectedNodes {
    /// Every node that has to report, whatever its role.
    pub fn all(&self) -> BTreeSet<&str> {
        self.directors
            .iter()
            .chain(&self.real_servers)
            .map(String::as_str)
            .collect()
    }
}

/// The real servers of `object`, sorted by address and without duplicates.
///
/// - `spec.backends`: as written (weight as given); an address that is a node's InternalIP names
///   that node.
/// - `spec.backendNodeSelector`: the InternalIP of each matching Node, in the VIP's address
///   family, weight 1.
/// - `spec.backendService`: the endpoints of that Service's EndpointSlices in the object's
///   namespace, of the VIP's address family. A ready endpoint gets weight 1; a terminating one
///   that still serves drains (weight 0); one that does not serve is left out.
pub fn resolve_backends(
    object: &LvsService,
    service: &VirtualService,
    nodes: &[Arc<Node>],
    slices: &[Arc<EndpointSlice>],
) -> Result<Vec<ResolvedBackend>, SelectorError> {
    let vip = service.vip;
    let by_ip = node_addresses(nodes, vip);
    let node_of = |addr: &IpAddr| by_ip.get(addr).cloned();
    let mut found: BTreeMap<IpAddr, ResolvedBackend> = BTreeMap::new();

    if let Some(backends) = &service.backends {
        for b in backends {
            found.entry(b.addr).or_insert(ResolvedBackend {
                address: b.addr,
                node: node_of(&b.addr),
                weight: i32::try_from(b.weight).unwrap_or(i32::MAX),
                draining: false,
            });
        }
    } else if let Some(selector) = &object.spec.backend_node_selector {
        let selector = parse_selector("spec.backendNodeSelector", selector)?;
        for node in nodes {
            if !selector.matches(node.labels()) {
                continue;
            }
            if let Some(address) = internal_ip(node, vip) {
                found.entry(address).or_insert(ResolvedBackend {
                    address,
                    node: Some(node.name_any()),
                    weight: 1,
                    draining: false,
                });
            }
        }
    } else if let Some(service) = &object.spec.backend_service {
        let namespace = object.namespace();
        let family = if vip.is_ipv4() { "IPv4" } else { "IPv6" };
        let slices = slices.iter().filter(|s| {
            s.namespace() == namespace
                && s.labels().get(SERVICE_NAME_LABEL) == Some(&service.name)
                && s.address_type == family
        });
        for endpoint in slices.flat_map(|s| &s.endpoints) {
            let Some(draining) = endpoint_draining(endpoint) else {
                continue;
            };
            for address in endpoint.addresses.iter().filter_map(|a| a.parse().ok()) {
                let address: IpAddr = address;
                let candidate = ResolvedBackend {
                    address,
                    node: node_of(&address).or_else(|| endpoint.node_name.clone()),
                    weight: if draining { 0 } else { 1 },
                    draining,
                };
                // The same address can show in two slices while the EndpointSlice controller moves
                // endpoints between them; a serving copy wins over a draining one.
                match found.get(&address) {
                    Some(existing) if !existing.draining || draining => {}
                    _ => {
                        found.insert(address, candidate);
                    }
                }
            }
        }
    }
    Ok(found.into_values().collect())
}

/// `Some(false)` for a ready endpoint, `Some(true)` for one to drain, `None` for one to leave out.
///
/// Terminating is looked at first: with `publishNotReadyAddresses` a terminating endpoint can still
/// say ready, and it should drain all the same.
fn endpoint_draining(endpoint: &Endpoint) -> Option<bool> {
    let conditions = endpoint.conditions.clone().unwrap_or_default();
    // The API's defaults for absent conditions: ready and serving true, terminating false.
    let ready = conditions.ready.unwrap_or(true);
    let serving = conditions.serving.unwrap_or(true);
    let terminating = conditions.terminating.unwrap_or(false);
    match (terminating, serving, ready) {
        (true, true, _) => Some(true),
        (true, false, _) => None,
        (false, _, true) => Some(false),
        (false, _, false) => None,
    }
}

/// The nodes that have a part in `object`: directors by selector, real servers by address.
pub fn expected_nodes(
    object: &LvsService,
    nodes: &[Arc<Node>],
    backends: &[ResolvedBackend],
) -> Result<ExpectedNodes, SelectorError> {
    let selector = director_selector(object)?;
    let directors = nodes
        .iter()
        .filter(|n| selector.matches(n.labels()))
        .map(|n| n.name_any())
        .collect();
    let real_servers = backends.iter().filter_map(|b| b.node.clone()).collect();
    Ok(ExpectedNodes {
        directors,
        real_servers,
    })
}

/// Each node's InternalIP of the VIP's family, to name the node behind an address.
fn node_addresses(nodes: &[Arc<Node>], vip: IpAddr) -> BTreeMap<IpAddr, String> {
    nodes
        .iter()
        .flat_map(|n| {
            internal_ips(n)
                .filter(move |a| a.is_ipv4() == vip.is_ipv4())
                .map(move |a| (a, n.name_any()))
        })
        .collect()
}

/// The node's first InternalIP in the VIP's address family.
pub fn internal_ip(node: &Node, vip: IpAddr) -> Option<IpAddr> {
    internal_ips(node).find(|a| a.is_ipv4() == vip.is_ipv4())
}

fn internal_ips(node: &Node) -> impl Iterator<Item = IpAddr> + '_ {
    node.status
        .iter()
        .flat_map(|s| s.addresses.iter().flatten())
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{DEFAULT_DIRECTOR_LABEL, validate};
    use crate::controller::fixtures::{lvs, node, not_serving, ready, serving_terminating, slice};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use pretty_assertions::assert_eq;

    fn backend(address: &str, node: Option<&str>, weight: i32, draining: bool) -> ResolvedBackend {
        ResolvedBackend {
            address: address.parse().unwrap(),
            node: node.map(String::from),
            weight,
            draining,
        }
    }

    fn arcs<T>(items: Vec<T>) -> Vec<Arc<T>> {
        items.into_iter().map(Arc::new).collect()
    }

    #[test]
    fn explicit_backends_keep_their_weights_and_name_the_node_that_has_the_address() {
        let mut obj = lvs("web", "10.0.0.100");
        obj.spec.backends = Some(vec![
            crate::api::Backend {
                address: "10.0.0.12".into(),
                weight: 5,
            },
            crate::api::Backend {
                address: "10.0.0.11".into(),
                weight: 0,
            },
        ]);
        let nodes = arcs(vec![node("n1", "10.0.0.11", &[])]);
        assert_eq!(
            resolve_backends(&obj, &validate(&obj).unwrap(), &nodes, &[]).unwrap(),
            vec![
                backend("10.0.0.11", Some("n1"), 0, false),
                backend("10.0.0.12", None, 5, false),
            ]
        );
    }

    #[test]
    fn node_selector_resolves_to_the_internal_ip_of_each_matching_node() {
        let mut obj = lvs("web", "10.0.0.100");
        obj.spec.backends = None;
        obj.spec.backend_node_selector = Some(LabelSelector {
            match_labels: Some([("role".to_string(), "web".to_string())].into()),
            ..Default::default()
        });
        let nodes = arcs(vec![
            node("n2", "10.0.0.12", &[("role", "web")]),
            node("n1", "10.0.0.11", &[("role", "web")]),
            node("n3", "10.0.0.13", &[("role", "db")]),
        ]);
        assert_eq!(
            resolve_backends(&obj, &validate(&obj).unwrap(), &nodes, &[]).unwrap(),
            vec![
                backend("10.0.0.11", Some("n1"), 1, false),
                backend("10.0.0.12", Some("n2"), 1, false),
            ]
        );
    }

    #[test]
    fn node_selector_takes_the_internal_ip_of_the_vip_family_only() {
        let mut obj = lvs("web", "2001:db8::100");
        obj.spec.backends = None;
        obj.spec.backend_node_selector = Some(LabelSelector::default());
        let mut dual = node("n1", "10.0.0.11", &[]);
        dual.status
            .as_mut()
            .unwrap()
            .addresses
            .as_mut()
            .unwrap()
            .push(k8s_openapi::api::core::v1::NodeAddress {
                type_: "InternalIP".into(),
                address: "2001:db8::11".into(),
            });
        let nodes = arcs(vec![dual, node("n2", "10.0.0.12", &[])]);
        assert_eq!(
            resolve_backends(&obj, &validate(&obj).unwrap(), &nodes, &[]).unwrap(),
            vec![backend("2001:db8::11", Some("n1"), 1, false)]
        );
    }

    #[test]
    fn endpoint_slices_give_ready_endpoints_weight_one_and_drain_terminating_ones() {
        let mut obj = lvs("web", "10.0.0.100");
        obj.spec.backends = None;
        obj.spec.backend_service = Some(crate::api::BackendServiceRef { name: "web".into() });
        let nodes = arcs(vec![
            node("n1", "10.0.0.11", &[]),
            node("n2", "10.0.0.12", &[]),
        ]);
        let slices = arcs(vec![slice(
            "default",
            "web",
            "web-abc",
            "IPv4",
            vec![
                ready("10.0.0.12", None),
                serving_terminating("10.0.0.11", None),
                not_serving("10.0.0.13", Some("n3")),
                ready("10.244.1.7", Some("n2")),
            ],
        )]);
        assert_eq!(
            resolve_backends(&obj, &validate(&obj).unwrap(), &nodes, &slices).unwrap(),
            vec![
                backend("10.0.0.11", Some("n1"), 0, true),
                backend("10.0.0.12", Some("n2"), 1, false),
                backend("10.244.1.7", Some("n2"), 1, false),
            ]
        );
    }

    #[test]
    fn endpoint_slices_of_other_services_namespaces_or_families_are_ignored() {
        let mut obj = lvs("web", "10.0.0.100");
        obj.spec.backends = None;
        obj.spec.backend_service = Some(crate::api::BackendServiceRef { name: "web".into() });
        let slices = arcs(vec![
            slice(
                "default",
                "db",
                "db-1",
                "IPv4",
                vec![ready("10.0.0.21", None)],
            ),
            slice(
                "other",
                "web",
                "web-1",
                "IPv4",
                vec![ready("10.0.0.22", None)],
            ),
            slice(
                "default",
                "web",
                "web-6",
                "IPv6",
                vec![ready("2001:db8::1", None)],
            ),
            slice(
                "default",
                "web",
                "web-4",
                "IPv4",
                vec![ready("10.0.0.23", None)],
            ),
        ]);
        assert_eq!(
            resolve_backends(&obj, &validate(&obj).unwrap(), &[], &slices).unwrap(),
            vec![backend("10.0.0.23", None, 1, false)]
        );
    }

    #[test]
    fn an_address_in_two_slices_counts_once_and_serving_wins_over_draining() {
        let mut obj = lvs("web", "10.0.0.100");
        obj.spec.backends = None;
        obj.spec.backend_service = Some(crate::api::BackendServiceRef { name: "web".into() });
        let slices = arcs(vec![
            slice(
                "default",
                "web",
                "web-1",
                "IPv4",
                vec![serving_terminating("10.0.0.11", None)],
            ),
            slice(
                "default",
                "web",
                "web-2",
                "IPv4",
                vec![ready("10.0.0.11", None)],
            ),
            slice(
                "default",
                "web",
                "web-3",
                "IPv4",
                vec![serving_terminating("10.0.0.11", None)],
            ),
        ]);
        assert_eq!(
            resolve_backends(&obj, &validate(&obj).unwrap(), &[], &slices).unwrap(),
            vec![backend("10.0.0.11", None, 1, false)]
        );
    }

    #[test]
    fn endpoints_without_conditions_count_as_ready() {
        let mut obj = lvs("web", "10.0.0.100");
        obj.spec.backends = None;
        obj.spec.backend_service = Some(crate::api::BackendServiceRef { name: "web".into() });
        let mut ep = ready("10.0.0.11", None);
        ep.conditions = None;
        let slices = arcs(vec![slice("default", "web", "web-1", "IPv4", vec![ep])]);
        assert_eq!(
            resolve_backends(&obj, &validate(&obj).unwrap(), &[], &slices).unwrap(),
            vec![backend("10.0.0.11", None, 1, false)]
        );
    }

    #[test]
    fn directors_default_to_nodes_labelled_as_directors_and_real_servers_are_backend_nodes() {
        let obj = lvs("web", "10.0.0.100");
        let nodes = arcs(vec![
            node("d1", "10.0.0.1", &[(DEFAULT_DIRECTOR_LABEL, "true")]),
            node("d2", "10.0.0.2", &[(DEFAULT_DIRECTOR_LABEL, "false")]),
            node("n1", "10.0.0.11", &[]),
        ]);
        let backends = vec![
            backend("10.0.0.11", Some("n1"), 1, false),
            backend("10.0.0.50", None, 1, false),
        ];
        let expected = expected_nodes(&obj, &nodes, &backends).unwrap();
        assert_eq!(expected.directors, BTreeSet::from(["d1".to_string()]));
        assert_eq!(expected.real_servers, BTreeSet::from(["n1".to_string()]));
    }

    #[test]
    fn a_director_selector_in_the_spec_replaces_the_default_label() {
        let mut obj = lvs("web", "10.0.0.100");
        obj.spec.directors = Some(crate::api::Directors {
            node_selector: Some(LabelSelector {
                match_labels: Some([("lb".to_string(), "yes".to_string())].into()),
                ..Default::default()
            }),
            interface: None,
        });
        let nodes = arcs(vec![
            node("d1", "10.0.0.1", &[(DEFAULT_DIRECTOR_LABEL, "true")]),
            node("d2", "10.0.0.2", &[("lb", "yes")]),
        ]);
        let expected = expected_nodes(&obj, &nodes, &[]).unwrap();
        assert_eq!(expected.directors, BTreeSet::from(["d2".to_string()]));
    }
}
