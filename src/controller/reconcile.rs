//! One reconcile of one LvsService: [`reconcile`] routes through the finalizer helper to
//! [`apply`] (live object) or [`cleanup`] (object being deleted); [`error_policy`] decides when a
//! failed one runs again.
//!
//! `apply` reads the reflector caches (Nodes, EndpointSlices, every LvsService), decides
//! acceptance (validation, then VIP conflicts), resolves backends and expected nodes, computes the
//! status, and applies it with server-side apply only when it differs from what the object says.
//! Events follow a successful apply. `cleanup` runs after every agent removed its entry from
//! `status.nodes`, or after the cleanup timeout; until then [`reconcile`] requeues without
//! entering the finalizer helper, which would remove the finalizer on the first success.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use super::backends::{ExpectedNodes, expected_nodes, resolve_backends};
use super::conditions::{Acceptance, SourceProblem, StatusInput, compute, differs, same_verdict};
use super::conflicts::find_conflict;
use super::error::{Error, Result};
use super::events::transitions;
use super::metrics::Metrics;
use super::reports::ReportIndex;
use crate::api::{
    LvsAddressPool, LvsNodeReport, LvsService, LvsServiceStatus, Pools, pool, validate,
    validate::object_ref,
};

/// The finalizer that holds a deleted LvsService until the agents have cleaned their kernels.
pub const FINALIZER: &str = "lvs-operator.io/cleanup";
/// The field manager of the controller's part of the status.
pub const FIELD_MANAGER: &str = "lvs-operator-controller";

/// How often a settled object is looked at again with no event.
const RESYNC: Duration = Duration::from_secs(300);

/// How long a status change that is progress only (more nodes at the current generation, a real
/// server's state, counts) waits for more before it is written. Agents write their reports one
/// after another; without this, each report rewrote each object, and every write reaches every
/// agent's watch. A change of verdict (a condition, the director, the generation) goes at once.
const HOLD: Duration = Duration::from_secs(5);
/// A conflicting object is looked at sooner: the winner's deletion may reach our cache after the
/// event that requeued the loser.
const CONFLICT_RECHECK: Duration = Duration::from_secs(60);
/// How often a deleted object checks whether the agents are done.
const CLEANUP_POLL: Duration = Duration::from_secs(5);
/// The same Warning (object, reason, message) is published at most once in this long, so that a
/// flapping real server cannot flood the object's events.
const WARNING_INTERVAL: Duration = Duration::from_secs(300);

/// The reflector caches the reconciler reads instead of the API server.
#[derive(Clone)]
pub struct Stores {
    pub services: Store<LvsService>,
    pub nodes: Store<Node>,
    pub slices: Store<EndpointSlice>,
    /// Kubernetes Services (metadata only): whether a `backendService` exists.
    pub k8s_services: Store<PartialObjectMeta<Service>>,
    /// The agents' heartbeat Leases.
    pub heartbeats: Store<Lease>,
    /// When the watch of those Leases last could not see the API server.
    pub heartbeats_blind: crate::watch::Blind,
    /// The agents' reports, one per node.
    pub reports: Store<LvsNodeReport>,
    /// The address pools, and the namespaces (metadata only: their labels) they admit.
    pub pools: Store<LvsAddressPool>,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
}

/// Tunables of the reconciler.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How long a deleted object waits for its agents before the finalizer goes anyway.
    pub cleanup_timeout: Duration,
    /// How long a node's agent may stay silent before the node counts as not reporting.
    pub report_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            cleanup_timeout: Duration::from_secs(120),
            report_timeout: Duration::from_secs(30),
        }
    }
}

/// A Warning as the rate limit knows it: object, reason, message.
type WarningKey = (ObjectRef<LvsService>, String, String);

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    pub stores: Stores,
    pub settings: Settings,
    /// Consecutive failures per object, for [`error_policy`]'s backoff; a success clears it.
    failures: Mutex<HashMap<ObjectRef<LvsService>, u32>>,
    /// When each Warning (object, reason, message) was last published, for the rate limit.
    warnings: Mutex<HashMap<WarningKey, Instant>>,
    /// The VIPs this controller allocated, until the object is gone: two objects reconciled at
    /// once never get the same address, even before either status shows it.
    allocations: Mutex<HashMap<ObjectRef<LvsService>, IpAddr>>,
    /// Since when each object's status has had progress to write that [`HOLD`] keeps back.
    held: Mutex<HashMap<ObjectRef<LvsService>, Instant>>,
    /// The agents' reports, parsed once per version; shared with the trigger they wake by.
    pub reports: Arc<ReportIndex>,
    /// Events across all objects: a node going silent under a thousand objects is a thousand
    /// transitions, and the API server should not take a thousand events for it at once.
    events: Mutex<TokenBucket>,
}

