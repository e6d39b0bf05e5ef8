//! `compute_status`: from the agents' reports to conditions, director and backends.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use pretty_assertions::assert_eq;

use crate::api::{BackendHealth, LvsService, LvsServiceStatus, NodeRole, NodeStatus};
use crate::controller::backends::{ExpectedNodes, ResolvedBackend};
use crate::controller::conditions::*;
use crate::controller::fixtures::{lvs, report, reported};
use crate::core::Conflict;

fn t0() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

const TIMEOUT: Duration = Duration::from_secs(30);

/// Every node of these tests renewed its heartbeat at `t0`.
fn fresh() -> BTreeMap<String, Timestamp> {
    beats_at(t0())
}

fn beats_at(at: Timestamp) -> BTreeMap<String, Timestamp> {
    ["d1", "d2", "n1", "n2", "n3"]
        .into_iter()
        .map(|n| (n.to_string(), at))
        .collect()
}

/// [`fresh`], except that `silent` renewed 45 s before `t0`.
fn with_silent(silent: &str) -> BTreeMap<String, Timestamp> {
    let mut beats = fresh();
    beats.insert(silent.into(), t0() - SignedDuration::from_secs(45));
    beats
}

fn backend(address: &str, node: Option<&str>) -> ResolvedBackend {
    ResolvedBackend {
        address: address.parse().unwrap(),
        node: node.map(String::from),
        weight: 1,
        draining: false,
    }
}

fn expected(directors: &[&str], real_servers: &[&str]) -> ExpectedNodes {
    ExpectedNodes {
        directors: directors.iter().map(|s| s.to_string()).collect(),
        real_servers: real_servers
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>(),
    }
}

fn active(mut r: NodeStatus) -> NodeStatus {
    r.active = true;
    r
}

/// The object at generation 2 with reports; d1 and d2 directors, n1 the real server.
fn object(reports: Vec<NodeStatus>) -> LvsService {
    let mut o = reported(lvs("web", "10.0.0.100"), reports);
    o.metadata.generation = Some(2);
    o
}

fn healthy_reports() -> Vec<NodeStatus> {
    vec![
        active(report("d1", NodeRole::Director, 2)),
        report("d2", NodeRole::Director, 2),
        report("n1", NodeRole::Backend, 2),
    ]
}

fn status_of(o: &LvsService, backends: &[ResolvedBackend], now: Timestamp) -> LvsServiceStatus {
    compute_status(
        o,
        &StatusInput {
            acceptance: &Acceptance::Accepted,
            backends,
            expected: &expected(&["d1", "d2"], &["n1"]),
            source: None,
            heartbeats: &beats_at(now),
            report_timeout: TIMEOUT,
            now,
        },
    )
}

fn cond<'a>(s: &'a LvsServiceStatus, type_: &str) -> (&'a str, &'a str) {
    let c = find(s, type_).unwrap_or_else(|| panic!("no {type_} condition"));
    (c.status.as_str(), c.reason.as_str())
}

#[test]
fn every_expected_node_programmed_at_the_current_generation_makes_the_object_ready() {
    let o = object(healthy_reports());
    let s = status_of(&o, &[backend("10.0.0.11", Some("n1"))], t0());
    assert_eq!(cond(&s, ACCEPTED), ("True", "Accepted"));
    assert_eq!(cond(&s, PROGRAMMED), ("True", "Programmed"));
    assert_eq!(cond(&s, READY), ("True", "Ready"));
    assert_eq!(cond(&s, DEGRADED), ("False", "AsExpected"));
    assert_eq!(s.director.as_deref(), Some("d1"));
    assert_eq!(s.backend_summary.as_deref(), Some("1/1"));
    assert_eq!(s.observed_generation, Some(2));
    assert!(
        s.conditions
            .iter()
            .all(|c| c.observed_generation == Some(2))
    );
    assert!(s.nodes.is_empty(), "status.nodes belongs to the agents");
    let b = &s.backends[0];
    assert_eq!(
        (
            b.address.as_str(),
            b.node.as_deref(),
            b.weight,
            b.programmed,
            b.arp_verified,
            b.draining
        ),
        ("10.0.0.11", Some("n1"), 1, true, true, false)
    );
}

