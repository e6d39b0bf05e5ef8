//! In-cluster mode: `lvs-operator agent --node-name NODE`.
//!
//! The objects come from the API server (a reflector on every LvsService and one on this node's
//! Node object) instead of files, and the results go back into each object's status: this agent
//! owns exactly one entry of `status.nodes`, the one keyed by its node, written with server-side
//! apply under the field manager `lvs-operator-agent-NODE` (see `crate::api`). The data plane is
//! the same code as standalone mode.
//!
//! Roles per object: a director when the node matches the object's director selector (default:
//! label `lvs-operator.io/director=true`); a real server when one of the node's InternalIPs is a
//! backend. Among eligible directors, one Lease per VIP (`lvs-vip-...` in the agent's namespace)
//! decides which node holds the VIP; the others keep IPVS programmed as hot standby.
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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::{Notify, watch};
use tracing::{debug, error, info, warn};

use kube::core::SelectorExt;

use crate::api::{LvsService, NodeRole, NodeStatus, selector, validate};
use crate::core::{Assignment, DirectorRole, covers};

use super::converge::{self, DataPlane, Resynced};
use super::ledger::LedgerStore;
use super::metrics::AgentMetrics;

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

/// What the agent needs of its own Node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub addresses: Vec<IpAddr>,
}

impl NodeInfo {
    pub fn from_node(node: &Node) -> Self {
        let addresses = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| a.type_ == "InternalIP")
            .filter_map(|a| a.address.parse().ok())
            .collect();
        Self {
            name: node.name_any(),
            labels: node.labels().clone(),
            addresses,
        }
    }
}

/// This node's roles for one object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Roles {
    pub director: bool,
    pub real_server: bool,
}

/// Whether the node may be a director of `obj`, and whether it is one of its real servers.
pub fn roles(obj: &LvsService, node: &NodeInfo) -> Roles {
    // A selector we cannot read selects no node; the controller reports it on the object.
    let director = selector::director_selector(obj).is_ok_and(|s| s.matches(&node.labels));
    let real_server = backends_of(obj)
        .iter()
        .any(|(addr, _)| node.addresses.contains(addr))
        || obj
            .status
            .iter()
            .flat_map(|s| &s.backends)
            .any(|b| b.node.as_deref() == Some(node.name.as_str()));
    Roles {
        director,
        real_server,
    }
}

/// The real servers of an object: its explicit `spec.backends`, or else those the controller
/// resolved into `status.backends` (a draining one with weight 0).
pub fn backends_of(obj: &LvsService) -> Vec<(IpAddr, u32)> {
    if obj.spec.backends.is_some() {
        return Assignment::explicit_backends(obj);
    }
    obj.status
        .iter()
        .flat_map(|s| &s.backends)
        .filter_map(|b| {
            let weight = if b.draining {
                0
            } else {
                u32::try_from(b.weight).ok()?
            };
            Some((b.address.parse().ok()?, weight))
        })
        .collect()
}

/// The controller said no to this generation (a VIP conflict, for one).
pub fn rejected(obj: &LvsService) -> bool {
    obj.status.iter().flat_map(|s| &s.conditions).any(|c| {
        c.type_ == "Accepted"
            && c.status == "False"
            && c.observed_generation == obj.metadata.generation
    })
}

/// Age order, then namespace/name: the order in which objects claim ports.
pub fn by_age(objects: &mut [Arc<LvsService>]) {
    objects.sort_by(|a, b| {
        let ts = |o: &LvsService| o.metadata.creation_timestamp.as_ref().map(|t| t.0);
        ts(a)
            .cmp(&ts(b))
            .then_with(|| validate::object_ref(a).cmp(&validate::object_ref(b)))
    });
}

/// The Lease deciding which director holds `vip`.
pub fn lease_name(vip: IpAddr) -> String {
    format!("lvs-vip-{}", vip.to_string().replace(['.', ':'], "-"))
}

