//! The engine: one tokio task per distinct check, started and stopped by [`Engine::set`], each
//! probing at its interval and feeding a [`Tracker`]; the verdicts they publish on the shared
//! board are what [`Engine::verdicts`] returns and what the `lvs_backend_healthy` gauge shows.
//!
//! Probers only write on a transition (a lock per flip, not per probe), and only to the entry
//! they were started for: a prober being aborted by `set` may still finish one probe on another
//! worker thread, and must not touch the verdict of the check that replaced it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::task::AbortHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{info, warn};

use super::board::{Board, Entry};
use super::metrics::{Metrics, Timer};
use super::probe::{Network, Probe, probe_once};
use super::{Check, Health, Tracker, Transition, Verdict};
use crate::fingerprint::fingerprint;

/// tokio's interval panics on a zero period; a zero interval is a caller's mistake, and this
/// turns it into a busy check rather than a crash of the agent.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// The first probe comes within this fraction of the interval after the check starts, at a
/// point fixed by the check itself: soon enough that a new real server is checked at once, spread
/// enough that 1,000 probers started together do not fire in the same millisecond (and, as the
/// interval keeps the phase, never do later).
const START_SPREAD: f64 = 0.2;

/// The health checks of one director.
pub struct Engine<P: Probe = Network> {
    probe: Arc<P>,
    board: Arc<Board>,
    metrics: Arc<Metrics>,
    probers: BTreeMap<Check, AbortHandle>,
    next_id: u64,
    /// The board's version at the last `changed()`.
    seen: AtomicU64,
}

impl Engine<Network> {
    /// An engine probing over the network, its metrics registered in `metrics`.
    pub fn new(metrics: &mut Registry) -> Self {
        Self::with_probe(metrics, Network::new())
    }
}

impl<P: Probe> Engine<P> {
    /// An engine whose probes are `probe`'s: how tests script real servers.
    pub fn with_probe(metrics: &mut Registry, probe: P) -> Self {
        let board = Arc::new(Board::new());
        Self {
            probe: Arc::new(probe),
            metrics: Arc::new(Metrics::register(metrics, board.clone())),
            board,
            probers: BTreeMap::new(),
            next_id: 0,
            seen: AtomicU64::new(0),
        }
    }

    /// Starts probers for new checks and stops the ones no longer wanted (their verdicts go
    /// too). A check wanted before keeps its prober, counters and verdict: calling `set` at every
    /// resync with the whole list is how it is meant to be used.
    ///
    /// # Panics
    /// Outside a tokio runtime, as the probers are its tasks.
    pub fn set(&mut self, checks: impl IntoIterator<Item = Check>) {
        self.set_starting(checks, |_| None);
    }

    /// `set`, with the state a new check starts in: `start(check)` names a reason to start
    /// Unhealthy (a restarted agent finds the real server ejected by its previous run), or
    /// `None` to start Healthy.
    pub fn set_starting(
        &mut self,
        checks: impl IntoIterator<Item = Check>,
        start: impl Fn(&Check) -> Option<String>,
    ) {
        let wanted: BTreeSet<Check> = checks.into_iter().collect();
        {
            let mut verdicts = self.board.verdicts.lock().expect("board lock");
            self.probers.retain(|check, task| {
                let keep = wanted.contains(check);
                if !keep {
                    task.abort();
                    verdicts.remove(check);
                }
                keep
            });
        }
        for check in wanted {
            if !self.probers.contains_key(&check) {
                let unhealthy = start(&check);
                self.start(check, unhealthy);
            }
        }
    }

    /// The current verdict of every check. A new check starts Healthy, `since` its start (a
    /// newly added real server keeps its weight until the checks say otherwise, as keepalived
    /// does), and then follows its thresholds.
    pub fn verdicts(&self) -> BTreeMap<Check, Verdict> {
        let mut out = BTreeMap::new();
        self.board.each(|check, verdict| {
            out.insert(check.clone(), verdict.clone());
        });
        out
    }

    /// Completes when any verdict changed since the last call returned (at once if one did),
    /// so the agent can reprogram weights without polling. `set` itself is no change: the caller
    /// knows what it asked for.
    pub async fn changed(&self) {
        let mut version = self.board.version.subscribe();
        let seen = self.seen.load(Ordering::Acquire);
        let now = *version
            .wait_for(|v| *v != seen)
            .await
            .expect("the engine holds the sender");
        self.seen.store(now, Ordering::Release);
    }