#[test]
fn a_node_behind_the_current_generation_keeps_the_object_pending_and_is_named() {
    let mut reports = healthy_reports();
    reports[1].observed_generation = 1;
    let o = object(reports);
    let s = status_of(&o, &[backend("10.0.0.11", Some("n1"))], t0());
    assert_eq!(cond(&s, PROGRAMMED), ("False", "Pending"));
    assert_eq!(
        find(&s, PROGRAMMED).unwrap().message,
        "waiting for node d2 to apply generation 2"
    );
    assert_eq!(
        cond(&s, READY),
        ("True", "Ready"),
        "a standby behind does not keep clients from the active director"
    );
    assert_eq!(cond(&s, DEGRADED), ("False", "AsExpected"));
}

#[test]
fn an_expected_node_without_a_report_keeps_the_object_pending() {
    let o = object(vec![active(report("d1", NodeRole::Director, 2))]);
    let s = status_of(&o, &[backend("10.0.0.11", Some("n1"))], t0());
    assert_eq!(
        find(&s, PROGRAMMED).unwrap().message,
        "waiting for nodes d2, n1 to apply generation 2"
    );
    let b = &s.backends[0];
    assert!(b.programmed, "the active director has it");
    assert!(!b.arp_verified, "n1 has not reported");
    assert_eq!(s.backend_summary.as_deref(), Some("0/1"));
}

#[test]
fn a_node_error_on_a_pending_node_is_the_reason_it_is_not_programmed_and_degrades_it() {
    let mut reports = healthy_reports();
    reports[2].programmed = false;
    reports[2].error = Some("sysctl arp_ignore: permission denied".into());
    let o = object(reports);
    let s = status_of(&o, &[backend("10.0.0.11", Some("n1"))], t0());
    assert_eq!(cond(&s, PROGRAMMED), ("False", "NodeError"));
    assert_eq!(
        find(&s, PROGRAMMED).unwrap().message,
        "node n1: sysctl arp_ignore: permission denied"
    );
    assert_eq!(cond(&s, DEGRADED), ("True", "NodeError"));
}

#[test]
fn ready_needs_exactly_one_active_director() {
    let mut reports = healthy_reports();
    reports[0].active = false;
    let s = status_of(&object(reports), &[backend("10.0.0.11", Some("n1"))], t0());
    assert_eq!(cond(&s, READY), ("False", "NoActiveDirector"));
    assert_eq!(cond(&s, DEGRADED), ("True", "NoDirector"));
    assert_eq!(s.director, None);
    assert!(!s.backends[0].programmed);

    let mut reports = healthy_reports();
    reports[1].active = true;
    let s = status_of(&object(reports), &[backend("10.0.0.11", Some("n1"))], t0());
    assert_eq!(cond(&s, READY), ("False", "MultipleActiveDirectors"));
    assert_eq!(cond(&s, DEGRADED), ("True", "MultipleActiveDirectors"));
    assert_eq!(s.director, None);
}

