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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::api::{LvsService, NodeStatus, validate};
use crate::core::{Admission, Assignment, DirectorRole, VirtualService, claims, selfcheck};

use super::checks::HealthChecks;
use super::converge::{self, DataPlane, ProblemLog, Resynced};
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
    /// Interface for director VIPs, overriding `spec.directors.interface` (`--interface`).
    pub interface: Option<String>,
    /// How often the heartbeat Lease is renewed.
    pub heartbeat_period: Duration,
    /// The firewall marks the health checks may use, first and last.
    pub marks: (u32, u32),
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

/// Keeps a reflector store fed and wakes the resync loop on every change.
fn reflect<K>(api: Api<K>, config: watcher::Config, what: &str, notify: Arc<Notify>) -> Store<K>
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
        reflector::reflector(writer, crate::watch::resilient(api, config, what)).touched_objects();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while stream.next().await.is_some() {
            notify.notify_one();
        }
    });
    reader
}

/// One LvsService as this resync sees it: the object, its typed spec when it is valid, and
/// whether it may be programmed at all.
struct Object {
    object: Arc<LvsService>,
    service: Option<VirtualService>,
    /// Valid, not being deleted, not rejected by the controller, and not the loser of a port an
    /// older object claims (the controller's rule, applied here too, so that the loser never
    /// touches a node even before the controller has spoken).
    live: bool,
}

/// The agent of one node: what it watches, elects and reports, between resyncs.
struct Agent {
    client: Client,
    opts: Options,
    objects: Store<LvsService>,
    nodes: Store<Node>,
    elections: Elections,
    metrics: AgentMetrics,
    health: crate::http::Health,
    /// Field manager of this node's entries in `status.nodes`.
    manager: String,
    /// What this agent last wrote for each object, so that an unchanged entry is not rewritten.
    reported: HashMap<String, Option<NodeStatus>>,
    problems: ProblemLog,
    /// When the heartbeat Lease was last renewed, and whether the last renewal failed.
    heartbeat: Option<Instant>,
    heartbeat_failing: bool,
    /// The health checks of the real servers of the objects this node directs.
    checks: HealthChecks,
}

/// Runs until SIGTERM. Never returns an error for a passing API or kernel failure: it logs,
/// reports and retries at the next resync.
pub async fn run<D: DataPlane>(
    client: Client,
    dp: &mut D,
    store: &LedgerStore,
    opts: Options,
) -> anyhow::Result<()> {
    let notify = Arc::new(Notify::new());
    let mut agent = Agent::start(client, opts, notify.clone()).await?;
    let stop = crate::shutdown::requested();
    tokio::pin!(stop);
    // Wake at least as often as the heartbeat is due, so that a long resync period cannot make a
    // live agent look silent.
    let mut retry = converge::Retry::new(agent.opts.resync_period.min(agent.opts.heartbeat_period));
    let mut wait = Duration::ZERO;
    loop {
        if let Some(step) = agent.checks.next_ramp_step() {
            wait = wait.min(step);
        }
        tokio::select! {
            _ = notify.notified() => {}
            () = agent.checks.changed() => {}
            _ = tokio::time::sleep(wait) => {}
            () = &mut stop => {
                info!("the data plane and the VIP Leases stay as they are");
                return Ok(());
            }
        }
        // Coalesce a burst of watch events into one resync.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let ok = agent.resync(dp, store).await;
        wait = retry.after(ok);
        agent.heartbeat_if_due().await;
    }
}

impl Agent {
    /// Serves metrics and starts the watches.
    async fn start(client: Client, opts: Options, notify: Arc<Notify>) -> anyhow::Result<Self> {
        let mut checks = None;
        let metrics = AgentMetrics::new(|registry| checks = Some(HealthChecks::new(registry)));
        let checks = checks.expect("registered above");
        let health = crate::http::Health::default();
        crate::http::serve(opts.metrics_addr, metrics.clone(), health.clone()).await?;
        let objects = reflect(
            Api::<LvsService>::all(client.clone()),
            watcher::Config::default(),
            "LvsServices",
            notify.clone(),
        );
        let nodes = reflect(
            Api::<Node>::all(client.clone()),
            watcher::Config::default().fields(&format!("metadata.name={}", opts.node)),
            &format!("Node {}", opts.node),
            notify.clone(),
        );
        let elections = Elections {
            client: client.clone(),
            namespace: opts.lease_namespace.clone(),
            identity: opts.node.clone(),
            seconds: opts.lease_seconds,
            notify,
            held: HashMap::new(),
        };
        info!(node = %opts.node, "agent started");
        Ok(Self {
            client,
            manager: format!("lvs-operator-agent-{}", opts.node),
            opts,
            objects,
            nodes,
            elections,
            metrics,
            health,
            reported: HashMap::new(),
            problems: ProblemLog::default(),
            heartbeat: None,
            heartbeat_failing: false,
            checks,
        })
    }

    /// Renews this node's heartbeat Lease when it is due: after a resync, so that an agent whose
    /// resyncs hang stops beating and the controller sees it.
    async fn heartbeat_if_due(&mut self) {
        if self
            .heartbeat
            .is_some_and(|at| at.elapsed() < self.opts.heartbeat_period)
        {
            return;
        }
        let renewed = crate::heartbeat::renew(
            &self.client,
            &self.opts.lease_namespace,
            &self.opts.node,
            self.opts.heartbeat_period,
        )
        .await;
        match renewed {
            Ok(()) => {
                if self.heartbeat_failing {
                    info!("heartbeat Lease renewed again");
                }
                self.heartbeat = Some(Instant::now());
                self.heartbeat_failing = false;
            }
            Err(e) => {
                if !self.heartbeat_failing {
                    warn!(
                        "renewing the heartbeat Lease: {e}; the controller will count this node as not reporting"
                    );
                }
                self.heartbeat_failing = true;
                self.metrics.error("heartbeat");
            }
        }
    }

