//! `LvsService.spec`: one virtual service (a VIP and its ports) and where its real servers come from.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::LvsServiceStatus;
pub use crate::ipvs::{Protocol, Scheduler};

/// An LVS Direct Routing virtual service: a virtual IP on a director node, balanced with IPVS over
/// real servers that answer clients directly.
///
/// The director holds the VIP on its LAN interface and forwards each new connection to a real
/// server by rewriting only the destination MAC address (`ipvsadm -g`). Every real server holds the
/// VIP on `lo` with `arp_ignore=1` and `arp_announce=2`, so only the director answers ARP for it,
/// and replies go from the real server straight to the client.
// kube-derive takes one `printcolumn(...)` per column, which clippy reads as repeated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "lvs-operator.io",
    version = "v1alpha1",
    kind = "LvsService",
    plural = "lvsservices",
    shortname = "lvs",
    namespaced,
    status = "LvsServiceStatus",
    derive = "PartialEq",
    doc = "An LVS Direct Routing virtual service: a VIP, its ports, and the real servers behind it.",
    printcolumn(name = "VIP", type_ = "string", json_path = ".status.vip"),
    printcolumn(name = "Ports", type_ = "string", json_path = ".status.ports"),
    printcolumn(name = "Scheduler", type_ = "string", json_path = ".spec.scheduler"),
    printcolumn(name = "Director", type_ = "string", json_path = ".status.director"),
    printcolumn(
        name = "Backends",
        type_ = "string",
        description = "Real servers taking new connections through the active director, out of all",
        json_path = ".status.backendSummary"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("[has(self.backends), has(self.backendNodeSelector), has(self.backendService)].filter(x, x).size() == 1")
        .message("exactly one of spec.backends, spec.backendNodeSelector or spec.backendService must be set"),
    validation = Rule::new("!has(self.backends) || !has(self.vip) || !isIP(self.vip) || self.backends.all(b, !isIP(b.address) || ip(b.address).family() == ip(self.vip).family())")
        .message("every backend address must be of the same address family as spec.vip")
        .field_path(".backends"),
    validation = Rule::new("!has(self.schedulerFlags) || self.scheduler == 'sh' || self.scheduler == 'mh'")
        .message("scheduler flags exist only for the sh and mh schedulers")
        .field_path(".schedulerFlags"),
    // The rule fails only where the vip is an IP, so its message may ask for the vip's family.
    validation = Rule::new("!has(self.persistence) || !has(self.persistence.netmask) || !has(self.vip) || !isIP(self.vip) || (ip(self.vip).family() == 4 ? (isIP(self.persistence.netmask) && ip(self.persistence.netmask).family() == 4) : self.persistence.netmask.matches('^([1-9]|[1-9][0-9]|1[01][0-9]|12[0-8])$'))")
        .message(Message::Expression("'\"' + self.persistence.netmask + '\" ' + (ip(self.vip).family() == 4 ? 'must be a dotted netmask such as 255.255.255.0 for an IPv4 vip' : 'must be a prefix length 1..128 for an IPv6 vip')".into()))
        .field_path(".persistence.netmask"),
)]
#[serde(rename_all = "camelCase")]
pub struct LvsServiceSpec {
    /// The virtual IP address clients connect to (IPv4 or IPv6, canonical form, e.g. 10.10.24.88).
    /// The active director holds it on its LAN interface as a /32 (/128); every real server holds
    /// it on `lo`. In a cluster it must lie in an LvsAddressPool that admits the object's
    /// namespace; left out, the controller allocates one from such a pool and keeps it for the
    /// object's life (`status.vip`). Standalone mode needs it.
    // messageExpression, so that the API server's message names the value, not its type ("string").
    #[x_kube(validation = Rule::new("isIP(self) && ip.isCanonical(self) && ip(self).isGlobalUnicast()").message(Message::Expression("'\"' + self + '\" must be a unicast IPv4 or IPv6 address in canonical form, such as 10.10.24.88 or 2001:db8::88'".into())))]
    // Every string a CEL rule reads has a maxLength: the API server estimates each rule's cost
    // from it and refuses the CRD when a rule could exceed its budget. 45 is the longest IPv6 text.
    #[schemars(length(max = 45))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<String>,

