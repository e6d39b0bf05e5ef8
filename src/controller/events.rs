//! Kubernetes Events for the transitions users want to see in `kubectl describe`.
//!
//! [`transitions`] is pure: it compares the status the object had with the one just computed, so
//! an event fires once per transition, and after a controller restart only if the status it reads
//! back does not already say it. Every problem behind Degraded gets a Warning when it appears: it
//! is new when the old Degraded message did not mention it. The reconciler rate-limits them, so a
//! flapping real server cannot flood the object's events.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType};

use super::conditions::{self, ACCEPTED, DEGRADED, Issue, PROGRAMMED};
use crate::api::{BackendHealth, LvsServiceStatus};

/// The action every event names: they all come out of a reconcile.
const ACTION: &str = "Reconcile";

/// The events to publish for the change from `old` to `new`; `issues` are the problems behind
/// the new Degraded condition.
pub fn transitions(old: &LvsServiceStatus, new: &LvsServiceStatus, issues: &[Issue]) -> Vec<Event> {
    let mut events = Vec::new();
    let mut push = |type_, reason: &str, note: String| {
        events.push(Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: ACTION.into(),
            secondary: None,
        })
    };

    let old_accepted = conditions::find(old, ACCEPTED);
    if let Some(c) = conditions::find(new, ACCEPTED) {
        let changed = old_accepted.is_none_or(|o| o.status != c.status || o.reason != c.reason);
        if changed && c.status == "True" {
            push(EventType::Normal, "Accepted", c.message.clone());
        }
        let conflict_changed = old_accepted.is_none_or(|o| o.message != c.message) || changed;
        let refused = ["VIPConflict", "VIPNotAllowed", "AllocationFailed"];
        if c.status == "False" && refused.contains(&c.reason.as_str()) && conflict_changed {
            push(EventType::Warning, &c.reason, c.message.clone());
        }
    }

    if conditions::is_true(new, PROGRAMMED) && !conditions::is_true(old, PROGRAMMED) {
        let note = conditions::find(new, PROGRAMMED)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        push(EventType::Normal, "Programmed", note);
    }

    if new.director != old.director {
        match (&old.director, &new.director) {
            (Some(was), Some(now)) => {
                // The new director's own account of the takeover.
                let takeover = old
                    .nodes
                    .iter()
                    .find(|n| &n.node == now)
                    .and_then(|n| n.takeover.as_ref());
                let note = match takeover {
                    Some(t) if t.from.as_deref() == Some(was.as_str()) => match t.silent_ms {
                        Some(ms) => format!(
                            "{now} took the VIP over from {was}, whose heartbeats stopped ({ms} ms without one)"
                        ),
                        None => format!("{was} handed the VIP over to {now}"),
                    },
                    _ => format!("{now} holds the VIP now (was {was})"),
                };
                push(EventType::Normal, "Failover", note);
            }
            (None, Some(now)) => push(
                EventType::Normal,
                "DirectorChanged",
                format!("{now} holds the VIP now"),
            ),
            (Some(was), None) => push(
                EventType::Warning,
                "DirectorChanged",
                format!("no director holds the VIP (was {was})"),
            ),
            (None, None) => {}
        }
    }

    for b in &new.backends {
        let was_unhealthy = old
            .backends
            .iter()
            .any(|o| o.address == b.address && o.health == BackendHealth::Unhealthy);
        if was_unhealthy && b.health == BackendHealth::Healthy {
            events.push(Event {
                type_: EventType::Normal,
                reason: "BackendHealthy".into(),
                note: Some(format!(
                    "real server {} takes new connections again",
                    b.address
                )),
                action: ACTION.into(),
                secondary: b.node.as_deref().map(node_reference),
            });
        }
    }

    let reported = conditions::find(old, DEGRADED)
        .filter(|c| c.status == "True")
        .map(|c| c.message.as_str())
        .unwrap_or("");
    for issue in issues {
        if !reported.contains(issue.message.as_str()) {
            events.push(Event {
                type_: EventType::Warning,
                reason: issue.reason.into(),
                note: Some(issue.message.clone()),
                action: ACTION.into(),
                secondary: issue.node.as_deref().map(node_reference),
            });
        }
    }
    events
}

/// The Node an event is also about.
fn node_reference(node: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(node.into()),
        ..Default::default()
    }
}