#[test]
fn draining_zero_weight_and_unverified_backends_are_not_usable() {
    let mut reports = healthy_reports();
    reports.push(report("n2", NodeRole::Backend, 2));
    reports.push(NodeStatus {
        arp_verified: false,
        ..report("n3", NodeRole::Backend, 2)
    });
    let o = object(reports);
    let backends = vec![
        ResolvedBackend {
            weight: 0,
            draining: true,
            ..backend("10.0.0.11", Some("n1"))
        },
        ResolvedBackend {
            weight: 0,
            ..backend("10.0.0.12", Some("n2"))
        },
        backend("10.0.0.13", Some("n3")),
    ];
    let s = compute_status(
        &o,
        &StatusInput {
            acceptance: &Acceptance::Accepted,
            backends: &backends,
            expected: &expected(&["d1", "d2"], &["n1", "n2", "n3"]),
            source: None,
            heartbeats: &fresh(),
            report_timeout: TIMEOUT,
            now: t0(),
        },
    );
    assert_eq!(s.backend_summary.as_deref(), Some("0/3"));
    assert_eq!(cond(&s, PROGRAMMED), ("True", "Programmed"));
    assert_eq!(cond(&s, READY), ("False", "NoUsableBackend"));
    assert_eq!(cond(&s, DEGRADED), ("True", "BackendUnhealthy"));
    let message = &find(&s, DEGRADED).unwrap().message;
    assert!(
        message.contains(
            "real server 10.0.0.13 gets no new connections: node n3 does not hold the VIP on lo"
        ),
        "{message}"
    );
    assert!(
        message.contains("0/3 real servers take new connections"),
        "{message}"
    );
    assert!(s.backends[0].draining);
    assert_eq!(
        (s.backends[2].weight, s.backends[2].health),
        (0, BackendHealth::Unhealthy),
        "the director stops sending it new connections"
    );
}

#[test]
fn an_external_backend_is_usable_without_arp_verification() {
    let o = object(healthy_reports()[..2].to_vec());
    let s = compute_status(
        &o,
        &StatusInput {
            acceptance: &Acceptance::Accepted,
            backends: &[backend("192.168.5.5", None)],
            expected: &expected(&["d1", "d2"], &[]),
            source: None,
            heartbeats: &fresh(),
            report_timeout: TIMEOUT,
            now: t0(),
        },
    );
    assert_eq!(cond(&s, READY), ("True", "Ready"));
    assert_eq!(s.backend_summary.as_deref(), Some("1/1"));
    assert!(!s.backends[0].arp_verified);
}

#[test]
fn no_director_nodes_means_not_programmed_and_degraded_for_lack_of_a_director() {
    let o = object(vec![]);
    let s = compute_status(
        &o,
        &StatusInput {
            acceptance: &Acceptance::Accepted,
            backends: &[backend("10.0.0.11", Some("n1"))],
            expected: &expected(&[], &["n1"]),
            source: None,
            heartbeats: &fresh(),
            report_timeout: TIMEOUT,
            now: t0(),
        },
    );
    assert_eq!(cond(&s, PROGRAMMED), ("False", "NoDirectorNodes"));
    assert_eq!(cond(&s, READY), ("False", "NoDirectorNodes"));
    assert_eq!(cond(&s, DEGRADED), ("True", "NoDirectorNodes"));
    assert_eq!(
        find(&s, READY).unwrap().message,
        "no node is labelled lvs-operator.io/director=true: kubectl label node NODE lvs-operator.io/director=true"
    );
}

#[test]
fn a_conflicting_object_is_not_accepted_and_claims_no_director() {
    let o = object(healthy_reports());
    let conflict = Acceptance::Conflict(Conflict {
        winner: "default/old".into(),
        key: crate::core::ServiceKey {
            vip: "10.0.0.100".parse().unwrap(),
            protocol: crate::api::Protocol::Tcp,
            port: 80,
        },
    });
    let s = compute_status(
        &o,
        &StatusInput {
            acceptance: &conflict,
            backends: &[backend("10.0.0.11", Some("n1"))],
            expected: &expected(&["d1", "d2"], &["n1"]),
            source: None,
            heartbeats: &fresh(),
            report_timeout: TIMEOUT,
            now: t0(),
        },
    );
    assert_eq!(cond(&s, ACCEPTED), ("False", "VIPConflict"));
    assert_eq!(
        find(&s, ACCEPTED).unwrap().message,
        "TCP 10.0.0.100:80 is already claimed by default/old, which is older"
    );
    for t in [PROGRAMMED, READY, DEGRADED] {
        assert_eq!(cond(&s, t), ("False", "NotAccepted"), "{t}");
    }
    assert_eq!(s.director, None);
    assert!(!s.backends[0].programmed);
    assert_eq!(
        s.backend_summary.as_deref(),
        Some("0/1"),
        "nothing of it is in a kernel"
    );
}

