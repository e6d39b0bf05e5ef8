//! Reconciles against the mocked API server: each scenario lists the requests it expects.

use crate::http::Metrics as _;
use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use pretty_assertions::assert_eq;
use serde_json::Value;

use crate::api::{LvsService, LvsServiceStatus, NodeRole, TakeoverStatus};
use crate::controller::conditions::{ACCEPTED, DEGRADED, PROGRAMMED, READY, find};
use crate::controller::error::Error;
use crate::controller::fixtures::*;
use crate::controller::reconcile::{Settings, backoff, error_policy, reconcile};

/// Runs one reconcile of `object` in `world`, expecting exactly `calls`.
async fn scenario(
    world: World,
    object: &LvsService,
    calls: Vec<Call>,
) -> (Result<Action, Error>, Bodies) {
    let mut world = world;
    world.reports = reports_of(&[object]);
    let (ctx, server) = test_context(world, Settings::default());
    let handle = server.run(object, calls);
    let result = tokio::time::timeout(
        Duration::from_secs(2),
        reconcile(Arc::new(object.clone()), ctx),
    )
    .await
    .expect("reconcile hung: it made a request the scenario does not expect");
    (result, verified(handle).await)
}

fn applied_status(body: &Value) -> LvsServiceStatus {
    serde_json::from_value(body["status"].clone()).expect("a status")
}

fn cond(s: &LvsServiceStatus, t: &str) -> (String, String) {
    let c = find(s, t).unwrap_or_else(|| panic!("no {t}"));
    (c.status.clone(), c.reason.clone())
}

/// The requeue of a settled object: just after the first heartbeat it relies on expires (the
/// fixtures' heartbeats are fresh, so about 31 s), which is sooner than the periodic resync.
fn requeued_at_heartbeat_expiry(action: Action) {
    assert!(
        [30, 31]
            .map(|s| Action::requeue(Duration::from_secs(s)))
            .contains(&action),
        "{action:?}"
    );
}

fn pair(status: &str, reason: &str) -> (String, String) {
    (status.into(), reason.into())
}

#[tokio::test]
async fn an_object_without_the_finalizer_gets_it_first_and_nothing_else() {
    let object = lvs("web", "10.0.0.100");
    let (result, _) = scenario(
        World::two_directors_one_backend(),
        &object,
        vec![Call::AddFinalizer],
    )
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
}

#[tokio::test]
async fn a_new_object_gets_its_status_applied_by_the_controller_field_manager() {
    let mut object = finalized(lvs("web", "10.0.0.100"));
    object.metadata.generation = Some(3);
    let (result, bodies) = scenario(
        World::two_directors_one_backend(),
        &object,
        vec![Call::ApplyStatus, Call::Event("Accepted")],
    )
    .await;
    requeued_at_heartbeat_expiry(result.unwrap());
    let s = applied_status(&bodies[0]);
    assert_eq!(s.observed_generation, Some(3));
    assert_eq!(cond(&s, ACCEPTED), pair("True", "Accepted"));
    assert_eq!(cond(&s, PROGRAMMED), pair("False", "Pending"));
    assert_eq!(cond(&s, READY), pair("False", "NoActiveDirector"));
    assert_eq!(
        find(&s, READY).unwrap().message,
        "no director holds the VIP yet"
    );
    assert_eq!(
        cond(&s, DEGRADED),
        pair("False", "AsExpected"),
        "a new object whose nodes are applying it is not failing"
    );
    assert!(
        s.conditions
            .iter()
            .all(|c| c.observed_generation == Some(3))
    );
    assert_eq!(s.backend_summary.as_deref(), Some("0/1"));
    assert_eq!(s.backends[0].node.as_deref(), Some("n1"));
    assert_eq!(
        find(&s, PROGRAMMED).unwrap().message,
        "waiting for nodes d1, d2, n1 to apply generation 3"
    );
}

#[tokio::test]
async fn a_status_that_would_not_change_is_not_applied_again() {
    let object = finalized(lvs("web", "10.0.0.100"));
    let (_, bodies) = scenario(
        World::two_directors_one_backend(),
        &object,
        vec![Call::ApplyStatus, Call::Event("Accepted")],
    )
    .await;
    let mut settled = object.clone();
    settled.status = Some(applied_status(&bodies[0]));
    let (result, _) = scenario(World::two_directors_one_backend(), &settled, vec![]).await;
    requeued_at_heartbeat_expiry(result.unwrap());
}

