//! [`Ha`]: this director's side of the failover, between the heartbeats ([`super::peers`]) and
//! the agent's resyncs.
//!
//! Before each resync the agent asks [`Ha::decide`] which of the VIPs it may direct it should
//! hold; after it, [`Ha::after_resync`] says which it is ready to take (their IPVS services are
//! programmed), which goes out in the next heartbeat. A peer dying or changing its claims wakes
//! the agent ([`Ha::changed`]) for an immediate resync, so a takeover costs the peer's
//! `dead_after` plus one resync that adds an address.
//!
//! A VIP this director lets go of on purpose (SIGTERM, or no longer a candidate in a cluster) is
//! *leaving*: it stays held until a ready standby claims it, so clients see no gap; with no
//! ready standby it is kept (SIGTERM) or dropped at once (no longer a candidate).
//!
//! A planned handover moves no connection mid-flight. The taker adds the VIP to its interface
//! *quietly* (no announcement, so clients still reach the old holder), sends the VIP's new TCP
//! connections to one real server and turns `sloppy_tcp` on; the old holder, hearing that, sends
//! its new connections to the same real server and, once that is programmed, says it has
//! *drained*; the taker then announces the VIP, and the old holder lets go [`LINGER`] later. A
//! connection whose SYN the old holder scheduled and whose next packets reach the taker is
//! scheduled there on the first one, to the same real server (see `crate::core::Handover`).
//! [`PINNED_AFTER`] later the taker schedules as the spec says again.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tracing::{info, warn};

use super::elect::{Candidate, View, should_hold};
use super::message::VipState;
use super::metrics::{HaMetrics, PeerLabels, VipLabels};
use super::peers::{Claims, Peer, Peers};
use crate::core::Handover;

/// A peer's claim on one VIP: its name, what this director hears of it, and its state for the VIP.
type Claim<'a> = (&'a String, &'a Peer, &'a VipState);

/// How a VIP came to this director, for the status and the failover Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Takeover {
    /// The director that held it before, when one is known.
    pub from: Option<String>,
    /// How long that director had been silent when it was declared dead (an unplanned
    /// failover); `None` when it handed the VIP over or nobody held it.
    pub silent_for: Option<Duration>,
    pub at: SystemTime,
}

#[derive(Debug, Clone)]
struct Held {
    term: u64,
    /// Held before this agent started, not taken by it: the VIP Lease may name a director that
    /// took it over meanwhile.
    adopted: bool,
}

/// How long a director that no longer directs a VIP waits for a standby to claim it.
pub const HANDOVER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long after taking or letting go of a VIP a director stops none of its connection-sync
/// daemons. The kernel's master sends a partly filled buffer only 2 to 3 s after its first
/// entry, and drops what it has not sent when it stops; the new holder's backup must be there to
/// receive it.
pub const SYNC_GRACE: Duration = Duration::from_secs(5);

/// How long the old holder keeps the VIP (pinned) after the taker announced it: packets
/// sent before a neighbour heard the announcement still arrive.
pub const LINGER: Duration = Duration::from_millis(1000);

/// How long the taker keeps new connections on one real server after it announced the VIP: by
/// then every connection the old holder scheduled has sent the taker its next packet.
pub const PINNED_AFTER: Duration = Duration::from_secs(1);

/// The longest a taker stays quiet waiting for the old holder to drain (an older agent never
/// says it has).
const QUIET_MAX: Duration = Duration::from_secs(3);

/// The longest a director handing a VIP over waits for the taker to announce it.
const DRAIN_MAX: Duration = Duration::from_secs(6);

/// How long a stopping director may take to hand its VIPs over: a standby claims them
/// ([`HANDOVER_TIMEOUT`]), then the VIPs move ([`DRAIN_MAX`]).
pub const HANDOVER_LIMIT: Duration =
    Duration::from_millis(HANDOVER_TIMEOUT.as_millis() as u64 + DRAIN_MAX.as_millis() as u64);

/// A VIP being handed over whose taker has it on its interface (the old holder's side).
#[derive(Debug, Clone)]
struct Drain {
    /// The taker.
    to: String,
    since: Instant,
    /// A resync has pinned its services since.
    pinned: bool,
    /// When the taker was first heard announcing it.
    announced: Option<Instant>,
}

