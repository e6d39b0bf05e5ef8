//! `LvsNodeReport`: what one node's agent did, for every LvsService it has a part in.
//!
//! Each agent writes exactly one object, its node's report (named after the node), and nothing
//! else: no LvsService status. A ValidatingAdmissionPolicy in the chart holds it to that (the
//! node comes from the agent's Pod-bound token, as NodeRestriction does for kubelets), so one
//! compromised node cannot rewrite what the directors program from. The controller reads every
//! report and aggregates the entries naming an object into that object's status: counts, the
//! active director, per-backend health, the nodes that lag or fail. An object's status thus
//! stays the size of its backends however many nodes report, and a change on one node rewrites
//! one small report instead of every object.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::NodeStatus;

/// One node's account of every LvsService it has a part in, written by that node's agent only.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "lvs-operator.io",
    version = "v1alpha1",
    kind = "LvsNodeReport",
    plural = "lvsnodereports",
    shortname = "lvsreport",
    derive = "PartialEq",
    doc = "What one node's agent programmed for each LvsService, written by that agent alone."
)]
#[serde(rename_all = "camelCase")]
pub struct LvsNodeReportSpec {
    /// One entry per LvsService this node has a part in and something to say about: a director,
    /// or a real server with an error. The rest are in `realServers`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10000))]
    pub services: Vec<ServiceReport>,

    /// The LvsServices this node serves as a real server with everything in place (programmed,
    /// the VIP on `lo` and the ARP sysctls verified), one short string each:
    /// `namespace/name@generation#uid-prefix`. Kept apart so that a node selected by a thousand
    /// objects writes a report of tens of kilobytes, not hundreds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10000))]
    pub real_servers: Vec<String>,
}

/// How many characters of an object's uid a `realServers` entry carries: enough to tell an object
/// from an earlier one of the same name.
const UID_PREFIX: usize = 8;

/// A real server's entry with everything in place, as `realServers` holds it; `None` for an entry
/// with more to say.
pub fn compact(object: &str, uid: &str, status: &NodeStatus) -> Option<String> {
    let plain = NodeStatus {
        node: status.node.clone(),
        roles: vec![super::NodeRole::Backend],
        observed_generation: status.observed_generation,
        programmed: true,
        arp_verified: true,
        ..Default::default()
    };
    (*status == plain).then(|| {
        let uid: String = uid.chars().take(UID_PREFIX).collect();
        format!("{object}@{}#{uid}", status.observed_generation)
    })
}

/// This node's part in one LvsService.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceReport {
    /// The LvsService, `namespace/name`.
    pub object: String,
    /// Its `metadata.uid`: an entry for an earlier object of the same name counts for nothing.
    pub uid: String,
    /// What this node did for it.
    pub status: NodeStatus,
}

impl LvsNodeReport {
    /// The entry for the object `object` (`namespace/name`) with `uid`, under this node's name.
    pub fn entry(&self, object: &str, uid: &str) -> Option<NodeStatus> {
        let node = self.metadata.name.clone().unwrap_or_default();
        if let Some(s) = self
            .spec
            .services
            .iter()
            .find(|s| s.object == object && s.uid == uid)
        {
            return Some(NodeStatus {
                node,
                ..s.status.clone()
            });
        }
        let short: String = uid.chars().take(UID_PREFIX).collect();
        self.spec.real_servers.iter().find_map(|e| {
            let (id, rest) = e.rsplit_once('@')?;
            let (generation, entry_uid) = rest.split_once('#')?;
            if id != object || entry_uid != short {
                return None;
            }
            Some(NodeStatus {
                node: node.clone(),
                roles: vec![super::NodeRole::Backend],
                observed_generation: generation.parse().ok()?,
                programmed: true,
                arp_verified: true,
                ..Default::default()
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::NodeRole;

    #[test]
    fn a_real_server_with_everything_in_place_is_one_short_string_and_reads_back_the_same() {
        let ok = NodeStatus {
            node: "rs1".into(),
            roles: vec![NodeRole::Backend],
            observed_generation: 3,
            programmed: true,
            arp_verified: true,
            ..Default::default()
        };
        let uid = "8c6f1a2b-0000-4000-8000-000000000000";
        let short = compact("default/web", uid, &ok).unwrap();
        assert_eq!(short, "default/web@3#8c6f1a2b");
        let report = LvsNodeReport::new(
            "rs1",
            LvsNodeReportSpec {
                real_servers: vec![short],
                ..Default::default()
            },
        );
        assert_eq!(report.entry("default/web", uid), Some(ok.clone()));
        assert_eq!(report.entry("default/web", "another-uid"), None);
        let failing = NodeStatus {
            arp_verified: false,
            error: Some("VIP not on lo".into()),
            ..ok
        };
        assert_eq!(compact("default/web", uid, &failing), None);
    }
}
