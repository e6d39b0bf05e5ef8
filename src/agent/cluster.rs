//! In-cluster mode: `lvs-operator agent --node-name NODE`.
//!
//! The objects come from the API server (a reflector on every LvsService and one on this node's
//! Node object) instead of files, and the results go back into each object's status: this agent
//! owns exactly one entry of `status.nodes`, the one keyed by its node, written with server-side
//! apply under the field manager `lvs-operator-agent-NODE` (see `crate::api`). The data plane is
//! the same code as standalone mode.
//!
//! Roles per object come from `roles` (a director by selector, a real server by address). Among
//! the directors of a VIP, the failover (`crate::ha`) decides which holds it: the directors find
//! each other through the heartbeat Leases (each director's carries the address its peers send
//! to), then exchange heartbeats over UDP every 100 ms, so a standby takes over within
//! `--peer-dead-after` (350 ms) of the active director falling silent, with or without the API
//! server. The VIP Lease (`vip_leases`) records the holder: written once per takeover, it lets go
//! of the VIP on a director that another took it from while it could not hear its peers. The
//! others keep IPVS programmed as hot standby and learn the active director's connections
//! through the kernel's sync daemons.
//!
//! The agent programs every valid object the controller has not rejected (Accepted=False at the
//! current generation) in age order, so two objects claiming one port resolve the same way here
//! as in the controller: the older keeps it. An object being deleted has its state removed, then
//! the agent removes its status entry, which is what the controller's finalizer waits for.
//!
//! Losing the API server changes nothing: the reflectors keep the last objects they saw, resyncs
//! go on repairing drift, the directors go on hearing each other, and the watches retry with
//! backoff. SIGTERM hands each VIP a ready standby can take over to it (the one exception to
//! "a restart keeps the data plane"); the rest stays as it is.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::api::{LvsService, NodeStatus, TakeoverStatus, validate};
use crate::core::{
    Admission, Assignment, DirectorRole, VirtualService, claims, interface_for, selfcheck,
};
use crate::ha::holders::{Holders, Watch, format_mac};
use crate::ha::{Ha, HaMetrics, Peers};

use super::checks::HealthChecks;
use super::converge::{self, DataPlane, ProblemLog, Resynced};
use super::ledger::LedgerStore;
use super::metrics::AgentMetrics;
use super::roles::{
    DirectorReport, NodeInfo, Roles, backends_of, by_age, node_status, rejected, roles,
};
use super::vip_leases;

/// Settings of the in-cluster agent.
#[derive(Debug, Clone)]
pub struct Options {
    pub node: String,
    /// Namespace of the per-VIP Leases (the agent's own).
    pub lease_namespace: String,
    pub resync_period: Duration,
    pub drain_timeout: Duration,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub metrics_addr: std::net::SocketAddr,
    /// Interface for director VIPs, overriding `spec.directors.interface` (`--interface`).
    pub interface: Option<String>,
    /// How often the heartbeat Lease is renewed.
    pub heartbeat_period: Duration,
    /// The firewall marks the health checks may use, first and last.
    pub marks: (u32, u32),
    pub failover: Failover,
}

/// How the directors of a VIP fail over to each other.
#[derive(Debug, Clone)]
pub struct Failover {
    /// Where this director receives its peers' heartbeats (its port is the one published).
    pub listen: std::net::SocketAddr,
    pub interval: Duration,
    pub dead_after: Duration,
    pub priority: u8,
    /// The `--syncid` of the connection-sync daemons.
    pub sync_id: u8,
}

/// A director takes a VIP Lease at most this often while another holder stays named: the API
/// writes of failover are one per takeover, and at most one per VIP per this period.
const LEASE_REWRITE: Duration = Duration::from_secs(10);

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

