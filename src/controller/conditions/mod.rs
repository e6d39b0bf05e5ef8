//! The status the controller owns, computed from what it resolved and what the agents reported.
//!
//! [`compute_status`] is a pure function of the object (its spec, generation, old conditions and
//! the agents' `status.nodes`), the acceptance verdict, the resolved backends, the expected nodes,
//! the agents' heartbeats and the time: the reconciler applies its result only when [`differs`]
//! says it changed, which keeps the controller's own writes from feeding its watch forever.
//!
//! A node *reports* when its agent renewed its heartbeat within the report timeout (30 s by
//! default); an agent that stopped is found that way, whatever its last entry in `status.nodes`
//! says. Every summary is about what clients get:
//! - `director`: the one director that reports and says it holds the VIP (the Lease and the
//!   address in its kernel);
//! - `backends[]`: each real server with the weight the directors use. A real server whose node
//!   does not report, or reports that the VIP is not on its `lo`, is Unhealthy and gets weight 0
//!   (its clients would hang); one not verified yet keeps its weight;
//! - `backendSummary`: the real servers taking new connections through a programmed, active
//!   director, out of all.
//!
//! The conditions, all with `observedGeneration` = `metadata.generation`:
//! - [`ACCEPTED`]: the object is valid and holds its VIP:ports. **An agent never programs an
//!   object whose Accepted condition is False with `observedGeneration` equal to the object's
//!   generation** (reason `InvalidSpec` or `VIPConflict`). Before the controller has spoken, the
//!   agents apply the same conflict rule themselves (`core::claims`).
//! - [`PROGRAMMED`]: every expected node (each director by selector, each real server node by
//!   address) reports, and reports `programmed` for the current generation.
//! - [`READY`]: clients are served: an active director programmed at this generation and at
//!   least one real server taking new connections. Otherwise the reason is the first real cause.
//! - [`DEGRADED`]: something is failing; the reason names the first of: `ServiceNotFound`,
//!   `NoDirectorNodes`, `NodeNotReporting`, `NodeError`, `NoDirector`, `MultipleActiveDirectors`,
//!   `DuplicateVIPHolder`, `BackendUnhealthy`, `NoHealthyBackend` or `NoUsableBackend`, and the
//!   message lists them all.
//!
//! `directors[]` lists every director candidate: `Active` (the director), `Standby`, or
//! `Unreachable` (it does not report, or the active director does not hear its heartbeats).
//!
//! `lastTransitionTime` moves only when a condition's status (a backend's health) flips.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use super::backends::{ExpectedNodes, ResolvedBackend};
use crate::api::{
    BackendHealth, BackendStatus, DEFAULT_DIRECTOR_LABEL, DirectorStatus, LvsService,
    LvsServiceStatus, NodeStatus,
};
use crate::core::Conflict;

mod compare;
mod real_servers;
mod words;

pub use compare::{differs, find, is_true, same_verdict};
pub use real_servers::serves;
use real_servers::{backend_status, no_serving_reason, unusable};
use words::{LISTED, count, have, join, list};

/// The object is valid and not in conflict. False at the current generation keeps every agent
/// from programming it (see the module doc).
pub const ACCEPTED: &str = "Accepted";
/// Every expected node applied the current generation.
pub const PROGRAMMED: &str = "Programmed";
/// Clients are served: an active, programmed director and a real server taking connections.
pub const READY: &str = "Ready";
/// Something is failing; the reason says what.
pub const DEGRADED: &str = "Degraded";

/// The condition types the controller owns, in the order it writes them.
pub const CONDITION_TYPES: [&str; 4] = [ACCEPTED, PROGRAMMED, READY, DEGRADED];

/// Whether the object may be programmed, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acceptance {
    Accepted,
    /// The spec breaks a rule (the CRD should have stopped it; checked again here).
    Invalid(String),
    /// An older object holds one of its VIP:port/protocol pairs.
    Conflict(Conflict),
    /// Its VIP is in no LvsAddressPool that admits its namespace.
    NotAllowed(String),
    /// It has no `spec.vip`, and no pool that admits its namespace has a free address.
    AllocationFailed(String),
}

