//! The failover's metrics: which VIPs this director holds, its peers as heard, and how often a
//! VIP came to it from another director.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VipLabels {
    pub vip: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabels {
    pub role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub peer: String,
}

#[derive(Clone, Debug, Default)]
pub struct HaMetrics {
    pub failovers: Family<VipLabels, Counter>,
    pub active: Family<VipLabels, Gauge>,
    pub peer_up: Family<PeerLabels, Gauge>,
    pub peer_rtt: Family<PeerLabels, Gauge<f64, AtomicU64>>,
    pub foreign_holders: Family<VipLabels, Gauge>,
    pub sync_daemon: Family<RoleLabels, Gauge>,
}

impl HaMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("lvs_director");
        r.register(
            "failovers",
            "VIPs this director took from another director (unplanned or handed over)",
            m.failovers.clone(),
        );
        r.register(
            "active",
            "1 for each VIP this director holds, 0 for each it stands by for",
            m.active.clone(),
        );
        r.register(
            "peer_up",
            "1 while a peer director's heartbeats arrive, 0 once it is declared dead",
            m.peer_up.clone(),
        );
        r.register(
            "peer_rtt_seconds",
            "The last heartbeat round trip to each peer director",
            m.peer_rtt.clone(),
        );
        r.register(
            "foreign_holders",
            "MACs other than the active director's that answer ARP/NDP for a VIP (should be 0)",
            m.foreign_holders.clone(),
        );
        r.register(
            "sync_daemon",
            "1 while this director runs the IPVS connection-sync daemon of the role (master, backup)",
            m.sync_daemon.clone(),
        );
        m
    }
}