#[tokio::test]
async fn agents_reporting_the_current_generation_make_it_ready_with_events_for_each_step() {
    let mut object = finalized(lvs("web", "10.0.0.100"));
    let mut d1 = report("d1", NodeRole::Director, 1);
    d1.active = true;
    object = reported(
        object,
        vec![
            d1,
            report("d2", NodeRole::Director, 1),
            report("n1", NodeRole::Backend, 1),
        ],
    );
    let (_, bodies) = scenario(
        World::two_directors_one_backend(),
        &object,
        vec![
            Call::ApplyStatus,
            Call::Event("Accepted"),
            Call::Event("Programmed"),
            Call::Event("DirectorChanged"),
        ],
    )
    .await;
    let s = applied_status(&bodies[0]);
    assert_eq!(cond(&s, READY), pair("True", "Ready"));
    assert_eq!(s.director.as_deref(), Some("d1"));
    assert_eq!(s.backend_summary.as_deref(), Some("1/1"));
    assert!(s.backends[0].programmed && s.backends[0].arp_verified);
    assert_eq!(bodies[3]["note"], "d1 holds the VIP now");
}

#[tokio::test]
async fn a_director_failover_is_announced_with_the_old_and_new_director() {
    let base = finalized(lvs("web", "10.0.0.100"));
    let mut d1 = report("d1", NodeRole::Director, 1);
    d1.active = true;
    let before = reported(
        base.clone(),
        vec![
            d1,
            report("d2", NodeRole::Director, 1),
            report("n1", NodeRole::Backend, 1),
        ],
    );
    let (_, bodies) = scenario(
        World::two_directors_one_backend(),
        &before,
        vec![
            Call::ApplyStatus,
            Call::Event("Accepted"),
            Call::Event("Programmed"),
            Call::Event("DirectorChanged"),
        ],
    )
    .await;
    // d2 took over from d1, whose agent died: d1's last report still says active (its heartbeat
    // Lease has not expired yet), but d2 says whom it took the VIP from and that it hears no d1.
    let mut d1 = report("d1", NodeRole::Director, 1);
    d1.active = true;
    d1.sync = vec!["master".into()];
    let mut d2 = report("d2", NodeRole::Director, 1);
    d2.active = true;
    d2.sync = vec!["master".into()];
    d2.takeover = Some(TakeoverStatus {
        from: Some("d1".into()),
        silent_ms: Some(352),
        at: "2026-11-26T12:00:00Z".into(),
    });
    d2.unreachable_peers = vec!["d1".into()];
    let mut after = before.clone();
    after.status = Some(LvsServiceStatus {
        nodes: vec![d1, d2, report("n1", NodeRole::Backend, 1)],
        ..applied_status(&bodies[0])
    });
    let (_, bodies) = scenario(
        World::two_directors_one_backend(),
        &after,
        vec![Call::ApplyStatus, Call::Event("Failover")],
    )
    .await;
    let status = applied_status(&bodies[0]);
    assert_eq!(status.director.as_deref(), Some("d2"), "not two actives");
    let states: Vec<(&str, &str)> = status
        .directors
        .iter()
        .map(|d| (d.node.as_str(), d.state.as_str()))
        .collect();
    assert_eq!(states, [("d1", "Unreachable"), ("d2", "Active")]);
    assert_eq!(status.directors[1].sync, ["master"]);
    assert_eq!(
        bodies[1]["note"],
        "d2 took the VIP over from d1, whose heartbeats stopped (352 ms without one)"
    );
}

