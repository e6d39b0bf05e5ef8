//! The status the controller owns, computed from what it resolved and what the agents reported.
//!
//! [`compute_status`] is a pure function of the object (its spec, generation, old conditions and
//! the agents' `status.nodes`), the acceptance verdict, the resolved backends, the expected nodes
//! and the time: the reconciler applies its result only when [`differs`] says it changed, which
//! keeps the controller's own writes from feeding its watch forever.
//!
//! The conditions, all with `observedGeneration` = `metadata.generation`:
//! - [`ACCEPTED`]: the object is valid and holds its VIP:ports. **An agent never programs an
//!   object whose Accepted condition is False with `observedGeneration` equal to the object's
//!   generation** (reason `InvalidSpec` or `VIPConflict`). Before the controller has spoken on a
//!   generation the agents place valid objects themselves, in the same age order as
//!   [`super::conflicts`], so the older object wins there too.
//! - [`PROGRAMMED`]: every expected node (each director by selector, each real server node by
//!   address) reports `programmed` for the current generation.
//! - [`READY`]: programmed, exactly one director active (that is `status.director`), and at least
//!   one usable backend (weight > 0, not draining, ARP verified when it is a node).
//! - [`DEGRADED`]: something is failing; the reason names the first of: `NodeError`, `NoDirector`,
//!   `MultipleActiveDirectors`, `BackendNotVerified`, `NoUsableBackend`.
//!
//! `lastTransitionTime` moves only when a condition's status flips.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use super::backends::{ExpectedNodes, ResolvedBackend};
use crate::api::{BackendStatus, LvsService, LvsServiceStatus, NodeStatus};
use crate::core::Conflict;

/// The object is valid and not in conflict. False at the current generation keeps every agent
/// from programming it (see the module doc).
pub const ACCEPTED: &str = "Accepted";
/// Every expected node applied the current generation.
pub const PROGRAMMED: &str = "Programmed";
/// Programmed, one active director, at least one usable backend.
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
}

/// Everything [`compute_status`] reads besides the object.
#[derive(Debug, Clone)]
pub struct StatusInput<'a> {
    pub acceptance: &'a Acceptance,
    pub backends: &'a [ResolvedBackend],
    pub expected: &'a ExpectedNodes,
    pub now: Timestamp,
}

/// One problem feeding the Degraded condition.
struct Issue {
    reason: &'static str,
    message: String,
}

/// The controller's part of the status. `nodes` is left empty: the agents own it.
pub fn compute_status(object: &LvsService, input: &StatusInput<'_>) -> LvsServiceStatus {
    let generation = object.metadata.generation.unwrap_or_default();
    let old = object.status.clone().unwrap_or_default();
    let reports: BTreeMap<&str, &NodeStatus> =
        old.nodes.iter().map(|n| (n.node.as_str(), n)).collect();
    let current = |n: &NodeStatus| n.observed_generation == generation && n.programmed;

    let accepted = matches!(input.acceptance, Acceptance::Accepted);
    let active: Vec<&str> = old
        .nodes
        .iter()
        .filter(|n| n.active)
        .map(|n| n.node.as_str())
        .collect();
    let director = match active.as_slice() {
        [one] if accepted => Some(one.to_string()),
        _ => None,
    };
    let director_programmed = director
        .as_deref()
        .and_then(|d| reports.get(d))
        .is_some_and(|n| current(n));

    let backends: Vec<BackendStatus> = input
        .backends
        .iter()
        .map(|b| BackendStatus {
            address: b.address.to_string(),
            node: b.node.clone(),
            weight: b.weight,
            programmed: director_programmed,
            arp_verified: b
                .node
                .as_deref()
                .and_then(|n| reports.get(n))
                .is_some_and(|n| n.arp_verified),
            draining: b.draining,
        })
        .collect();
    // A rejected object is in no kernel, so none of its backends takes traffic.
    let usable = if accepted {
        backends.iter().filter(|b| usable(b)).count()
    } else {
        0
    };

    let expected = input.expected.all();
    let pending: Vec<&str> = expected
        .iter()
        .copied()
        .filter(|n| !reports.get(n).is_some_and(|r| current(r)))
        .collect();
    let node_errors = node_errors(&old.nodes);

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
    }

    if !accepted {
        let message = "the object is not accepted, so no node programs it".to_string();
        set(PROGRAMMED, false, "NotAccepted", message.clone());
        set(READY, false, "NotAccepted", message.clone());
        set(DEGRADED, false, "NotAccepted", message);
        return finish(conditions, generation, director, backends, usable);
    }

    let programmed = !input.expected.directors.is_empty() && pending.is_empty();
    if input.expected.directors.is_empty() {
        set(
            PROGRAMMED,
            false,
            "NoDirectorNodes",
            "no node matches the director selector".into(),
        );
    } else if !pending.is_empty() {
        let failing: Vec<&String> = node_errors
            .iter()
            .filter(|e| {
                pending
                    .iter()
                    .any(|p| e.starts_with(&format!("node {p}: ")))
            })
            .collect();
        if failing.is_empty() {
            set(
                PROGRAMMED,
                false,
                "Pending",
                format!(
                    "waiting for {} to apply generation {generation}",
                    list(&pending)
                ),
            );
        } else {
            set(PROGRAMMED, false, "NodeError", join(failing));
        }
    } else {
        set(
            PROGRAMMED,
            true,
            "Programmed",
            format!(
                "{} applied generation {generation}",
                count(expected.len(), "node", "nodes")
            ),
        );
    }

    let summary = format!("{usable}/{} backends usable", backends.len());
    if !programmed {
        set(
            READY,
            false,
            "NotProgrammed",
            "not every node has applied the current generation".into(),
        );
    } else if active.is_empty() {
        set(
            READY,
            false,
            "NoActiveDirector",
            "no director holds the VIP".into(),
        );
    } else if active.len() > 1 {
        set(
            READY,
            false,
            "MultipleActiveDirectors",
            format!("{} all claim to hold the VIP", list(&active)),
        );
    } else if usable == 0 {
        set(READY, false, "NoUsableBackend", summary.clone());
    } else {
        set(
            READY,
            true,
            "Ready",
            format!("director {} serves with {summary}", active[0]),
        );
    }

    let mut issues = Vec::new();
    if !node_errors.is_empty() {
        issues.push(Issue {
            reason: "NodeError",
            message: join(node_errors.iter()),
        });
    }
    if input.expected.directors.is_empty() {
        issues.push(Issue {
            reason: "NoDirector",
            message: "no node matches the director selector".into(),
        });
    } else if programmed && active.is_empty() {
        issues.push(Issue {
            reason: "NoDirector",
            message: "no director holds the VIP".into(),
        });
    }
    if active.len() > 1 {
        issues.push(Issue {
            reason: "MultipleActiveDirectors",
            message: format!("{} all claim to hold the VIP", list(&active)),
        });
    }
    let unverified: Vec<String> = backends
        .iter()
        .filter(|b| !b.arp_verified)
        .filter_map(|b| {
            let node = b.node.as_deref()?;
            let report = reports.get(node)?;
            (report.observed_generation == generation && report.programmed).then(|| {
                format!(
                    "backend {} (node {node}) has not verified the VIP on lo and the ARP sysctls",
                    b.address
                )
            })
        })
        .collect();
    if !unverified.is_empty() {
        issues.push(Issue {
            reason: "BackendNotVerified",
            message: join(unverified.iter()),
        });
    }
    if programmed && usable == 0 {
        issues.push(Issue {
            reason: "NoUsableBackend",
            message: summary,
        });
    }
    match issues.first() {
        None => set(DEGRADED, false, "AsExpected", "nothing is failing".into()),
        Some(first) => {
            let message = join(issues.iter().map(|i| &i.message));
            set(DEGRADED, true, first.reason, message);
        }
    }

    finish(conditions, generation, director, backends, usable)
}