    /// The ports served on the VIP, one IPVS virtual service each (`ipvsadm -A -t VIP:PORT`).
    /// Direct Routing forwards a packet to the same port on the real server, unchanged: there is
    /// no target port, so each real server must listen on these ports (on the VIP or on any address).
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["port".into(), "protocol".into()]))]
    pub ports: Vec<ServicePort>,

    /// The IPVS scheduling algorithm, as `ipvsadm -s` names it. Default `wlc`, as in ipvsadm.
    #[serde(default)]
    pub scheduler: Scheduler,

    /// Scheduler flags (`ipvsadm -b`), only for the `sh` and `mh` schedulers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_flags: Option<SchedulerFlags>,

    /// Client persistence (`ipvsadm -p TIMEOUT -M NETMASK`): connections from the same client
    /// (or client network) go to the same real server while the persistence entry lives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence: Option<Persistence>,

    /// Real servers listed by address (`ipvsadm -a ... -r ADDRESS -g`). Exactly one of
    /// `backends`, `backendNodeSelector` and `backendService` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["address".into()]))]
    pub backends: Option<Vec<Backend>>,

    /// Real servers from Kubernetes: the InternalIP of every Node matching this label selector.
    /// Each of these nodes gets the real-server setup (VIP on `lo`, ARP sysctls) from its agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_node_selector: Option<LabelSelector>,

    /// Real servers from Kubernetes: the ready endpoints of a Service in this namespace, from
    /// its EndpointSlices. Direct Routing needs the real servers on the director's L2 segment,
    /// which in practice means hostNetwork endpoints (node addresses). A terminating endpoint
    /// drains (weight 0) instead of vanishing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_service: Option<BackendServiceRef>,

    /// Which nodes may be directors, and where the VIP goes on them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directors: Option<Directors>,

    /// How the directors check each real server. Absent: a TCP check of each TCP port through
    /// the VIP with the defaults below. A real server that fails `failureThreshold` checks in a
    /// row gets weight 0 (its established connections go on, new ones go elsewhere) until it
    /// passes `successThreshold` in a row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
}

impl LvsService {
    /// The VIP in use: `spec.vip`, or else the address the controller allocated (`status.vip`).
    pub fn effective_vip(&self) -> Option<&str> {
        self.spec
            .vip
            .as_deref()
            .or_else(|| self.status.as_ref()?.vip.as_deref())
    }
}

/// One port of the virtual service.
#[derive(
    KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// The port clients connect to on the VIP, 1..65535. Real servers receive traffic on this
    /// same port (Direct Routing does not rewrite ports).
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// TCP (default), UDP or SCTP: `ipvsadm -t`, `-u` or `--sctp-service`.
    #[serde(default)]
    pub protocol: Protocol,
}

/// Flags of the source-hashing (`sh`) and Maglev (`mh`) schedulers.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SchedulerFlags {
    /// When the hashed real server is unavailable (weight 0 or overloaded), pick another
    /// instead of dropping the connection (`-b sh-fallback` / `-b mh-fallback`).
    #[serde(default)]
    pub fallback: bool,
    /// Include the client's source port in the hash (`-b sh-port` / `-b mh-port`).
    #[serde(default)]
    pub port: bool,
}

/// Client persistence of a virtual service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Persistence {
    /// How long, in seconds, a client stays with its real server after its last connection
    /// ends (`ipvsadm -p`). 1..31536000; ipvsadm's default is 300.
    #[schemars(range(min = 1, max = 31536000))]
    pub timeout_seconds: i64,
    /// Clients grouped for persistence (`ipvsadm -M`): for an IPv4 vip a dotted netmask such as
    /// 255.255.255.0 (default 255.255.255.255, each client on its own); for an IPv6 vip a prefix
    /// length such as 64 (default 128).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 15))]
    pub netmask: Option<String>,
}

/// A real server given by address.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Backend {
    /// The real server's address on the director's L2 segment (canonical form, same address
    /// family as the vip). It must hold the VIP on `lo` (its agent does that) and serve the ports.
    #[x_kube(validation = Rule::new("isIP(self) && ip.isCanonical(self) && ip(self).isGlobalUnicast()").message(Message::Expression("'\"' + self + '\" must be a unicast IPv4 or IPv6 address in canonical form, such as 10.10.24.21'".into())))]
    #[schemars(length(max = 45))]
    pub address: String,
    /// Relative share of new connections for weighted schedulers, 0..65535 (`ipvsadm -w`).
    /// Default 1. 0 sends no new connections to this real server but keeps the existing ones.
    #[serde(default = "default_weight")]
    #[schemars(range(min = 0, max = 65535))]
    pub weight: i32,
}