#[tokio::test]
async fn a_second_holder_of_the_vip_degrades_the_object_naming_its_mac_and_node() {
    let mut d1 = report("d1", NodeRole::Director, 1);
    d1.active = true;
    d1.mac = Some("02:00:00:00:00:01".into());
    d1.foreign_holders = vec!["02:00:00:00:00:02".into()];
    let mut d2 = report("d2", NodeRole::Director, 1);
    d2.mac = Some("02:00:00:00:00:02".into());
    let object = reported(
        finalized(lvs("web", "10.0.0.100")),
        vec![d1, d2, report("n1", NodeRole::Backend, 1)],
    );
    let (_, bodies) = scenario(
        World::two_directors_one_backend(),
        &object,
        vec![
            Call::ApplyStatus,
            Call::Event("Accepted"),
            Call::Event("Programmed"),
            Call::Event("DirectorChanged"),
            Call::Event("DuplicateVIPHolder"),
        ],
    )
    .await;
    let status = applied_status(&bodies[0]);
    let degraded = find(&status, DEGRADED).unwrap();
    assert_eq!(degraded.reason, "DuplicateVIPHolder");
    assert_eq!(
        degraded.message,
        "02:00:00:00:00:02 (d2) also answers ARP for 10.0.0.100, besides the active director (seen from d1): clients are split between two machines; remove the VIP there"
    );
}

#[tokio::test]
async fn an_agent_error_degrades_the_object_and_raises_a_node_error_event() {
    let mut d1 = report("d1", NodeRole::Director, 1);
    d1.programmed = false;
    d1.error = Some("no interface has an address in the subnet of 10.0.0.100".into());
    let object = reported(finalized(lvs("web", "10.0.0.100")), vec![d1]);
    let (_, bodies) = scenario(
        World::two_directors_one_backend(),
        &object,
        vec![
            Call::ApplyStatus,
            Call::Event("Accepted"),
            Call::Event("NodeError"),
        ],
    )
    .await;
    let s = applied_status(&bodies[0]);
    assert_eq!(cond(&s, DEGRADED), pair("True", "NodeError"));
    assert_eq!(
        bodies[2]["note"],
        "node d1: no interface has an address in the subnet of 10.0.0.100"
    );
}

#[tokio::test]
async fn the_newer_of_two_objects_on_one_vip_port_is_rejected_naming_the_older() {
    let old = finalized(created_at(lvs("old", "10.0.0.100"), 100));
    let new = finalized(created_at(lvs("new", "10.0.0.100"), 200));
    let world = || World {
        services: vec![old.clone(), new.clone()],
        ..World::two_directors_one_backend()
    };

    let (result, bodies) = scenario(
        world(),
        &new,
        vec![Call::ApplyStatus, Call::Event("VIPConflict")],
    )
    .await;
    requeued_at_heartbeat_expiry(result.unwrap());
    let s = applied_status(&bodies[0]);
    assert_eq!(cond(&s, ACCEPTED), pair("False", "VIPConflict"));
    assert_eq!(
        find(&s, ACCEPTED).unwrap().message,
        "TCP 10.0.0.100:80 is already claimed by default/old, which is older"
    );
    assert_eq!(cond(&s, PROGRAMMED), pair("False", "NotAccepted"));
    assert_eq!(
        bodies[1]["note"],
        "TCP 10.0.0.100:80 is already claimed by default/old, which is older"
    );

    let (_, bodies) = scenario(
        world(),
        &old,
        vec![Call::ApplyStatus, Call::Event("Accepted")],
    )
    .await;
    assert_eq!(
        cond(&applied_status(&bodies[0]), ACCEPTED),
        pair("True", "Accepted")
    );
}

#[tokio::test]
async fn objects_created_in_the_same_second_are_settled_by_name_from_either_side() {
    let a = finalized(lvs("a", "10.0.0.100"));
    let b = finalized(lvs("b", "10.0.0.100"));
    let world = || World {
        services: vec![b.clone(), a.clone()],
        ..World::two_directors_one_backend()
    };
    let (_, bodies) = scenario(
        world(),
        &b,
        vec![Call::ApplyStatus, Call::Event("VIPConflict")],
    )
    .await;
    assert!(
        find(&applied_status(&bodies[0]), ACCEPTED)
            .unwrap()
            .message
            .contains("default/a")
    );
    let (result, _) = scenario(
        world(),
        &a,
        vec![Call::ApplyStatus, Call::Event("Accepted")],
    )
    .await;
    result.unwrap();
}

#[tokio::test]
async fn deletion_waits_while_agents_still_report_state() {
    let object = reported(
        deleted(finalized(lvs("web", "10.0.0.100")), Duration::from_secs(10)),
        vec![report("d1", NodeRole::Director, 1)],
    );
    let (result, _) = scenario(World::two_directors_one_backend(), &object, vec![]).await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(5)));
}

