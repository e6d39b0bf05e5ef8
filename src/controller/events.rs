//! Kubernetes Events for the transitions users want to see in `kubectl describe`.
//!
//! [`transitions`] is pure: it compares the status the object had with the one just computed, so
//! an event fires once per transition, and after a controller restart only if the status it reads
//! back does not already say it. Node errors are compared with the old Degraded message, which
//! lists every node error the controller reported last time.

use kube::runtime::events::{Event, EventType};

use super::conditions::{self, ACCEPTED, DEGRADED, PROGRAMMED};
use crate::api::LvsServiceStatus;

/// The action every event names: they all come out of a reconcile.
const ACTION: &str = "Reconcile";

/// The events to publish for the change from `old` to `new`. `node_errors` are the `node N: ...`
/// strings of the agents' current reports.
pub fn transitions(
    old: &LvsServiceStatus,
    new: &LvsServiceStatus,
    node_errors: &[String],
) -> Vec<Event> {
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
        if c.status == "False" && c.reason == "VIPConflict" && conflict_changed {
            push(EventType::Warning, "VIPConflict", c.message.clone());
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
            (_, Some(now)) => {
                let was = old
                    .director
                    .as_deref()
                    .map(|w| format!(" (was {w})"))
                    .unwrap_or_default();
                push(
                    EventType::Normal,
                    "DirectorChanged",
                    format!("{now} holds the VIP now{was}"),
                );
            }
            (Some(was), None) => push(
                EventType::Warning,
                "DirectorChanged",
                format!("no director holds the VIP (was {was})"),
            ),
            (None, None) => {}
        }
    }

    let reported = conditions::find(old, DEGRADED)
        .map(|c| c.message.as_str())
        .unwrap_or("");
    for error in node_errors {
        if !reported.contains(error.as_str()) {
            push(EventType::Warning, "NodeError", error.clone());
        }
    }
    events
}
