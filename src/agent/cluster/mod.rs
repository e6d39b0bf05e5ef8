//! In-cluster mode: `lvs-operator agent --node-name NODE`.
//!
//! The objects come from the API server (a reflector on every LvsService, the address pools, and
//! this node's Node object) instead of files, and the results go into one object: this node's
//! `LvsNodeReport` (`crate::api::report`), which the controller aggregates into each LvsService's
//! status. The data plane is the same code as standalone mode.
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
//! current generation) and an address pool admits, in age order, so two objects claiming one port
//! resolve the same way here as in the controller: the older keeps it. An object being deleted has
//! its state removed, then the agent removes its entry from the report, which is what the
//! controller's finalizer waits for.
//!
//! Losing the API server changes nothing: the reflectors keep the last objects they saw, resyncs
//! go on repairing drift, the directors go on hearing each other, and the watches retry with
//! backoff. SIGTERM hands each VIP a ready standby can take over to it (the one exception to
//! "a restart keeps the data plane"); the rest stays as it is.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::api::{LvsAddressPool, LvsService};
use crate::ha::announcer::Announcer;
use crate::ha::holders::Holders;
use crate::ha::{Ha, HaMetrics, Peers};

use super::checks::HealthChecks;
use super::converge::{self, DataPlane, ProblemLog};
use super::ledger::LedgerStore;
use super::metrics::AgentMetrics;
use super::roles::{Derived, NodeInfo, Roles};

mod failover;
mod objects;
mod report;
mod watches;

use objects::Object;
use watches::{Directed, every_change, lease_identity, reflect, service_identity};

/// Settings of the in-cluster agent.
#[derive(Debug, Clone)]
pub struct Options {
    pub node: String,
    /// Namespace of the per-VIP Leases (the agent's own).
    pub lease_namespace: String,
    pub resync_period: Duration,
    pub drain_timeout: Duration,
    /// Where `/metrics`, `/healthz` and `/readyz` are served, and how.
    pub metrics_addr: std::net::SocketAddr,
    pub metrics_security: crate::http::secure::MetricsSecurity,
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
    /// How often the held VIPs are announced again; zero never.
    pub garp_refresh: Duration,
}

/// What `objects.json` holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct Remembered {
    node: NodeInfo,
    /// The objects as the store holds them (a copy every few seconds would cost more than the
    /// resyncs it serves).
    objects: Vec<Arc<LvsService>>,
    /// The address pools and the namespaces' labels; absent in a file from before pools existed,
    /// where every object counts as admitted (as that run programmed it).
    #[serde(default)]
    pools: Option<Vec<Arc<LvsAddressPool>>>,
    #[serde(default)]
    namespaces: Option<BTreeMap<String, BTreeMap<String, String>>>,
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
    /// The address pools, and the namespaces' labels they admit by.
    pools: Store<LvsAddressPool>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    ha: Ha,
    holders: Option<Holders>,
    announcer: Option<Announcer>,
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
    remembered_at: Option<Instant>,
    /// The objects changed since `objects.json` was last written, which waits for
    /// [`REMEMBER_EVERY`]: the loop wakes then to write it.
    remember_pending: bool,
    /// When this agent started: a memory is acted on only once the API server has had
    /// [`LIST_GRACE`] to answer.
    started: Instant,
    /// Set once the LvsServices, the Node and the Leases have been listed: before that an empty
    /// store means "not known yet", not "nothing to do", and a resync would remove everything.
    synced: Arc<std::sync::atomic::AtomicBool>,
    metrics: AgentMetrics,
    health: crate::http::Health,
    /// Writes this node's LvsNodeReport, in its own task.
    reporter: report::Reporter,
    problems: ProblemLog,
    /// The heartbeat Lease's renewals, each in its own task.
    heartbeat: Heartbeat,
    /// The health checks of the real servers of the objects this node directs.
    checks: HealthChecks,
    /// What was derived from each object (by uid) at its resourceVersion.
    derived: HashMap<String, (String, Arc<Derived>)>,
    /// The objects this node may direct, for the watch to tell which changes matter here.
    directed: Directed,
    /// A VIP lingers on `lo` while its clients finish: look again soon.
    lingering: bool,
}

