//! The rows of `status.backends`: each real server with the weight the directors use and its
//! health, from its node's heartbeat and report and the active director's checks; and which of
//! them take new connections.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::StatusInput;
use crate::api::{BackendHealth, BackendStatus, NodeStatus, RealServerCheck};
use crate::controller::backends::ResolvedBackend;

/// One real server's status: the weight the directors use and its health, from its node's
/// heartbeat and report.
pub(super) fn backend_status(
    b: &ResolvedBackend,
    old: &[BackendStatus],
    reports: &BTreeMap<&str, &NodeStatus>,
    director_report: Option<&NodeStatus>,
    generation: i64,
    input: &StatusInput<'_>,
    timeout: &str,
) -> BackendStatus {
    let report = b.node.as_deref().and_then(|n| reports.get(n));
    let address = b.address.to_string();
    // What the active director's health checks say of it, if they check it.
    let checked = director_report.and_then(|d| d.checks.iter().find(|c| c.address == address));
    // `by_node`: the real server's own node fails it (silent, or its agent reports it cannot
    // serve), which the controller answers with weight 0. A failing check of the director is
    // the director's to act on (it zeroes the weight itself and restores it when the check
    // passes), and is named first when both fail: it is what clients meet.
    let failing_check = checked.filter(|c| !c.healthy);
    let (health, reason, by_node) = match b.node.as_deref() {
        Some(node) if !input.reports(node) => (
            BackendHealth::Unhealthy,
            Some(format!(
                "node {node} has not reported within {timeout}, so nothing keeps the VIP on its lo"
            )),
            true,
        ),
        Some(node) => match report {
            Some(r) if r.observed_generation == generation && !r.arp_verified => {
                match failing_check {
                    Some(_) => {
                        let (h, why) = checked_health(failing_check);
                        (h, why, true)
                    }
                    None => (
                        BackendHealth::Unhealthy,
                        Some(match &r.error {
                            Some(e) => format!("node {node}: {e}"),
                            None => format!("node {node} does not hold the VIP on lo"),
                        }),
                        true,
                    ),
                }
            }
            Some(r) if r.observed_generation == generation => {
                let (h, why) = checked_health(checked);
                (h, why, false)
            }
            _ => (BackendHealth::Unknown, None, false),
        },
        None => match checked {
            Some(_) => {
                let (h, why) = checked_health(checked);
                (h, why, false)
            }
            // No agent and no check can tell: taken at its weight.
            None => (BackendHealth::Unknown, None, false),
        },
    };
    let since = old
        .iter()
        .find(|o| o.address == address && o.health == health)
        .and_then(|o| o.last_transition_time.clone())
        .unwrap_or(Time(input.now));
    // The directors zero a real server their own checks fail; the weight here is the one the
    // controller asks for (0 for a draining one, or one whose node fails it).
    BackendStatus {
        weight: if b.draining || by_node { 0 } else { b.weight },
        address,
        node: b.node.clone(),
        programmed: false,
        arp_verified: b.node.as_deref().is_some_and(|n| input.reports(n))
            && report.is_some_and(|r| r.arp_verified),
        draining: b.draining,
        health,
        reason,
        last_transition_time: Some(since),
    }
}

/// Health from the director's checks alone: passing is Healthy, failing Unhealthy with the
/// checks' reason; not checked (checks off, or not yet) the node's verification stands.
fn checked_health(check: Option<&RealServerCheck>) -> (BackendHealth, Option<String>) {
    match check {
        Some(c) if !c.healthy => (
            BackendHealth::Unhealthy,
            Some(format!(
                "health check failed: {}",
                c.reason.as_deref().unwrap_or("no answer")
            )),
        ),
        _ => (BackendHealth::Healthy, None),
    }
}

/// A real server known to take new connections: weight > 0, not draining, and Healthy (or outside
/// the cluster, where no agent can say otherwise). One whose node has not reported yet gets its
/// share from the director but is not counted until it is verified.
pub fn serves(b: &BackendStatus) -> bool {
    b.weight > 0
        && !b.draining
        && match b.health {
            BackendHealth::Healthy => true,
            BackendHealth::Unknown => b.node.is_none(),
            BackendHealth::Unhealthy => false,
        }
}

/// `NoHealthyBackend` when every real server is there and unhealthy (the checks or their nodes
/// fail them), else `NoUsableBackend` (none resolved, all draining or of weight 0, ...).
pub(super) fn no_serving_reason(backends: &[BackendStatus]) -> &'static str {
    if !backends.is_empty()
        && backends
            .iter()
            .all(|b| b.health == BackendHealth::Unhealthy)
    {
        "NoHealthyBackend"
    } else {
        "NoUsableBackend"
    }
}

/// Why no real server takes connections: the summary and each one's reason.
pub(super) fn unusable(summary: &str, backends: &[BackendStatus]) -> String {
    if backends.is_empty() {
        return format!("{summary}: none is resolved");
    }
    let why: Vec<String> = backends
        .iter()
        .map(|b| {
            let reason = match (&b.reason, b.draining, b.weight, &b.node) {
                (Some(r), ..) => r.clone(),
                (None, true, ..) => "draining".into(),
                (None, false, 0, _) => "weight 0".into(),
                (None, false, _, Some(node)) if b.health == BackendHealth::Unknown => {
                    format!("node {node} has not verified the VIP on lo yet")
                }
                _ => "not programmed".into(),
            };
            format!("{}: {reason}", b.address)
        })
        .collect();
    format!("{summary} ({})", why.join("; "))
}
