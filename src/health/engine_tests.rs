//! The engine against scripted real servers on a paused clock: which probes run, when verdicts
//! flip, what `set` keeps and drops, and what the metrics and the log show of it. No socket is
//! opened here (the network probes are tested in `tests/health_probes.rs`), so every instant is
//! the paused clock's and each run sees the same sequence.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use prometheus_client::registry::Registry;
use tokio::time::{Instant, sleep, timeout};

use super::*;

const INTERVAL: Duration = Duration::from_secs(1);
/// Longer than any test waits for a transition on the paused clock, which gets there at once.
const PATIENCE: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug)]
enum Answer {
    Pass,
    Refuse,
    /// Never answers: the engine's timeout must end the probe.
    Hang,
}

/// Real servers by port: how each answers, and how often it was asked.
#[derive(Clone, Default)]
struct Scripted(Arc<Mutex<Script>>);

#[derive(Default)]
struct Script {
    answers: BTreeMap<u16, Answer>,
    calls: BTreeMap<u16, u32>,
}

impl Scripted {
    fn answer(&self, port: u16, answer: Answer) {
        self.0.lock().unwrap().answers.insert(port, answer);
    }

    fn calls(&self, port: u16) -> u32 {
        self.0
            .lock()
            .unwrap()
            .calls
            .get(&port)
            .copied()
            .unwrap_or(0)
    }
}

impl Probe for Scripted {
    fn probe(&self, check: &Check) -> impl Future<Output = Result<(), Failure>> + Send {
        let port = check.target.port();
        let answer = {
            let mut script = self.0.lock().unwrap();
            *script.calls.entry(port).or_default() += 1;
            script.answers.get(&port).copied().unwrap_or(Answer::Pass)
        };
        async move {
            match answer {
                Answer::Pass => Ok(()),
                Answer::Refuse => Err(Failure::Refused),
                Answer::Hang => std::future::pending().await,
            }
        }
    }
}

fn tcp(port: u16) -> Check {
    Check {
        kind: CheckKind::Tcp,
        target: SocketAddr::from(([127, 0, 0, 1], port)),
        via: None,
        source: None,
        interval: INTERVAL,
        timeout: Duration::from_millis(500),
        fall: 2,
        rise: 2,
    }
}

fn engine() -> (Engine<Scripted>, Scripted, Registry) {
    let script = Scripted::default();
    let mut registry = Registry::default();
    let engine = Engine::with_probe(&mut registry, script.clone());
    (engine, script, registry)
}

fn text(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
    out
}

fn verdict(engine: &Engine<Scripted>, check: &Check) -> Verdict {
    engine.verdicts()[check].clone()
}

#[tokio::test(start_paused = true)]
async fn a_new_check_is_healthy_from_the_moment_it_is_set_until_its_probes_say_otherwise() {
    let (mut engine, script, _registry) = engine();
    script.answer(1, Answer::Refuse);
    let start = Instant::now().into_std();
    engine.set([tcp(1)]);
    assert_eq!(
        engine.verdicts(),
        BTreeMap::from([(
            tcp(1),
            Verdict {
                health: Health::Healthy,
                since: start,
                reason: None
            }
        )])
    );
}

#[tokio::test(start_paused = true)]
async fn a_check_started_unhealthy_needs_rise_passes_before_it_is_healthy() {
    let (mut engine, script, _registry) = engine();
    let check = Check { rise: 3, ..tcp(1) };
    engine.set_starting([check.clone(), tcp(2)], |c| {
        (c.target.port() == 1).then(|| "ejected before".to_string())
    });
    let v = verdict(&engine, &check);
    assert_eq!(v.health, Health::Unhealthy);
    assert_eq!(v.reason.as_deref(), Some("ejected before"));
    assert_eq!(verdict(&engine, &tcp(2)).health, Health::Healthy);
    // Two passes (at the offset and one interval later) are not enough; the third is.
    sleep(INTERVAL + INTERVAL / 2).await;
    assert_eq!(script.calls(1), 2);
    assert_eq!(verdict(&engine, &check).health, Health::Unhealthy);
    sleep(INTERVAL).await;
    assert_eq!(script.calls(1), 3);
    assert_eq!(verdict(&engine, &check).health, Health::Healthy);
}

