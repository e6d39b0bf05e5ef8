//! What the in-cluster agent reports: its node's entry of each object's `status.nodes`, written
//! with server-side apply under its own field manager, only when it changed.

use std::collections::BTreeMap;
use std::net::IpAddr;

use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use tracing::{debug, warn};

use super::{Agent, Object};
use crate::agent::converge::Resynced;
use crate::agent::roles::{DirectorReport, Roles, node_status};
use crate::api::{LvsService, NodeStatus, TakeoverStatus};
use crate::core::selfcheck;

impl Agent {
    /// Writes this node's entry of every object whose entry changed, and removes the entries of
    /// objects it no longer has a part in (only once its state there is really gone: the
    /// controller's finalizer waits for that).
    pub(super) async fn report(
        &mut self,
        objects: &[Object],
        roles: &[Roles],
        r: &Resynced,
        macs: &BTreeMap<IpAddr, String>,
        foreign: &BTreeMap<IpAddr, Vec<String>>,
    ) {
        for (o, role) in objects.iter().zip(roles) {
            let vip = o.service.as_ref().map(|s| s.vip);
            let holds = vip.is_some_and(|v| self.ha.holds(v));
            let selfcheck = o
                .service
                .as_ref()
                .filter(|_| role.real_server)
                .and_then(|s| selfcheck::verify(s, &r.after, &r.after.listeners));
            let checks = match &o.service {
                Some(s) if role.director => self.checks.reports(&s.id),
                _ => Vec::new(),
            };
            let director = DirectorReport {
                holds_vip: holds,
                checks,
                mac: vip.and_then(|v| macs.get(&v).cloned()),
                takeover: vip
                    .and_then(|v| self.ha.takeover(v))
                    .map(|t| TakeoverStatus {
                        from: t.from.clone(),
                        silent_ms: t
                            .silent_for
                            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
                        at: humantime::format_rfc3339_seconds(t.at).to_string(),
                    }),
                foreign_holders: vip
                    .and_then(|v| foreign.get(&v).cloned())
                    .unwrap_or_default(),
                unreachable_peers: vip
                    .map(|v| {
                        let peers = self.ha.peer_reports(v);
                        peers
                            .into_iter()
                            .filter(|p| !p.alive)
                            .map(|p| p.node)
                            .collect()
                    })
                    .unwrap_or_default(),
            };
            let entry = node_status(&o.object, &self.opts.node, *role, r, director, selfcheck);
            let id = crate::api::validate::object_ref(&o.object);
            let present = o
                .object
                .status
                .iter()
                .flat_map(|s| &s.nodes)
                .any(|n| n.node == self.opts.node);
            if self.reported.get(&id) == Some(&entry) && (entry.is_some() == present) {
                continue;
            }
            if entry.is_none() && !present {
                self.reported.insert(id, None);
                continue;
            }
            if entry.is_none() && !r.converged.failed.is_empty() {
                continue;
            }
            match self.patch_entry(&o.object, entry.clone()).await {
                Ok(()) => {
                    debug!(object = %id, "reported {entry:?}");
                    self.reported.insert(id, entry);
                }
                Err(e) => {
                    warn!(object = %id, "reporting status: {e}");
                    self.metrics.error("report");
                }
            }
        }
    }

    /// Applies this node's entry of `status.nodes` (or removes it, with `None`).
    pub(super) async fn patch_entry(
        &self,
        obj: &LvsService,
        entry: Option<NodeStatus>,
    ) -> kube::Result<()> {
        let api: Api<LvsService> =
            Api::namespaced(self.client.clone(), &obj.namespace().unwrap_or_default());
        let nodes: Vec<NodeStatus> = entry.into_iter().collect();
        let patch = serde_json::json!({
            "apiVersion": "lvs-operator.io/v1alpha1",
            "kind": "LvsService",
            "metadata": {"name": obj.name_any()},
            "status": {"nodes": nodes},
        });
        api.patch_status(
            &obj.name_any(),
            &PatchParams::apply(&self.manager).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        Ok(())
    }
}