#[tokio::test]
async fn deletion_removes_the_finalizer_once_every_agent_removed_its_entry() {
    let object = deleted(finalized(lvs("web", "10.0.0.100")), Duration::from_secs(10));
    let (result, _) = scenario(
        World::two_directors_one_backend(),
        &object,
        vec![Call::RemoveFinalizer],
    )
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
}

#[tokio::test]
async fn deletion_gives_up_on_silent_agents_after_the_timeout_with_a_warning() {
    let object = reported(
        deleted(
            finalized(lvs("web", "10.0.0.100")),
            Duration::from_secs(200),
        ),
        vec![report("d1", NodeRole::Director, 1)],
    );
    let (result, bodies) = scenario(
        World::two_directors_one_backend(),
        &object,
        vec![Call::Event("CleanupTimedOut"), Call::RemoveFinalizer],
    )
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
    assert_eq!(bodies[0]["type"], "Warning");
    assert!(
        bodies[0]["note"].as_str().unwrap().contains("d1"),
        "{}",
        bodies[0]["note"]
    );
}

#[tokio::test]
async fn a_deleted_object_without_our_finalizer_is_left_alone() {
    let object = reported(
        deleted(lvs("web", "10.0.0.100"), Duration::from_secs(10)),
        vec![report("d1", NodeRole::Director, 1)],
    );
    let (result, _) = scenario(World::two_directors_one_backend(), &object, vec![]).await;
    assert_eq!(result.unwrap(), Action::await_change());
}

#[tokio::test]
async fn a_rejected_status_patch_fails_as_patch_status_and_backs_off_per_object() {
    let object = finalized(lvs("web", "10.0.0.100"));
    let (ctx, server) = test_context(World::two_directors_one_backend(), Settings::default());
    let handle = server.fail(&object, 500);
    let error = tokio::time::timeout(
        Duration::from_secs(2),
        reconcile(Arc::new(object.clone()), ctx.clone()),
    )
    .await
    .expect("reconcile hung")
    .expect_err("the patch failed");
    handle.await.unwrap();
    assert!(matches!(error, Error::PatchStatus { ref name, .. } if name == "default/web"));
    assert_eq!(error.category(), "patch_status");

    let object = Arc::new(object);
    let first = error_policy(object.clone(), &error, ctx.clone());
    let second = error_policy(object.clone(), &error, ctx.clone());
    assert_eq!(first, Action::requeue(Duration::from_secs(1)));
    assert_eq!(second, Action::requeue(Duration::from_secs(2)));
    let other = Arc::new(finalized(lvs("other", "10.0.0.101")));
    assert_eq!(
        error_policy(other, &error, ctx.clone()),
        Action::requeue(Duration::from_secs(1)),
        "backoff is per object"
    );
    let metrics = ctx.metrics.encode();
    assert!(
        metrics.contains(
            "lvs_operator_controller_reconcile_errors_total{category=\"patch_status\"} 3"
        ),
        "{metrics}"
    );
}

#[test]
fn backoff_doubles_from_one_second_up_to_thirty() {
    let delays: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
    assert_eq!(delays, vec![1, 2, 4, 8, 16, 30, 30, 30]);
    assert_eq!(backoff(u32::MAX), Duration::from_secs(30));
}

#[tokio::test]
async fn a_successful_reconcile_resets_the_objects_backoff() {
    let (ctx, _server) = test_context(World::two_directors_one_backend(), Settings::default());
    let object = Arc::new(lvs("web", "10.0.0.100"));
    let error = Error::StoreNotReady {
        name: "default/web".into(),
        store: "Node",
    };
    error_policy(object.clone(), &error, ctx.clone());
    assert_eq!(
        error_policy(object.clone(), &error, ctx.clone()),
        Action::requeue(Duration::from_secs(2))
    );
    // Deleted and without our finalizer: a reconcile that succeeds with no request.
    let gone = Arc::new(deleted(lvs("web", "10.0.0.100"), Duration::from_secs(1)));
    reconcile(gone, ctx.clone()).await.unwrap();
    assert_eq!(
        error_policy(object, &error, ctx),
        Action::requeue(Duration::from_secs(1))
    );
}

