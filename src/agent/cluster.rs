//! In-cluster mode: `lvs-operator agent --node-name NODE`.
//!
//! The objects come from the API server (a reflector on every LvsService and one on this node's
//! Node object) instead of files, and the results go back into each object's status: this agent
//! owns exactly one entry of `status.nodes`, the one keyed by its node, written with server-side
//! apply under the field manager `lvs-operator-agent-NODE` (see `crate::api`). The data plane is
//! the same code as standalone mode.
//!
//! Roles per object come from `roles` (a director by selector, a real server by address). Among
//! eligible directors, one Lease per VIP (`lvs-vip-...` in the agent's namespace) decides which
//! node holds the VIP; the others keep IPVS programmed as hot standby.
//!
//! The agent programs every valid object the controller has not rejected (Accepted=False at the
//! current generation) in age order, so two objects claiming one port resolve the same way here
//! as in the controller: the older keeps it. An object being deleted has its state removed, then
//! the agent removes its status entry, which is what the controller's finalizer waits for.
//!
//! Losing the API server changes nothing: the reflectors keep the last objects they saw, resyncs
//! go on repairing drift, and the watches retry with backoff. SIGTERM exits without touching the
//! kernel and without releasing the VIP Leases, so no other director takes a VIP this node still
//! holds; a restarted agent with the same identity finds itself still the holder.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::{Notify, watch};
use tracing::{debug, error, info, warn};

use crate::api::{LvsService, NodeStatus, validate};
use crate::core::{Assignment, DirectorRole};

use super::converge::{self, DataPlane};
use super::ledger::LedgerStore;
use super::metrics::AgentMetrics;
use super::roles::{
    NodeInfo, Roles, backends_of, by_age, lease_name, node_status, rejected, roles,
};

/// Settings of the in-cluster agent.
#[derive(Debug, Clone)]
pub struct Options {
    pub node: String,
    /// Namespace of the per-VIP Leases (the agent's own).
    pub lease_namespace: String,
    pub resync_period: Duration,
    pub drain_timeout: Duration,
    /// Seconds a director holds a VIP Lease without renewing it.
    pub lease_seconds: u64,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub metrics_addr: std::net::SocketAddr,
}

/// One Lease per VIP this node may direct. Dropping a VIP's receiver releases its Lease.
struct Elections {
    client: Client,
    namespace: String,
    identity: String,
    seconds: u64,
    notify: Arc<Notify>,
    held: HashMap<IpAddr, (watch::Receiver<bool>, tokio::task::JoinHandle<()>)>,
}

impl Elections {
    async fn ensure(&mut self, vips: &BTreeSet<IpAddr>) {
        self.held.retain(|vip, (_, forward)| {
            let keep = vips.contains(vip);
            if !keep {
                forward.abort();
            }
            keep
        });
        for vip in vips {
            if self.held.contains_key(vip) {
                continue;
            }
            let built =
                kube_lease_manager::LeaseManagerBuilder::new(self.client.clone(), lease_name(*vip))
                    .with_namespace(self.namespace.clone())
                    .with_identity(self.identity.clone())
                    .with_duration(self.seconds)
                    .with_grace(self.seconds.div_ceil(3).max(1))
                    .build()
                    .await;
            match built {
                Ok(manager) => {
                    let (rx, _task) = manager.watch().await;
                    let mut changes = rx.clone();
                    let notify = self.notify.clone();
                    let forward = tokio::spawn(async move {
                        while changes.changed().await.is_ok() {
                            notify.notify_one();
                        }
                    });
                    self.held.insert(*vip, (rx, forward));
                }
                Err(e) => warn!("Lease {} for {vip}: {e}; will retry", lease_name(*vip)),
            }
        }
    }

    fn holds(&self, vip: IpAddr) -> bool {
        self.held.get(&vip).is_some_and(|(rx, _)| *rx.borrow())
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Keeps a reflector store fed and wakes the resync loop on every change.
fn reflect<K>(api: Api<K>, config: watcher::Config, notify: Arc<Notify>) -> Store<K>
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
    let stream =
        reflector::reflector(writer, watcher(api, config).default_backoff()).touched_objects();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                warn!("watch: {e}; retrying with backoff, the data plane stays as it is");
            }
            notify.notify_one();
        }
    });
    reader
}

