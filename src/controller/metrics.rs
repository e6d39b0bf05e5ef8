//! The controller's Prometheus metrics, served as text on `/metrics` by the http module.
//!
//! Names carry the `lvs_operator_controller_` prefix. Errors are counted by [`Error::category`]
//! (the step that failed), never by object, to keep the label set small.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::error::Error;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub category: String,
}

/// Counters and histograms updated by the reconciler and the leader loop.
#[derive(Clone)]
pub struct Metrics {
    pub reconciles: Counter,
    pub errors: Family<ErrorLabels, Counter>,
    pub duration: Histogram,
    /// 1 while this replica holds the lease and runs the controller.
    pub leader: Gauge,
    /// Events not published because the controller's event budget was spent.
    pub events_dropped: Counter,
    registry: Arc<Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        let reconciles = Counter::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        // 1 ms .. ~4 s: a reconcile is a few cache reads and at most one patch.
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 13));
        let leader = Gauge::default();
        let events_dropped = Counter::default();
        let mut registry = Registry::with_prefix("lvs_operator_controller");
        registry.register(
            "reconciles",
            "Reconciles of LvsService objects",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciles, by the step that failed",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took",
            duration.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica is the leader and runs the controller",
            leader.clone(),
        );
        registry.register(
            "events_dropped",
            "Events not published because more were due than the API server should take (burst 100, then 10 per second)",
            events_dropped.clone(),
        );
        Self {
            reconciles,
            errors,
            duration,
            leader,
            events_dropped,
            registry: Arc::new(registry),
        }
    }
}

impl Metrics {
    /// Counts a reconcile and measures it until the returned guard drops.
    pub fn count_and_measure(&self) -> ReconcileTimer {
        self.reconciles.inc();
        ReconcileTimer {
            start: Instant::now(),
            histogram: self.duration.clone(),
        }
    }

    pub fn reconcile_failure(&self, error: &Error) {
        self.errors
            .get_or_create(&ErrorLabels {
                category: error.category().into(),
            })
            .inc();
    }
}

/// Observes the reconcile duration when dropped, so early returns are measured too.
pub struct ReconcileTimer {
    start: Instant,
    histogram: Histogram,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

impl crate::http::Metrics for Metrics {
    /// The Prometheus text exposition of every metric.
    fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