#[tokio::test]
async fn a_vip_no_pool_admits_is_refused_naming_the_pools() {
    let web = finalized(lvs("web", "10.0.0.100"));
    let lan = crate::api::LvsAddressPool::new(
        "lan",
        crate::api::LvsAddressPoolSpec {
            addresses: vec!["10.0.0.64/28".into()],
            ..Default::default()
        },
    );
    let world = World {
        services: vec![web.clone()],
        pools: vec![lan],
        ..World::two_directors_one_backend()
    };
    let (_, bodies) = scenario(
        world,
        &web,
        vec![Call::ApplyStatus, Call::Event("VIPNotAllowed")],
    )
    .await;
    let s = applied_status(&bodies[0]);
    assert_eq!(cond(&s, ACCEPTED), pair("False", "VIPNotAllowed"));
    assert_eq!(
        find(&s, ACCEPTED).unwrap().message,
        "spec.vip 10.0.0.100 is in no LvsAddressPool (pools: lan): use an address from one that admits namespace default"
    );
    assert!(
        s.backends.is_empty(),
        "no backends resolved: {:?}",
        s.backends
    );
}

#[tokio::test]
async fn an_object_without_vip_gets_the_first_free_address_and_keeps_it() {
    let taken = finalized(created_at(lvs("taken", "10.0.0.65"), 100));
    let mut auto = finalized(created_at(lvs("auto", "10.0.0.1"), 200));
    auto.spec.vip = None;
    let lan = crate::api::LvsAddressPool::new(
        "lan",
        crate::api::LvsAddressPoolSpec {
            addresses: vec!["10.0.0.64/29".into()],
            ..Default::default()
        },
    );
    let world = |auto: &LvsService| World {
        services: vec![taken.clone(), auto.clone()],
        pools: vec![lan.clone()],
        ..World::two_directors_one_backend()
    };
    let (_, bodies) = scenario(
        world(&auto),
        &auto,
        vec![Call::ApplyStatus, Call::Event("Accepted")],
    )
    .await;
    let s = applied_status(&bodies[0]);
    assert_eq!(
        s.vip.as_deref(),
        Some("10.0.0.66"),
        ".64 is the network, .65 taken"
    );
    assert_eq!(cond(&s, ACCEPTED), pair("True", "Accepted"));

    // With .66 in its status (as the API server now has it), a new controller keeps it even
    // though .66 is no longer the first free address.
    auto.status = Some(LvsServiceStatus {
        vip: Some("10.0.0.67".into()),
        ..Default::default()
    });
    let (_, bodies) = scenario(
        world(&auto),
        &auto,
        vec![Call::ApplyStatus, Call::Event("Accepted")],
    )
    .await;
    assert_eq!(applied_status(&bodies[0]).vip.as_deref(), Some("10.0.0.67"));
}

#[test]
fn an_objects_nodes_come_from_the_reports_each_under_its_reports_node() {
    use crate::api::{LvsNodeReport, LvsNodeReportSpec, NodeStatus, ServiceReport};
    use crate::controller::reconcile::with_reports;
    let mut web = lvs("web", "10.0.0.100");
    web.metadata.uid = Some("u1".into());
    // What an agent of old left in the status counts for nothing.
    web.status = Some(LvsServiceStatus {
        nodes: vec![NodeStatus {
            node: "stale".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    let entry = |object: &str, uid: &str, claims: &str| ServiceReport {
        object: object.into(),
        uid: uid.into(),
        status: NodeStatus {
            node: claims.into(),
            programmed: true,
            ..Default::default()
        },
    };
    let reports = [
        // rs1's agent claims to speak for rs2: its entry is rs1's all the same.
        LvsNodeReport::new(
            "rs1",
            LvsNodeReportSpec {
                services: vec![entry("default/web", "u1", "rs2")],
                ..Default::default()
            },
        ),
        // An entry for an earlier object of the same name.
        LvsNodeReport::new(
            "rs3",
            LvsNodeReportSpec {
                services: vec![entry("default/web", "u0", "rs3")],
                ..Default::default()
            },
        ),
    ]
    .map(Arc::new);
    let derived = with_reports(&web, &reports, &Default::default());
    let nodes: Vec<&str> = derived
        .status
        .iter()
        .flat_map(|s| &s.nodes)
        .map(|n| n.node.as_str())
        .collect();
    assert_eq!(nodes, vec!["rs1"]);
}