/// A reason the real servers cannot even be listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceProblem {
    pub reason: &'static str,
    pub message: String,
}

/// Everything [`compute_status`] reads besides the object.
#[derive(Debug, Clone)]
pub struct StatusInput<'a> {
    pub acceptance: &'a Acceptance,
    pub backends: &'a [ResolvedBackend],
    pub expected: &'a ExpectedNodes,
    /// Why the backend source could not be read, if it could not (`ServiceNotFound`).
    pub source: Option<&'a SourceProblem>,
    /// When each node's agent last renewed its heartbeat Lease.
    pub heartbeats: &'a BTreeMap<String, Timestamp>,
    /// How long a node may stay silent before it counts as not reporting.
    pub report_timeout: Duration,
    pub now: Timestamp,
}

impl StatusInput<'_> {
    /// Whether `node`'s agent renewed its heartbeat within the report timeout.
    pub fn reports(&self, node: &str) -> bool {
        self.heartbeats.get(node).is_some_and(|renewed| {
            Duration::try_from(self.now.duration_since(*renewed))
                .map_or(true, |age| age <= self.report_timeout)
        })
    }

    /// When the first node that reports now would stop counting as reporting, if none renews:
    /// the moment the status may change without any event.
    pub fn next_expiry(&self, nodes: &BTreeSet<&str>) -> Option<Duration> {
        nodes
            .iter()
            .filter(|n| self.reports(n))
            .filter_map(|n| self.heartbeats.get(*n))
            .filter_map(|renewed| {
                let age = Duration::try_from(self.now.duration_since(*renewed)).ok()?;
                self.report_timeout.checked_sub(age)
            })
            .min()
    }
}

/// One problem feeding the Degraded condition; each gets its Warning event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub reason: &'static str,
    pub message: String,
    /// The node it is about, when it is about one: its event names it as the related object, so
    /// that the same reason on two nodes makes two events, not one series with the first note.
    pub node: Option<String>,
}

impl Issue {
    fn new(reason: &'static str, message: String) -> Self {
        Self {
            reason,
            message,
            node: None,
        }
    }

    fn on(reason: &'static str, node: &str, message: String) -> Self {
        Self {
            reason,
            message,
            node: Some(node.to_string()),
        }
    }
}

/// The controller's part of the status. `nodes` is left empty: the agents own it.
pub fn compute_status(object: &LvsService, input: &StatusInput<'_>) -> LvsServiceStatus {
    compute(object, input).0
}

