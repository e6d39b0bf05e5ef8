//! Which of several LvsServices claiming the same VIP:port/protocol keeps it.
//!
//! The rule is the core's ([`crate::core::claims`]), shared with the agents; this module puts the
//! objects in its order: oldest first (`metadata.creationTimestamp`, then the string
//! `namespace/name`, so equal timestamps still give one answer). Objects the controller rejects as
//! invalid claim nothing. Objects being deleted keep their claims until their finalizer is gone,
//! because their agents may still hold the VIP in the kernel.

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::api::{LvsService, validate, validate::object_ref};
use crate::core::{Conflict, VirtualService, claims};

/// The conflict that keeps `target` from being accepted, if any. `all` is every LvsService the
/// controller knows (it may hold an older copy of `target`, which is ignored); `service` is
/// `target` validated.
pub fn find_conflict(
    target: &LvsService,
    service: &VirtualService,
    all: &[Arc<LvsService>],
) -> Option<Conflict> {
    let mut rivals: Vec<(&LvsService, VirtualService)> = all
        .iter()
        .map(Arc::as_ref)
        // Only an object at the same VIP can be a rival: the others are not validated (a
        // thousand objects at every reconcile would be).
        .filter(|o| o.effective_vip().and_then(|v| v.parse().ok()) == Some(service.vip))
        .filter(|o| !same_object(o, target))
        .filter_map(|o| Some((o, validate(o).ok()?)))
        .collect();
    rivals.push((target, service.clone()));
    rivals.sort_by_key(|(o, _)| age_key(o));
    let services: Vec<&VirtualService> = rivals.iter().map(|(_, s)| s).collect();
    let at = rivals.iter().position(|(o, _)| same_object(o, target))?;
    claims(&services).swap_remove(at)
}

/// Oldest first, then by `namespace/name` as a string: the agents' order (a stored object always
/// has a timestamp; one without sorts first there, so here too).
pub fn age_key(o: &LvsService) -> (Option<Timestamp>, String) {
    (
        o.metadata.creation_timestamp.as_ref().map(|t| t.0),
        object_ref(o),
    )
}

fn same_object(a: &LvsService, b: &LvsService) -> bool {
    match (&a.metadata.uid, &b.metadata.uid) {
        (Some(x), Some(y)) => x == y,
        _ => a.namespace() == b.namespace() && a.name_any() == b.name_any(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Protocol, ServicePort};
    use crate::controller::fixtures::{created_at, lvs};
    use pretty_assertions::assert_eq;

    fn arcs(items: &[&LvsService]) -> Vec<Arc<LvsService>> {
        items.iter().map(|o| Arc::new((*o).clone())).collect()
    }

    #[test]
    fn the_older_object_keeps_the_vip_and_the_newer_one_is_told_who_has_it() {
        let old = created_at(lvs("old", "10.0.0.100"), 100);
        let new = created_at(lvs("new", "10.0.0.100"), 200);
        let all = arcs(&[&old, &new]);
        assert_eq!(find_conflict(&old, &validate(&old).unwrap(), &all), None);
        let conflict = find_conflict(&new, &validate(&new).unwrap(), &all)
            .expect("the newer object conflicts");
        assert_eq!(conflict.winner, "default/old");
        assert_eq!(conflict.key.port, 80);
        assert_eq!(
            conflict.message(),
            "TCP 10.0.0.100:80 is already claimed by default/old, which is older"
        );
    }

    #[test]
    fn equal_timestamps_are_settled_by_namespace_then_name() {
        let a = created_at(lvs("a", "10.0.0.100"), 100);
        let b = created_at(lvs("b", "10.0.0.100"), 100);
        let all = arcs(&[&b, &a]);
        assert_eq!(find_conflict(&a, &validate(&a).unwrap(), &all), None);
        assert_eq!(
            find_conflict(&b, &validate(&b).unwrap(), &all)
                .unwrap()
                .winner,
            "default/a"
        );
        let all = arcs(&[&a, &b]);
        assert_eq!(
            find_conflict(&b, &validate(&b).unwrap(), &all)
                .unwrap()
                .winner,
            "default/a"
        );
    }

    #[test]
    fn the_same_vip_on_other_ports_or_protocols_is_no_conflict() {
        let old = created_at(lvs("old", "10.0.0.100"), 100);
        let mut udp = created_at(lvs("udp", "10.0.0.100"), 200);
        udp.spec.ports = vec![ServicePort {
            port: 80,
            protocol: Protocol::Udp,
        }];
        let mut other_port = created_at(lvs("https", "10.0.0.100"), 300);
        other_port.spec.ports = vec![ServicePort {
            port: 443,
            protocol: Protocol::Tcp,
        }];
        let other_vip = created_at(lvs("elsewhere", "10.0.0.101"), 400);
        let all = arcs(&[&old, &udp, &other_port, &other_vip]);
        for o in [&udp, &other_port, &other_vip] {
            assert_eq!(
                find_conflict(o, &validate(o).unwrap(), &all),
                None,
                "{}",
                o.name_any()
            );
        }
    }

    #[test]
    fn an_object_that_lost_a_port_claims_none_of_its_ports() {
        let a = created_at(lvs("a", "10.0.0.100"), 100);
        let mut b = created_at(lvs("b", "10.0.0.100"), 200);
        b.spec.ports.push(ServicePort {
            port: 443,
            protocol: Protocol::Tcp,
        });
        let mut c = created_at(lvs("c", "10.0.0.100"), 300);
        c.spec.ports = vec![ServicePort {
            port: 443,
            protocol: Protocol::Tcp,
        }];
        let all = arcs(&[&a, &b, &c]);
        assert_eq!(
            find_conflict(&b, &validate(&b).unwrap(), &all)
                .unwrap()
                .winner,
            "default/a"
        );
        assert_eq!(find_conflict(&c, &validate(&c).unwrap(), &all), None);
    }

    #[test]
    fn the_conflict_names_the_clashing_port_and_protocol() {
        let mut a = created_at(lvs("a", "2001:db8::1"), 100);
        a.spec.ports = vec![ServicePort {
            port: 53,
            protocol: Protocol::Udp,
        }];
        let mut b = created_at(lvs("b", "2001:db8::1"), 200);
        b.spec.ports = vec![
            ServicePort {
                port: 53,
                protocol: Protocol::Tcp,
            },
            ServicePort {
                port: 53,
                protocol: Protocol::Udp,
            },
        ];
        let all = arcs(&[&a, &b]);
        assert_eq!(
            find_conflict(&b, &validate(&b).unwrap(), &all)
                .unwrap()
                .message(),
            "UDP [2001:db8::1]:53 is already claimed by default/a, which is older"
        );
    }
}