/// This node's status entry for an object after a resync, or `None` when it has no role.
pub fn node_status(
    obj: &LvsService,
    node: &str,
    roles: Roles,
    holds_vip: bool,
    r: &Resynced,
) -> Option<NodeStatus> {
    if !(roles.director || roles.real_server) || obj.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let id = validate::object_ref(obj);
    let mut error = r
        .desired
        .errors
        .iter()
        .find(|e| e.object == id)
        .map(|e| e.message.clone());
    let part = r.desired.parts.get(&id);
    let programmed = part.is_some_and(|p| covers(&r.after, p));
    if error.is_none() && !programmed {
        // What went wrong with this object's own services, addresses or sysctls.
        let failure = r
            .converged
            .failed
            .iter()
            .find(|(op, _)| part.is_some_and(|p| op.concerns(p)));
        let conflict = r
            .converged
            .plan
            .conflicts
            .iter()
            .find(|k| part.is_some_and(|p| p.services.contains_key(k)));
        error = failure.map(|(op, e)| format!("{op}: {e}")).or_else(|| {
            conflict.map(|k| {
                format!("IPVS service {k} exists on this node and was not made by lvs-operator")
            })
        });
    }
    let mut role_list = Vec::new();
    if roles.director {
        role_list.push(NodeRole::Director);
    }
    if roles.real_server {
        role_list.push(NodeRole::Backend);
    }
    Some(NodeStatus {
        node: node.to_string(),
        roles: role_list,
        observed_generation: obj.metadata.generation.unwrap_or_default(),
        active: roles.director && holds_vip,
        programmed,
        arp_verified: roles.real_server && programmed,
        error,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BackendStatus, LvsServiceStatus, manifest};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn web() -> LvsService {
        manifest::parse_documents("t", include_str!("../../tests/valid/reference.yaml"))
            .remove(0)
            .unwrap()
    }

    fn node(labels: &[(&str, &str)], ip: &str) -> NodeInfo {
        NodeInfo {
            name: "n1".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            addresses: vec![ip.parse().unwrap()],
        }
    }

    #[test]
    fn a_node_labelled_director_directs_and_a_node_holding_a_backend_address_serves() {
        let o = web();
        assert_eq!(
            roles(
                &o,
                &node(&[("lvs-operator.io/director", "true")], "10.10.24.10")
            ),
            Roles {
                director: true,
                real_server: false
            }
        );
        assert_eq!(
            roles(&o, &node(&[], "10.10.24.22")),
            Roles {
                director: false,
                real_server: true
            }
        );
        assert_eq!(
            roles(
                &o,
                &node(&[("lvs-operator.io/director", "false")], "10.10.24.9")
            ),
            Roles::default()
        );
    }

    #[test]
    fn resolved_backends_come_from_status_when_the_spec_lists_none() {
        let mut o = web();
        o.spec.backends = None;
        o.status = Some(LvsServiceStatus {
            backends: vec![
                BackendStatus {
                    address: "10.10.24.31".into(),
                    node: Some("w1".into()),
                    weight: 1,
                    ..Default::default()
                },
                BackendStatus {
                    address: "10.10.24.32".into(),
                    weight: 1,
                    draining: true,
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
        assert_eq!(
            backends_of(&o),
            vec![
                ("10.10.24.31".parse().unwrap(), 1),
                ("10.10.24.32".parse().unwrap(), 0)
            ]
        );
        let mut w1 = node(&[], "192.168.0.1");
        w1.name = "w1".into();
        assert!(roles(&o, &w1).real_server, "named as the backend's node");
    }

    #[test]
    fn only_a_rejection_of_the_current_generation_counts() {
        let mut o = web();
        o.metadata.generation = Some(2);
        let cond = |g| Condition {
            type_: "Accepted".into(),
            status: "False".into(),
            reason: "VIPConflict".into(),
            message: String::new(),
            observed_generation: Some(g),
            last_transition_time: Time(Default::default()),
        };
        o.status = Some(LvsServiceStatus {
            conditions: vec![cond(1)],
            ..Default::default()
        });
        assert!(!rejected(&o));
        o.status = Some(LvsServiceStatus {
            conditions: vec![cond(2)],
            ..Default::default()
        });
        assert!(rejected(&o));
    }

    #[test]
    fn older_objects_claim_ports_first_and_names_break_ties() {
        let mut a = web();
        a.metadata.name = Some("b".into());
        let mut b = web();
        b.metadata.name = Some("a".into());
        let mut c = web();
        c.metadata.name = Some("z".into());
        c.metadata.creation_timestamp = Some(Time(Default::default()));
        let mut v = vec![Arc::new(a), Arc::new(b), Arc::new(c)];
        by_age(&mut v);
        let names: Vec<_> = v.iter().map(|o| o.name_any()).collect();
        assert_eq!(
            names,
            vec!["a", "b", "z"],
            "no timestamp sorts first, then by name"
        );
    }

    #[test]
    fn lease_names_are_valid_object_names() {
        assert_eq!(
            lease_name("10.10.24.88".parse().unwrap()),
            "lvs-vip-10-10-24-88"
        );
        assert_eq!(
            lease_name("fd00:24::88".parse().unwrap()),
            "lvs-vip-fd00-24--88"
        );
    }

    #[test]
    fn a_node_reports_programmed_when_the_kernel_holds_its_share_and_names_its_own_failure() {
        use crate::core::{HostAddress, NodeState, Op};
        let mut o = web();
        o.metadata.namespace = Some("default".into());
        o.metadata.generation = Some(4);
        let vip = HostAddress::vip("lo", "10.10.24.88".parse().unwrap());
        let mut part = NodeState::default();
        part.addresses.insert(vip.clone());
        let mut r = Resynced::default();
        r.desired.parts.insert("default/web".into(), part.clone());
        r.after = part.clone();
        let rs = Roles {
            director: false,
            real_server: true,
        };
        let entry = node_status(&o, "rs1", rs, false, &r).unwrap();
        assert_eq!(
            (
                entry.programmed,
                entry.arp_verified,
                entry.observed_generation
            ),
            (true, true, 4)
        );
        assert_eq!(entry.error, None);

        r.after = NodeState::default();
        let unrelated = HostAddress::vip("lo", "10.10.24.99".parse().unwrap());
        r.converged.failed.push((
            Op::AddAddress {
                address: unrelated,
                announce: false,
            },
            "EPERM".into(),
        ));
        r.converged.failed.push((
            Op::AddAddress {
                address: vip,
                announce: false,
            },
            "needs CAP_NET_ADMIN".into(),
        ));
        let entry = node_status(&o, "rs1", rs, false, &r).unwrap();
        assert!(!entry.programmed);
        assert_eq!(
            entry.error.as_deref(),
            Some("ip addr add 10.10.24.88/32 broadcast 10.10.24.88 dev lo: needs CAP_NET_ADMIN")
        );
        assert_eq!(
            node_status(&o, "rs1", Roles::default(), false, &r),
            None,
            "no role, no entry"
        );
    }
}