/// [`compute_status`], with the problems behind the Degraded condition one by one.
pub fn compute(object: &LvsService, input: &StatusInput<'_>) -> (LvsServiceStatus, Vec<Issue>) {
    let generation = object.metadata.generation.unwrap_or_default();
    let old = object.status.clone().unwrap_or_default();
    let reports: BTreeMap<&str, &NodeStatus> =
        old.nodes.iter().map(|n| (n.node.as_str(), n)).collect();
    let current = |n: &NodeStatus| n.observed_generation == generation && n.programmed;
    let timeout = humantime::format_duration(input.report_timeout).to_string();

    let accepted = matches!(input.acceptance, Acceptance::Accepted);
    // A director that took the VIP over says from whom: that one's claim is stale (its agent is
    // dead or cut off, and its heartbeat Lease has not expired yet).
    let superseded: BTreeSet<&str> = old
        .nodes
        .iter()
        .filter(|n| n.active && input.reports(&n.node))
        .filter_map(|n| n.takeover.as_ref()?.from.as_deref())
        .collect();
    let unheard: BTreeSet<&str> = old
        .nodes
        .iter()
        .filter(|n| n.active && input.reports(&n.node))
        .flat_map(|n| n.unreachable_peers.iter().map(String::as_str))
        .collect();
    let active: Vec<&str> = old
        .nodes
        .iter()
        .filter(|n| n.active && input.reports(&n.node))
        .map(|n| n.node.as_str())
        .filter(|n| !superseded.contains(n))
        .collect();
    let director = match active.as_slice() {
        [one] if accepted => Some(one.to_string()),
        _ => None,
    };
    let director_programmed = director
        .as_deref()
        .and_then(|d| reports.get(d))
        .is_some_and(|n| current(n));

    let director_report = director.as_deref().and_then(|d| reports.get(d)).copied();
    let backends: Vec<BackendStatus> = input
        .backends
        .iter()
        .map(|b| {
            backend_status(
                b,
                &old.backends,
                &reports,
                director_report,
                generation,
                input,
                &timeout,
            )
        })
        .map(|mut b| {
            b.programmed = director_programmed;
            b
        })
        .collect();
    let serving = if accepted && director_programmed {
        backends.iter().filter(|b| serves(b)).count()
    } else {
        0
    };
    let ports = object
        .spec
        .ports
        .iter()
        .map(|p| format!("{}/{}", p.port, p.protocol))
        .collect::<Vec<_>>()
        .join(",");

    let expected = input.expected.all();
    let silent: Vec<&str> = expected
        .iter()
        .copied()
        .filter(|n| !input.reports(n))
        .collect();
    let pending: Vec<&str> = expected
        .iter()
        .copied()
        .filter(|n| input.reports(n) && !reports.get(n).is_some_and(|r| current(r)))
        .collect();
    let node_errors: Vec<String> = old
        .nodes
        .iter()
        .filter(|n| input.reports(&n.node))
        .filter_map(|n| Some(format!("node {}: {}", n.node, n.error.as_deref()?)))
        .collect();
    let erring = old
        .nodes
        .iter()
        .filter(|n| {
            input.reports(&n.node) && n.error.is_some() && expected.contains(&n.node.as_str())
        })
        .map(|n| n.node.as_str());
    let lagging: BTreeSet<&str> = silent
        .iter()
        .chain(&pending)
        .copied()
        .chain(erring)
        .collect();

    let mut conditions = Vec::new();
    let mut set = |type_: &str, status: bool, reason: &str, message: String| {
        conditions.push(condition(
            &old.conditions,
            type_,
            status,
            reason,
            message,
            generation,
            input.now,
        ));
    };

    match input.acceptance {
        Acceptance::Accepted => set(
            ACCEPTED,
            true,
            "Accepted",
            "the spec is valid and its VIP and ports are not claimed by an older object".into(),
        ),
        Acceptance::Invalid(message) => set(ACCEPTED, false, "InvalidSpec", message.clone()),
        Acceptance::Conflict(c) => set(ACCEPTED, false, "VIPConflict", c.message()),
        Acceptance::NotAllowed(message) => set(ACCEPTED, false, "VIPNotAllowed", message.clone()),
        Acceptance::AllocationFailed(message) => {
            set(ACCEPTED, false, "AllocationFailed", message.clone());
        }
    }

    let directors: Vec<DirectorStatus> = input
        .expected
        .directors
        .iter()
        .map(|d| {
            let state = if !input.reports(d) || unheard.contains(d.as_str()) {
                "Unreachable"
            } else if active.contains(&d.as_str()) {
                "Active"
            } else {
                "Standby"
            };
            DirectorStatus {
                node: d.clone(),
                state: state.into(),
                sync: reports
                    .get(d.as_str())
                    .map(|n| n.sync.clone())
                    .unwrap_or_default(),
            }
        })
        .collect();
    let finish = |conditions, director, backends: Vec<BackendStatus>, serving| LvsServiceStatus {
        observed_generation: Some(generation),
        vip: object.effective_vip().map(str::to_string),
        conditions,
        director,
        ports: Some(ports.clone()),
        backend_summary: Some(format!("{serving}/{}", backends.len())),
        backends,
        directors: directors.clone(),
        lagging_nodes: lagging.iter().take(LISTED).map(|n| n.to_string()).collect(),
        lagging_node_count: (!lagging.is_empty())
            .then(|| i32::try_from(lagging.len()).unwrap_or(i32::MAX)),
        nodes: Vec::new(),
    };

    if !accepted {
        let message = "the object is not accepted, so no node programs it".to_string();
        set(PROGRAMMED, false, "NotAccepted", message.clone());
        set(READY, false, "NotAccepted", message.clone());
        set(DEGRADED, false, "NotAccepted", message);
        return (finish(conditions, director, backends, serving), Vec::new());
    }

    let no_candidates = input.expected.directors.is_empty();
    let silent_message = (!silent.is_empty()).then(|| {
        format!(
            "{} not reported within {timeout}: is the lvs-operator agent running there?",
            have(&silent)
        )
    });
    let failing: Vec<&String> = node_errors
        .iter()
        .filter(|e| {
            pending
                .iter()
                .any(|p| e.starts_with(&format!("node {p}: ")))
        })
        .collect();
    let (programmed, reason, programmed_why) = if no_candidates {
        (false, "NoDirectorNodes", no_director_nodes(object))
    } else if let Some(message) = &silent_message {
        (false, "NodeNotReporting", message.clone())
    } else if !failing.is_empty() {
        (false, "NodeError", join(failing))
    } else if !pending.is_empty() {
        let message = format!(
            "waiting for {} to apply generation {generation}",
            list(&pending)
        );
        (false, "Pending", message)
    } else {
        let message = format!(
            "{} applied generation {generation}",
            count(expected.len(), "node", "nodes")
        );
        (true, "Programmed", message)
    };
    set(PROGRAMMED, programmed, reason, programmed_why.clone());

    let summary = format!(
        "{serving}/{} real servers take new connections",
        backends.len()
    );
    let director_candidates: Vec<&str> = input
        .expected
        .directors
        .iter()
        .map(String::as_str)
        .collect();
    let no_director = || {
        let silent_directors: Vec<&str> = director_candidates
            .iter()
            .copied()
            .filter(|d| silent.contains(d))
            .collect();
        let director_errors: Vec<&String> = node_errors
            .iter()
            .filter(|e| {
                director_candidates
                    .iter()
                    .any(|d| e.starts_with(&format!("node {d}: ")))
            })
            .collect();
        if !silent_directors.is_empty() {
            format!(
                "no director holds the VIP: {} not reported within {timeout}",
                have(&silent_directors)
            )
        } else if !director_errors.is_empty() {
            format!("no director holds the VIP: {}", join(director_errors))
        } else {
            "no director holds the VIP yet".to_string()
        }
    };
    if let Some(problem) = input.source {
        set(READY, false, problem.reason, problem.message.clone());
    } else if no_candidates {
        set(READY, false, "NoDirectorNodes", no_director_nodes(object));
    } else if active.is_empty() {
        set(READY, false, "NoActiveDirector", no_director());
    } else if active.len() > 1 {
        set(
            READY,
            false,
            "MultipleActiveDirectors",
            format!("{} all claim to hold the VIP", list(&active)),
        );
    } else if !director_programmed {
        set(
            READY,
            false,
            "NotProgrammed",
            format!(
                "director {} has not applied generation {generation}: {programmed_why}",
                active[0]
            ),
        );
    } else if serving == 0 {
        set(
            READY,
            false,
            no_serving_reason(&backends),
            unusable(&summary, &backends),
        );
    } else {
        set(
            READY,
            true,
            "Ready",
            format!("director {} serves: {summary}", active[0]),
        );
    }

    let mut issues = Vec::new();
    if let Some(problem) = input.source {
        issues.push(Issue::new(problem.reason, problem.message.clone()));
    }
    if no_candidates {
        issues.push(Issue::new("NoDirectorNodes", no_director_nodes(object)));
    }
    for node in &silent {
        let message = format!(
            "{} not reported within {timeout}: is the lvs-operator agent running there?",
            have(&[node])
        );
        issues.push(Issue::on("NodeNotReporting", node, message));
    }
    for n in old.nodes.iter().filter(|n| input.reports(&n.node)) {
        if let Some(error) = &n.error {
            let message = format!("node {}: {error}", n.node);
            issues.push(Issue::on("NodeError", &n.node, message));
        }
    }
    // While the nodes are still applying a new object, no director yet is no failure.
    if !no_candidates && active.is_empty() && (programmed || !node_errors.is_empty()) {
        issues.push(Issue::new("NoDirector", no_director()));
    }
    if active.len() > 1 {
        let message = format!("{} all claim to hold the VIP", list(&active));
        issues.push(Issue::new("MultipleActiveDirectors", message));
    }
    // A MAC that answers for the VIP besides the active director's: named after the director
    // whose interface has it, when one reports it.
    let owner_of = |mac: &str| {
        old.nodes
            .iter()
            .find(|n| n.mac.as_deref() == Some(mac))
            .map(|n| n.node.clone())
    };
    for n in old.nodes.iter().filter(|n| input.reports(&n.node)) {
        for holder in &n.foreign_holders {
            let named = match owner_of(holder) {
                Some(node) if !holder.contains('(') => format!("{holder} ({node})"),
                _ => holder.clone(),
            };
            let message = format!(
                "{named} also answers ARP for {}, besides the active director (seen from {}): clients are split between two machines; remove the VIP there",
                object.effective_vip().unwrap_or_default(),
                n.node
            );
            if !issues.iter().any(|i| i.message == message) {
                issues.push(Issue::on("DuplicateVIPHolder", &n.node, message));
            }
        }
    }
    for b in backends
        .iter()
        .filter(|b| b.health == BackendHealth::Unhealthy)
    {
        let message = format!(
            "real server {} gets no new connections: {}",
            b.address,
            b.reason.as_deref().unwrap_or("unhealthy")
        );
        issues.push(match &b.node {
            Some(node) => Issue::on("BackendUnhealthy", node, message),
            None => Issue::new("BackendUnhealthy", message),
        });
    }
    if programmed && serving == 0 && input.source.is_none() {
        issues.push(Issue::new(
            no_serving_reason(&backends),
            unusable(&summary, &backends),
        ));
    }
    match issues.first() {
        None => set(DEGRADED, false, "AsExpected", "nothing is failing".into()),
        Some(first) => {
            let mut message = join(issues.iter().take(LISTED).map(|i| &i.message));
            if issues.len() > LISTED {
                message.push_str(&format!("; and {} more", issues.len() - LISTED));
            }
            set(DEGRADED, true, first.reason, message);
        }
    }

    (finish(conditions, director, backends, serving), issues)
}