fn finish(
    conditions: Vec<Condition>,
    generation: i64,
    director: Option<String>,
    backends: Vec<BackendStatus>,
    usable: usize,
) -> LvsServiceStatus {
    LvsServiceStatus {
        observed_generation: Some(generation),
        conditions,
        director,
        backend_summary: Some(format!("{usable}/{}", backends.len())),
        backends,
        nodes: Vec::new(),
    }
}

/// Every error the agents report, as `node N: message`, the form the Degraded message uses.
pub fn node_errors(nodes: &[NodeStatus]) -> Vec<String> {
    nodes
        .iter()
        .filter_map(|n| Some(format!("node {}: {}", n.node, n.error.as_deref()?)))
        .collect()
}

/// A backend that takes new connections: weight > 0, not draining, and ARP verified when it is a
/// node (an external server has no agent to verify it, so it is taken on trust).
pub fn usable(b: &BackendStatus) -> bool {
    b.weight > 0 && !b.draining && (b.node.is_none() || b.arp_verified)
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

/// Whether `new` says anything `old` does not, in the fields the controller owns. Conditions
/// compare without `lastTransitionTime`, so recomputing at a later time is no change.
pub fn differs(old: &LvsServiceStatus, new: &LvsServiceStatus) -> bool {
    fn ours(conditions: &[Condition]) -> BTreeMap<&str, (&str, &str, &str, Option<i64>)> {
        conditions
            .iter()
            .filter(|c| CONDITION_TYPES.contains(&c.type_.as_str()))
            .map(|c| {
                (
                    c.type_.as_str(),
                    (
                        c.status.as_str(),
                        c.reason.as_str(),
                        c.message.as_str(),
                        c.observed_generation,
                    ),
                )
            })
            .collect()
    }
    old.observed_generation != new.observed_generation
        || old.director != new.director
        || old.backend_summary != new.backend_summary
        || old.backends != new.backends
        || ours(&old.conditions) != ours(&new.conditions)
}

/// The condition of `type_`, if set.
pub fn find<'a>(status: &'a LvsServiceStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of `type_` is True.
pub fn is_true(status: &LvsServiceStatus, type_: &str) -> bool {
    find(status, type_).is_some_and(|c| c.status == "True")
}

fn list(names: &[&str]) -> String {
    let unique: BTreeSet<&str> = names.iter().copied().collect();
    let names: Vec<&str> = unique.into_iter().collect();
    match names.len() {
        1 => format!("node {}", names[0]),
        _ => format!("nodes {}", names.join(", ")),
    }
}

fn join<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    items
        .into_iter()
        .map(|s| s.as_ref().to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

fn count(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}
