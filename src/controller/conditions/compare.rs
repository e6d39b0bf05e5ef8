//! Comparing statuses: whether a new one is worth writing at all, and whether it is worth
//! writing at once.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::CONDITION_TYPES;
use crate::api::LvsServiceStatus;

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
        || old.vip != new.vip
        || old.director != new.director
        || old.ports != new.ports
        || old.backend_summary != new.backend_summary
        || old.backends != new.backends
        || old.directors != new.directors
        || ours(&old.conditions) != ours(&new.conditions)
}

/// Whether two statuses say the same thing, and differ only in how far the nodes have come: the
/// same generation, VIP, director (or a first one), directors' roles, ports and conditions (type,
/// status, reason), with other counts, messages or real servers' states. [`crate::controller`] holds such a change
/// back a moment, so that fifty nodes reporting one after another rewrite an object once, not
/// once each.
pub fn same_verdict(old: &LvsServiceStatus, new: &LvsServiceStatus) -> bool {
    fn verdict(conditions: &[Condition]) -> BTreeMap<&str, (&str, &str, Option<i64>)> {
        (conditions.iter())
            .filter(|c| CONDITION_TYPES.contains(&c.type_.as_str()))
            .map(|c| {
                let verdict = (c.status.as_str(), c.reason.as_str(), c.observed_generation);
                (c.type_.as_str(), verdict)
            })
            .collect()
    }
    fn roles(s: &LvsServiceStatus) -> Vec<(&str, &str)> {
        (s.directors.iter())
            .map(|d| (d.node.as_str(), d.state.as_str()))
            .collect()
    }
    // The first director to report is progress too (its real servers' reports follow within
    // the moment); a director that changes is a failover, written at once.
    old.observed_generation == new.observed_generation
        && old.vip == new.vip
        && (old.director.is_none() || old.director == new.director)
        && old.ports == new.ports
        && (old.directors.is_empty() || roles(old) == roles(new))
        && verdict(&old.conditions) == verdict(&new.conditions)
}

/// The condition of `type_`, if set.
pub fn find<'a>(status: &'a LvsServiceStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of `type_` is True.
pub fn is_true(status: &LvsServiceStatus, type_: &str) -> bool {
    find(status, type_).is_some_and(|c| c.status == "True")
}
