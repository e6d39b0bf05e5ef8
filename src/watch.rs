//! Watches that recover in seconds and say so: the one way the controller and the agents follow
//! the API server.
//!
//! kube-runtime's default backoff is client-go's (0.8 s doubling to 30 s, reset only after 2
//! minutes), and a Controller puts every trigger watch behind one shared backoff: after a 30 s
//! API outage the watches came back one after another, minutes later, and the only log line was
//! a debug one. Here each watch has its own backoff, capped at [`MAX_DELAY`]; an expired resource
//! version (410 Gone, what a restarted API server answers a resumed watch) re-lists at once; and
//! losing and regaining the API server is logged at warn and info, with how long it lasted. The
//! stream never yields an error, so nothing downstream (a Controller's shared trigger backoff)
//! can slow it down.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt, TryStreamExt, future};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::WatchStreamExt;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, ExponentialBackoff};
use kube::{Api, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{debug, info, warn};

/// The first retry after an error.
pub const MIN_DELAY: Duration = Duration::from_millis(200);
/// The longest a watch waits between two attempts, before jitter (which adds up to as much again):
/// a watch gets the API server back at most 2 s after it answers. At 2 s (4 s with jitter) a
/// change made right after a 30 s outage had once reached the status 5.2 s after the API server
/// was ready (`make e2e`, issue 15's bound is 5 s). While the API server is down each watch tries
/// about once every 1.5 s: refused connections, cheap for it.
pub const MAX_DELAY: Duration = Duration::from_secs(1);

/// A watch on `api` that retries forever on its own, yielding only events. `what` names it in the
/// log (`LvsServices`, `Node director`, ...).
pub fn resilient<K>(
    api: Api<K>,
    config: watcher::Config,
    what: impl Into<String>,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    resilient_noting(api, config, what, Blind::default())
}

/// [`resilient`], telling `blind` when the watch could not see the API server.
pub fn resilient_noting<K>(
    api: Api<K>,
    config: watcher::Config,
    what: impl Into<String>,
    blind: Blind,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    // managedFields are never read here, and on an object many managers write (the controller,
    // kubectl) they can outweigh the rest: keep them out of every cache.
    let stream = watcher::watcher(api, config).modify(|o| o.managed_fields_mut().clear());
    recovering(stream, what.into(), blind)
}

/// When a watch last could not see the API server: from the first error of its latest outage
/// to the last one (a resource version that expired counts: what changed meanwhile was not
/// seen either). What it follows may have changed unseen in that time; the controller uses it
/// so that the end of an API outage does not read as every agent's heartbeat going silent at
/// once (they could not renew them through the outage either).
#[derive(Clone, Debug, Default)]
pub struct Blind(Arc<Mutex<BlindState>>);

#[derive(Debug, Default)]
struct BlindState {
    /// The first and the last error of the latest outage.
    window: Option<(Timestamp, Timestamp)>,
    /// The watch's latest result was an error.
    failing: bool,
}

impl Blind {
    /// The first and the last failure of the watch's latest outage, if it ever had one.
    pub fn window(&self) -> Option<(Timestamp, Timestamp)> {
        self.0.lock().expect("never poisoned").window
    }

    fn failed(&self, at: Timestamp) {
        let mut s = self.0.lock().expect("never poisoned");
        let began = match (s.failing, s.window) {
            (true, Some((began, _))) => began,
            _ => at,
        };
        s.window = Some((began, at));
        s.failing = true;
    }

    fn answered(&self) {
        self.0.lock().expect("never poisoned").failing = false;
    }
}

fn recovering<T>(
    stream: impl Stream<Item = Result<watcher::Event<T>, watcher::Error>> + Send + 'static,
    what: String,
    blind: Blind,
) -> impl Stream<Item = Result<watcher::Event<T>, watcher::Error>> + Send + 'static
where
    T: Send + 'static,
{
    let expired = Arc::new(AtomicBool::new(false));
    let mut outage = Outage { since: None, blind };
    let mark = expired.clone();
    stream
        .inspect(move |event| outage.observe(&what, event))
        .inspect_err(move |e| {
            if is_expired(e) {
                mark.store(true, Ordering::Relaxed);
            }
        })
        .backoff(Quick {
            expired,
            inner: exponential(),
        })
        .filter_map(|event| future::ready(event.ok().map(Ok)))
}

fn exponential() -> ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(MIN_DELAY)
        .with_max_delay(MAX_DELAY)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .into()
}

/// An expired resource version is no trouble with the API server: the watcher has already gone
/// back to listing, so it may do so at once.
fn is_expired(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::WatchError(status) if status.code == 410)
}

/// The per-watch backoff: none after an expiry, else exponential up to [`MAX_DELAY`].
struct Quick {
    expired: Arc<AtomicBool>,
    inner: ExponentialBackoff,
}

impl Iterator for Quick {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.expired.swap(false, Ordering::Relaxed) {
            return Some(Duration::ZERO);
        }
        self.inner.next()
    }
}

impl Backoff for Quick {
    fn reset(&mut self) {
        self.inner.reset();
    }
}

/// Tells when a watch lost the API server and when it got it back.
struct Outage {
    since: Option<Instant>,
    blind: Blind,
}

impl Outage {
    fn observe<K>(&mut self, what: &str, event: &Result<watcher::Event<K>, watcher::Error>) {
        match event {
            Err(_) => self.blind.failed(Timestamp::now()),
            Ok(_) => self.blind.answered(),
        }
        match (event, self.since) {
            (Err(e), _) if is_expired(e) => {
                info!("watch of {what}: resource version expired (410 Gone); listing again now");
            }
            (Err(e), None) => {
                warn!(
                    "watch of {what}: lost the API server ({e}); retrying every few seconds, and the data plane stays as it is"
                );
                self.since = Some(Instant::now());
            }
            (Err(e), Some(_)) => debug!("watch of {what}: still failing: {e}"),
            (Ok(_), Some(since)) => {
                info!(
                    "watch of {what}: the API server answers again, after {:.1}s",
                    since.elapsed().as_secs_f64()
                );
                self.since = None;
            }
            (Ok(_), None) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blindness_spans_an_outage_from_its_first_error_to_its_last() {
        let blind = Blind::default();
        assert_eq!(
            blind.window(),
            None,
            "a watch that never failed saw everything"
        );
        let t = |s: i64| Timestamp::from_second(1_000 + s).unwrap();
        blind.failed(t(0));
        blind.failed(t(5));
        blind.failed(t(9));
        assert_eq!(blind.window(), Some((t(0), t(9))));
        blind.answered();
        assert_eq!(blind.window(), Some((t(0), t(9))), "kept after it answers");
        blind.failed(t(60));
        assert_eq!(
            blind.window(),
            Some((t(60), t(60))),
            "a new outage starts afresh"
        );
    }

    #[test]
    fn an_expiry_retries_at_once_and_other_errors_back_off_to_a_few_seconds_at_most() {
        let expired = Arc::new(AtomicBool::new(false));
        let mut b = Quick {
            expired: expired.clone(),
            inner: exponential(),
        };
        let delays: Vec<Duration> = (0..12).map(|_| b.next().unwrap()).collect();
        assert!(delays.iter().all(|d| *d <= MAX_DELAY * 2), "{delays:?}");
        assert!(delays[0] <= MIN_DELAY * 2);
        expired.store(true, Ordering::Relaxed);
        assert_eq!(b.next(), Some(Duration::ZERO));
        assert!(
            b.next().unwrap() > Duration::ZERO,
            "only the expiry is free"
        );
    }
}