/// At most `BURST` at once, refilled at `RATE` per second.
struct TokenBucket {
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    const BURST: f64 = 100.0;
    const RATE: f64 = 10.0;

    fn full() -> Self {
        Self {
            tokens: Self::BURST,
            at: Instant::now(),
        }
    }

    /// Takes a token when there is one.
    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * Self::RATE;
        self.tokens = (self.tokens + refill).min(Self::BURST);
        self.at = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

impl Context {
    pub fn new(
        client: Client,
        recorder: Recorder,
        metrics: Metrics,
        stores: Stores,
        settings: Settings,
    ) -> Self {
        Self {
            client,
            recorder,
            metrics,
            stores,
            settings,
            failures: Mutex::default(),
            warnings: Mutex::default(),
            allocations: Mutex::default(),
            held: Mutex::default(),
            reports: Arc::default(),
            events: Mutex::new(TokenBucket::full()),
        }
    }

    /// A VIP for an object without one: the one already allocated to it, or the first address
    /// of an admitting pool that no other object uses.
    fn allocate(
        &self,
        object: &LvsService,
        pools: &Pools,
        ns: pool::Namespace<'_>,
        services: &[Arc<LvsService>],
    ) -> Option<IpAddr> {
        let me = ObjectRef::from_obj(object);
        let mut allocated = self.allocations.lock().expect("never poisoned");
        if let Some(vip) = allocated.get(&me) {
            return Some(*vip);
        }
        let used: std::collections::BTreeSet<IpAddr> = services
            .iter()
            .filter(|o| ObjectRef::from_obj(o.as_ref()) != me)
            .filter_map(|o| o.effective_vip()?.parse().ok())
            .chain(allocated.iter().filter(|(o, _)| **o != me).map(|(_, v)| *v))
            .collect();
        let (vip, pool) = pools.allocate(ns, &|a| used.contains(&a))?;
        info!(object = %object_ref(object), "allocated {vip} from LvsAddressPool {pool}");
        allocated.insert(me, vip);
        Some(vip)
    }

    /// Forgets the VIP allocated to an object that is gone.
    fn release(&self, object: &LvsService) {
        let me = ObjectRef::from_obj(object);
        self.allocations.lock().expect("never poisoned").remove(&me);
        self.held.lock().expect("never poisoned").remove(&me);
    }

    /// How much longer a status change that is progress only ([`same_verdict`]) waits: [`HOLD`]
    /// from the first such change not written; `None` once it is due, or for a change of verdict
    /// (written at once).
    fn hold(
        &self,
        object: &LvsService,
        old: &LvsServiceStatus,
        new: &LvsServiceStatus,
    ) -> Option<Duration> {
        let me = ObjectRef::from_obj(object);
        let mut held = self.held.lock().expect("never poisoned");
        if !same_verdict(old, new) {
            held.remove(&me);
            return None;
        }
        let since = *held.entry(me.clone()).or_insert_with(Instant::now);
        let left = HOLD.checked_sub(since.elapsed()).filter(|l| !l.is_zero());
        if left.is_none() {
            held.remove(&me);
        }
        left
    }

    /// Whether a Warning may be published now: not when the same one went out less than
    /// [`WARNING_INTERVAL`] ago.
    fn warning_due(&self, object: &LvsService, reason: &str, message: &str) -> bool {
        let mut warnings = self
            .warnings
            .lock()
            .expect("warning times are never poisoned");
        let key = (
            ObjectRef::from_obj(object),
            reason.to_string(),
            message.to_string(),
        );
        let now = Instant::now();
        warnings.retain(|_, at| now.duration_since(*at) < WARNING_INTERVAL);
        if warnings.contains_key(&key) {
            return false;
        }
        warnings.insert(key, now);
        true
    }

    /// Records one more failure of `object` and returns how many in a row.
    fn failed(&self, object: ObjectRef<LvsService>) -> u32 {
        let mut failures = self
            .failures
            .lock()
            .expect("failure counts are never poisoned");
        let n = failures.entry(object).or_default();
        *n = n.saturating_add(1);
        *n
    }