/// A peer's state for one VIP, for reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerReport {
    pub node: String,
    pub alive: bool,
    pub active: bool,
    pub ready: bool,
    pub rtt: Option<Duration>,
}

pub struct Ha {
    peers: Peers,
    held: BTreeMap<IpAddr, Held>,
    /// VIPs programmed here, ready to be taken.
    ready: BTreeSet<IpAddr>,
    /// VIPs on this director's interface after the last resync (added and announced).
    installed: BTreeSet<IpAddr>,
    /// VIPs being let go of on purpose, since when.
    leaving: BTreeMap<IpAddr, Instant>,
    /// Leaving VIPs whose taker has them on its interface: new connections are pinned here.
    draining: BTreeMap<IpAddr, Drain>,
    /// VIPs taken from a director handing them over, on the interface but not announced until
    /// it has drained (since when).
    unannounced: BTreeMap<IpAddr, Instant>,
    /// VIPs out of `unannounced`, to announce at the next resync.
    announce: BTreeSet<IpAddr>,
    /// VIPs taken in a handover and announced: pinned until then.
    pinned_until: BTreeMap<IpAddr, Instant>,
    /// The VIPs whose Lease another director took while this one held them (cluster).
    fenced: BTreeSet<IpAddr>,
    /// The holder each VIP Lease names (cluster).
    lease_holders: BTreeMap<IpAddr, String>,
    /// The VIPs whose Lease holder's agent renews its heartbeat Lease.
    live_holders: BTreeSet<IpAddr>,
    takeovers: BTreeMap<IpAddr, Takeover>,
    /// When this director last took or let go of a VIP, or started.
    last_swap: Instant,
    mac: Option<String>,
    started: Instant,
    /// Failovers to this director.
    pub failovers: u64,
    metrics: HaMetrics,
}

impl Ha {
    pub fn new(peers: Peers, metrics: HaMetrics) -> Self {
        Self {
            peers,
            held: BTreeMap::new(),
            ready: BTreeSet::new(),
            installed: BTreeSet::new(),
            leaving: BTreeMap::new(),
            draining: BTreeMap::new(),
            unannounced: BTreeMap::new(),
            announce: BTreeSet::new(),
            pinned_until: BTreeMap::new(),
            fenced: BTreeSet::new(),
            lease_holders: BTreeMap::new(),
            live_holders: BTreeSet::new(),
            takeovers: BTreeMap::new(),
            // A restarted agent may have let go of a VIP just before (a rolling update): the
            // daemons it finds keep running through the grace all the same.
            last_swap: Instant::now(),
            mac: None,
            started: Instant::now(),
            failovers: 0,
            metrics,
        }
    }

    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    /// VIPs this director held before it (re)started: it goes on holding them, with the lowest
    /// term, so a standby that took over meanwhile keeps them.
    pub fn adopt(&mut self, vips: impl IntoIterator<Item = IpAddr>) {
        for vip in vips {
            info!("{vip}: held before this agent started; holding it");
            self.held.insert(
                vip,
                Held {
                    term: 0,
                    adopted: true,
                },
            );
            // It serves: say so before the first resync, so no standby takes it meanwhile.
            self.ready.insert(vip);
        }
        let held: BTreeSet<IpAddr> = self.held.keys().copied().collect();
        self.publish(&held);
    }

    /// A fresh director listens this long before it takes a VIP nobody claims, so that it learns
    /// who is active first.
    fn quiet(&self) -> Duration {
        let s = self.peers.settings();
        s.dead_after + s.interval
    }

    /// When the quiet period ends, if it has not, or a handover's next step is due: the agent
    /// resyncs then.
    pub fn next_wake(&self) -> Option<Duration> {
        let quiet = self.quiet().checked_sub(self.started.elapsed());
        let drains = self.draining.values().flat_map(|d| {
            [
                DRAIN_MAX.checked_sub(d.since.elapsed()),
                d.announced.and_then(|t| LINGER.checked_sub(t.elapsed())),
            ]
        });
        let unannounced = self
            .unannounced
            .values()
            .map(|t| QUIET_MAX.checked_sub(t.elapsed()))
            .chain(
                self.pinned_until
                    .values()
                    .map(|t| t.checked_duration_since(Instant::now())),
            );
        std::iter::once(quiet)
            .chain(drains)
            .chain(unannounced)
            .flatten()
            .min()
    }

