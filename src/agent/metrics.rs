//! The agent's `/metrics`: its own resyncs and errors, and the IPVS counters of every service it
//! programs, labelled with the LvsService they belong to.
//!
//! The IPVS families come from the resync's own observation (no extra netlink dump) and are
//! written at scrape time from the last snapshot: the set of services changes with the objects,
//! and a counter of a removed service must disappear with it.

use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::core::{Counters, DestStats};

use super::converge::Resynced;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CategoryLabels {
    pub category: String,
}

/// The labels of a service line of `ipvsadm -Ln --stats`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    namespace: String,
    name: String,
    /// `TCP 10.10.24.88:80`.
    service: String,
}

/// The labels of a real-server line under a service.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DestLabels {
    namespace: String,
    name: String,
    service: String,
    /// `10.10.24.21:80`.
    real_server: String,
}

/// One service of the last resync, with its object and its destinations' counters.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServiceSample {
    labels: ServiceLabels,
    counters: Counters,
    dests: Vec<(String, DestStats)>,
}

#[derive(Clone)]
pub struct AgentMetrics {
    registry: Arc<Registry>,
    pub resyncs: Counter,
    pub applied: Counter,
    pub errors: Family<CategoryLabels, Counter>,
    ipvs: Arc<IpvsCollector>,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new(|_| {})
    }
}

impl AgentMetrics {
    /// The agent's metrics, and whatever `extend` registers beside them (the health checks').
    pub fn new(extend: impl FnOnce(&mut Registry)) -> Self {
        let mut registry = Registry::default();
        extend(&mut registry);
        let ipvs = Arc::new(IpvsCollector::default());
        registry.register_collector(Box::new(ipvs.clone()));
        let own = registry.sub_registry_with_prefix("lvs_operator_agent");
        let resyncs = Counter::default();
        let applied = Counter::default();
        let errors = Family::<CategoryLabels, Counter>::default();
        own.register(
            "resyncs",
            "Resyncs run (observe, plan, apply)",
            resyncs.clone(),
        );
        own.register(
            "operations_applied",
            "Kernel changes the agent made",
            applied.clone(),
        );
        own.register(
            "errors",
            "Failures by category: resync, apply, report",
            errors.clone(),
        );
        Self {
            registry: Arc::new(registry),
            resyncs,
            applied,
            errors,
            ipvs,
        }
    }

    pub fn error(&self, category: &str) {
        self.errors
            .get_or_create(&CategoryLabels {
                category: category.into(),
            })
            .inc();
    }

    /// Records a resync: its counts and the IPVS counters it observed.
    pub fn record(&self, r: &Resynced) {
        self.resyncs.inc();
        self.applied.inc_by(r.converged.applied().count() as u64);
        for _ in &r.converged.failed {
            self.error("apply");
        }
        *self.ipvs.samples.lock().expect("metrics lock") = samples(r);
    }
}

/// The IPVS counters of every service an object owns, from the resync's own observation (no
/// extra netlink dump). Written at scrape time from the last snapshot: the set of services changes
/// with the objects, and the series of a removed service must disappear with it.
#[derive(Debug, Default)]
struct IpvsCollector {
    samples: Mutex<Vec<ServiceSample>>,
}

fn samples(r: &Resynced) -> Vec<ServiceSample> {
    let mut out = Vec::new();
    for (object, part) in &r.desired.parts {
        let (namespace, name) = object.split_once('/').unwrap_or(("", object));
        for key in part.services.keys() {
            let Some(stats) = r.after.stats.get(key) else {
                continue;
            };
            out.push(ServiceSample {
                labels: ServiceLabels {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                    service: key.to_string(),
                },
                counters: stats.service,
                dests: stats
                    .dests
                    .iter()
                    .map(|(dest, s)| (dest.to_string(), *s))
                    .collect(),
            });
        }
    }
    out
}

type Traffic = fn(&Counters) -> u64;

