//! Kubernetes Events for the transitions users want to see in `kubectl describe`.
//!
//! [`transitions`] is pure: it compares the status the object had with the one just computed, so
//! an event fires once per transition, and after a controller restart only if the status it reads
//! back does not already say it. Every problem behind Degraded gets a Warning when it appears: it
//! is new when the old Degraded message did not mention it. Events of one reason in one
//! transition are one event that quotes the first few. The reconciler rate-limits them, per
//! object and across all objects, so neither a flapping real server nor a node that goes silent
//! under a thousand objects can flood the API server with events.

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

    // Real servers joining, draining and leaving (a selected node, an endpoint); not those of a
    // first status, which the Programmed event covers.
    if old.observed_generation.is_some() {
        let named = |b: &crate::api::BackendStatus| match &b.node {
            Some(node) => format!("{} (node {node})", b.address),
            None => b.address.clone(),
        };
        for b in &new.backends {
            match old.backends.iter().find(|o| o.address == b.address) {
                None => events.push(Event {
                    type_: EventType::Normal,
                    reason: "BackendJoined".into(),
                    note: Some(format!("real server {} joined", named(b))),
                    action: ACTION.into(),
                    secondary: b.node.as_deref().map(node_reference),
                }),
                Some(o) if b.draining && !o.draining => events.push(Event {
                    type_: EventType::Normal,
                    reason: "BackendDraining".into(),
                    note: Some(format!(
                        "real server {} drains: weight 0, its connections go on to their end",
                        named(b)
                    )),
                    action: ACTION.into(),
                    secondary: b.node.as_deref().map(node_reference),
                }),
                Some(_) => {}
            }
        }
        for o in &old.backends {
            if !new.backends.iter().any(|b| b.address == o.address) {
                events.push(Event {
                    type_: EventType::Normal,
                    reason: "BackendLeft".into(),
                    note: Some(format!(
                        "real server {} left: the directors drain it (weight 0 while connections last, then removed)",
                        named(o)
                    )),
                    action: ACTION.into(),
                    secondary: o.node.as_deref().map(node_reference),
                });
            }
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
    grouped(events)
}

/// How many notes of one reason an event quotes; the rest are counted.
const QUOTED: usize = 3;

/// `events` with those of one reason folded into one: fifty real servers whose node went silent
/// make one BackendUnhealthy event on the object, not fifty (and a thousand objects fifty
/// thousand). Each keeps its place (the first of its reason); one alone stays as it was.
fn grouped(events: Vec<Event>) -> Vec<Event> {
    let mut out: Vec<(Event, usize)> = Vec::new();
    for e in events {
        match out
            .iter_mut()
            .find(|(o, _)| o.reason == e.reason && o.type_ == e.type_)
        {
            Some((first, n)) => {
                *n += 1;
                first.secondary = None;
                if *n <= QUOTED {
                    let note = first.note.get_or_insert_with(String::new);
                    note.push_str("; ");
                    note.push_str(e.note.as_deref().unwrap_or_default());
                }
            }
            None => out.push((e, 1)),
        }
    }
    out.into_iter()
        .map(|(mut e, n)| {
            if n > QUOTED {
                let note = e.note.get_or_insert_with(String::new);
                note.push_str(&format!("; and {} more like these", n - QUOTED));
            }
            e
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(type_: EventType, reason: &str, note: &str) -> Event {
        Event {
            type_,
            reason: reason.into(),
            note: Some(note.into()),
            action: ACTION.into(),
            secondary: Some(node_reference("n")),
        }
    }

    #[test]
    fn events_of_one_reason_are_one_event_quoting_the_first_three() {
        let mut events = vec![event(
            EventType::Normal,
            "Programmed",
            "every node applied it",
        )];
        for i in 1..=5 {
            let note = format!("real server 10.0.0.{i} gets no new connections");
            events.push(event(EventType::Warning, "BackendUnhealthy", &note));
        }
        let out = grouped(events);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].note.as_deref(), Some("every node applied it"));
        assert!(out[0].secondary.is_some(), "one alone stays as it was");
        assert_eq!(
            out[1].note.as_deref(),
            Some(
                "real server 10.0.0.1 gets no new connections; real server 10.0.0.2 gets no new connections; real server 10.0.0.3 gets no new connections; and 2 more like these"
            )
        );
        assert!(out[1].secondary.is_none(), "several nodes: none named");
    }
}
