//! Heartbeats between directors over UDP: every `interval` (100 ms by default) this director
//! tells each peer what it holds; a peer not heard for `dead_after` is dead. No API server is
//! involved, so a failover does not wait for a Lease and works while the API server is down.
//!
//! Three tasks share one socket: the sender (each interval, and at once when this director's
//! claims change, so a takeover or a handover is known within a round trip), the receiver, and
//! a watchdog that declares peers dead between two heartbeats. They run on a thread of their
//! own: the agent's runtime may be busy for hundreds of milliseconds planning a thousand
//! services, and a heartbeat late by that much would make a standby take over from a healthy
//! director. Whoever runs the election ([`super::Ha`]) waits on [`Peers::changed`] and reads
//! [`Peers::snapshot`].
//!
//! Datagrams are taken only from the configured peers' addresses, and a peer is known by the
//! name in its heartbeats (a director with two addresses is one peer).

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::message::{Echo, Heartbeat, MAX_DATAGRAM, PROTOCOL, VipState};

/// How the heartbeats run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This director's name in its heartbeats.
    pub node: String,
    pub priority: u8,
    /// Where heartbeats are received (`0.0.0.0:7408` by default).
    pub listen: SocketAddr,
    pub interval: Duration,
    /// Silence after which a peer is dead.
    pub dead_after: Duration,
}

impl Settings {
    /// The default port heartbeats are sent to and received on.
    pub const PORT: u16 = 7408;
}

/// What this director says of itself in its heartbeats.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    pub vips: Vec<VipState>,
    pub mac: Option<String>,
}

/// A peer as last heard.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub last: Heartbeat,
    pub heard: Instant,
    pub alive: bool,
    /// The last round trip measured through its echoes.
    pub rtt: Option<Duration>,
    /// How long it had been silent when it was declared dead.
    pub silent_for: Option<Duration>,
    /// Heartbeats heard in a row since it was first heard or came back.
    pub streak: u32,
}

/// A peer heard fewer heartbeats than this since it appeared is judged on [`JOINING_GRACE`]
/// times `dead_after`: right after a link comes back, or an agent restarts, the path is still
/// settling (neighbour caches, a starved CPU), and a false death there takes a VIP from a live
/// director. A peer that has been heard steadily is judged on `dead_after` alone.
const JOINING_STREAK: u32 = 5;
const JOINING_GRACE: u32 = 3;

/// How long `peer` may be silent before it counts as dead.
fn dead_limit(peer: &Peer, dead_after: Duration) -> Duration {
    if peer.streak < JOINING_STREAK {
        dead_after * JOINING_GRACE
    } else {
        dead_after
    }
}

struct State {
    targets: Vec<SocketAddr>,
    claims: Claims,
    seq: u64,
    /// When recent heartbeats left, by sequence number, for the round trips.
    sent: VecDeque<(u64, Instant)>,
    peers: BTreeMap<String, Peer>,
}

struct Shared {
    settings: Settings,
    local: SocketAddr,
    state: Mutex<State>,
    version: watch::Sender<u64>,
    send_now: Notify,
    stop: Notify,
}

impl Shared {
    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }
}

/// The heartbeat tasks; dropping this stops them.
pub struct Peers {
    shared: Arc<Shared>,
    seen: Mutex<u64>,
}

impl Peers {
    /// Binds the socket and starts sending to `targets`, on a thread of its own.
    pub fn start(settings: Settings, targets: Vec<SocketAddr>) -> std::io::Result<Self> {
        let socket = std::net::UdpSocket::bind(settings.listen)?;
        socket.set_nonblocking(true)?;
        let local = socket.local_addr()?;
        info!(
            listen = %settings.listen,
            peers = ?targets,
            "director heartbeats every {:?}, a peer silent for {:?} is dead",
            settings.interval,
            settings.dead_after
        );
        let shared = Arc::new(Shared {
            settings,
            local,
            state: Mutex::new(State {
                targets,
                claims: Claims::default(),
                seq: 0,
                sent: VecDeque::new(),
                peers: BTreeMap::new(),
            }),
            version: watch::channel(0).0,
            send_now: Notify::new(),
            stop: Notify::new(),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let on_thread = shared.clone();
        std::thread::Builder::new()
            .name("heartbeats".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let socket = match UdpSocket::from_std(socket) {
                        Ok(s) => Arc::new(s),
                        Err(e) => return warn!("director heartbeats: {e}"),
                    };
                    let tasks = [
                        tokio::spawn(send(on_thread.clone(), socket.clone())),
                        tokio::spawn(receive(on_thread.clone(), socket)),
                        tokio::spawn(watchdog(on_thread.clone())),
                    ];
                    on_thread.stop.notified().await;
                    for task in tasks {
                        task.abort();
                    }
                });
            })?;
        Ok(Self {
            shared,
            seen: Mutex::new(0),
        })
    }

    /// The address the socket is bound to (its port, when 0 was asked for).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.shared.local)
    }

    /// Sends to these addresses from now on (in a cluster, the directors come and go).
    pub fn set_targets(&self, targets: Vec<SocketAddr>) {
        let mut state = self.shared.state.lock().expect("peers lock");
        if state.targets != targets {
            info!(peers = ?targets, "director peers");
            state.targets = targets;
        }
    }

    /// What the next heartbeats say; a change goes out at once.
    pub fn set_claims(&self, claims: Claims) {
        let mut state = self.shared.state.lock().expect("peers lock");
        if state.claims != claims {
            state.claims = claims;
            self.shared.send_now.notify_one();
        }
    }

    /// Whether this director has another to fail over with: one it sends to, or one heard.
    pub fn any(&self) -> bool {
        let state = self.shared.state.lock().expect("peers lock");
        !state.targets.is_empty() || !state.peers.is_empty()
    }

    /// Every peer heard since the start, alive or not.
    pub fn snapshot(&self) -> BTreeMap<String, Peer> {
        self.shared.state.lock().expect("peers lock").peers.clone()
    }

    /// Completes when a peer appeared, died, or changed its claims since the last call returned.
    pub async fn changed(&self) {
        let mut rx = self.shared.version.subscribe();
        let seen = *self.seen.lock().expect("seen lock");
        let now = *rx
            .wait_for(|v| *v != seen)
            .await
            .expect("the peers hold the sender");
        *self.seen.lock().expect("seen lock") = now;
    }

    pub fn settings(&self) -> &Settings {
        &self.shared.settings
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        self.shared.stop.notify_one();
    }
}