    /// Which of `candidates` (the VIPs this director may direct now) it should hold. A held VIP
    /// that is no longer a candidate is handed over to a ready standby when there is one (it
    /// stays held, and the caller keeps directing it, until the standby claims it or
    /// [`HANDOVER_TIMEOUT`] passes), else let go of at once.
    pub fn decide(&mut self, candidates: &BTreeSet<IpAddr>) -> BTreeSet<IpAddr> {
        let snapshot = self.peers.snapshot();
        self.leave_non_candidates(candidates, &snapshot);
        let mut all = candidates.clone();
        all.extend(self.leaving.keys().filter(|v| self.held.contains_key(v)));
        let candidates = &all;
        for vip in candidates {
            let claims: Vec<Claim<'_>> = snapshot
                .iter()
                .filter_map(|(node, p)| {
                    let state = p.last.vips.iter().find(|v| v.vip == *vip)?;
                    Some((node, p, state))
                })
                .collect();
            // The director a VIP being handed over goes to: a live peer with it on its
            // interface, not leaving it.
            let taker = claims
                .iter()
                .find(|(_, p, v)| p.alive && v.active && !v.leaving);
            if let Some(d) = self.draining.get(vip)
                && taker.is_none_or(|(node, ..)| **node != d.to)
            {
                warn!(
                    "{vip}: {} no longer has it; scheduling new connections here again",
                    d.to
                );
                self.draining.remove(vip);
            }
            let holding = self.held.contains_key(vip);
            // False while this director hands the VIP over and has not drained it yet.
            let settled = match (holding, self.should_hold(*vip, &claims, &snapshot)) {
                (false, true) => {
                    self.take(*vip, &claims);
                    true
                }
                (true, false) => self.let_go(*vip, &claims, taker),
                _ => true,
            };
            if settled {
                self.announce_when_drained(*vip, &claims);
            }
        }
        let held = &self.held;
        self.draining.retain(|vip, _| held.contains_key(vip));
        self.unannounced.retain(|vip, _| held.contains_key(vip));
        self.announce.retain(|vip| held.contains_key(vip));
        let now = Instant::now();
        self.pinned_until
            .retain(|vip, until| held.contains_key(vip) && *until > now);
        self.publish(candidates);
        self.record(candidates, &snapshot);
        self.held.keys().copied().collect()
    }

    /// Held VIPs that are no longer candidates: handed over to a ready standby (they stay held
    /// until it claims them, [`HANDOVER_TIMEOUT`] at most), else let go of at once.
    fn leave_non_candidates(
        &mut self,
        candidates: &BTreeSet<IpAddr>,
        snapshot: &BTreeMap<String, Peer>,
    ) {
        for vip in self.held.keys().copied().collect::<Vec<_>>() {
            if candidates.contains(&vip) {
                continue;
            }
            let since = self.leaving.get(&vip).copied();
            match (since, ready_standby(snapshot, vip)) {
                (None, Some(to)) => {
                    info!("{vip}: no longer directed here; handing over to {to}");
                    self.leaving.insert(vip, Instant::now());
                }
                (Some(t), _)
                    if t.elapsed() < HANDOVER_TIMEOUT || self.draining.contains_key(&vip) => {}
                _ => {
                    info!("{vip}: no longer directed here; letting go");
                    self.held.remove(&vip);
                    self.leaving.remove(&vip);
                    self.last_swap = Instant::now();
                }
            }
        }
    }