/// What to do when no node may be a director: which label or selector to satisfy.
fn no_director_nodes(object: &LvsService) -> String {
    match object
        .spec
        .directors
        .as_ref()
        .and_then(|d| d.node_selector.as_ref())
    {
        Some(selector) => {
            let shown =
                crate::api::selector::parse_selector("spec.directors.nodeSelector", selector)
                    .map(|s| s.to_string())
                    .unwrap_or_default();
            format!(
                "no node matches spec.directors.nodeSelector ({shown}): label the nodes that may hold the VIP to match it"
            )
        }
        None => format!(
            "no node is labelled {DEFAULT_DIRECTOR_LABEL}=true: kubectl label node NODE {DEFAULT_DIRECTOR_LABEL}=true"
        ),
    }
}

/// Every error the agents report, as `node N: message`, the form the Degraded message uses.
pub fn node_errors(nodes: &[NodeStatus]) -> Vec<String> {
    nodes
        .iter()
        .filter_map(|n| Some(format!("node {}: {}", n.node, n.error.as_deref()?)))
        .collect()
}

/// A condition, keeping the old `lastTransitionTime` unless the status flips.
pub fn condition(
    old: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: i64,
    now: Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" };
    let last_transition_time = old
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: Some(generation),
        last_transition_time,
    }
}