/// The traffic families, each with a service line and a line per real server.
const TRAFFIC: [(&str, &str, Traffic); 5] = [
    ("lvs_ipvs_connections", "Connections scheduled", |c| {
        c.connections
    }),
    ("lvs_ipvs_packets_in", "Packets from clients", |c| {
        c.in_packets
    }),
    (
        "lvs_ipvs_packets_out",
        "Packets to clients through the director (0 under DR)",
        |c| c.out_packets,
    ),
    ("lvs_ipvs_bytes_in", "Bytes from clients", |c| c.in_bytes),
    (
        "lvs_ipvs_bytes_out",
        "Bytes to clients through the director (0 under DR)",
        |c| c.out_bytes,
    ),
];

type Conns = fn(&DestStats) -> u32;

/// The connection-table gauges, per real server only.
const CONNECTIONS: [(&str, &str, Conns); 2] = [
    (
        "lvs_ipvs_active_connections",
        "Established connections per real server",
        |s| s.active_conns,
    ),
    (
        "lvs_ipvs_inactive_connections",
        "Other connections per real server",
        |s| s.inactive_conns,
    ),
];

impl Collector for IpvsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let samples = self.samples.lock().expect("metrics lock");
        for (family, help, get) in TRAFFIC {
            let counter = ConstCounter::new(0u64);
            let mut metric =
                encoder.encode_descriptor(family, help, None, counter.metric_type())?;
            for s in samples.iter() {
                ConstCounter::new(get(&s.counters)).encode(metric.encode_family(&s.labels)?)?;
                for (real_server, d) in &s.dests {
                    let labels = dest_labels(&s.labels, real_server);
                    ConstCounter::new(get(&d.traffic)).encode(metric.encode_family(&labels)?)?;
                }
            }
        }
        for (family, help, get) in CONNECTIONS {
            let gauge = ConstGauge::new(0i64);
            let mut metric = encoder.encode_descriptor(family, help, None, gauge.metric_type())?;
            for s in samples.iter() {
                for (real_server, d) in &s.dests {
                    let labels = dest_labels(&s.labels, real_server);
                    ConstGauge::new(i64::from(get(d))).encode(metric.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}

fn dest_labels(service: &ServiceLabels, real_server: &str) -> DestLabels {
    DestLabels {
        namespace: service.namespace.clone(),
        name: service.name.clone(),
        service: service.service.clone(),
        real_server: real_server.to_string(),
    }
}

impl crate::http::Metrics for AgentMetrics {
    fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{
        DestKey, NodeState, Protocol, Scheduler, ServiceConfig, ServiceKey, ServiceState,
        ServiceStats,
    };
    use crate::http::Metrics as _;

    #[test]
    fn ipvs_counters_are_labelled_with_their_object_and_real_server() {
        let key = ServiceKey {
            vip: "10.10.24.88".parse().unwrap(),
            protocol: Protocol::Tcp,
            port: 80,
        };
        let dest = DestKey {
            addr: "10.10.24.21".parse().unwrap(),
            port: 80,
        };
        let mut part = NodeState::default();
        let config = ServiceConfig::new(Scheduler::Rr, key.vip);
        part.services.insert(
            key,
            ServiceState {
                config,
                dests: Default::default(),
            },
        );
        let mut r = Resynced::default();
        r.desired.parts.insert("default/web".into(), part);
        let c = Counters {
            connections: 6,
            in_packets: 39,
            out_packets: 0,
            in_bytes: 2520,
            out_bytes: 0,
        };
        let d = DestStats {
            active_conns: 1,
            inactive_conns: 2,
            persist_conns: 0,
            traffic: c,
        };
        r.after.stats.insert(
            key,
            ServiceStats {
                service: c,
                dests: [(dest, d)].into(),
            },
        );
        let m = AgentMetrics::default();
        m.record(&r);
        let text = m.encode();
        assert!(text.contains("lvs_ipvs_connections_total{namespace=\"default\",name=\"web\",service=\"TCP 10.10.24.88:80\"} 6\n"), "{text}");
        assert!(text.contains("lvs_ipvs_active_connections{namespace=\"default\",name=\"web\",service=\"TCP 10.10.24.88:80\",real_server=\"10.10.24.21:80\"} 1\n"), "{text}");
        assert!(
            text.contains("lvs_operator_agent_resyncs_total 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(text.matches("# EOF").count(), 1);
    }
}