#[test]
fn last_transition_time_stays_while_a_condition_holds_and_moves_when_it_flips() {
    let mut o = object(healthy_reports());
    let first = status_of(&o, &[backend("10.0.0.11", Some("n1"))], t0());
    let t1 = t0() + SignedDuration::from_secs(60);

    o.status = Some(LvsServiceStatus {
        nodes: healthy_reports(),
        ..first.clone()
    });
    let again = status_of(&o, &[backend("10.0.0.11", Some("n1"))], t1);
    assert_eq!(again.conditions, first.conditions, "nothing flipped");
    assert!(!differs(&first, &again));

    let mut reports = healthy_reports();
    reports[0].active = false;
    o.status = Some(LvsServiceStatus {
        nodes: reports,
        ..first.clone()
    });
    let flipped = status_of(&o, &[backend("10.0.0.11", Some("n1"))], t1);
    let time = |s: &LvsServiceStatus, t| find(s, t).unwrap().last_transition_time.0;
    assert_eq!(time(&flipped, READY), t1, "Ready flipped to False");
    assert_eq!(time(&flipped, DEGRADED), t1, "Degraded flipped to True");
    assert_eq!(time(&flipped, ACCEPTED), t0(), "Accepted held");
    assert_eq!(time(&flipped, PROGRAMMED), t0(), "Programmed held");
    assert!(differs(&first, &flipped));
    assert!(
        !same_verdict(&first, &flipped),
        "a new verdict is written at once"
    );
}

#[test]
fn a_new_reason_or_message_with_the_same_status_keeps_the_time_but_is_a_difference() {
    let mut o = object(vec![]);
    let first = status_of(&o, &[backend("10.0.0.11", Some("n1"))], t0());
    o.status = Some(LvsServiceStatus {
        nodes: vec![report("d1", NodeRole::Director, 2)],
        ..first.clone()
    });
    let later = status_of(
        &o,
        &[backend("10.0.0.11", Some("n1"))],
        t0() + SignedDuration::from_secs(5),
    );
    let p = find(&later, PROGRAMMED).unwrap();
    assert_eq!(p.status, "False");
    assert_eq!(p.last_transition_time.0, t0());
    assert!(differs(&first, &later), "the waiting list changed");
    assert!(
        same_verdict(&first, &later),
        "progress only: held back a moment for more reports"
    );
}

#[test]
fn differs_ignores_conditions_of_other_owners_and_the_agents_node_list() {
    let o = object(healthy_reports());
    let s = status_of(&o, &[backend("10.0.0.11", Some("n1"))], t0());
    let mut other = s.clone();
    other.nodes = healthy_reports();
    other
        .conditions
        .push(k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: "SomeoneElses".into(),
            status: "True".into(),
            reason: "X".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t0()),
        });
    assert!(!differs(&other, &s));
    assert!(!differs(&s, &other));
}

#[test]
fn a_silent_director_is_no_director_whatever_its_last_report_says() {
    let o = object(healthy_reports());
    let s = compute_status(
        &o,
        &StatusInput {
            acceptance: &Acceptance::Accepted,
            backends: &[backend("10.0.0.11", Some("n1"))],
            expected: &expected(&["d1", "d2"], &["n1"]),
            source: None,
            heartbeats: &with_silent("d1"),
            report_timeout: TIMEOUT,
            now: t0(),
        },
    );
    assert_eq!(s.director, None, "its entry still says active");
    assert_eq!(s.backend_summary.as_deref(), Some("0/1"));
    assert_eq!(cond(&s, READY), ("False", "NoActiveDirector"));
    assert_eq!(
        find(&s, READY).unwrap().message,
        "no director holds the VIP: node d1 has not reported within 30s"
    );
    assert_eq!(cond(&s, PROGRAMMED), ("False", "NodeNotReporting"));
    assert_eq!(cond(&s, DEGRADED), ("True", "NodeNotReporting"));
    assert_eq!(
        find(&s, DEGRADED).unwrap().message,
        "node d1 has not reported within 30s: is the lvs-operator agent running there?"
    );
}

