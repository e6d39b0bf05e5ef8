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
    /// One entry per LvsService this node has a part in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10000))]
    pub services: Vec<ServiceReport>,
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
    /// The entry for the object `object` (`namespace/name`) with `uid`.
    pub fn entry(&self, object: &str, uid: &str) -> Option<&NodeStatus> {
        self.spec
            .services
            .iter()
            .find(|s| s.object == object && s.uid == uid)
            .map(|s| &s.status)
    }
}