async fn send(shared: Arc<Shared>, socket: Arc<UdpSocket>) {
    let mut ticks = tokio::time::interval(shared.settings.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Whether the last heartbeat was too long to send: said once, not ten times a second.
    let mut too_long = false;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shared.send_now.notified() => {}
        }
        let (bytes, targets) = {
            let mut state = shared.state.lock().expect("peers lock");
            if state.targets.is_empty() {
                continue;
            }
            state.seq += 1;
            let now = Instant::now();
            let seq = state.seq;
            state.sent.push_back((seq, now));
            while state.sent.len() > 64 {
                state.sent.pop_front();
            }
            let hb = Heartbeat {
                proto: PROTOCOL.into(),
                node: shared.settings.node.clone(),
                priority: shared.settings.priority,
                seq,
                mac: state.claims.mac.clone(),
                vips: state.claims.vips.clone(),
                echo: state
                    .peers
                    .iter()
                    .filter(|(_, p)| p.alive)
                    .map(|(node, p)| Echo {
                        node: node.clone(),
                        seq: p.last.seq,
                        held_us: u64::try_from((now - p.heard).as_micros()).unwrap_or(u64::MAX),
                    })
                    .collect(),
            };
            (hb.encode(), state.targets.clone())
        };
        if bytes.len() > MAX_DATAGRAM {
            if !too_long {
                warn!(
                    "a heartbeat of {} bytes is too long to send ({} VIPs); the peers take this director for dead: direct fewer VIPs from it",
                    bytes.len(),
                    shared.state.lock().expect("peers lock").claims.vips.len()
                );
            }
            too_long = true;
            continue;
        }
        if too_long {
            info!("heartbeats fit again and are sent");
        }
        too_long = false;
        for target in targets {
            if let Err(e) = socket.send_to(&bytes, target).await {
                debug!("heartbeat to {target}: {e}");
            }
        }
    }
}

async fn receive(shared: Arc<Shared>, socket: Arc<UdpSocket>) {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        let (len, from) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                debug!("receiving heartbeats: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let hb = match Heartbeat::decode(&buf[..len]) {
            Ok(hb) => hb,
            Err(e) => {
                debug!("datagram from {from} dropped: {e}");
                continue;
            }
        };
        let now = Instant::now();
        let mut state = shared.state.lock().expect("peers lock");
        if hb.node == shared.settings.node || !from_a_target(&state.targets, from.ip()) {
            continue;
        }
        let rtt = hb
            .echo
            .iter()
            .find(|e| e.node == shared.settings.node)
            .and_then(|e| {
                let sent = state.sent.iter().find(|(s, _)| *s == e.seq)?.1;
                (now - sent).checked_sub(Duration::from_micros(e.held_us))
            });
        let node = hb.node.clone();
        let changed = match state.peers.get_mut(&node) {
            Some(peer) => {
                let changed =
                    !peer.alive || peer.last.vips != hb.vips || peer.last.priority != hb.priority;
                if !peer.alive {
                    info!("director {node} ({from}) is back");
                    peer.streak = 0;
                }
                peer.streak = peer.streak.saturating_add(1);
                peer.addr = from;
                peer.last = hb;
                peer.heard = now;
                peer.alive = true;
                peer.silent_for = None;
                if rtt.is_some() {
                    peer.rtt = rtt;
                }
                changed
            }
            None => {
                info!("director {node} ({from}) heard");
                state.peers.insert(
                    node,
                    Peer {
                        addr: from,
                        last: hb,
                        heard: now,
                        alive: true,
                        rtt,
                        silent_for: None,
                        streak: 1,
                    },
                );
                true
            }
        };
        drop(state);
        if changed {
            shared.bump();
        }
    }
}

