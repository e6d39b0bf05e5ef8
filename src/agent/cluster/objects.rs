//! The objects a resync works from: each LvsService validated once per version, the address
//! pools' verdict on it, and the roles it gives this node.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use kube::ResourceExt;

use crate::agent::roles::{Derived, NodeInfo, Roles, by_age};
use crate::api::{LvsService, Pools, pool};
use crate::core::{Admission, Assignment, DirectorRole, VirtualService, claims};

use super::Agent;

/// Which objects the address pools admit, and which nodes they allow as real servers.
pub(super) struct Gate {
    /// `None`: everything (see `Remembered::pools`).
    pools: Option<Pools>,
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
}

impl Gate {
    fn namespace<'a>(&'a self, object: &'a LvsService) -> pool::Namespace<'a> {
        let name = object.metadata.namespace.as_deref().unwrap_or_default();
        pool::Namespace {
            name,
            labels: self.namespaces.get(name),
        }
    }

    fn admits(&self, object: &LvsService, service: &VirtualService) -> bool {
        let ns = self.namespace(object);
        self.pools
            .as_ref()
            .is_none_or(|p| p.admit(ns, service.vip).is_ok())
    }

    fn allows_real_server(
        &self,
        object: &LvsService,
        service: &VirtualService,
        node: &NodeInfo,
    ) -> bool {
        let ns = self.namespace(object);
        self.pools
            .as_ref()
            .is_none_or(|p| p.allows_real_server(ns, service.vip, &node.labels))
    }
}

/// One LvsService as this resync sees it: the object, its typed spec when it is valid, and
/// whether it may be programmed at all.
pub(super) struct Object {
    pub(super) object: Arc<LvsService>,
    /// What is read of this version of it, validated.
    pub(super) derived: Arc<Derived>,
    /// Whether the pools let this node be one of its real servers.
    pub(super) real_server_allowed: bool,
    /// Valid, admitted by an address pool, not being deleted, not rejected by the controller,
    /// and not the loser of a port an
    /// older object claims (the controller's rule, applied here too, so that the loser never
    /// touches a node even before the controller has spoken).
    pub(super) live: bool,
}

impl Object {
    /// The object validated; `None` when it is not valid.
    pub(super) fn service(&self) -> Option<&VirtualService> {
        self.derived.service.as_deref()
    }
}

impl Agent {
    /// Each namespace's labels, as listed.
    pub(super) fn namespace_labels(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        let namespaces = self.namespaces.state();
        let labels = namespaces
            .iter()
            .map(|n| (n.name_any(), n.labels().clone()));
        labels.collect()
    }

    /// The address pools as listed, or as last remembered while not listed yet.
    pub(super) fn gate(&self) -> Gate {
        match &self.remembered {
            Some(r) if !self.synced() => Gate {
                pools: (r.pools.as_ref()).map(|p| Pools::new(p.iter().map(AsRef::as_ref))),
                namespaces: r.namespaces.clone().unwrap_or_default(),
            },
            _ => Gate {
                pools: Some(Pools::new(self.pools.state().iter().map(AsRef::as_ref))),
                namespaces: self.namespace_labels(),
            },
        }
    }

    /// Every object, oldest first (the order in which objects claim ports), each validated once,
    /// with the pools and the conflict rule applied.
    pub(super) fn objects_by_age(&mut self, node: &NodeInfo) -> Vec<Object> {
        let mut all = match &self.remembered {
            Some(r) if !self.synced() => r.objects.clone(),
            _ => self.objects.state(),
        };
        by_age(&mut all);
        let gate = self.gate();
        let mut known = std::mem::take(&mut self.derived);
        let mut objects: Vec<Object> = all
            .into_iter()
            .map(|object| {
                let derived = derive(&mut known, &mut self.derived, &object);
                let service = derived.service.as_deref();
                let admitted = service.is_some_and(|s| gate.admits(&object, s));
                let live =
                    admitted && object.metadata.deletion_timestamp.is_none() && !derived.rejected;
                let real_server_allowed =
                    service.is_some_and(|s| gate.allows_real_server(&object, s, node));
                Object {
                    object,
                    derived,
                    real_server_allowed,
                    live,
                }
            })
            .collect();
        let claimants: Vec<(usize, &VirtualService)> = objects
            .iter()
            .enumerate()
            .filter(|(_, o)| o.live)
            .filter_map(|(i, o)| Some((i, o.service()?)))
            .collect();
        let services: Vec<&VirtualService> = claimants.iter().map(|(_, s)| *s).collect();
        let losers: Vec<usize> = claimants
            .iter()
            .zip(claims(&services))
            .filter(|(_, lost)| lost.is_some())
            .map(|((i, _), _)| *i)
            .collect();
        for i in losers {
            objects[i].live = false;
        }
        objects
    }

    pub(super) fn roles_of(&self, o: &Object, node: &NodeInfo) -> Roles {
        if !o.live {
            return Roles::default();
        }
        let mut r = o.derived.roles(node);
        r.real_server &= o.real_server_allowed;
        r
    }

    pub(super) fn assignments<'a>(
        &self,
        objects: &'a [Object],
        roles: &[Roles],
        mut health: HashMap<String, BTreeMap<(IpAddr, u16), Admission>>,
        held: &BTreeSet<IpAddr>,
    ) -> Vec<Assignment<'a>> {
        objects
            .iter()
            .zip(roles)
            .filter(|(_, r)| r.director || r.real_server)
            .filter_map(|(o, r)| {
                let service = o.service()?;
                Some(Assignment {
                    service,
                    backends: o.derived.backends.clone(),
                    director: r.director.then(|| DirectorRole {
                        holds_vip: held.contains(&service.vip),
                        interface: self.opts.interface.clone(),
                        handover: self.ha.handover(service.vip),
                    }),
                    real_server: r.real_server,
                    health: health.remove(&service.id).unwrap_or_default(),
                })
            })
            .collect()
    }
}

/// What `known` derived from `object` at its resourceVersion, or derived now; kept in `kept` for
/// the next resync (objects gone since are dropped with what is left of `known`).
fn derive(
    known: &mut HashMap<String, (String, Arc<Derived>)>,
    kept: &mut HashMap<String, (String, Arc<Derived>)>,
    object: &LvsService,
) -> Arc<Derived> {
    let (Some(uid), Some(version)) = (&object.metadata.uid, &object.metadata.resource_version)
    else {
        return Arc::new(Derived::of(object));
    };
    let derived = match known.remove(uid) {
        Some((v, d)) if v == *version => d,
        _ => Arc::new(Derived::of(object)),
    };
    kept.insert(uid.clone(), (version.clone(), derived.clone()));
    derived
}