    /// Whether this director should hold `vip`, by [`should_hold`] over what it knows of its
    /// peers' `claims`; a VIP not held yet is not taken during the quiet start, nor while the
    /// Lease names a live director this one has never heard.
    fn should_hold(
        &self,
        vip: IpAddr,
        claims: &[Claim<'_>],
        snapshot: &BTreeMap<String, Peer>,
    ) -> bool {
        let settings = self.peers.settings();
        let holding = self.held.get(&vip);
        let view = View {
            vip,
            me: Candidate {
                node: &settings.node,
                priority: settings.priority,
                active: holding.is_some(),
                term: holding.map_or(0, |h| h.term),
                ready: self.ready.contains(&vip),
                leaving: self.leaving.contains_key(&vip),
            },
            peers: claims
                .iter()
                .filter(|(_, p, _)| p.alive)
                .map(|(node, p, v)| Candidate {
                    node,
                    priority: p.last.priority,
                    active: v.active,
                    term: v.term,
                    ready: v.ready,
                    leaving: v.leaving,
                })
                .collect(),
            lease_holder: self.lease_holders.get(&vip).map(String::as_str),
            fenced: self.fenced.contains(&vip),
        };
        // A director the Lease names, alive by the API server, that this one has never heard:
        // the two do not know each other's address yet (a director just joined). Its silence is
        // no evidence of death; wait until the heartbeats flow.
        let unheard_holder = view.lease_holder.is_some_and(|h| {
            h != settings.node && self.live_holders.contains(&vip) && !snapshot.contains_key(h)
        });
        let quiet = self.started.elapsed() < self.quiet();
        should_hold(&view) && !(holding.is_none() && (quiet || unheard_holder))
    }

    /// Takes `vip`, with a term past every claim seen (dead directors' included: ours is the
    /// newest), counting a failover when another director held it.
    fn take(&mut self, vip: IpAddr, claims: &[Claim<'_>]) {
        let term = claims.iter().map(|(_, _, v)| v.term).max().unwrap_or(0) + 1;
        let before = claims
            .iter()
            .filter(|(_, _, v)| v.active)
            .max_by_key(|(_, _, v)| v.term);
        let takeover = Takeover {
            from: before.map(|(node, ..)| node.to_string()),
            silent_for: before
                .and_then(|(_, p, v)| (!p.alive && !v.leaving).then_some(p.silent_for).flatten()),
            at: SystemTime::now(),
        };
        match (&takeover.from, takeover.silent_for) {
            (Some(from), Some(silent)) => warn!(
                "{vip}: taking over from {from} (silent for {} ms), term {term}",
                silent.as_millis()
            ),
            (Some(from), None) => info!("{vip}: {from} hands it over; taking it, term {term}"),
            (None, _) => info!("{vip}: no director holds it; taking it, term {term}"),
        }
        if takeover.from.is_some() {
            self.failovers += 1;
            let vip = vip.to_string();
            self.metrics
                .failovers
                .get_or_create(&VipLabels { vip })
                .inc();
        }
        // Handed over: quiet until the old holder has drained (module docs).
        if before.is_some_and(|(_, p, v)| p.alive && v.leaving) {
            self.unannounced.insert(vip, Instant::now());
        }
        self.takeovers.insert(vip, takeover);
        self.last_swap = Instant::now();
        self.held.insert(
            vip,
            Held {
                term,
                adopted: false,
            },
        );
    }

    /// Lets go of `vip`, unless it is being handed over to `taker` and has not drained yet
    /// (false then: it stays held).
    fn let_go(&mut self, vip: IpAddr, claims: &[Claim<'_>], taker: Option<&Claim<'_>>) -> bool {
        let fenced = self.fenced.contains(&vip);
        if !fenced
            && self.leaving.contains_key(&vip)
            && let Some((node, _, v)) = taker
            && !self.drain(vip, node, v)
        {
            return false;
        }
        let by = claims
            .iter()
            .filter(|(_, p, _)| p.alive)
            .find(|(_, _, v)| v.active && !v.leaving);
        match (by, fenced) {
            (_, true) => warn!("{vip}: another director took its Lease; letting go of the VIP"),
            (Some((node, _, v)), _) => {
                info!(
                    "{vip}: {node} holds it (term {}); letting go, standing by",
                    v.term
                )
            }
            (None, _) => info!("{vip}: letting go"),
        }
        self.held.remove(&vip);
        self.fenced.remove(&vip);
        self.leaving.remove(&vip);
        self.last_swap = Instant::now();
        true
    }

    /// The old holder's side of a handover whose taker (`to`) has the VIP on its interface:
    /// pins (drained once that is programmed), and is done (lets go) [`LINGER`] after the
    /// taker announced the VIP, or after [`DRAIN_MAX`] at most.
    fn drain(&mut self, vip: IpAddr, to: &str, state: &VipState) -> bool {
        let d = self.draining.entry(vip).or_insert_with(|| {
            info!(
                "{vip}: {to} has it on its interface; sending new connections to one real server, as it does, until it announces the VIP"
            );
            Drain {
                to: to.to_string(),
                since: Instant::now(),
                pinned: false,
                announced: None,
            }
        });
        if !state.quiet && d.announced.is_none() {
            d.announced = Some(Instant::now());
        }
        d.announced.is_some_and(|t| t.elapsed() >= LINGER) || d.since.elapsed() >= DRAIN_MAX
    }

    /// The taker's side: a VIP taken quietly is announced once the old holder has drained, has
    /// let go, or [`QUIET_MAX`] passed.
    fn announce_when_drained(&mut self, vip: IpAddr, claims: &[Claim<'_>]) {
        let Some(since) = self.unannounced.get(&vip).copied() else {
            return;
        };
        let old = claims
            .iter()
            .find(|(_, p, v)| p.alive && v.active && v.leaving);
        let why = match old {
            None => "the old holder let go of it".to_string(),
            Some((node, _, v)) if v.drained => format!("{node} has drained it"),
            Some((node, ..)) if since.elapsed() >= QUIET_MAX => format!(
                "{node} has not drained it within {} ms",
                QUIET_MAX.as_millis()
            ),
            Some(_) => return,
        };
        info!("{vip}: {why}; announcing it");
        self.unannounced.remove(&vip);
        self.announce.insert(vip);
        self.pinned_until.insert(vip, Instant::now() + PINNED_AFTER);
    }

    fn record(&self, candidates: &BTreeSet<IpAddr>, snapshot: &BTreeMap<String, Peer>) {
        self.metrics.active.clear();
        for vip in candidates {
            let labels = VipLabels {
                vip: vip.to_string(),
            };
            let held = i64::from(self.held.contains_key(vip));
            self.metrics.active.get_or_create(&labels).set(held);
        }
        for (node, peer) in snapshot {
            let labels = PeerLabels { peer: node.clone() };
            self.metrics
                .peer_up
                .get_or_create(&labels)
                .set(i64::from(peer.alive));
            if let Some(rtt) = peer.rtt {
                self.metrics
                    .peer_rtt
                    .get_or_create(&labels)
                    .set(rtt.as_secs_f64());
            }
        }
    }

    /// After a resync: the VIPs whose services are programmed here (ready to be taken), the
    /// addresses now on its interfaces (`installed`: a VIP taken is claimed from then on) and
    /// the MAC of the VIPs' interface.
    pub fn after_resync(
        &mut self,
        ready: BTreeSet<IpAddr>,
        installed: BTreeSet<IpAddr>,
        mac: Option<String>,
    ) {
        for (vip, d) in &mut self.draining {
            d.pinned |= ready.contains(vip);
        }
        self.ready = ready;
        self.installed = installed;
        self.mac = mac;
        let candidates: BTreeSet<IpAddr> =
            self.ready.iter().chain(self.held.keys()).copied().collect();
        self.publish(&candidates);
    }

    /// Tells the peers this director's claims. A VIP taken is claimed once the resync that adds
    /// it to the interface (and announces it) is done: a director handing it over lets go when
    /// it hears the claim, and letting go any earlier would drop the clients whose neighbour
    /// entries still point at it (their SYNs reach a director without the VIP).
    fn publish(&self, candidates: &BTreeSet<IpAddr>) {
        let vips = candidates
            .iter()
            .map(|vip| VipState {
                vip: *vip,
                active: self
                    .held
                    .get(vip)
                    .is_some_and(|h| h.adopted || self.installed.contains(vip)),
                ready: self.ready.contains(vip),
                term: self.held.get(vip).map_or(0, |h| h.term),
                leaving: self.leaving.contains_key(vip),
                quiet: self.unannounced.contains_key(vip),
                drained: self.draining.get(vip).is_some_and(|d| d.pinned),
            })
            .collect();
        self.peers.set_claims(Claims {
            vips,
            mac: self.mac.clone(),
        });
    }

    /// Starts letting go of every held VIP that a live peer stands ready to take; returns how
    /// many. The others stay held: with no standby, keeping the VIP is the only way to serve.
    pub fn leave(&mut self) -> usize {
        let snapshot = self.peers.snapshot();
        let handed: Vec<IpAddr> = self
            .held
            .keys()
            .filter(|vip| ready_standby(&snapshot, **vip).is_some())
            .copied()
            .collect();
        for vip in &handed {
            let to = ready_standby(&snapshot, *vip).unwrap_or_default();
            info!("{vip}: handing over to {to}");
            self.leaving.insert(*vip, Instant::now());
        }
        let candidates: BTreeSet<IpAddr> = self.held.keys().chain(&self.ready).copied().collect();
        self.publish(&candidates);
        handed.len()
    }

    /// Whether every VIP being let go of has been taken by another director.
    pub fn handed_over(&self) -> bool {
        self.leaving.keys().all(|vip| !self.held.contains_key(vip))
    }

    /// The API server's word on a VIP (cluster): who its Lease names, whether that director's
    /// agent is alive by its heartbeat Lease (`holder_live`), and so whether another director took
    /// the VIP from this one while it held it.
    pub fn set_lease(&mut self, vip: IpAddr, holder: Option<String>, holder_live: bool) {
        if holder_live {
            self.live_holders.insert(vip);
        } else {
            self.live_holders.remove(&vip);
        }
        let me = &self.peers.settings().node;
        // A VIP handed over on purpose goes to its taker, Lease and all.
        if let Some(holder) = &holder
            && holder != me
            && !self.leaving.contains_key(&vip)
            && let Some(held) = self.held.get(&vip)
        {
            // Taken from this director while it held the VIP; or, for a VIP it only held before
            // it restarted, taken meanwhile by a director that is alive.
            let taken = self.lease_holders.get(&vip) == Some(me);
            if taken || (held.adopted && holder_live) {
                self.fenced.insert(vip);
            }
        }
        match holder {
            Some(h) => self.lease_holders.insert(vip, h),
            None => self.lease_holders.remove(&vip),
        };
    }

    /// The director the VIP Lease names, as last seen.
    pub fn lease_holder(&self, vip: IpAddr) -> Option<&str> {
        self.lease_holders.get(&vip).map(String::as_str)
    }

    /// Whether this director took `vip` itself (not only held it before it restarted) and is
    /// not handing it over: then its VIP Lease should name it.
    pub fn took(&self, vip: IpAddr) -> bool {
        self.held.get(&vip).is_some_and(|h| !h.adopted) && !self.leaving.contains_key(&vip)
    }

    /// This director's side of a planned handover of `vip` while the VIP moves.
    pub fn handover(&self, vip: IpAddr) -> Option<Handover> {
        if self.draining.contains_key(&vip) {
            Some(Handover::Giving)
        } else if self.unannounced.contains_key(&vip)
            || self
                .pinned_until
                .get(&vip)
                .is_some_and(|t| *t > Instant::now())
        {
            Some(Handover::Taking)
        } else {
            None
        }
    }

    /// Whether this director announces `vip` periodically: it holds it, and no handover keeps it
    /// quiet (a taker waiting for the old holder to drain, an old holder whose clients move).
    pub fn announces(&self, vip: IpAddr) -> bool {
        self.holds(vip) && !self.unannounced.contains_key(&vip) && !self.draining.contains_key(&vip)
    }

    /// The VIPs taken quietly: added to the interface without an announcement.
    pub fn unannounced(&self) -> BTreeSet<IpAddr> {
        self.unannounced.keys().copied().collect()
    }

    /// The VIPs to announce now (each once).
    pub fn take_announcements(&mut self) -> BTreeSet<IpAddr> {
        std::mem::take(&mut self.announce)
    }

    /// The VIPs this director holds.
    pub fn held(&self) -> BTreeSet<IpAddr> {
        self.held.keys().copied().collect()
    }

    pub fn holds(&self, vip: IpAddr) -> bool {
        self.held.contains_key(&vip)
    }

    /// Whether this director took or let go of a VIP (or started) less than [`SYNC_GRACE`] ago
    /// and has a peer: its resyncs then stop none of its sync daemons, so that what the old
    /// holder's master had not sent yet still reaches the new holder's backup. A director without
    /// peers has nobody to sync with: keeping its standby's backup daemon through each VIP it
    /// takes only changed the `sync` every object reports when the grace ended (`make
    /// bench-cluster`: a sole director taking 1,000 VIPs one by one cost 0.2-0.4 more status
    /// writes per object and 10-15 s to all Ready).
    pub fn keeps_sync_daemons(&self) -> bool {
        self.last_swap.elapsed() < SYNC_GRACE && self.peers.any()
    }

    pub fn takeover(&self, vip: IpAddr) -> Option<&Takeover> {
        self.takeovers.get(&vip)
    }

    /// Every peer that may direct `vip`, as last heard.
    pub fn peer_reports(&self, vip: IpAddr) -> Vec<PeerReport> {
        self.peers
            .snapshot()
            .into_iter()
            .filter_map(|(node, p)| {
                let v = p.last.vips.iter().find(|v| v.vip == vip)?;
                Some(PeerReport {
                    node,
                    alive: p.alive,
                    active: p.alive && v.active,
                    ready: p.alive && v.ready,
                    rtt: p.rtt,
                })
            })
            .collect()
    }

    /// Records which connection-sync daemons the kernel runs, for the metrics.
    pub fn record_sync(&self, running: &BTreeSet<crate::ipvs::SyncRole>) {
        for role in [crate::ipvs::SyncRole::Master, crate::ipvs::SyncRole::Backup] {
            let labels = super::metrics::RoleLabels {
                role: role.to_string(),
            };
            let on = i64::from(running.contains(&role));
            self.metrics.sync_daemon.get_or_create(&labels).set(on);
        }
    }

    /// The MAC of the live peer that holds `vip`, from its heartbeats.
    pub fn active_peer_mac(&self, vip: IpAddr) -> Option<[u8; 6]> {
        self.peers
            .snapshot()
            .into_values()
            .filter(|p| p.alive)
            .find(|p| p.last.vips.iter().any(|v| v.vip == vip && v.active))
            .and_then(|p| super::holders::parse_mac(p.last.mac.as_deref()?))
    }

    /// The MAC expected to answer ARP for `vip` besides this director's own: the holder's when
    /// this director stands by; during a handover, the other side's (both hold the VIP until
    /// the old holder lets go); else none.
    pub fn expected_mac(&self, vip: IpAddr) -> Option<[u8; 6]> {
        if !self.holds(vip) {
            return self.active_peer_mac(vip);
        }
        let taker = self.draining.get(&vip).map(|d| d.to.as_str());
        self.peers
            .snapshot()
            .into_iter()
            .filter(|(_, p)| p.alive)
            .find(|(node, p)| {
                taker == Some(node.as_str())
                    || p.last
                        .vips
                        .iter()
                        .any(|v| v.vip == vip && v.active && v.leaving)
            })
            .and_then(|(_, p)| super::holders::parse_mac(p.last.mac.as_deref()?))
    }

    /// Records what the holder probes found for the metrics.
    pub fn record_foreign(&self, vips: &BTreeSet<IpAddr>, foreign: &BTreeMap<IpAddr, usize>) {
        for vip in vips {
            let n = foreign.get(vip).copied().unwrap_or(0);
            self.metrics
                .foreign_holders
                .get_or_create(&VipLabels {
                    vip: vip.to_string(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// The MACs live peers announce for their VIP interfaces: theirs are not foreign holders.
    pub fn peer_macs(&self) -> BTreeMap<String, String> {
        self.peers
            .snapshot()
            .into_iter()
            .filter_map(|(node, p)| Some((p.last.mac?, node)))
            .collect()
    }

    pub async fn changed(&self) {
        self.peers.changed().await;
    }
}

/// A live peer ready to take `vip` and not leaving it.
fn ready_standby(snapshot: &BTreeMap<String, Peer>, vip: IpAddr) -> Option<String> {
    snapshot
        .iter()
        .filter(|(_, p)| p.alive)
        .find(|(_, p)| {
            p.last
                .vips
                .iter()
                .any(|v| v.vip == vip && v.ready && !v.leaving)
        })
        .map(|(node, _)| node.clone())
}

#[cfg(test)]
#[path = "director_tests.rs"]
mod tests;
