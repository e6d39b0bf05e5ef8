//! The agent's watches: each feeds a reflector store and wakes the resync loop, only when what
//! the agent reads of an object changed. Fifty agents each resyncing a thousand objects on every
//! status write or heartbeat renewal anywhere is what made the control path slow at scale.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tokio::sync::Notify;

use crate::api::LvsService;
use crate::fingerprint::fingerprint;

/// Keeps a reflector store fed, waking the resync loop when `what_matters` of an object changed
/// (every change when it says `None`: [`every_change`]), or the object was deleted.
pub(super) fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    what: &str,
    notify: Arc<Notify>,
    what_matters: impl Fn(&K) -> Option<u64> + Send + 'static,
) -> Store<K>
where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, crate::watch::resilient(api, config, what));
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        let mut last: HashMap<reflector::ObjectRef<K>, u64> = HashMap::new();
        while let Some(event) = stream.next().await {
            let wake = match event {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                    match what_matters(&o) {
                        Some(h) => last.insert(reflector::ObjectRef::from_obj(&o), h) != Some(h),
                        None => true,
                    }
                }
                Ok(watcher::Event::Delete(o)) => {
                    last.remove(&reflector::ObjectRef::from_obj(&o));
                    true
                }
                Ok(watcher::Event::InitDone) => true,
                Ok(watcher::Event::Init) | Err(_) => false,
            };
            if wake {
                notify.notify_one();
            }
        }
    });
    reader
}

/// Every change of an object matters.
pub(super) fn every_change<K>(_: &K) -> Option<u64> {
    None
}

/// The objects (by uid) this node may direct, as the last resync found them.
pub(super) type Directed = Arc<RwLock<HashSet<String>>>;

/// What of an LvsService the agent acts on: its generation (the spec), deletion, and what of
/// the status the controller tells the agents (the allocated VIP, the real servers, whether the
/// generation was refused), with the real servers' weights only where this node may direct the
/// object (`directed`): a real server only needs to know that it is one, and the weights change
/// each time a node reports. The rest of the status (counts, conditions, health) changes with
/// every report and would make fifty agents resync for nothing.
///
/// An object this node starts to direct wakes the resync by what made it a director (its spec,
/// or the Node's labels), which then reads the store's latest weights.
pub(super) fn service_identity(directed: Directed) -> impl Fn(&LvsService) -> Option<u64> {
    move |o| {
        let directs = o
            .metadata
            .uid
            .as_ref()
            .is_some_and(|uid| directed.read().expect("never poisoned").contains(uid));
        let status = o.status.as_ref();
        let backends: Vec<_> = status
            .iter()
            .flat_map(|s| &s.backends)
            .map(|b| {
                (
                    &b.address,
                    &b.node,
                    directs.then_some((b.weight, b.draining)),
                )
            })
            .collect();
        Some(fingerprint(&(
            &o.metadata.uid,
            o.metadata.generation,
            o.metadata.deletion_timestamp.is_some(),
            status.map(|s| &s.vip),
            backends,
            crate::agent::roles::rejected(o),
        )))
    }
}

/// What of a Lease the agent acts on at once: its holder, labels and annotations (a heartbeat's
/// peer address), not its renewals. That a peer's heartbeat went stale or fresh again is read at
/// the next periodic resync; fifty agents renewing would otherwise make each agent resync five
/// times a second.
pub(super) fn lease_identity(lease: &Lease) -> Option<u64> {
    let holder = lease.spec.as_ref().and_then(|s| s.holder_identity.as_ref());
    Some(fingerprint(&(lease.labels(), lease.annotations(), holder)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BackendStatus, LvsServiceStatus, manifest};

    fn web(weight: i32) -> LvsService {
        let mut o =
            manifest::parse_documents("t", include_str!("../../../tests/valid/reference.yaml"))
                .remove(0)
                .unwrap();
        o.metadata.uid = Some("u1".into());
        o.status = Some(LvsServiceStatus {
            backends: vec![BackendStatus {
                address: "10.10.24.21".into(),
                node: Some("rs1".into()),
                weight,
                ..Default::default()
            }],
            ..Default::default()
        });
        o
    }

    #[test]
    fn weights_wake_only_the_nodes_that_may_direct_the_object() {
        let directed = Directed::default();
        let identity = service_identity(directed.clone());
        assert_eq!(identity(&web(0)), identity(&web(1)), "a real server only");
        directed.write().unwrap().insert("u1".into());
        assert_ne!(identity(&web(0)), identity(&web(1)), "a director");
        let mut moved = web(1);
        moved.status.as_mut().unwrap().backends[0].address = "10.10.24.22".into();
        directed.write().unwrap().clear();
        assert_ne!(
            identity(&web(1)),
            identity(&moved),
            "a real server added or gone wakes every node"
        );
    }
}