/// What `objects.json` holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct Remembered {
    node: NodeInfo,
    objects: Vec<LvsService>,
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
    /// The Leases of the agents' namespace: heartbeats (where the peer directors are) and VIP
    /// Leases (who the API server says holds each VIP).
    leases: Store<Lease>,
    ha: Ha,
    holders: Option<Holders>,
    /// When this node last wrote each held VIP's Lease.
    claimed: HashMap<IpAddr, Instant>,
    /// The address published for the peers in the heartbeat Lease.
    published_peer: Option<std::net::SocketAddr>,
    /// The peers' addresses as last learnt, kept in `peers_file` beside the ledger.
    known_peers: Vec<std::net::SocketAddr>,
    peers_file: std::path::PathBuf,
    /// The objects and this Node as last listed, kept beside the ledger (`objects.json`): an agent
    /// that restarts while the API server is away directs and fails over from them until it can
    /// list again, as a running agent goes on from its reflectors' last view.
    remembered: Option<Remembered>,
    remembered_file: std::path::PathBuf,
    /// Set once the LvsServices, the Node and the Leases have been listed: before that an empty
    /// store means "not known yet", not "nothing to do", and a resync would remove everything.
    synced: Arc<std::sync::atomic::AtomicBool>,
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
    if let Ok(ledger) = store.load() {
        let vips = ledger.addresses.iter().filter(|a| a.ifname != "lo");
        agent.ha.adopt(vips.map(|a| a.addr));
    }
    agent.remembered_file = store.path().with_file_name("objects.json");
    agent.remembered = std::fs::read(&agent.remembered_file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    // The peers the last run knew: a restart reaches them before the API server answers.
    agent.peers_file = store.path().with_file_name("peers.json");
    if let Some(known) = std::fs::read(&agent.peers_file)
        .ok()
        .and_then(|b| serde_json::from_slice::<Vec<std::net::SocketAddr>>(&b).ok())
    {
        agent.ha.peers().set_targets(known.clone());
        agent.known_peers = known;
    }
    let stop = crate::shutdown::requested();
    tokio::pin!(stop);
    // Wake at least as often as the heartbeat is due, so that a long resync period cannot make a
    // live agent look silent.
    let mut retry = converge::Retry::new(agent.opts.resync_period.min(agent.opts.heartbeat_period));
    let mut wait = Duration::ZERO;
    // Set once SIGTERM came and VIPs are being handed over: when to give up waiting.
    let mut handing_over: Option<Instant> = None;
    loop {
        if let Some(step) = agent.checks.next_ramp_step() {
            wait = wait.min(step);
        }
        if let Some(quiet) = agent.ha.next_wake() {
            wait = wait.min(quiet);
        }
        tokio::select! {
            _ = notify.notified() => {}
            () = agent.checks.changed() => {}
            () = agent.ha.changed() => {}
            _ = tokio::time::sleep(wait) => {}
            () = &mut stop, if handing_over.is_none() => {
                if agent.ha.leave() == 0 {
                    info!("the data plane stays as it is");
                    return Ok(());
                }
                handing_over = Some(Instant::now() + crate::ha::director::HANDOVER_TIMEOUT);
            }
        }
        // Coalesce a burst of watch events into one resync.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let ok = agent.resync(dp, store).await;
        wait = retry.after(ok);
        agent.heartbeat_if_due().await;
        if let Some(deadline) = handing_over {
            if agent.ha.handed_over() || Instant::now() >= deadline {
                info!(
                    "{}; the data plane stays as it is",
                    if agent.ha.handed_over() {
                        "handed over"
                    } else {
                        "no standby took over in time"
                    }
                );
                return Ok(());
            }
            wait = wait.min(Duration::from_millis(50));
        }
    }
}

