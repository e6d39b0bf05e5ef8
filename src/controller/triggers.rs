//! Which LvsServices to reconcile when something else changes.
//!
//! - A Node: every LvsService, but only when the node changed in a way resolution can see (labels,
//!   InternalIPs, being deleted). Kubelets rewrite node status every few seconds; those writes are
//!   filtered out by [`NodeChanges`] before they wake anything.
//! - An EndpointSlice: the LvsServices of its namespace whose `backendService` names the slice's
//!   Service (label `kubernetes.io/service-name`).
//! - An LvsService: the other LvsServices on the same VIP (before or after the change), since its
//!   creation, deletion or port change can start or end a conflict for them.
//! - A Service: the LvsServices of its namespace whose `backendService` names it (it appeared or
//!   went away: `ServiceNotFound` comes or goes).
//! - An agent's heartbeat Lease: every LvsService, but only when the node starts reporting again
//!   (its Lease had expired, or is new) or its Lease goes away. Renewals of a live node, every
//!   10 s per node, wake nothing; an expiry needs no event, the reconciler looks again when the
//!   first heartbeat it relies on expires.
//!
//! The controller's own watch wakes an LvsService for any change of itself, agents' status
//! reports included; the reconciler keeps that from looping by writing only real changes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

use super::backends::SERVICE_NAME_LABEL;
use crate::api::LvsService;
use crate::fingerprint::fingerprint;

/// A hash of what backend and director resolution reads from a Node.
pub fn node_fingerprint(node: &Node) -> u64 {
    let addresses: Vec<(&str, &str)> = node
        .status
        .iter()
        .flat_map(|s| s.addresses.iter().flatten())
        .map(|a| (a.type_.as_str(), a.address.as_str()))
        .collect();
    fingerprint(&(
        node.labels(),
        addresses,
        node.metadata.deletion_timestamp.is_some(),
    ))
}

/// Passes on the Nodes whose fingerprint changed since last seen, and every deleted Node.
#[derive(Default)]
pub struct NodeChanges {
    seen: HashMap<String, u64>,
}

impl NodeChanges {
    /// The node to trigger on for this watcher event, if any.
    pub fn relevant(&mut self, event: watcher::Event<Node>) -> Option<Node> {
        match event {
            watcher::Event::Apply(node) | watcher::Event::InitApply(node) => {
                let print = node_fingerprint(&node);
                let before = self.seen.insert(node.name_any(), print);
                (before != Some(print)).then_some(node)
            }
            watcher::Event::Delete(node) => {
                self.seen.remove(&node.name_any());
                Some(node)
            }
            watcher::Event::Init | watcher::Event::InitDone => None,
        }
    }
}

/// Every LvsService in the cache.
pub fn all_services(services: &Store<LvsService>) -> Vec<ObjectRef<LvsService>> {
    services
        .state()
        .iter()
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}

/// The LvsServices whose `backendService` is the Service of `slice`.
pub fn services_for_slice(
    services: &[std::sync::Arc<LvsService>],
    slice: &EndpointSlice,
) -> Vec<ObjectRef<LvsService>> {
    let Some(service) = slice.labels().get(SERVICE_NAME_LABEL) else {
        return Vec::new();
    };
    services
        .iter()
        .filter(|o| o.namespace() == slice.namespace())
        .filter(|o| o.spec.backend_service.as_ref().map(|b| &b.name) == Some(service))
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}

/// The LvsServices whose `backendService` is `service`.
pub fn services_for_service(
    services: &[std::sync::Arc<LvsService>],
    service: &PartialObjectMeta<Service>,
) -> Vec<ObjectRef<LvsService>> {
    services
        .iter()
        .filter(|o| o.namespace() == service.namespace())
        .filter(|o| {
            o.spec.backend_service.as_ref().map(|b| b.name.as_str())
                == service.metadata.name.as_deref()
        })
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}

/// Passes on the heartbeat Leases of nodes that start reporting again, and deleted ones.
pub struct HeartbeatChanges {
    timeout: Duration,
    last: HashMap<String, Timestamp>,
}

impl HeartbeatChanges {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            last: HashMap::new(),
        }
    }

    /// The Lease to trigger on for this watcher event, if any.
    pub fn relevant(&mut self, event: watcher::Event<Lease>) -> Option<Lease> {
        match event {
            watcher::Event::Apply(lease) | watcher::Event::InitApply(lease) => {
                let (node, renewed) = crate::heartbeat::read(&lease)?;
                let was_fresh = self.last.insert(node, renewed).is_some_and(|before| {
                    Duration::try_from(renewed.duration_since(before))
                        .is_ok_and(|gap| gap <= self.timeout)
                });
                (!was_fresh).then_some(lease)
            }
            watcher::Event::Delete(lease) => {
                if let Some((node, _)) = crate::heartbeat::read(&lease) {
                    self.last.remove(&node);
                }
                Some(lease)
            }
            watcher::Event::Init | watcher::Event::InitDone => None,
        }
    }
}

/// Remembers each LvsService's VIP, so a VIP change wakes the objects on the old VIP too.
#[derive(Default)]
pub struct VipSiblings {
    last_vip: Mutex<BTreeMap<(String, String), String>>,
}