#[test]
fn a_real_server_whose_node_is_silent_gets_weight_0_and_degrades_the_object() {
    let o = object(healthy_reports());
    let s = compute_status(
        &o,
        &StatusInput {
            acceptance: &Acceptance::Accepted,
            backends: &[
                backend("10.0.0.11", Some("n1")),
                backend("10.0.0.12", Some("n2")),
            ],
            expected: &expected(&["d1", "d2"], &["n1", "n2"]),
            source: None,
            heartbeats: &with_silent("n1"),
            report_timeout: TIMEOUT,
            now: t0(),
        },
    );
    let n1 = &s.backends[0];
    assert_eq!((n1.weight, n1.health), (0, BackendHealth::Unhealthy));
    assert_eq!(
        n1.reason.as_deref(),
        Some("node n1 has not reported within 30s, so nothing keeps the VIP on its lo")
    );
    assert!(!n1.arp_verified, "a silent node verifies nothing");
    assert_eq!(cond(&s, DEGRADED), ("True", "NodeNotReporting"));
    let message = &find(&s, DEGRADED).unwrap().message;
    assert!(
        message.contains("real server 10.0.0.11 gets no new connections"),
        "{message}"
    );
    assert_eq!(
        s.backend_summary.as_deref(),
        Some("0/2"),
        "n2 has not reported yet"
    );
}

#[test]
fn a_missing_service_is_the_reason_and_the_ports_column_lists_every_port() {
    let mut o = object(healthy_reports());
    o.spec.ports.push(crate::api::ServicePort {
        port: 5353,
        protocol: crate::api::Protocol::Udp,
    });
    let missing = SourceProblem {
        reason: "ServiceNotFound",
        message: "spec.backendService names Service default/web, which does not exist: create it or fix the name".into(),
    };
    let s = compute_status(
        &o,
        &StatusInput {
            acceptance: &Acceptance::Accepted,
            backends: &[],
            expected: &expected(&["d1", "d2"], &[]),
            source: Some(&missing),
            heartbeats: &fresh(),
            report_timeout: TIMEOUT,
            now: t0(),
        },
    );
    assert_eq!(cond(&s, READY), ("False", "ServiceNotFound"));
    assert_eq!(cond(&s, DEGRADED), ("True", "ServiceNotFound"));
    assert!(find(&s, READY).unwrap().message.contains("default/web"));
    assert_eq!(s.ports.as_deref(), Some("80/TCP,5353/UDP"));
}

#[test]
fn the_next_heartbeat_expiry_is_when_the_status_may_change_without_an_event() {
    let beats: BTreeMap<String, Timestamp> = [
        ("d1".to_string(), t0() - SignedDuration::from_secs(10)),
        ("n1".to_string(), t0() - SignedDuration::from_secs(25)),
        ("d2".to_string(), t0() - SignedDuration::from_secs(99)),
    ]
    .into();
    let input = StatusInput {
        acceptance: &Acceptance::Accepted,
        backends: &[],
        expected: &expected(&["d1", "d2"], &["n1"]),
        source: None,
        heartbeats: &beats,
        report_timeout: TIMEOUT,
        now: t0(),
    };
    assert!(input.reports("d1") && input.reports("n1") && !input.reports("d2"));
    assert_eq!(
        input.next_expiry(&["d1", "d2", "n1"].into()),
        Some(Duration::from_secs(5))
    );
}