/// The weight of a real server that does not say otherwise (as ipvsadm).
pub fn default_weight() -> i32 {
    1
}

/// A Service in the same namespace whose endpoints are the real servers.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BackendServiceRef {
    /// Name of the Service.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message(Message::Expression("'\"' + self + '\" must be a DNS-1035 label, such as web'".into())))]
    pub name: String,
}

/// Which nodes may hold the VIP. Exactly one of them holds it at a time; the others keep IPVS
/// programmed as hot standby.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Directors {
    /// Nodes eligible to be directors. Default: nodes labelled `lvs-operator.io/director=true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
    /// Network interface that gets the VIP on the director (like `ip addr add VIP/32 dev eth0`).
    /// Default: the interface holding an address in the VIP's subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[a-zA-Z0-9_.:@-]{1,15}$')").message(Message::Expression("'\"' + self + '\" must be a network interface name of 1 to 15 characters, such as eth0'".into())))]
    #[schemars(length(max = 15))]
    pub interface: Option<String>,
}

/// How the directors check the real servers of an LvsService.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.path) || self.type == 'HTTP' || self.type == 'HTTPS'")
        .message("path is only for HTTP and HTTPS checks")
        .field_path(".path"),
    validation = Rule::new(r#"!self.interval.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || duration(self.interval) >= duration('100ms')"#)
        .message(Message::Expression("'\"' + self.interval + '\" is shorter than the minimum interval of 100ms'".into()))
        .field_path(".interval"),
    validation = Rule::new(r#"!self.interval.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || !self.timeout.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || duration(self.timeout) <= duration(self.interval)"#)
        .message(Message::Expression("'timeout \"' + self.timeout + '\" must be at most the interval \"' + self.interval + '\"'".into()))
        .field_path(".timeout"),
)]
pub struct HealthCheck {
    /// TCP (a connection is accepted), HTTP or HTTPS (`GET path` answers 2xx or 3xx; the
    /// certificate is not verified), or None (no checks: every real server is taken as it is).
    #[serde(rename = "type", default)]
    pub type_: HealthCheckType,
    /// Check this port instead of each service port (then UDP ports follow it too; without it,
    /// UDP ports are not checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// The path an HTTP or HTTPS check asks for. Default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^/[^\s]*$"))]
    pub path: Option<String>,
    /// How often each real server is checked, as a Gateway API duration (`2s`, `500ms`, `1m`).
    /// At least 100ms. Default 2s.
    #[serde(default = "default_interval")]
    #[schemars(length(max = 24), regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub interval: String,
    /// How long one check may take, at most the interval. Default 1s.
    #[serde(default = "default_timeout")]
    #[schemars(length(max = 24), regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub timeout: String,
    /// Consecutive failed checks that take a real server out. Default 2.
    #[serde(default = "default_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_threshold: i32,
    /// Consecutive passed checks that bring it back. Default 2.
    #[serde(default = "default_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub success_threshold: i32,
    /// Check each real server through the VIP, as clients reach it (Direct Routing to its MAC,
    /// addressed to the VIP): a real server without the VIP on `lo`, or serving only on its own
    /// address, fails. Default true. False checks the real server's own address, as do the checks
    /// of an IPv6 VIP's real servers.
    #[serde(default = "default_through_vip")]
    pub through_vip: bool,
    /// How long a real server that comes back takes to reach its full weight, ramping up from 1.
    /// Default 0s (at once).
    #[serde(default = "default_slow_start")]
    #[schemars(length(max = 24), regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub slow_start: String,
}

fn default_interval() -> String {
    "2s".into()
}
fn default_timeout() -> String {
    "1s".into()
}
fn default_threshold() -> i32 {
    2
}
fn default_through_vip() -> bool {
    true
}
fn default_slow_start() -> String {
    "0s".into()
}

/// What a health check does.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HealthCheckType {
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "HTTP")]
    Http,
    #[serde(rename = "HTTPS")]
    Https,
    None,
}

/// Label nodes carry when `spec.directors.nodeSelector` is not set.
pub const DEFAULT_DIRECTOR_LABEL: &str = "lvs-operator.io/director";