fn from_a_target(targets: &[SocketAddr], ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    targets.iter().any(|t| t.ip() == ip)
}

/// Declares silent peers dead, a few times per interval so detection is not late by a whole one.
async fn watchdog(shared: Arc<Shared>) {
    let step = (shared.settings.interval / 5).max(Duration::from_millis(5));
    let mut ticks = tokio::time::interval(step);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let now = Instant::now();
        let mut died = false;
        {
            let mut state = shared.state.lock().expect("peers lock");
            for (node, peer) in &mut state.peers {
                let silent = now - peer.heard;
                if peer.alive && silent >= dead_limit(peer, shared.settings.dead_after) {
                    peer.alive = false;
                    peer.silent_for = Some(silent);
                    warn!(
                        "director {node} ({}) silent for {} ms: dead",
                        peer.addr,
                        silent.as_millis()
                    );
                    died = true;
                }
            }
        }
        if died {
            shared.bump();
        }
    }
}

/// A test director's heartbeat settings: on loopback, fast (20 ms, dead after 100 ms).
#[cfg(test)]
pub(super) fn test_settings(node: &str) -> Settings {
    Settings {
        node: node.into(),
        priority: 100,
        listen: "127.0.0.1:0".parse().unwrap(),
        interval: Duration::from_millis(20),
        dead_after: Duration::from_millis(100),
    }
}

#[cfg(test)]
mod tests {
    use super::test_settings as settings;
    use super::*;

    fn claims(active: bool) -> Claims {
        Claims {
            vips: vec![VipState {
                vip: "10.10.24.88".parse().unwrap(),
                active,
                ready: true,
                term: 1,
                leaving: false,
                quiet: false,
                drained: false,
            }],
            mac: None,
        }
    }

    async fn until(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn two_directors_hear_each_other_measure_the_round_trip_and_see_a_death() {
        let a = Peers::start(settings("a"), vec![]).unwrap();
        let b = Peers::start(settings("b"), vec![]).unwrap();
        a.set_targets(vec![b.local_addr().unwrap()]);
        b.set_targets(vec![a.local_addr().unwrap()]);
        a.set_claims(claims(true));
        until("b hears a's claim", || {
            b.snapshot()
                .get("a")
                .is_some_and(|p| p.alive && p.last.vips == claims(true).vips)
        })
        .await;
        until("a measures a round trip to b", || {
            a.snapshot().get("b").is_some_and(|p| p.rtt.is_some())
        })
        .await;
        let rtt = a.snapshot()["b"].rtt.unwrap();
        assert!(rtt < Duration::from_millis(500), "{rtt:?} on loopback");
        drop(b);
        let died = Instant::now();
        until("a declares b dead", || !a.snapshot()["b"].alive).await;
        let silent = a.snapshot()["b"].silent_for.unwrap();
        assert!(silent >= Duration::from_millis(100), "{silent:?}");
        assert!(died.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn only_the_configured_peers_addresses_are_heard_and_garbage_is_dropped() {
        let a = Peers::start(settings("a"), vec![]).unwrap();
        let mut at_2 = settings("friend");
        at_2.listen = "127.0.0.2:0".parse().unwrap();
        let friend = Peers::start(at_2, vec![]).unwrap();
        let stranger = Peers::start(settings("stranger"), vec![]).unwrap();
        a.set_targets(vec![friend.local_addr().unwrap()]);
        friend.set_targets(vec![a.local_addr().unwrap()]);
        stranger.set_targets(vec![a.local_addr().unwrap()]);
        let raw = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
        raw.send_to(b"not a heartbeat", a.local_addr().unwrap())
            .unwrap();
        until("a hears its friend", || a.snapshot().contains_key("friend")).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let heard: Vec<String> = a.snapshot().into_keys().collect();
        assert_eq!(heard, ["friend"], "127.0.0.1 is not a's peer");
    }

    #[tokio::test]
    async fn a_claim_change_is_sent_at_once_not_at_the_next_interval() {
        let mut slow = settings("a");
        slow.interval = Duration::from_secs(3600);
        let a = Peers::start(slow, vec![]).unwrap();
        let b = Peers::start(settings("b"), vec![]).unwrap();
        a.set_targets(vec![b.local_addr().unwrap()]);
        b.set_targets(vec![a.local_addr().unwrap()]);
        a.set_claims(claims(false));
        until("b hears a", || b.snapshot().contains_key("a")).await;
        a.set_claims(claims(true));
        until("b hears a's new claim within a second", || {
            b.snapshot()["a"].last.vips[0].active
        })
        .await;
    }
}
