//! Tests of [`super::Ha`]: two directors exchanging heartbeats over loopback.

use super::super::peers::test_settings as settings;
use super::*;

async fn pair() -> (Ha, Ha) {
    let a = Peers::start(settings("a"), vec![]).unwrap();
    let b = Peers::start(settings("b"), vec![]).unwrap();
    a.set_targets(vec![b.local_addr().unwrap()]);
    b.set_targets(vec![a.local_addr().unwrap()]);
    (
        Ha::new(a, HaMetrics::default()),
        Ha::new(b, HaMetrics::default()),
    )
}

const VIP: &str = "10.10.24.88";

fn vips() -> BTreeSet<IpAddr> {
    [VIP.parse().unwrap()].into()
}

/// Runs both directors' loops (decide, "program", publish) until `done` or 5 s.
async fn settle(a: &mut Ha, b: &mut Ha, rounds: usize) {
    for _ in 0..rounds {
        for ha in [&mut *a, &mut *b] {
            let held = ha.decide(&vips());
            ha.after_resync(vips(), held, None);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A settled pair: the one holding the VIP first.
async fn active_and_standby() -> (Ha, Ha) {
    let (mut a, mut b) = pair().await;
    settle(&mut a, &mut b, 15).await;
    if a.holds(VIP.parse().unwrap()) {
        (a, b)
    } else {
        (b, a)
    }
}

fn holders(a: &Ha, b: &Ha) -> usize {
    let vip = VIP.parse().unwrap();
    usize::from(a.holds(vip)) + usize::from(b.holds(vip))
}

#[tokio::test]
async fn two_fresh_directors_elect_one_and_the_other_takes_over_when_it_dies() {
    let (mut a, mut b) = pair().await;
    settle(&mut a, &mut b, 15).await;
    assert_eq!(holders(&a, &b), 1, "exactly one holds the VIP");
    let vip = VIP.parse().unwrap();
    let (active, mut standby) = if a.holds(vip) { (a, b) } else { (b, a) };
    let name = active.peers().settings().node.clone();
    drop(active);
    let t0 = Instant::now();
    while !standby.holds(vip) {
        assert!(t0.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(5)).await;
        standby.decide(&vips());
    }
    let takeover = standby.takeover(vip).unwrap();
    assert_eq!(takeover.from.as_deref(), Some(name.as_str()));
    assert!(takeover.silent_for.unwrap() >= Duration::from_millis(100));
    assert_eq!(standby.failovers, 1);
}

#[tokio::test]
async fn a_planned_handover_pins_both_sides_until_the_taker_has_announced_the_vip() {
    let vip = VIP.parse().unwrap();
    let (mut active, mut standby) = active_and_standby().await;
    assert_eq!(active.leave(), 1, "the standby is ready");
    assert!(!active.handed_over());
    // The standby takes the VIP quietly, pinned; the old holder then pins too.
    let t0 = Instant::now();
    while active.handover(vip).is_none() {
        assert!(t0.elapsed() < Duration::from_secs(2));
        assert!(standby.take_announcements().is_empty());
        settle(&mut active, &mut standby, 1).await;
    }
    assert_eq!(active.handover(vip), Some(Handover::Giving));
    assert_eq!(standby.handover(vip), Some(Handover::Taking));
    assert!(standby.holds(vip) && standby.unannounced().contains(&vip));
    assert!(!standby.announces(vip) && !active.announces(vip));
    // Announced once the old holder has pinned its services (one resync), not before.
    let mut announced = BTreeSet::new();
    while announced.is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(3));
        assert!(
            active.holds(vip),
            "the old holder keeps the VIP until it is announced"
        );
        settle(&mut active, &mut standby, 1).await;
        announced = standby.take_announcements();
    }
    assert_eq!(announced, vips());
    assert!(standby.unannounced().is_empty() && standby.announces(vip));
    // The taker stays pinned a while longer, then schedules as the spec says.
    assert_eq!(standby.handover(vip), Some(Handover::Taking));
    let wake = standby.next_wake().unwrap();
    assert!(wake <= PINNED_AFTER, "{wake:?}");
    // The old holder lets go a moment later: packets already on their way still arrive.
    let at = Instant::now();
    while !active.handed_over() {
        assert!(at.elapsed() < LINGER + Duration::from_secs(1));
        assert_eq!(active.handover(vip), Some(Handover::Giving));
        settle(&mut active, &mut standby, 1).await;
    }
    assert!(at.elapsed() >= LINGER - Duration::from_millis(100));
    assert!(standby.holds(vip) && !active.holds(vip));
    assert_eq!(active.handover(vip), None);
    tokio::time::sleep(PINNED_AFTER).await;
    standby.decide(&vips());
    assert_eq!(standby.handover(vip), None);
    let takeover = standby.takeover(vip).unwrap();
    assert_eq!(
        takeover.silent_for, None,
        "planned: nobody was declared dead"
    );
}

#[tokio::test]
async fn a_taker_that_dies_while_the_vip_moves_unpins_the_old_holder() {
    let vip = VIP.parse().unwrap();
    let (mut active, mut standby) = active_and_standby().await;
    active.leave();
    let t0 = Instant::now();
    while active.handover(vip).is_none() {
        assert!(t0.elapsed() < Duration::from_secs(2));
        settle(&mut active, &mut standby, 1).await;
    }
    drop(standby);
    let t0 = Instant::now();
    while active.handover(vip).is_some() {
        assert!(t0.elapsed() < Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(20)).await;
        active.decide(&vips());
    }
    assert!(active.holds(vip), "with no standby left, it keeps serving");
}

#[tokio::test]
async fn a_director_handing_a_vip_over_lets_its_lease_go_to_the_taker_without_being_fenced() {
    let peers = Peers::start(settings("a"), vec![]).unwrap();
    let mut a = Ha::new(peers, HaMetrics::default());
    let vip: IpAddr = VIP.parse().unwrap();
    a.held.insert(
        vip,
        Held {
            term: 1,
            adopted: false,
        },
    );
    a.set_lease(vip, Some("a".into()), true);
    assert!(a.took(vip), "its Lease should name it");
    a.leaving.insert(vip, Instant::now());
    assert!(
        !a.took(vip),
        "handing it over: the taker claims the Lease, not a"
    );
    a.set_lease(vip, Some("b".into()), true);
    assert!(
        !a.fenced.contains(&vip),
        "a hands it over: the Lease moving is expected"
    );
    a.leaving.clear();
    a.set_lease(vip, Some("a".into()), true);
    a.set_lease(vip, Some("b".into()), true);
    assert!(
        a.fenced.contains(&vip),
        "taken while a held it, not handing it over"
    );
}

#[tokio::test]
async fn a_leaving_director_keeps_the_vip_until_the_standby_has_it_on_its_interface() {
    let vip = VIP.parse().unwrap();
    let (mut active, mut standby) = active_and_standby().await;
    assert_eq!(active.leave(), 1);
    // The standby hears it and takes the VIP; its resync has not added the address yet.
    let t0 = Instant::now();
    while !standby.holds(vip) {
        assert!(t0.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(20)).await;
        standby.decide(&vips());
    }
    standby.after_resync(vips(), BTreeSet::new(), None);
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        active.decide(&vips());
        active.after_resync(vips(), [vip].into(), None);
    }
    assert!(
        active.holds(vip),
        "no client has been told yet where the VIP went"
    );
    // The address is on the standby's interface: the claim goes out, and the handover
    // goes on (drained, announced).
    standby.after_resync(vips(), [vip].into(), None);
    let t0 = Instant::now();
    while active.holds(vip) {
        assert!(t0.elapsed() < DRAIN_MAX);
        standby.decide(&vips());
        standby.after_resync(vips(), [vip].into(), None);
        tokio::time::sleep(Duration::from_millis(20)).await;
        active.decide(&vips());
    }
    assert!(active.handed_over());
}