fn checked(address: &str, healthy: bool, reason: Option<&str>) -> crate::api::RealServerCheck {
    crate::api::RealServerCheck {
        address: address.into(),
        healthy,
        reason: reason.map(String::from),
    }
}

#[test]
fn the_active_directors_checks_decide_health_and_the_backends_column() {
    let mut reports = healthy_reports();
    reports.push(report("n2", NodeRole::Backend, 2));
    reports[0].checks = vec![
        checked("10.0.0.11", false, Some("connection refused")),
        checked("10.0.0.12", true, None),
    ];
    // A standby's opinion does not count: the active director is the one clients go through.
    reports[1].checks = vec![checked("10.0.0.12", false, Some("timeout after 1s"))];
    let s = compute_status(
        &object(reports),
        &StatusInput {
            acceptance: &Acceptance::Accepted,
            backends: &[
                backend("10.0.0.11", Some("n1")),
                backend("10.0.0.12", Some("n2")),
            ],
            expected: &expected(&["d1", "d2"], &["n1", "n2"]),
            source: None,
            heartbeats: &fresh(),
            report_timeout: TIMEOUT,
            now: t0(),
        },
    );
    let n1 = &s.backends[0];
    assert_eq!(n1.health, BackendHealth::Unhealthy);
    assert_eq!(
        n1.reason.as_deref(),
        Some("health check failed: connection refused")
    );
    assert_eq!(
        n1.weight, 1,
        "the directors zero it themselves; the controller does not hold it down"
    );
    assert_eq!(s.backends[1].health, BackendHealth::Healthy);
    assert_eq!(s.backend_summary.as_deref(), Some("1/2"));
    assert_eq!(cond(&s, READY), ("True", "Ready"));
    assert_eq!(cond(&s, DEGRADED), ("True", "BackendUnhealthy"));
}

#[test]
fn when_every_real_server_fails_its_checks_the_object_has_no_healthy_backend() {
    let mut reports = healthy_reports();
    reports[0].checks = vec![checked("10.0.0.11", false, Some("HTTP 503"))];
    let s = status_of(&object(reports), &[backend("10.0.0.11", Some("n1"))], t0());
    assert_eq!(cond(&s, READY), ("False", "NoHealthyBackend"));
    assert!(
        find(&s, READY)
            .unwrap()
            .message
            .contains("10.0.0.11: health check failed: HTTP 503")
    );
    assert_eq!(s.backend_summary.as_deref(), Some("0/1"));
}

#[test]
fn many_silent_real_servers_make_a_bounded_status() {
    let o = object(healthy_reports());
    let names: Vec<String> = (1..=25).map(|i| format!("n{i:02}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let backends: Vec<ResolvedBackend> = names
        .iter()
        .enumerate()
        .map(|(i, n)| backend(&format!("10.0.1.{}", i + 1), Some(n)))
        .collect();
    // Every real server's node is silent (no heartbeat at all).
    let beats: BTreeMap<String, Timestamp> = fresh()
        .into_iter()
        .filter(|(n, _)| n.starts_with('d'))
        .collect();
    let s = compute_status(
        &o,
        &StatusInput {
            acceptance: &Acceptance::Accepted,
            backends: &backends,
            expected: &expected(&["d1", "d2"], &names),
            source: None,
            heartbeats: &beats,
            report_timeout: TIMEOUT,
            now: t0(),
        },
    );
    assert_eq!(s.lagging_nodes, names[..10]);
    assert_eq!(s.lagging_node_count, Some(25));
    let programmed = find(&s, PROGRAMMED).unwrap().message.clone();
    assert!(
        programmed.starts_with(
            "nodes n01, n02, n03, n04, n05, n06, n07, n08, n09, n10 and 15 more have not reported"
        ),
        "{programmed}"
    );
    let degraded = find(&s, DEGRADED).unwrap().message.clone();
    assert!(degraded.ends_with("; and 40 more"), "{degraded}");
    assert!(degraded.len() < 2000, "{} bytes", degraded.len());
}