/// Runs until SIGTERM. Never returns an error for a passing API or kernel failure: it logs,
/// reports and retries at the next resync.
pub async fn run<D: DataPlane>(
    client: Client,
    dp: &mut D,
    store: &LedgerStore,
    opts: Options,
) -> anyhow::Result<()> {
    let metrics = AgentMetrics::default();
    let health = crate::http::Health::default();
    crate::http::serve(opts.metrics_addr, metrics.clone(), health.clone()).await?;
    let notify = Arc::new(Notify::new());
    let objects = reflect(
        Api::<LvsService>::all(client.clone()),
        watcher::Config::default(),
        notify.clone(),
    );
    let nodes = reflect(
        Api::<Node>::all(client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={}", opts.node)),
        notify.clone(),
    );
    let mut elections = Elections {
        client: client.clone(),
        namespace: opts.lease_namespace.clone(),
        identity: opts.node.clone(),
        seconds: opts.lease_seconds,
        notify: notify.clone(),
        held: HashMap::new(),
    };
    let manager = format!("lvs-operator-agent-{}", opts.node);
    let mut reported: HashMap<String, Option<NodeStatus>> = HashMap::new();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    info!(node = %opts.node, "agent started");
    loop {
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(opts.resync_period) => {}
            _ = term.recv() => {
                info!("SIGTERM: exiting; the data plane and the VIP Leases stay as they are");
                std::process::exit(0);
            }
        }
        // Coalesce a burst of watch events into one resync.
        tokio::time::sleep(Duration::from_millis(5)).await;

        let node = nodes
            .get(&reflector::ObjectRef::new(&opts.node))
            .map(|n| NodeInfo::from_node(&n))
            .unwrap_or_else(|| NodeInfo {
                name: opts.node.clone(),
                ..Default::default()
            });
        let mut all = objects.state();
        by_age(&mut all);
        let live: Vec<&Arc<LvsService>> = all
            .iter()
            .filter(|o| {
                o.metadata.deletion_timestamp.is_none() && !rejected(o) && validate(o).is_ok()
            })
            .collect();
        let role_of: Vec<Roles> = live.iter().map(|o| roles(o, &node)).collect();
        let vips: BTreeSet<IpAddr> = live
            .iter()
            .zip(&role_of)
            .filter(|(_, r)| r.director)
            .filter_map(|(o, _)| o.spec.vip.parse().ok())
            .collect();
        elections.ensure(&vips).await;
        let assignments: Vec<Assignment<'_>> = live
            .iter()
            .zip(&role_of)
            .filter(|(_, r)| r.director || r.real_server)
            .map(|(o, r)| {
                let holds_vip = o.spec.vip.parse().is_ok_and(|v| elections.holds(v));
                Assignment {
                    object: o,
                    backends: backends_of(o),
                    director: r.director.then_some(DirectorRole {
                        holds_vip,
                        interface: None,
                    }),
                    real_server: r.real_server,
                }
            })
            .collect();
        let settings = converge::Settings {
            now: now(),
            drain_timeout: opts.drain_timeout.as_secs(),
            dry_run: false,
            observe_after: true,
        };
        let r = match converge::resync(dp, store, &assignments, settings).await {
            Ok(r) => r,
            Err(e) => {
                error!("resync: {e:#}");
                metrics.error("resync");
                continue;
            }
        };
        metrics.record(&r);
        health.set_ready(true);
        for op in &r.converged.plan.ops {
            if !r.converged.failed.iter().any(|(f, _)| f == op) {
                info!("applied: {op}");
            }
        }
        for (op, e) in &r.converged.failed {
            error!("failed: {op}: {e}");
        }
        for o in &all {
            let roles = if o.metadata.deletion_timestamp.is_none() && !rejected(o) {
                roles(o, &node)
            } else {
                Roles::default()
            };
            let holds = o.spec.vip.parse().is_ok_and(|v| elections.holds(v));
            let entry = node_status(o, &opts.node, roles, holds, &r);
            let id = validate::object_ref(o);
            let present = o
                .status
                .iter()
                .flat_map(|s| &s.nodes)
                .any(|n| n.node == opts.node);
            if reported.get(&id) == Some(&entry) && (entry.is_some() == present) {
                continue;
            }
            if entry.is_none() && !present {
                reported.insert(id, None);
                continue;
            }
            if entry.is_none() && !r.converged.failed.is_empty() {
                // The finalizer waits for our entry to go: only once our state is really gone.
                continue;
            }
            match report(&client, o, &manager, entry.clone()).await {
                Ok(()) => {
                    debug!(object = %id, "reported {entry:?}");
                    reported.insert(id, entry);
                }
                Err(e) => {
                    warn!(object = %id, "reporting status: {e}");
                    metrics.error("report");
                }
            }
        }
    }
}

/// Applies this node's entry of `status.nodes` (or removes it, with `None`).
async fn report(
    client: &Client,
    obj: &LvsService,
    manager: &str,
    entry: Option<NodeStatus>,
) -> kube::Result<()> {
    let api: Api<LvsService> =
        Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
    let nodes: Vec<NodeStatus> = entry.into_iter().collect();
    let patch = serde_json::json!({
        "apiVersion": "lvs-operator.io/v1alpha1",
        "kind": "LvsService",
        "metadata": {"name": obj.name_any()},
        "status": {"nodes": nodes},
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(manager).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}
