//! `LvsService.status`: what the controller and the agents report back.
//!
//! See the parent module for who writes which part.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Observed state of an LvsService.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LvsServiceStatus {
    /// The generation of the spec the controller last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The VIP in use (the VIP column): `spec.vip`, or the address the controller allocated from
    /// an LvsAddressPool when `spec.vip` is left out, kept for the object's life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<String>,

    /// Accepted (valid and not in conflict), Programmed (every selected node applied the current
    /// generation), Ready (programmed, with an active director and at least one usable backend)
    /// and Degraded (some nodes or backends are failing; the reason says which).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The node that holds the VIP now: a director whose agent reports holding it, and reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub director: Option<String>,

    /// Every port of the virtual service, e.g. `80/TCP,8080/TCP` (the PORTS column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<String>,

    /// Real servers taking new connections through the active director, out of all resolved
    /// ones, e.g. `3/3` (the BACKENDS column). `0/3` while no director serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_summary: Option<String>,

    /// Every resolved real server and its state. Atomic: the controller, its one writer, sends
    /// the whole list each time, and the object's managedFields then name the list, not each of
    /// its fields (with fifty real servers, that had doubled the object every agent decodes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub backends: Vec<BackendStatus>,

    /// Every director candidate: the active one, the standbys and those that do not report.
    /// Atomic, as `backends`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub directors: Vec<DirectorStatus>,

    /// The nodes that lag or fail for this object, at most ten, by name: not reporting, not at
    /// the current generation yet, or reporting an error. However many nodes a selector picks,
    /// the status stays small; `laggingNodeCount` says how many there are in all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub lagging_nodes: Vec<String>,

    /// How many nodes lag or fail (see `laggingNodes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lagging_node_count: Option<i32>,

    /// Not written any more: each node's agent reports in its LvsNodeReport, and the controller
    /// reads the entries naming this object from there (an entry an older agent left here is
    /// ignored).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["node".into()]))]
    pub nodes: Vec<NodeStatus>,
}

/// State of one real server.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BackendStatus {
    /// The real server's address.
    pub address: String,
    /// The node that has this address, when it is a node of the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The weight the controller gives the directors: the configured one, or 0 while draining or
    /// while its node fails it (silent, or without the VIP on `lo`). A real server that only the
    /// active director's own checks fail keeps this weight here and reads `health: Unhealthy`: that
    /// director gives it 0 in its table itself, and restores it when the checks pass, without
    /// waiting for the API server.
    #[serde(default)]
    pub weight: i32,
    /// The active director has this real server in its IPVS table at the current generation.
    #[serde(default)]
    pub programmed: bool,
    /// The real server's agent has verified the VIP on `lo` and the ARP sysctls. False when the
    /// address is not a node running an agent (for example a server outside the cluster).
    #[serde(default)]
    pub arp_verified: bool,
    /// The endpoint is terminating and the real server is being drained.
    #[serde(default)]
    pub draining: bool,
    /// Whether it takes new connections: the directors give Unhealthy ones weight 0 until they
    /// are Healthy again.
    #[serde(default)]
    pub health: BackendHealth,
    /// Why it is not Healthy, e.g. `node rs2 has not reported within 30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When `health` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
}

/// The health of one real server.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BackendHealth {
    /// Verified: it takes new connections.
    Healthy,
    /// It must not take new connections (weight 0); `reason` says why.
    Unhealthy,
    /// Not known yet (its node has not reported at this generation, or no agent can tell): it
    /// keeps its configured weight.
    #[default]
    Unknown,
}

/// The role a node plays for one LvsService.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
pub enum NodeRole {
    /// The node may hold the VIP and runs IPVS for it.
    Director,
    /// The node is a real server: VIP on `lo` and ARP sysctls.
    Backend,
}

/// What one node's agent reports for one LvsService.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// Node name.
    pub node: String,
    /// The roles this node plays for the service.
    #[serde(default)]
    pub roles: Vec<NodeRole>,
    /// The spec generation this node applied last.
    #[serde(default)]
    pub observed_generation: i64,
    /// For a director: it holds the VIP now (false on a hot standby).
    #[serde(default)]
    pub active: bool,
    /// Everything for this node's roles is in the kernel at `observedGeneration`.
    #[serde(default)]
    pub programmed: bool,
    /// For a real server: the VIP is on `lo` and the ARP sysctls hold their values.
    #[serde(default)]
    pub arp_verified: bool,
    /// What failed on this node, empty when nothing did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For a director: what its health checks say of each real server it checks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<RealServerCheck>,
    /// For a director with peers: the IPVS connection-sync daemons it runs, `master` where it
    /// holds a VIP, `backup` where it stands by.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sync: Vec<String>,
    /// For a director: the MAC of its interface for the VIP, which tells it from a foreign holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// For the active director: how the VIP came to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub takeover: Option<TakeoverStatus>,
    /// For a director: MACs other than the active director's that answer ARP/NDP for the VIP (a
    /// second holder; there should be none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub foreign_holders: Vec<String>,
    /// For a director: the other directors of the VIP whose heartbeats it does not hear.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreachable_peers: Vec<String>,
}

/// How the active director got the VIP.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct TakeoverStatus {
    /// The director that held it before, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// How long that director had been silent when it was declared dead (an unplanned
    /// failover); absent when it handed the VIP over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silent_ms: Option<i64>,
    /// When, RFC 3339.
    pub at: String,
}

/// A director candidate of the service and its state.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DirectorStatus {
    pub node: String,
    /// `Active` (holds the VIP), `Standby` (programmed, ready to take it) or `Unreachable` (its
    /// agent does not report).
    pub state: String,
    /// Its connection-sync daemons (`master`, `backup`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sync: Vec<String>,
}

/// A director's verdict on one real server (over every port it checks).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct RealServerCheck {
    /// The real server's address.
    pub address: String,
    /// Whether it passes (it takes new connections).
    pub healthy: bool,
    /// Why it fails, e.g. `connection refused`, `timeout after 1s`, `HTTP 503`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