impl VipSiblings {
    /// The other LvsServices on the VIP `changed` has now or had before.
    pub fn siblings(
        &self,
        services: &[std::sync::Arc<LvsService>],
        changed: &LvsService,
    ) -> Vec<ObjectRef<LvsService>> {
        let key = (changed.namespace().unwrap_or_default(), changed.name_any());
        let before = {
            let mut last = self.last_vip.lock().expect("never poisoned");
            match changed.effective_vip() {
                Some(vip) if changed.metadata.deletion_timestamp.is_none() => {
                    last.insert(key.clone(), vip.to_string())
                }
                _ => last.remove(&key),
            }
        };
        services
            .iter()
            .filter(|o| {
                let vip = o.effective_vip();
                vip.is_some() && (vip == changed.effective_vip() || vip == before.as_deref())
            })
            .filter(|o| (o.namespace().unwrap_or_default(), o.name_any()) != key)
            .map(|o| ObjectRef::from_obj(o.as_ref()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::BackendServiceRef;
    use crate::controller::fixtures::{lvs, node, ready, slice};
    use std::sync::Arc;

    #[test]
    fn a_node_status_heartbeat_triggers_nothing_but_a_label_change_does() {
        let mut changes = NodeChanges::default();
        let n = node("n1", "10.0.0.11", &[]);
        assert!(
            changes
                .relevant(watcher::Event::InitApply(n.clone()))
                .is_some()
        );
        let mut heartbeat = n.clone();
        heartbeat.status.as_mut().unwrap().conditions = Some(vec![Default::default()]);
        heartbeat.metadata.resource_version = Some("2".into());
        assert!(changes.relevant(watcher::Event::Apply(heartbeat)).is_none());
        let relabelled = node("n1", "10.0.0.11", &[("lvs-operator.io/director", "true")]);
        assert!(
            changes
                .relevant(watcher::Event::Apply(relabelled))
                .is_some()
        );
        let readdressed = node("n1", "10.0.0.99", &[("lvs-operator.io/director", "true")]);
        assert!(
            changes
                .relevant(watcher::Event::Apply(readdressed.clone()))
                .is_some()
        );
        assert!(
            changes
                .relevant(watcher::Event::Delete(readdressed))
                .is_some()
        );
    }

    fn heartbeat(node: &str, at: i64) -> Lease {
        let mut lease = Lease::default();
        lease.metadata.name = Some(crate::heartbeat::lease_name(node));
        lease.spec = Some(k8s_openapi::api::coordination::v1::LeaseSpec {
            holder_identity: Some(node.into()),
            renew_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                Timestamp::from_second(1_800_000_000 + at).unwrap(),
            )),
            ..Default::default()
        });
        lease
    }

    #[test]
    fn a_heartbeat_wakes_the_objects_only_when_its_node_comes_back() {
        let mut changes = HeartbeatChanges::new(Duration::from_secs(30));
        assert!(
            changes
                .relevant(watcher::Event::InitApply(heartbeat("rs1", 0)))
                .is_some()
        );
        assert!(
            changes
                .relevant(watcher::Event::Apply(heartbeat("rs1", 10)))
                .is_none()
        );
        assert!(
            changes
                .relevant(watcher::Event::Apply(heartbeat("rs1", 20)))
                .is_none()
        );
        assert!(
            changes
                .relevant(watcher::Event::Apply(heartbeat("rs1", 90)))
                .is_some(),
            "silent for 70 s, then back"
        );
        assert!(
            changes
                .relevant(watcher::Event::Delete(heartbeat("rs1", 90)))
                .is_some()
        );
    }

    #[test]
    fn an_endpoint_slice_wakes_the_objects_that_use_its_service_in_its_namespace() {
        let mut uses = lvs("uses", "10.0.0.100");
        uses.spec.backends = None;
        uses.spec.backend_service = Some(BackendServiceRef { name: "web".into() });
        let mut other_service = uses.clone();
        other_service.metadata.name = Some("other".into());
        other_service.spec.backend_service = Some(BackendServiceRef { name: "db".into() });
        let mut other_ns = uses.clone();
        other_ns.metadata.namespace = Some("elsewhere".into());
        let explicit = lvs("explicit", "10.0.0.101");
        let services: Vec<_> = [uses, other_service, other_ns, explicit]
            .into_iter()
            .map(Arc::new)
            .collect();
        let s = slice(
            "default",
            "web",
            "web-1",
            "IPv4",
            vec![ready("10.0.0.1", None)],
        );
        let woken: Vec<String> = services_for_slice(&services, &s)
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(woken, vec!["uses".to_string()]);
    }

    #[test]
    fn an_lvs_service_wakes_the_others_on_its_old_and_new_vip() {
        let a = lvs("a", "10.0.0.100");
        let b = lvs("b", "10.0.0.100");
        let c = lvs("c", "10.0.0.200");
        let services: Vec<_> = [a.clone(), b, c].into_iter().map(Arc::new).collect();
        let siblings = VipSiblings::default();
        let names = |refs: Vec<ObjectRef<LvsService>>| -> Vec<String> {
            refs.into_iter().map(|r| r.name).collect()
        };
        assert_eq!(names(siblings.siblings(&services, &a)), vec!["b"]);
        let mut moved = a.clone();
        moved.spec.vip = Some("10.0.0.200".into());
        assert_eq!(names(siblings.siblings(&services, &moved)), vec!["b", "c"]);
    }
}
