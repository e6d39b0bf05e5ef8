//! The agent's watches: each feeds a reflector store and wakes the resync loop, only when what
//! the agent reads of an object changed. Fifty agents each resyncing a thousand objects on every
//! status write or heartbeat renewal anywhere is what made the control path slow at scale.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tokio::sync::Notify;

use crate::api::LvsService;

/// Keeps a reflector store fed and wakes the resync loop on every change.
pub(super) fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    what: &str,
    notify: Arc<Notify>,
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
    reflect_some(api, config, what, notify, |_| None)
}

/// [`reflect`], waking the resync loop only when `what_matters` of an object changed (every
/// change when it says `None`), or the object was deleted.
pub(super) fn reflect_some<K>(
    api: Api<K>,
    config: watcher::Config,
    what: &str,
    notify: Arc<Notify>,
    what_matters: fn(&K) -> Option<u64>,
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

/// What of an LvsService the agent acts on: its generation (the spec), deletion, and what of
/// the status the controller tells the agents (the allocated VIP, the real servers with their
/// weights, whether the generation was refused). The rest of the status (counts, conditions,
/// health) changes with every report and would make fifty agents resync for nothing.
pub(super) fn service_identity(o: &LvsService) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    o.metadata.uid.hash(&mut h);
    o.metadata.generation.hash(&mut h);
    o.metadata.deletion_timestamp.is_some().hash(&mut h);
    if let Some(status) = &o.status {
        status.vip.hash(&mut h);
        for b in &status.backends {
            (&b.address, &b.node, b.weight, b.draining).hash(&mut h);
        }
    }
    crate::agent::roles::rejected(o).hash(&mut h);
    Some(h.finish())
}

/// What of a Lease the agent acts on at once: its holder, labels and annotations (a heartbeat's
/// peer address), not its renewals. That a peer's heartbeat went stale or fresh again is read at
/// the next periodic resync; fifty agents renewing would otherwise make each agent resync five
/// times a second.
pub(super) fn lease_identity(lease: &Lease) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    lease.labels().hash(&mut h);
    lease.annotations().hash(&mut h);
    let holder = lease.spec.as_ref().and_then(|s| s.holder_identity.as_ref());
    holder.hash(&mut h);
    Some(h.finish())
}