impl Agent {
    /// Serves metrics and starts the watches.
    async fn start(client: Client, opts: Options, notify: Arc<Notify>) -> anyhow::Result<Self> {
        let mut checks = None;
        let mut ha_metrics = None;
        let metrics = AgentMetrics::new(|registry| {
            checks = Some(HealthChecks::new(registry));
            ha_metrics = Some(HaMetrics::new(registry));
        });
        let checks = checks.expect("registered above");
        let f = &opts.failover;
        let peers = Peers::start(
            crate::ha::Settings {
                node: opts.node.clone(),
                priority: f.priority,
                listen: f.listen,
                interval: f.interval,
                dead_after: f.dead_after,
            },
            Vec::new(),
        )
        .map_err(|e| anyhow::anyhow!("director heartbeats on {}: {e}", f.listen))?;
        let ha = Ha::new(peers, ha_metrics.expect("registered above"));
        // Every 2 s, 300 ms for the answers (a holder on the LAN answers within milliseconds).
        let holders = Holders::start(Duration::from_secs(2), Duration::from_millis(300))
            .map_err(|e| warn!("cannot probe for a second holder of the VIPs: {e:#}"))
            .ok();
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
        let leases = reflect(
            Api::<Lease>::namespaced(client.clone(), &opts.lease_namespace),
            watcher::Config::default(),
            "Leases",
            notify.clone(),
        );
        let synced = Arc::new(std::sync::atomic::AtomicBool::new(false));
        {
            let (objects, nodes, leases) = (objects.clone(), nodes.clone(), leases.clone());
            let synced = synced.clone();
            tokio::spawn(async move {
                let all = futures::future::try_join3(
                    objects.wait_until_ready(),
                    nodes.wait_until_ready(),
                    leases.wait_until_ready(),
                );
                if all.await.is_ok() {
                    synced.store(true, std::sync::atomic::Ordering::Release);
                    info!("LvsServices, Node and Leases listed: programming");
                    notify.notify_one();
                }
            });
        }
        info!(node = %opts.node, "agent started");
        Ok(Self {
            client,
            manager: format!("lvs-operator-agent-{}", opts.node),
            opts,
            objects,
            nodes,
            leases,
            ha,
            holders,
            claimed: HashMap::new(),
            published_peer: None,
            known_peers: Vec::new(),
            peers_file: std::path::PathBuf::new(),
            remembered: None,
            remembered_file: std::path::PathBuf::new(),
            synced,
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
            self.published_peer,
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
        let synced = self.synced.load(std::sync::atomic::Ordering::Acquire);
        if !synced && self.remembered.is_none() {
            // Started while the API server is away, with nothing remembered: the kernel stays as
            // the last run left it, except a VIP another director has taken since.
            let held = self.ha.held();
            let released: BTreeSet<IpAddr> =
                held.difference(&self.ha.decide(&held)).copied().collect();
            if !released.is_empty()
                && let Err(e) = converge::drop_vips(dp, store, &released).await
            {
                warn!("removing the VIPs another director holds: {e:#}");
            }
            self.problems.update([
                "waiting to list the LvsServices from the API server; the data plane stays as it is"
                    .to_string(),
            ]);
            return true;
        }
        if synced {
            self.remember();
        }
        let node = self.node_info();
        let objects = self.objects_by_age();
        let mut roles: Vec<Roles> = objects.iter().map(|o| self.roles_of(o, &node)).collect();
        if synced {
            self.follow_peers(&node, &objects, &roles);
        }
        let held = self.elect(&objects, &roles);
        // A VIP being handed over stays directed here until its standby claims it.
        for (o, r) in objects.iter().zip(&mut roles) {
            if o.service.as_ref().is_some_and(|s| held.contains(&s.vip)) {
                r.director = true;
            }
        }
        let health: HashMap<String, _> = objects
            .iter()
            .zip(&roles)
            .filter(|(_, r)| r.director)
            .filter_map(|(o, _)| o.service.as_ref())
            .map(|s| (s.id.clone(), self.checks.admissions(&s.id)))
            .collect();
        let assignments = self.assignments(&objects, &roles, health, &held);
        let settings = converge::Settings {
            // Directors sync their connections to each other.
            sync_id: roles
                .iter()
                .any(|r| r.director)
                .then_some(self.opts.failover.sync_id),
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
        let macs = self.after_election(&objects, &roles, &resynced);
        let foreign = self.second_holders(&objects, &roles, &resynced);
        let placement: Vec<String> = resynced
            .desired
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.object, e.message))
            .chain(foreign.values().flatten().map(|f| {
                format!("{f} also answers ARP for the VIP besides its active director: clients are split between two machines; remove the VIP there")
            }))
            .collect();
        converge::log_outcome(&resynced.converged, &placement, &mut self.problems);
        if synced {
            self.report(&objects, &roles, &resynced, &macs, &foreign)
                .await;
        }
        true
    }

    /// Where the other directors are (their heartbeat Leases) and who the API server says holds
    /// each VIP (the VIP Leases); and what this node publishes for them.
    fn follow_peers(&mut self, node: &NodeInfo, objects: &[Object], roles: &[Roles]) {
        let vips: Vec<IpAddr> = objects
            .iter()
            .filter_map(|o| o.service.as_ref().map(|s| s.vip))
            .collect();
        let leases = self.leases.state();
        // Agents alive by their heartbeat Lease (renewed within three periods).
        let fresh = self.opts.heartbeat_period * 3;
        let live: BTreeSet<String> = leases
            .iter()
            .filter_map(|l| crate::heartbeat::read(l))
            .filter(|(_, at)| {
                let age = k8s_openapi::jiff::Timestamp::now().duration_since(*at);
                age.unsigned_abs() < fresh
            })
            .map(|(node, _)| node)
            .collect();
        let mut targets = Vec::new();
        for lease in &leases {
            if let Some((peer, addr)) = crate::heartbeat::peer(lease)
                && peer != self.opts.node
            {
                targets.push(addr);
            }
            if let Some((vip, holder)) = vip_leases::holder(lease, &vips) {
                let alive = live.contains(&holder);
                self.ha.set_lease(vip, Some(holder), alive);
            }
        }
        targets.sort();
        targets.dedup();
        if targets != self.known_peers {
            let saved = serde_json::to_vec(&targets)
                .map_err(std::io::Error::other)
                .and_then(|bytes| std::fs::write(&self.peers_file, bytes));
            if let Err(e) = saved {
                debug!("saving the peers to {}: {e}", self.peers_file.display());
            }
            self.known_peers = targets.clone();
        }
        self.ha.peers().set_targets(targets);
        // A director publishes where its peers reach it: its node's address (IPv4 first).
        let directs = roles.iter().any(|r| r.director);
        let address = node
            .addresses
            .iter()
            .find(|a| a.is_ipv4())
            .or(node.addresses.first());
        let publish = address
            .filter(|_| directs)
            .map(|a| std::net::SocketAddr::new(*a, self.opts.failover.listen.port()));
        if publish != self.published_peer {
            self.published_peer = publish;
            self.heartbeat = None; // renew now, with the new address
        }
    }

    /// Which VIPs this node holds (the failover's choice), writing the VIP Lease of each it took.
    fn elect(&mut self, objects: &[Object], roles: &[Roles]) -> BTreeSet<IpAddr> {
        let vips: BTreeSet<IpAddr> = objects
            .iter()
            .zip(roles)
            .filter(|(_, r)| r.director)
            .filter_map(|(o, _)| o.service.as_ref().map(|s| s.vip))
            .collect();
        let held = self.ha.decide(&vips);
        self.claimed.retain(|vip, _| held.contains(vip));
        for vip in &held {
            // A VIP held only since before a restart is not claimed: the Lease may name the
            // director that took it over meanwhile (and then this one lets go).
            if !self.ha.took(*vip) {
                continue;
            }
            let named = self.ha.lease_holder(*vip) == Some(self.opts.node.as_str());
            let recent = self
                .claimed
                .get(vip)
                .is_some_and(|at| at.elapsed() < LEASE_REWRITE);
            if named || recent {
                continue;
            }
            self.claimed.insert(*vip, Instant::now());
            // In the background: an API server that hangs must not hold up the takeover or the
            // next resync.
            let (client, namespace, node) = (
                self.client.clone(),
                self.opts.lease_namespace.clone(),
                self.opts.node.clone(),
            );
            let (vip, metrics) = (*vip, self.metrics.clone());
            tokio::spawn(async move {
                match vip_leases::claim(&client, &namespace, vip, &node).await {
                    Ok(()) => info!("{vip}: VIP Lease names this node"),
                    Err(e) => {
                        warn!(
                            "{vip}: writing the VIP Lease: {e}; holding the VIP all the same, will retry"
                        );
                        metrics.error("vip_lease");
                    }
                }
            });
        }
        held
    }

    /// Tells the peers which VIPs this node is ready to take; the MAC of each director VIP's
    /// interface, for the status.
    fn after_election(
        &mut self,
        objects: &[Object],
        roles: &[Roles],
        r: &Resynced,
    ) -> BTreeMap<IpAddr, String> {
        let mut ready = BTreeSet::new();
        let mut macs = BTreeMap::new();
        for (o, role) in objects.iter().zip(roles) {
            let Some(s) = o.service.as_ref().filter(|_| role.director) else {
                continue;
            };
            if r.desired.parts.contains_key(&s.id) && r.converged.failed.is_empty() {
                ready.insert(s.vip);
            }
            if let Some(mac) = self
                .vip_interface(s, r)
                .as_deref()
                .and_then(crate::netdev::interface_mac)
            {
                macs.insert(s.vip, mac);
            }
        }
        let mac = macs.values().next().cloned();
        self.ha.after_resync(ready, mac);
        self.ha
            .record_sync(&r.after.daemons.keys().copied().collect());
        macs
    }

    fn vip_interface(&self, s: &VirtualService, r: &Resynced) -> Option<String> {
        self.opts
            .interface
            .clone()
            .or_else(|| s.interface.clone())
            .or_else(|| interface_for(s.vip, &r.after.addresses))
    }

    /// Hands the holder probes the VIPs this node directs; the foreign holders of each, named
    /// `MAC` or `MAC (node)`.
    fn second_holders(
        &self,
        objects: &[Object],
        roles: &[Roles],
        r: &Resynced,
    ) -> BTreeMap<IpAddr, Vec<String>> {
        let Some(holders) = &self.holders else {
            return BTreeMap::new();
        };
        let mut watches: Vec<Watch> = Vec::new();
        for (o, role) in objects.iter().zip(roles) {
            let Some(s) = o.service.as_ref().filter(|_| role.director) else {
                continue;
            };
            if watches.iter().any(|w| w.vip == s.vip) {
                continue;
            }
            if let Some(ifname) = self.vip_interface(s, r) {
                watches.push(Watch {
                    vip: s.vip,
                    ifname,
                    active_mac: (!self.ha.holds(s.vip))
                        .then(|| self.ha.active_peer_mac(s.vip))
                        .flatten(),
                });
            }
        }
        let vips = watches.iter().map(|w| w.vip).collect();
        holders.watch(watches);
        let found = holders.foreign();
        let counts = found.iter().map(|(v, m)| (*v, m.len())).collect();
        self.ha.record_foreign(&vips, &counts);
        let names = self.ha.peer_macs();
        found
            .into_iter()
            .map(|(vip, macs)| {
                let named = macs
                    .into_iter()
                    .map(|m| {
                        let mac = format_mac(m);
                        match names.get(&mac) {
                            Some(node) => format!("{mac} ({node})"),
                            None => mac,
                        }
                    })
                    .collect();
                (vip, named)
            })
            .collect()
    }

    fn synced(&self) -> bool {
        self.synced.load(std::sync::atomic::Ordering::Acquire)
    }

    fn node_info(&self) -> NodeInfo {
        if !self.synced()
            && let Some(r) = &self.remembered
        {
            return r.node.clone();
        }
        self.nodes
            .get(&reflector::ObjectRef::new(&self.opts.node))
            .map(|n| NodeInfo::from_node(&n))
            .unwrap_or_else(|| NodeInfo {
                name: self.opts.node.clone(),
                ..Default::default()
            })
    }

    /// Keeps the listed objects and Node beside the ledger when they changed.
    fn remember(&mut self) {
        let now = Remembered {
            node: self.node_info(),
            objects: self.objects.state().iter().map(|o| (**o).clone()).collect(),
        };
        let same = self.remembered.as_ref().is_some_and(|r| {
            r.node == now.node
                && r.objects.len() == now.objects.len()
                && r.objects.iter().zip(&now.objects).all(|(a, b)| {
                    a.metadata.uid == b.metadata.uid
                        && a.metadata.resource_version == b.metadata.resource_version
                })
        });
        if same {
            return;
        }
        let saved = serde_json::to_vec(&now)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                let tmp = self.remembered_file.with_extension("json.tmp");
                std::fs::write(&tmp, bytes)?;
                std::fs::rename(&tmp, &self.remembered_file)
            });
        if let Err(e) = saved {
            debug!("saving {}: {e}", self.remembered_file.display());
        }
        self.remembered = Some(now);
    }

    /// Every object, oldest first (the order in which objects claim ports), each validated once,
    /// with the conflict rule applied.
    fn objects_by_age(&self) -> Vec<Object> {
        let mut all = match &self.remembered {
            Some(r) if !self.synced() => r.objects.iter().cloned().map(Arc::new).collect(),
            _ => self.objects.state(),
        };
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

    fn assignments<'a>(
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
                let service = o.service.as_ref()?;
                Some(Assignment {
                    service,
                    backends: backends_of(&o.object, service),
                    director: r.director.then(|| DirectorRole {
                        holds_vip: held.contains(&service.vip),
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
    async fn report(
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