    /// How many probers run: one per distinct check.
    pub fn probers(&self) -> usize {
        self.probers.len()
    }

    fn start(&mut self, check: Check, unhealthy: Option<String>) {
        let id = self.next_id;
        self.next_id += 1;
        let health = match unhealthy {
            Some(_) => Health::Unhealthy,
            None => Health::Healthy,
        };
        let verdict = Verdict {
            health,
            since: Instant::now().into_std(),
            reason: unhealthy,
        };
        self.board.verdicts.lock().expect("board lock").insert(
            check.clone(),
            Entry {
                prober: id,
                verdict,
            },
        );
        let prober = Prober {
            health,
            timer: self.metrics.timer(&check.kind),
            check: check.clone(),
            id,
            probe: self.probe.clone(),
            board: self.board.clone(),
            metrics: self.metrics.clone(),
        };
        let task = tokio::spawn(prober.run()).abort_handle();
        self.probers.insert(check, task);
    }
}

/// Dropping the engine stops its probers: they hold no handle back to it.
impl<P: Probe> Drop for Engine<P> {
    fn drop(&mut self) {
        for task in self.probers.values() {
            task.abort();
        }
    }
}

impl<P: Probe> std::fmt::Debug for Engine<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("probers", &self.probers.len())
            .finish_non_exhaustive()
    }
}

/// One check's task.
struct Prober<P> {
    check: Check,
    /// The state it starts in.
    health: Health,
    id: u64,
    probe: Arc<P>,
    board: Arc<Board>,
    metrics: Arc<Metrics>,
    timer: Timer,
}

impl<P: Probe> Prober<P> {
    async fn run(self) {
        let period = self.check.interval.max(MIN_INTERVAL);
        let first = Instant::now() + start_offset(&self.check, period);
        let mut ticks = tokio::time::interval_at(first, period);
        // A probe slower than the interval skips the missed ticks rather than firing them in a
        // burst: the interval is the most a real server is asked.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut tracker = Tracker::starting(self.health, self.check.fall, self.check.rise);
        loop {
            ticks.tick().await;
            let began = Instant::now();
            let result = probe_once(&*self.probe, &self.check).await;
            self.timer.observe(result.is_ok(), began.elapsed());
            if let Some(transition) = tracker.observe(result) {
                self.publish(transition);
            }
        }
    }

    fn publish(&self, transition: Transition<super::Failure>) {
        let since = Instant::now().into_std();
        let (verdict, to) = match &transition {
            Transition::Unhealthy { reason, .. } => (
                Verdict {
                    health: Health::Unhealthy,
                    since,
                    reason: Some(reason.to_string()),
                },
                Health::Unhealthy,
            ),
            Transition::Healthy { .. } => (
                Verdict {
                    health: Health::Healthy,
                    since,
                    reason: None,
                },
                Health::Healthy,
            ),
        };
        if !self.board.publish(&self.check, self.id, verdict) {
            return;
        }
        self.metrics.transition(to);
        let check = &self.check;
        match transition {
            Transition::Unhealthy { reason, failures } => warn!(
                kind = check.kind.name(),
                "real server {check} is unhealthy: {reason} ({})",
                count(failures, "failure")
            ),
            Transition::Healthy { successes } => info!(
                kind = check.kind.name(),
                "real server {check} is healthy again ({})",
                count(successes, "success")
            ),
        }
    }
}

/// Where in `[0, START_SPREAD × period)` the check's first probe falls. Derived from the check
/// rather than random, so a test's probes come at the same instants at every run.
fn start_offset(check: &Check, period: Duration) -> Duration {
    let fraction = (fingerprint(check) % 10_000) as f64 / 10_000.0;
    period.mul_f64(START_SPREAD * fraction)
}

fn count(n: u32, what: &str) -> String {
    match (n, what.ends_with('s')) {
        (1, _) => format!("1 {what}"),
        (_, true) => format!("{n} {what}es"),
        (_, false) => format!("{n} {what}s"),
    }
}