#[tokio::test(start_paused = true)]
async fn a_refusing_server_is_ejected_after_fall_failures_with_the_reason() {
    let (mut engine, script, _registry) = engine();
    script.answer(1, Answer::Refuse);
    let check = Check { fall: 3, ..tcp(1) };
    let start = Instant::now().into_std();
    engine.set([check.clone()]);

    // Probes come at offset, offset + 1s, ... with an offset under a fifth of the interval.
    sleep(Duration::from_millis(1500)).await;
    assert_eq!(script.calls(1), 2);
    assert_eq!(verdict(&engine, &check).health, Health::Healthy);

    sleep(INTERVAL).await;
    assert_eq!(script.calls(1), 3);
    let v = verdict(&engine, &check);
    assert_eq!(v.health, Health::Unhealthy);
    assert_eq!(v.reason.as_deref(), Some("connection refused"));
    // `since` is the third probe's instant.
    let since = v.since - start;
    assert!(
        since >= 2 * INTERVAL && since < 2 * INTERVAL + INTERVAL / 5,
        "{since:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_recovered_server_is_readmitted_after_rise_passes() {
    let (mut engine, script, _registry) = engine();
    script.answer(1, Answer::Refuse);
    let check = Check {
        fall: 1,
        rise: 3,
        ..tcp(1)
    };
    engine.set([check.clone()]);
    sleep(INTERVAL / 2).await;
    assert_eq!(verdict(&engine, &check).health, Health::Unhealthy);

    script.answer(1, Answer::Pass);
    sleep(2 * INTERVAL).await;
    assert_eq!(script.calls(1), 3);
    assert_eq!(verdict(&engine, &check).health, Health::Unhealthy);

    sleep(INTERVAL).await;
    let v = verdict(&engine, &check);
    assert_eq!((v.health, v.reason), (Health::Healthy, None));
}

#[tokio::test(start_paused = true)]
async fn a_server_that_never_answers_fails_with_the_timeout_as_reason() {
    let (mut engine, script, _registry) = engine();
    script.answer(1, Answer::Hang);
    let check = Check { fall: 1, ..tcp(1) };
    engine.set([check.clone()]);
    sleep(INTERVAL).await;
    assert_eq!(
        verdict(&engine, &check).reason.as_deref(),
        Some("timeout after 500ms")
    );
}

#[tokio::test(start_paused = true)]
async fn a_server_failing_every_other_probe_keeps_its_verdict_at_thresholds_of_two() {
    let (mut engine, script, _registry) = engine();
    engine.set([tcp(1)]);
    for i in 0..20 {
        let answer = if i % 2 == 0 {
            Answer::Refuse
        } else {
            Answer::Pass
        };
        script.answer(1, answer);
        sleep(INTERVAL).await;
    }
    assert_eq!(script.calls(1), 20);
    assert_eq!(verdict(&engine, &tcp(1)).health, Health::Healthy);
    assert!(engine.changed().now_or_never().is_none());
}

#[tokio::test(start_paused = true)]
async fn destinations_sharing_a_check_share_one_prober() {
    let (mut engine, script, _registry) = engine();
    // 10 IPVS services x 5 real servers, all the services checking the servers the same way.
    let destinations = (0..10u16).flat_map(|_service| (1..=5).map(tcp));
    engine.set(destinations.clone());
    assert_eq!(engine.probers(), 5);

    sleep(10 * INTERVAL).await;
    assert_eq!(script.calls(1), 10);
    let before = engine.verdicts();

    // The next resync hands over the same list: nothing restarts (a restart would reset `since`).
    engine.set(destinations);
    sleep(10 * INTERVAL).await;
    assert_eq!(engine.probers(), 5);
    assert_eq!(script.calls(1), 20);
    assert_eq!(engine.verdicts(), before);
}

#[tokio::test(start_paused = true)]
async fn checks_that_differ_in_any_field_are_probed_apart() {
    let (mut engine, _script, _registry) = engine();
    let via = Some(Via {
        mark: 7,
        real_server: "10.10.24.21".parse().unwrap(),
    });
    engine.set([
        tcp(1),
        Check { fall: 3, ..tcp(1) },
        Check { via, ..tcp(1) },
        Check {
            kind: CheckKind::Http { path: "/".into() },
            ..tcp(1)
        },
    ]);
    assert_eq!(engine.probers(), 4);
}

#[tokio::test(start_paused = true)]
async fn removing_a_check_stops_its_prober_and_drops_its_verdict_and_gauge_series() {
    let (mut engine, script, registry) = engine();
    engine.set([tcp(1), tcp(2)]);
    sleep(INTERVAL).await;
    let metrics = text(&registry);
    assert!(metrics.contains(r#"port="1""#), "{metrics}");
    assert!(metrics.contains(r#"port="2""#), "{metrics}");

    engine.set([tcp(2)]);
    let asked = script.calls(1);
    sleep(5 * INTERVAL).await;
    assert_eq!(script.calls(1), asked);
    assert_eq!(engine.probers(), 1);
    assert_eq!(engine.verdicts().into_keys().collect::<Vec<_>>(), [tcp(2)]);
    let metrics = text(&registry);
    assert!(!metrics.contains(r#"port="1""#), "{metrics}");
    assert!(metrics.contains(r#"port="2""#), "{metrics}");
}

#[tokio::test(start_paused = true)]
async fn a_check_removed_and_added_again_starts_afresh() {
    let (mut engine, script, _registry) = engine();
    script.answer(1, Answer::Refuse);
    engine.set([tcp(1)]);
    sleep(3 * INTERVAL).await;
    assert_eq!(verdict(&engine, &tcp(1)).health, Health::Unhealthy);

    engine.set([]);
    let start = Instant::now().into_std();
    engine.set([tcp(1)]);
    let v = verdict(&engine, &tcp(1));
    assert_eq!((v.health, v.since), (Health::Healthy, start));
}

#[tokio::test(start_paused = true)]
async fn dropping_the_engine_stops_its_probers() {
    let (mut engine, script, _registry) = engine();
    engine.set([tcp(1)]);
    sleep(INTERVAL).await;
    drop(engine);
    let asked = script.calls(1);
    sleep(5 * INTERVAL).await;
    assert_eq!(script.calls(1), asked);
}

#[tokio::test(start_paused = true)]
async fn changed_completes_after_a_transition_and_only_then() {
    let (mut engine, script, _registry) = engine();
    engine.set([tcp(1)]);
    assert!(
        timeout(PATIENCE, engine.changed()).await.is_err(),
        "passing probes change nothing"
    );

    script.answer(1, Answer::Refuse);
    timeout(PATIENCE, engine.changed())
        .await
        .expect("the ejection is a change");
    assert_eq!(verdict(&engine, &tcp(1)).health, Health::Unhealthy);
    assert!(
        timeout(PATIENCE, engine.changed()).await.is_err(),
        "a change is reported once"
    );

    // A change made while nobody waited is reported by the next call at once.
    script.answer(1, Answer::Pass);
    sleep(PATIENCE).await;
    assert!(engine.changed().now_or_never().is_some());
}

#[tokio::test(start_paused = true)]
async fn transitions_are_counted_and_probes_timed_by_kind_and_result() {
    let (mut engine, script, registry) = engine();
    script.answer(1, Answer::Refuse);
    let check = Check {
        fall: 1,
        rise: 1,
        ..tcp(1)
    };
    engine.set([check]);
    sleep(INTERVAL / 2).await;
    let metrics = text(&registry);
    assert!(
        metrics.contains(
            "lvs_backend_healthy{real_server=\"127.0.0.1\",port=\"1\",kind=\"tcp\",vip=\"\"} 0\n"
        ),
        "{metrics}"
    );

    script.answer(1, Answer::Pass);
    sleep(INTERVAL).await;
    let metrics = text(&registry);
    for line in [
        "lvs_backend_healthy{real_server=\"127.0.0.1\",port=\"1\",kind=\"tcp\",vip=\"\"} 1\n",
        "lvs_health_check_transitions_total{to=\"unhealthy\"} 1\n",
        "lvs_health_check_transitions_total{to=\"healthy\"} 1\n",
        "lvs_health_check_duration_seconds_count{kind=\"tcp\",result=\"fail\"} 1\n",
        "lvs_health_check_duration_seconds_count{kind=\"tcp\",result=\"pass\"} 1\n",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
}

#[tokio::test(start_paused = true)]
async fn through_the_vip_each_real_server_has_its_own_gauge_series() {
    let (mut engine, script, registry) = engine();
    script.answer(80, Answer::Refuse);
    let vip = |mark, path: &str| Check {
        kind: CheckKind::Http { path: path.into() },
        target: "10.10.24.88:80".parse().unwrap(),
        via: Some(Via {
            mark,
            real_server: format!("10.10.24.{mark}").parse().unwrap(),
        }),
        fall: 1,
        ..tcp(80)
    };
    engine.set([vip(21, "/"), vip(22, "/"), vip(22, "/healthz")]);
    sleep(INTERVAL).await;
    let metrics = text(&registry);
    let series: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("lvs_backend_healthy{"))
        .collect();
    assert_eq!(
        series,
        [
            "lvs_backend_healthy{real_server=\"10.10.24.21\",port=\"80\",kind=\"http\",vip=\"10.10.24.88\"} 0",
            "lvs_backend_healthy{real_server=\"10.10.24.22\",port=\"80\",kind=\"http\",vip=\"10.10.24.88\"} 0",
        ]
    );
}

/// The log lines of one test, from this thread's subscriber.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn each_transition_is_logged_once_with_the_server_and_the_reason() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .without_time()
        .finish();
    // The test's runtime is current-thread: the probers run on this thread and see it.
    let _guard = tracing::subscriber::set_default(subscriber);

    let (mut engine, script, _registry) = engine();
    script.answer(1, Answer::Refuse);
    engine.set([tcp(1)]);
    sleep(10 * INTERVAL).await;
    script.answer(1, Answer::Pass);
    sleep(10 * INTERVAL).await;

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].ends_with(
            "real server 127.0.0.1:1 is unhealthy: connection refused (2 failures) kind=\"tcp\""
        ),
        "{text}"
    );
    assert!(lines[0].starts_with(" WARN"), "{text}");
    assert!(
        lines[1].ends_with("real server 127.0.0.1:1 is healthy again (2 successes) kind=\"tcp\""),
        "{text}"
    );
}
