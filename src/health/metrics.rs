//! What `/metrics` shows of the health checks: whether each check passes now
//! (`lvs_backend_healthy`), how long probes take (`lvs_health_check_duration_seconds`) and how
//! often verdicts flip (`lvs_health_check_transitions_total`).
//!
//! The gauge is written at scrape time from the engine's verdicts, so the series of a removed
//! check disappears with its verdict; the histogram and the counter are labelled by kind and
//! outcome only, a bounded set, and live as long as the process.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::board::Board;
use super::{Check, CheckKind, Health};

/// From a loopback connect (~0.1 ms lands in the first) to the longest sensible timeout.
const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabels {
    kind: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    to: &'static str,
}

/// The labels of one check's gauge: the real server it judges (through the VIP too), the port,
/// the kind, and the VIP it goes through, if any.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct CheckLabels {
    real_server: String,
    port: u16,
    kind: &'static str,
    vip: String,
}

impl CheckLabels {
    fn of(check: &Check) -> Self {
        let server = check.real_server();
        Self {
            real_server: server.ip().to_string(),
            port: server.port(),
            kind: check.kind.name(),
            vip: check
                .via
                .map(|_| check.target.ip().to_string())
                .unwrap_or_default(),
        }
    }
}

type Durations = Family<ProbeLabels, Histogram, fn() -> Histogram>;

pub(super) struct Metrics {
    durations: Durations,
    transitions: Family<TransitionLabels, Counter>,
}

impl Metrics {
    pub(super) fn register(registry: &mut Registry, board: Arc<Board>) -> Self {
        let durations = Durations::new_with_constructor(|| Histogram::new(BUCKETS));
        let transitions = Family::<TransitionLabels, Counter>::default();
        registry.register_with_unit(
            "lvs_health_check_duration",
            "Time a real-server health probe took, by check kind and result",
            Unit::Seconds,
            durations.clone(),
        );
        registry.register(
            "lvs_health_check_transitions",
            "Health verdicts that changed, by the state entered",
            transitions.clone(),
        );
        registry.register_collector(Box::new(HealthyGauge(board)));
        Self {
            durations,
            transitions,
        }
    }

    /// The histograms one prober records into, looked up once so a probe costs no label lookup.
    pub(super) fn timer(&self, kind: &CheckKind) -> Timer {
        let of = |result| {
            self.durations.get_or_create_owned(&ProbeLabels {
                kind: kind.name(),
                result,
            })
        };
        Timer {
            pass: of("pass"),
            fail: of("fail"),
        }
    }

    pub(super) fn transition(&self, to: Health) {
        let to = match to {
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        };
        self.transitions
            .get_or_create(&TransitionLabels { to })
            .inc();
    }
}

pub(super) struct Timer {
    pass: Histogram,
    fail: Histogram,
}

impl Timer {
    pub(super) fn observe(&self, passed: bool, took: Duration) {
        let histogram = if passed { &self.pass } else { &self.fail };
        histogram.observe(took.as_secs_f64());
    }
}

/// `lvs_backend_healthy`, 1 or 0 per check, read from the verdicts at scrape time.
#[derive(Debug)]
struct HealthyGauge(Arc<Board>);

impl Collector for HealthyGauge {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Checks that differ only in what the labels leave out (path, interval, thresholds)
        // share a series, which Prometheus requires to be unique: it reads 0 while any of them
        // is Unhealthy.
        let mut series = BTreeMap::<CheckLabels, i64>::new();
        self.0.each(|check, verdict| {
            let healthy = i64::from(verdict.health == Health::Healthy);
            series
                .entry(CheckLabels::of(check))
                .and_modify(|v| *v = (*v).min(healthy))
                .or_insert(healthy);
        });
        let gauge = ConstGauge::new(0i64);
        let mut metric = encoder.encode_descriptor(
            "lvs_backend_healthy",
            "Whether the real server passes its health check (1) or not (0)",
            None,
            gauge.metric_type(),
        )?;
        for (labels, healthy) in series {
            ConstGauge::new(healthy).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