/// The heartbeat Lease's last renewal and the one in flight.
#[derive(Default)]
struct Heartbeat {
    last: Arc<std::sync::Mutex<Renewal>>,
    inflight: Option<tokio::task::JoinHandle<()>>,
}

#[derive(Default)]
struct Renewal {
    /// When it last succeeded, and with which peer address.
    renewed: Option<Instant>,
    peer: Option<std::net::SocketAddr>,
    failing: bool,
}

/// How often at most the objects are copied beside the ledger (`objects.json`).
const REMEMBER_EVERY: Duration = Duration::from_secs(10);

/// How long a restarted agent waits for the API server's lists before it acts on what it
/// remembers: the lists are the truth, and a memory up to [`REMEMBER_EVERY`] old (an object
/// applied just before a `kill -9`) would remove what the object needs. Short, because while the
/// API server is away the memory is what lets a restarted director take a VIP over.
const LIST_GRACE: Duration = Duration::from_secs(2);

/// Watch events this close behind the end of the last resync they woke are a burst: the resync
/// waits twice as long for more each time, up to [`STORM_WAIT`].
const STORM_GAP: Duration = Duration::from_secs(1);
/// The longest a resync waits for more changes in a burst.
const STORM_WAIT: Duration = Duration::from_secs(1);

/// How long a stopping agent waits for its last status report to be written.
const LAST_REPORT: Duration = Duration::from_secs(2);

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
    // How long the last resync took.
    let mut took = Duration::ZERO;
    // The last resync a watch woke, and how long it waited for more changes.
    let mut last_watched: Option<Instant> = None;
    let mut storm = Duration::ZERO;
    loop {
        if let Some(step) = agent.checks.next_ramp_step() {
            wait = wait.min(step);
        }
        if let Some(quiet) = agent.ha.next_wake() {
            wait = wait.min(quiet);
        }
        if let Some(due) = agent.memory_due() {
            wait = wait.min(due);
        }
        let mut watched = false;
        tokio::select! {
            _ = notify.notified() => watched = true,
            () = agent.checks.changed() => {}
            () = agent.ha.changed() => {}
            _ = tokio::time::sleep(wait) => {}
            () = &mut stop, if handing_over.is_none() => {
                agent.remember_now();
                if agent.ha.leave() == 0 {
                    info!("the data plane stays as it is");
                    agent.reporter.flush(LAST_REPORT).await;
                    return Ok(());
                }
                handing_over = Some(Instant::now() + crate::ha::director::HANDOVER_LIMIT);
            }
        }
        // Coalesce a burst of watch events into one resync. The first change after a quiet
        // spell waits as long as the last resync took (5 ms at least, 250 ms at most); while
        // changes keep coming, each wait doubles, up to a second: a thousand objects changing
        // one by one cost each node tens of resyncs, not a thousand. A peer or a check changing
        // waits 5 ms.
        let coalesce = if watched {
            let storming = last_watched.is_some_and(|at: Instant| at.elapsed() < STORM_GAP);
            storm = if storming {
                (storm * 2).min(STORM_WAIT)
            } else {
                took.clamp(Duration::from_millis(5), Duration::from_millis(250))
            };
            storm
        } else {
            Duration::from_millis(5)
        };
        tokio::time::sleep(coalesce).await;
        let started = Instant::now();
        let ok = agent.resync(dp, store).await;
        took = started.elapsed();
        if watched {
            last_watched = Some(Instant::now());
        }
        wait = retry.after(ok);
        if agent.lingering {
            wait = wait.min(converge::LINGER_POLL);
        }
        agent.heartbeat_if_due();
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
                agent.reporter.flush(LAST_REPORT).await;
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
        let announcer = Announcer::every(f.garp_refresh);
        let health = crate::http::Health::default();
        let secure = opts.metrics_security.secure(&client, &opts.node)?;
        crate::http::serve(opts.metrics_addr, metrics.clone(), health.clone(), secure).await?;
        let directed = Directed::default();
        let objects = reflect(
            Api::<LvsService>::all(client.clone()),
            watcher::Config::default(),
            "LvsServices",
            notify.clone(),
            service_identity(directed.clone()),
        );
        let nodes = reflect(
            Api::<Node>::all(client.clone()),
            watcher::Config::default().fields(&format!("metadata.name={}", opts.node)),
            &format!("Node {}", opts.node),
            notify.clone(),
            every_change,
        );
        let leases = reflect(
            Api::<Lease>::namespaced(client.clone(), &opts.lease_namespace),
            watcher::Config::default(),
            "Leases",
            notify.clone(),
            lease_identity,
        );
        let pools = reflect(
            Api::<LvsAddressPool>::all(client.clone()),
            watcher::Config::default(),
            "LvsAddressPools",
            notify.clone(),
            every_change,
        );
        let namespaces = reflect(
            Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
            watcher::Config::default(),
            "Namespaces",
            notify.clone(),
            every_change,
        );
        let synced = Arc::new(std::sync::atomic::AtomicBool::new(false));
        {
            let (objects, nodes, leases) = (objects.clone(), nodes.clone(), leases.clone());
            let (pools, namespaces) = (pools.clone(), namespaces.clone());
            let synced = synced.clone();
            tokio::spawn(async move {
                let all = futures::future::try_join5(
                    objects.wait_until_ready(),
                    nodes.wait_until_ready(),
                    leases.wait_until_ready(),
                    pools.wait_until_ready(),
                    namespaces.wait_until_ready(),
                );
                if all.await.is_ok() {
                    synced.store(true, std::sync::atomic::Ordering::Release);
                    info!("LvsServices, Node, Leases, pools and namespaces listed: programming");
                    notify.notify_one();
                }
            });
        }
        info!(node = %opts.node, "agent started");
        Ok(Self {
            reporter: report::Reporter::start(
                client.clone(),
                opts.node.clone(),
                "lvs-operator-agent".to_string(),
                metrics.clone(),
            ),
            client,
            opts,
            objects,
            nodes,
            leases,
            pools,
            namespaces,
            ha,
            holders,
            announcer,
            claimed: HashMap::new(),
            published_peer: None,
            known_peers: Vec::new(),
            peers_file: std::path::PathBuf::new(),
            remembered: None,
            remembered_file: std::path::PathBuf::new(),
            remembered_at: None,
            remember_pending: false,
            started: Instant::now(),
            synced,
            metrics,
            health,
            problems: ProblemLog::default(),
            heartbeat: Heartbeat::default(),
            checks,
            derived: HashMap::new(),
            directed,
            lingering: false,
        })
    }

    /// Renews this node's heartbeat Lease when it is due: after a resync, so that an agent whose
    /// resyncs hang stops beating and the controller sees it. The write runs in its own task (one
    /// at a time): a slow API server delays the heartbeat, never the next resync.
    fn heartbeat_if_due(&mut self) {
        let hb = &mut self.heartbeat;
        if hb.inflight.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        {
            let last = hb.last.lock().expect("heartbeat lock");
            let fresh = last
                .renewed
                .is_some_and(|at| at.elapsed() < self.opts.heartbeat_period);
            if fresh && last.peer == self.published_peer {
                return;
            }
        }
        let (client, last, metrics) = (self.client.clone(), hb.last.clone(), self.metrics.clone());
        let (namespace, node) = (self.opts.lease_namespace.clone(), self.opts.node.clone());
        let (period, peer) = (self.opts.heartbeat_period, self.published_peer);
        hb.inflight = Some(tokio::spawn(async move {
            let renewed = crate::heartbeat::renew(&client, &namespace, &node, period, peer).await;
            let mut last = last.lock().expect("heartbeat lock");
            match renewed {
                Ok(()) => {
                    if last.failing {
                        info!("heartbeat Lease renewed again");
                    }
                    last.renewed = Some(Instant::now());
                    last.peer = peer;
                    last.failing = false;
                }
                Err(e) => {
                    if !last.failing {
                        warn!(
                            "renewing the heartbeat Lease: {e}; the controller will count this node as not reporting"
                        );
                    }
                    last.failing = true;
                    metrics.error("heartbeat");
                }
            }
        }));
    }

    /// One pass: what this node is, which VIPs it holds, converge, report. False when the resync
    /// itself failed (the kernel or the ledger), to retry sooner.
    async fn resync<D: DataPlane>(&mut self, dp: &mut D, store: &LedgerStore) -> bool {
        let synced = self.synced.load(std::sync::atomic::Ordering::Acquire);
        if !synced && (self.remembered.is_none() || self.started.elapsed() < LIST_GRACE) {
            // Started while the API server is away (or before it answered), with nothing
            // remembered or before the grace is over: the kernel stays as the last run left it,
            // except a VIP another director has taken since.
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
        let objects = self.objects_by_age(&node);
        let mut roles: Vec<Roles> = objects.iter().map(|o| self.roles_of(o, &node)).collect();
        self.note_directed(&objects, &roles);
        if synced {
            self.follow_peers(&node, &objects, &roles);
        }
        let held = self.elect(&objects, &roles);
        // A VIP being handed over stays directed here until its standby claims it.
        for (o, r) in objects.iter().zip(&mut roles) {
            if o.service().is_some_and(|s| held.contains(&s.vip)) {
                r.director = true;
            }
        }
        let health: HashMap<String, _> = objects
            .iter()
            .zip(&roles)
            .filter(|(_, r)| r.director)
            .filter_map(|(o, _)| o.service())
            .map(|s| (s.id.clone(), self.checks.admissions(&s.id)))
            .collect();
        let assignments = self.assignments(&objects, &roles, health, &held);
        let settings = converge::Settings {
            // Directors sync their connections to each other.
            sync_id: roles
                .iter()
                .any(|r| r.director)
                .then_some(self.opts.failover.sync_id),
            keep_sync_daemons: self.ha.keeps_sync_daemons(),
            sync_backup: self.ha.peers().any(),
            now: converge::now(),
            drain_timeout: self.opts.drain_timeout.as_secs(),
            dry_run: false,
            observe_after: true,
            marks: self.opts.marks,
            directed: Some(
                objects
                    .iter()
                    .filter(|o| o.live)
                    .filter_map(|o| o.service())
                    .map(|s| s.vip)
                    .collect(),
            ),
            unannounced: self.ha.unannounced(),
            announce: self.ha.take_announcements(),
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
        self.lingering = !resynced.lingering.is_empty();
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
            self.report(&objects, &roles, &resynced, &macs, &foreign);
        }
        true
    }

    /// Tells the LvsService watch which objects this node may direct now.
    fn note_directed(&self, objects: &[Object], roles: &[Roles]) {
        let now: HashSet<String> = (objects.iter().zip(roles))
            .filter(|(_, r)| r.director)
            .filter_map(|(o, _)| o.object.metadata.uid.clone())
            .collect();
        let same = *self.directed.read().expect("never poisoned") == now;
        if !same {
            *self.directed.write().expect("never poisoned") = now;
        }
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

    /// Keeps the listed objects and Node beside the ledger when they changed, at most every
    /// [`REMEMBER_EVERY`]: with a thousand objects changing, a copy at every resync would cost more
    /// than the resync, and a restart without the API server can do with one a few seconds old.
    /// A change inside that time is written when it is over ([`Self::memory_due`] wakes the loop).
    fn remember(&mut self) {
        if self
            .remembered_at
            .is_some_and(|at| at.elapsed() < REMEMBER_EVERY)
        {
            self.remember_pending = true;
            return;
        }
        self.remember_now();
    }

    /// When the loop has to wake: to write a pending `objects.json`, or to act on the memory at
    /// the end of [`LIST_GRACE`] if the API server has not answered by then.
    fn memory_due(&self) -> Option<Duration> {
        let write = (self.remember_pending && self.synced())
            .then(|| {
                let at = self.remembered_at?;
                Some(REMEMBER_EVERY.saturating_sub(at.elapsed()))
            })
            .flatten();
        // Only while the grace lasts: after it, a resync from the memory is an ordinary one.
        let grace = (!self.synced() && self.remembered.is_some())
            .then(|| LIST_GRACE.checked_sub(self.started.elapsed()))
            .flatten()
            .map(|left| left + Duration::from_millis(5));
        write.into_iter().chain(grace).min()
    }

    /// Writes `objects.json` now if the lists changed since it was written: at every due time,
    /// and when the agent stops, so that the next run starts from what this one last saw.
    fn remember_now(&mut self) {
        if !self.synced() {
            return;
        }
        self.remember_pending = false;
        self.remembered_at = Some(Instant::now());
        let now = Remembered {
            node: self.node_info(),
            objects: self.objects.state(),
            pools: Some(self.pools.state()),
            namespaces: Some(self.namespace_labels()),
        };
        let same = self.remembered.as_ref().is_some_and(|r| {
            r.node == now.node
                && r.pools == now.pools
                && r.namespaces == now.namespaces
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
}