    fn succeeded(&self, object: &ObjectRef<LvsService>) {
        self.failures
            .lock()
            .expect("failure counts are never poisoned")
            .remove(object);
    }
}

/// The entry point the Controller calls.
pub async fn reconcile(object: Arc<LvsService>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.count_and_measure();
    let name = object_ref(&object);
    let key = ObjectRef::from_obj(object.as_ref());
    let api: Api<LvsService> = match object.namespace() {
        Some(ns) => Api::namespaced(ctx.client.clone(), &ns),
        None => Api::all(ctx.client.clone()),
    };

    ctx.stores
        .reports
        .wait_until_ready()
        .await
        .map_err(|_| Error::StoreNotReady {
            name: name.clone(),
            store: "LvsNodeReport",
        })?;
    let object = Arc::new(with_reports(
        &object,
        &ctx.stores.reports.state(),
        &ctx.reports,
    ));
    if let Some(wait) = cleanup_wait(&object, Timestamp::now(), ctx.settings.cleanup_timeout) {
        debug!(object = %name, "waiting for the agents to remove their state");
        ctx.succeeded(&key);
        return Ok(Action::requeue(wait));
    }

    let action = finalizer(&api, FINALIZER, object, |event| async {
        match event {
            Finalizer::Apply(o) => apply(&o, &ctx, &api).await,
            Finalizer::Cleanup(o) => cleanup(&o, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::from_finalizer(name, e))?;
    ctx.succeeded(&key);
    Ok(action)
}

/// `object` with `status.nodes` made of the reports' entries naming it (what an agent may have
/// left in the stored `status.nodes` is dropped): each entry under the name of the node whose
/// report holds it, whatever the entry says, since only that node's agent can write it.
pub fn with_reports(
    object: &LvsService,
    reports: &[Arc<LvsNodeReport>],
    index: &ReportIndex,
) -> LvsService {
    let id = object_ref(object);
    let uid = object.metadata.uid.clone().unwrap_or_default();
    let nodes = index.nodes(reports, &id, &uid);
    let mut object = object.clone();
    if object.status.is_some() || !nodes.is_empty() {
        object.status.get_or_insert_with(Default::default).nodes = nodes;
    }
    object
}

/// When `object` is being deleted, holds our finalizer, and agents still report state: how long
/// to wait before looking again. `None` once there is nothing to wait for, or the timeout passed.
pub fn cleanup_wait(object: &LvsService, now: Timestamp, timeout: Duration) -> Option<Duration> {
    let deleted = object.metadata.deletion_timestamp.as_ref()?.0;
    if !object.finalizers().iter().any(|f| f == FINALIZER) {
        return None;
    }
    let reporting = object.status.as_ref().is_some_and(|s| !s.nodes.is_empty());
    if !reporting {
        return None;
    }
    // A deletionTimestamp ahead of our clock (skew) counts as just now.
    let elapsed = Duration::try_from(now.duration_since(deleted)).unwrap_or_default();
    let left = timeout.checked_sub(elapsed)?;
    if left.is_zero() {
        return None;
    }
    Some(left.min(CLEANUP_POLL))
}

/// Computes the status and applies it when it changed.
async fn apply(object: &LvsService, ctx: &Context, api: &Api<LvsService>) -> Result<Action> {
    let name = object_ref(object);
    for (store, ready) in [
        ("LvsService", ctx.stores.services.wait_until_ready().await),
        ("Node", ctx.stores.nodes.wait_until_ready().await),
        ("EndpointSlice", ctx.stores.slices.wait_until_ready().await),
        ("Service", ctx.stores.k8s_services.wait_until_ready().await),
        ("Lease", ctx.stores.heartbeats.wait_until_ready().await),
        ("LvsAddressPool", ctx.stores.pools.wait_until_ready().await),
        ("Namespace", ctx.stores.namespaces.wait_until_ready().await),
    ] {
        ready.map_err(|_| Error::StoreNotReady {
            name: name.clone(),
            store,
        })?;
    }
    let nodes = ctx.stores.nodes.state();
    let slices = ctx.stores.slices.state();
    let services = ctx.stores.services.state();
    let blind = ctx.stores.heartbeats_blind.window();
    let timeout = ctx.settings.report_timeout;
    let heartbeats: BTreeMap<String, Timestamp> = ctx
        .stores
        .heartbeats
        .state()
        .iter()
        .filter_map(|l| crate::heartbeat::read(l))
        .map(|(node, renewed)| (node, crate::heartbeat::heard(renewed, blind, timeout)))
        .collect();

    let pools = Pools::new(ctx.stores.pools.state().iter().map(|p| p.as_ref()));
    let namespace = object.namespace().unwrap_or_default();
    let ns_meta = ctx.stores.namespaces.get(&ObjectRef::new(&namespace));
    let ns = pool::Namespace {
        name: &namespace,
        labels: ns_meta.as_ref().map(|n| n.labels()),
    };
    // Without spec.vip: the address allocated before (status.vip), or a new one; the status
    // written below keeps it.
    let stored_vip = object.status.as_ref().and_then(|s| s.vip.clone());
    let with_vip;
    let object = match object.effective_vip() {
        Some(_) => object,
        None => match ctx.allocate(object, &pools, ns, &services) {
            Some(vip) => {
                let mut o = object.clone();
                o.status.get_or_insert_with(Default::default).vip = Some(vip.to_string());
                with_vip = o;
                &with_vip
            }
            None => object,
        },
    };
    let (acceptance, backends, expected) =
        match resolve(object, &services, &nodes, &slices, &pools, ns) {
            Ok(resolved) => resolved,
            Err(message) => (
                Acceptance::Invalid(message),
                Vec::new(),
                ExpectedNodes::default(),
            ),
        };
    let source = missing_service(object, &ctx.stores.k8s_services);
    let input = StatusInput {
        acceptance: &acceptance,
        backends: &backends,
        expected: &expected,
        source: source.as_ref(),
        heartbeats: &heartbeats,
        report_timeout: ctx.settings.report_timeout,
        now: Timestamp::now(),
    };
    let (new, issues) = compute(object, &input);
    let old = object.status.clone().unwrap_or_default();
    if differs(&old, &new) || stored_vip != new.vip {
        if stored_vip == new.vip
            && let Some(left) = ctx.hold(object, &old, &new)
        {
            return Ok(Action::requeue(left));
        }
        ctx.held
            .lock()
            .expect("never poisoned")
            .remove(&ObjectRef::from_obj(object));
        info!(object = %name, summary = ?new.backend_summary, director = ?new.director, "applying status");
        patch_status(api, object, &new).await?;
        for event in transitions(&old, &new, &issues) {
            let note = event.note.clone().unwrap_or_default();
            let due =
                event.type_ == EventType::Normal || ctx.warning_due(object, &event.reason, &note);
            if due && ctx.events.lock().expect("never poisoned").take() {
                publish(ctx, object, &event).await;
            } else if due {
                ctx.metrics.events_dropped.inc();
                debug!(object = %name, reason = %event.reason, "event dropped: over the event budget");
            }
        }
    }
    // A node that reports now stops counting as reporting when its heartbeat expires, with no
    // event to say so: look again just after the first expiry.
    let expiry = input
        .next_expiry(&expected.all())
        .map(|left| Duration::from_secs(left.as_secs() + 1));
    let recheck = match acceptance {
        Acceptance::Conflict(_) => CONFLICT_RECHECK,
        _ => RESYNC,
    };
    Ok(Action::requeue(expiry.map_or(recheck, |e| e.min(recheck))))
}

/// `ServiceNotFound` when `spec.backendService` names a Service that does not exist.
fn missing_service(
    object: &LvsService,
    services: &Store<PartialObjectMeta<Service>>,
) -> Option<SourceProblem> {
    let name = &object.spec.backend_service.as_ref()?.name;
    let namespace = object.namespace().unwrap_or_default();
    let key = ObjectRef::new(name).within(&namespace);
    if services.get(&key).is_some() {
        return None;
    }
    Some(SourceProblem {
        reason: "ServiceNotFound",
        message: format!(
            "spec.backendService names Service {namespace}/{name}, which does not exist: create it or fix the name"
        ),
    })
}

type Resolved = (
    Acceptance,
    Vec<super::backends::ResolvedBackend>,
    ExpectedNodes,
);

/// Acceptance, backends and expected nodes; `Err` with a message when the spec cannot be used.
fn resolve(
    object: &LvsService,
    services: &[Arc<LvsService>],
    nodes: &[Arc<Node>],
    slices: &[Arc<EndpointSlice>],
    pools: &Pools,
    ns: pool::Namespace<'_>,
) -> Result<Resolved, String> {
    if object.effective_vip().is_none() {
        let message = format!(
            "spec.vip is not set and no LvsAddressPool admitting namespace {} has a free address: set spec.vip, or ask an administrator for a pool",
            ns.name
        );
        return Ok((
            Acceptance::AllocationFailed(message),
            Vec::new(),
            ExpectedNodes::default(),
        ));
    }
    let service = validate(object).map_err(|e| {
        e.errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let selector_error = |e: super::backends::SelectorError| format!("{}: {}", e.field, e.message);
    if let Err(refused) = pools.admit(ns, service.vip) {
        let acceptance = Acceptance::NotAllowed(refused.message());
        return Ok((acceptance, Vec::new(), ExpectedNodes::default()));
    }
    let mut backends = resolve_backends(object, &service, nodes, slices).map_err(selector_error)?;
    // A node the pools do not allow is never made a real server: selected, it is left out;
    // named by address (or as an endpoint), it is a real server its agent does not set up.
    let allowed = |name: &str| {
        let labels = nodes
            .iter()
            .find(|n| n.name_any() == name)
            .map(|n| n.labels().clone())
            .unwrap_or_default();
        pools.allows_real_server(ns, service.vip, &labels)
    };
    if object.spec.backend_node_selector.is_some() {
        backends.retain(|b| b.node.as_deref().is_none_or(allowed));
    }
    for b in &mut backends {
        if b.node.as_deref().is_some_and(|n| !allowed(n)) {
            b.node = None;
        }
    }
    let expected = expected_nodes(object, nodes, &backends).map_err(selector_error)?;
    let acceptance = match find_conflict(object, &service, services) {
        Some(conflict) => Acceptance::Conflict(conflict),
        None => Acceptance::Accepted,
    };
    Ok((acceptance, backends, expected))
}

/// Server-side apply of the controller's fields of the status (`nodes` is never sent: entries
/// agents of an older release wrote there stay theirs).
async fn patch_status(
    api: &Api<LvsService>,
    object: &LvsService,
    status: &LvsServiceStatus,
) -> Result<()> {
    let patch = json!({
        "apiVersion": LvsService::api_version(&()),
        "kind": LvsService::kind(&()),
        "status": LvsServiceStatus {
            nodes: Vec::new(),
            ..status.clone()
        },
    });
    api.patch_status(
        &object.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|source| Error::PatchStatus {
        name: object_ref(object),
        source,
    })?;
    Ok(())
}

/// The object is going: the agents are done (or the timeout passed), so the finalizer may go.
async fn cleanup(object: &LvsService, ctx: &Context) -> Result<Action> {
    ctx.release(object);
    let left: Vec<String> = object
        .status
        .iter()
        .flat_map(|s| &s.nodes)
        .map(|n| n.node.clone())
        .collect();
    if left.is_empty() {
        info!(object = %object_ref(object), "every agent removed its state; releasing the object");
    } else {
        let note = format!(
            "gave up after {} waiting for {} to remove their state; their agents remove it when they come back",
            humantime::format_duration(ctx.settings.cleanup_timeout),
            left.join(", ")
        );
        warn!(object = %object_ref(object), "{note}");
        let event = Event {
            type_: EventType::Warning,
            reason: "CleanupTimedOut".into(),
            note: Some(note),
            action: "Cleanup".into(),
            secondary: None,
        };
        publish(ctx, object, &event).await;
    }
    Ok(Action::await_change())
}

/// Events are for people: one that cannot be published is logged, and the reconcile goes on.
async fn publish(ctx: &Context, object: &LvsService, event: &Event) {
    if let Err(e) = ctx.recorder.publish(event, &object.object_ref(&())).await {
        warn!(object = %object_ref(object), reason = %event.reason, error = %e, "publishing an event failed");
    }
}

/// After a failure, try again later, doubling the wait per consecutive failure of the object.
pub fn error_policy(object: Arc<LvsService>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(object = %object_ref(&object), category = error.category(), "reconcile failed: {error}");
    ctx.metrics.reconcile_failure(error);
    let failures = ctx.failed(ObjectRef::from_obj(object.as_ref()));
    Action::requeue(backoff(failures))
}

/// 1 s after the first failure, doubling up to 30 s: a failure is most often the API server
/// being away, and the status must catch up soon after it returns.
pub fn backoff(failures: u32) -> Duration {
    const FIRST: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(30);
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    FIRST.saturating_mul(factor).min(MAX)
}