    /// One pass: what this node is, which VIPs it holds, converge, report. False when the resync
    /// itself failed (the kernel or the ledger), to retry sooner.
    async fn resync<D: DataPlane>(&mut self, dp: &mut D, store: &LedgerStore) -> bool {
        let node = self.node_info();
        let objects = self.objects_by_age();
        let roles: Vec<Roles> = objects.iter().map(|o| self.roles_of(o, &node)).collect();
        self.elect(&objects, &roles).await;
        let health: HashMap<String, _> = objects
            .iter()
            .zip(&roles)
            .filter(|(_, r)| r.director)
            .filter_map(|(o, _)| o.service.as_ref())
            .map(|s| (s.id.clone(), self.checks.admissions(&s.id)))
            .collect();
        let assignments = self.assignments(&objects, &roles, health);
        let settings = converge::Settings {
            sync_id: None,
            now: converge::now(),
            drain_timeout: self.opts.drain_timeout.as_secs(),
            dry_run: false,
            observe_after: true,
            marks: self.opts.marks,
        };
        let resynced = match converge::resync(dp, store, &assignments, settings).await {
            Ok(r) => r,
            Err(e) => {
                self.problems.update([format!("resync: {e:#}")]);
                self.metrics.error(converge::failure_category(&e));
                return false;
            }
        };
        self.metrics.record(&resynced);
        self.health.set_ready(true);
        self.checks.follow(&assignments, &resynced);
        let placement: Vec<String> = resynced
            .desired
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.object, e.message))
            .collect();
        converge::log_outcome(&resynced.converged, &placement, &mut self.problems);
        self.report(&objects, &roles, &resynced).await;
        true
    }

    fn node_info(&self) -> NodeInfo {
        self.nodes
            .get(&reflector::ObjectRef::new(&self.opts.node))
            .map(|n| NodeInfo::from_node(&n))
            .unwrap_or_else(|| NodeInfo {
                name: self.opts.node.clone(),
                ..Default::default()
            })
    }

    /// Every object, oldest first (the order in which objects claim ports), each validated once,
    /// with the conflict rule applied.
    fn objects_by_age(&self) -> Vec<Object> {
        let mut all = self.objects.state();
        by_age(&mut all);
        let mut objects: Vec<Object> = all
            .into_iter()
            .map(|object| {
                let service = validate(&object).ok();
                let live = service.is_some()
                    && object.metadata.deletion_timestamp.is_none()
                    && !rejected(&object);
                Object {
                    object,
                    service,
                    live,
                }
            })
            .collect();
        let claimants: Vec<(usize, &VirtualService)> = objects
            .iter()
            .enumerate()
            .filter(|(_, o)| o.live)
            .filter_map(|(i, o)| Some((i, o.service.as_ref()?)))
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

    fn roles_of(&self, o: &Object, node: &NodeInfo) -> Roles {
        match &o.service {
            Some(service) if o.live => roles(&o.object, service, node),
            _ => Roles::default(),
        }
    }

    /// Runs for the Lease of every VIP this node may direct, and lets go of the others.
    async fn elect(&mut self, objects: &[Object], roles: &[Roles]) {
        let vips: BTreeSet<IpAddr> = objects
            .iter()
            .zip(roles)
            .filter(|(_, r)| r.director)
            .filter_map(|(o, _)| o.service.as_ref().map(|s| s.vip))
            .collect();
        self.elections.ensure(&vips).await;
    }

    fn assignments<'a>(
        &self,
        objects: &'a [Object],
        roles: &[Roles],
        mut health: HashMap<String, BTreeMap<(IpAddr, u16), Admission>>,
    ) -> Vec<Assignment<'a>> {
        objects
            .iter()
            .zip(roles)
            .filter(|(_, r)| r.director || r.real_server)
            .filter_map(|(o, r)| {
                let service = o.service.as_ref()?;
                Some(Assignment {
                    service,
                    backends: backends_of(&o.object, service),
                    director: r.director.then(|| DirectorRole {
                        holds_vip: self.elections.holds(service.vip),
                        interface: self.opts.interface.clone(),
                    }),
                    real_server: r.real_server,
                    health: health.remove(&service.id).unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Writes this node's entry of every object whose entry changed, and removes the entries of
    /// objects it no longer has a part in (only once its state there is really gone: the
    /// controller's finalizer waits for that).
    async fn report(&mut self, objects: &[Object], roles: &[Roles], r: &Resynced) {
        for (o, role) in objects.iter().zip(roles) {
            let holds = o
                .service
                .as_ref()
                .is_some_and(|s| self.elections.holds(s.vip));
            let selfcheck = o
                .service
                .as_ref()
                .filter(|_| role.real_server)
                .and_then(|s| selfcheck::verify(s, &r.after, &r.after.listeners));
            let checks = match &o.service {
                Some(s) if role.director => self.checks.reports(&s.id),
                _ => Vec::new(),
            };
            let entry = node_status(
                &o.object,
                &self.opts.node,
                *role,
                holds,
                r,
                checks,
                selfcheck,
            );
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
    async fn patch_entry(&self, obj: &LvsService, entry: Option<NodeStatus>) -> kube::Result<()> {
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
