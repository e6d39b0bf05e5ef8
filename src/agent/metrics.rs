//! The agent's `/metrics`: its own resyncs and errors, and the IPVS counters of every service it
//! programs, labelled with the LvsService they belong to.
//!
//! The IPVS families come from the resync's own observation (no extra netlink dump) and are
//! written at scrape time from the last snapshot: the set of services changes with the objects,
//! and a counter of a removed service must disappear with it.

use std::fmt::Write;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::api::protocol_name;
use crate::core::{Counters, SocketFmt};

use super::converge::Resynced;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CategoryLabels {
    pub category: String,
}

/// One service or destination line of `ipvsadm -Ln --stats`, with its object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsSample {
    pub namespace: String,
    pub name: String,
    /// `TCP 10.10.24.88:80`.
    pub service: String,
    /// `10.10.24.21:80` for a destination, `None` for the service itself.
    pub real_server: Option<String>,
    pub counters: Counters,
    pub active: u32,
    pub inactive: u32,
}

#[derive(Clone)]
pub struct AgentMetrics {
    registry: Arc<Registry>,
    pub resyncs: Counter,
    pub applied: Counter,
    pub errors: Family<CategoryLabels, Counter>,
    ipvs: Arc<Mutex<Vec<IpvsSample>>>,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("lvs_operator_agent");
        let resyncs = Counter::default();
        let applied = Counter::default();
        let errors = Family::<CategoryLabels, Counter>::default();
        registry.register(
            "resyncs",
            "Resyncs run (observe, plan, apply)",
            resyncs.clone(),
        );
        registry.register(
            "operations_applied",
            "Kernel changes the agent made",
            applied.clone(),
        );
        registry.register(
            "errors",
            "Failures by category: resync, apply, report",
            errors.clone(),
        );
        Self {
            registry: Arc::new(registry),
            resyncs,
            applied,
            errors,
            ipvs: Arc::default(),
        }
    }
}

impl AgentMetrics {
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
        let failed = r.converged.failed.len() as u64;
        self.applied
            .inc_by(r.converged.plan.ops.len() as u64 - failed);
        for _ in 0..failed {
            self.error("apply");
        }
        *self.ipvs.lock().expect("metrics lock") = samples(r);
    }
}

/// The IPVS counters of every service an object owns, service line then destination lines.
pub fn samples(r: &Resynced) -> Vec<IpvsSample> {
    let mut out = Vec::new();
    for (object, part) in &r.desired.parts {
        let (namespace, name) = object.split_once('/').unwrap_or(("", object));
        for key in part.services.keys() {
            let Some(stats) = r.after.stats.get(key) else {
                continue;
            };
            let service = format!(
                "{} {}",
                protocol_name(key.protocol),
                SocketFmt(key.vip, key.port)
            );
            let sample = |real_server, counters, active, inactive| IpvsSample {
                namespace: namespace.to_string(),
                name: name.to_string(),
                service: service.clone(),
                real_server,
                counters,
                active,
                inactive,
            };
            out.push(sample(None, stats.service, 0, 0));
            for (dest, (c, active, inactive)) in &stats.dests {
                out.push(sample(Some(dest.to_string()), *c, *active, *inactive));
            }
        }
    }
    out
}

/// OpenMetrics text for the IPVS samples (without the closing `# EOF`).
pub fn render_ipvs(samples: &[IpvsSample]) -> String {
    type Get = fn(&IpvsSample) -> u64;
    let families: [(&str, &str, &str, bool, Get); 7] = [
        (
            "lvs_ipvs_connections",
            "counter",
            "Connections scheduled",
            false,
            |s| s.counters.connections,
        ),
        (
            "lvs_ipvs_packets_in",
            "counter",
            "Packets from clients",
            false,
            |s| s.counters.in_packets,
        ),
        (
            "lvs_ipvs_packets_out",
            "counter",
            "Packets to clients through the director (0 under DR)",
            false,
            |s| s.counters.out_packets,
        ),
        (
            "lvs_ipvs_bytes_in",
            "counter",
            "Bytes from clients",
            false,
            |s| s.counters.in_bytes,
        ),
        (
            "lvs_ipvs_bytes_out",
            "counter",
            "Bytes to clients through the director (0 under DR)",
            false,
            |s| s.counters.out_bytes,
        ),
        (
            "lvs_ipvs_active_connections",
            "gauge",
            "Established connections per real server",
            true,
            |s| u64::from(s.active),
        ),
        (
            "lvs_ipvs_inactive_connections",
            "gauge",
            "Other connections per real server",
            true,
            |s| u64::from(s.inactive),
        ),
    ];
    let mut out = String::new();
    for (family, kind, help, dest_only, get) in families {
        let _ = writeln!(out, "# TYPE {family} {kind}\n# HELP {family} {help}.");
        let suffix = if kind == "counter" { "_total" } else { "" };
        for s in samples
            .iter()
            .filter(|s| !dest_only || s.real_server.is_some())
        {
            let rs = s
                .real_server
                .as_deref()
                .map(|r| format!(",real_server=\"{r}\""))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "{family}{suffix}{{namespace=\"{}\",name=\"{}\",service=\"{}\"{rs}}} {}",
                s.namespace,
                s.name,
                s.service,
                get(s)
            );
        }
    }
    out
}

impl crate::http::Metrics for AgentMetrics {
    fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        let own = out.strip_suffix("# EOF\n").unwrap_or(&out).to_string();
        let ipvs = render_ipvs(&self.ipvs.lock().expect("metrics lock"));
        format!("{own}{ipvs}# EOF\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{
        DestKey, NodeState, Protocol, ServiceConfig, ServiceKey, ServiceState, ServiceStats,
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
        let config = ServiceConfig {
            scheduler: "rr".into(),
            flags: 0,
            timeout: 0,
            netmask: u32::MAX,
        };
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
        r.after.stats.insert(
            key,
            ServiceStats {
                service: c,
                dests: [(dest, (c, 1, 2))].into(),
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