#[tokio::test]
async fn with_no_ready_standby_leaving_keeps_the_vip() {
    let peers = Peers::start(settings("alone"), vec![]).unwrap();
    let mut ha = Ha::new(peers, HaMetrics::default());
    ha.adopt(vips());
    assert_eq!(ha.leave(), 0);
    assert!(ha.handed_over());
    assert_eq!(ha.decide(&vips()), vips());
}

#[tokio::test]
async fn a_joining_director_does_not_take_a_vip_whose_live_holder_it_has_not_heard_yet() {
    // "b" joined; the heartbeats with "a" do not flow yet (neither knows the other's address).
    let peers = Peers::start(settings("b"), vec![]).unwrap();
    let mut b = Ha::new(peers, HaMetrics::default());
    let vip: IpAddr = VIP.parse().unwrap();
    b.set_lease(vip, Some("a".into()), true);
    b.after_resync(vips(), BTreeSet::new(), None);
    tokio::time::sleep(Duration::from_millis(200)).await; // past the quiet period
    assert!(b.decide(&vips()).is_empty(), "a is alive by the API server");
    // a's heartbeat Lease went stale: a is gone, and b takes the VIP.
    b.set_lease(vip, Some("a".into()), false);
    assert_eq!(b.decide(&vips()), vips());
}

#[tokio::test]
async fn a_vip_held_before_a_restart_is_let_go_when_its_lease_names_a_live_director() {
    let peers = Peers::start(settings("b"), vec![]).unwrap();
    let mut b = Ha::new(peers, HaMetrics::default());
    let vip: IpAddr = VIP.parse().unwrap();
    b.adopt(vips());
    assert!(!b.took(vip), "adopted, not taken: its Lease is not claimed");
    b.set_lease(vip, Some("a".into()), false);
    assert_eq!(
        b.decide(&vips()),
        vips(),
        "a's agent is gone: b keeps serving"
    );
    b.set_lease(vip, Some("a".into()), true);
    assert!(b.decide(&vips()).is_empty(), "a took it over meanwhile");
}

#[tokio::test]
async fn a_restarted_director_that_held_the_vip_yields_to_the_one_that_took_over() {
    let (mut a, mut b) = pair().await;
    let vip: IpAddr = VIP.parse().unwrap();
    // b took over (term 1) while a was down; a comes back still holding the VIP (term 0).
    b.held.insert(
        vip,
        Held {
            term: 1,
            adopted: false,
        },
    );
    a.adopt(vips());
    settle(&mut a, &mut b, 15).await;
    assert!(b.holds(vip));
    assert!(!a.holds(vip));
}

#[tokio::test]
async fn only_a_director_with_a_peer_keeps_its_sync_daemons_after_taking_a_vip() {
    let (a, b) = active_and_standby().await;
    assert!(
        a.keeps_sync_daemons(),
        "it just took the VIP, with a standby to sync with"
    );
    assert!(b.keeps_sync_daemons());
    let alone = Peers::start(settings("alone"), vec![]).unwrap();
    let mut alone = Ha::new(alone, HaMetrics::default());
    for _ in 0..10 {
        let held = alone.decide(&vips());
        alone.after_resync(vips(), held, None);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(alone.holds(VIP.parse().unwrap()));
    assert!(
        !alone.keeps_sync_daemons(),
        "no peer: nothing to sync with, no daemon to keep"
    );
}
