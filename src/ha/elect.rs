//! Which director is active for a VIP: a pure function of what this director knows (its own
//! state, the peers it hears, whether the API server took the VIP from it), run on every change.
//!
//! The rules are keepalived's VRRP with `nopreempt`, plus a planned handover:
//! - an active director stays active while no other live director claims the VIP: a director
//!   that comes back (higher priority or not) becomes a standby and takes nothing from it;
//! - when no live director claims a VIP, the ready candidate of highest rank takes it. The rank
//!   is the priority, then a hash of VIP and name (rendezvous hashing), so with equal priorities
//!   VIPs spread over the directors and every director computes the same winner;
//! - two live directors claiming one VIP (a healed partition, or a director whose agent was
//!   killed and restarted while a standby took over) keep the newer claim (the higher term),
//!   then the one the API server's Lease names, then the higher rank; the other lets go;
//! - a leaving director (SIGTERM, or no longer a candidate) is never chosen; it keeps the VIP
//!   until another claims it, so the VIP moves without a gap;
//! - a director whose VIP Lease another took while it was active (it is cut off from its peers,
//!   the API server is not) lets go: one holder.

use std::net::IpAddr;

/// A live director as this one knows it, for one VIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub node: &'a str,
    pub priority: u8,
    /// Claims the VIP.
    pub active: bool,
    /// The term of its claim (see [`super::message::VipState::term`]).
    pub term: u64,
    /// Could take it at once (its IPVS services are programmed).
    pub ready: bool,
    pub leaving: bool,
}

/// What this director knows about one VIP.
#[derive(Debug, Clone)]
pub struct View<'a> {
    pub vip: IpAddr,
    /// This director; `me.active` is whether it holds the VIP now.
    pub me: Candidate<'a>,
    /// The live peers that may direct the VIP (silent ones are left out by the caller).
    pub peers: Vec<Candidate<'a>>,
    /// The holder the API server's VIP Lease names, when known.
    pub lease_holder: Option<&'a str>,
    /// Another director took the VIP Lease from this one since it became active.
    pub fenced: bool,
}

/// Whether this director should hold the VIP.
pub fn should_hold(view: &View<'_>) -> bool {
    let me = &view.me;
    let others_active: Vec<&Candidate<'_>> = view
        .peers
        .iter()
        .filter(|p| p.active && !p.leaving)
        .collect();
    if me.active {
        if view.fenced {
            return false;
        }
        if me.leaving {
            // Until a standby claims it: the VIP never goes unheld on purpose.
            return others_active.is_empty();
        }
        return match others_active.as_slice() {
            [] => true,
            others => {
                let claimants: Vec<&Candidate<'_>> =
                    std::iter::once(me).chain(others.iter().copied()).collect();
                let newest = claimants.iter().map(|c| c.term).max().unwrap_or(0);
                let newest = claimants.into_iter().filter(|c| c.term == newest);
                winner(view.vip, newest, view.lease_holder) == Some(me.node)
            }
        };
    }
    if me.leaving || !me.ready || !others_active.is_empty() {
        return false;
    }
    let ready = std::iter::once(me).chain(view.peers.iter().filter(|p| p.ready && !p.leaving));
    winner(view.vip, ready, None) == Some(me.node)
}

/// The Lease holder when it is among `candidates`, else the highest rank.
fn winner<'a, 'b>(
    vip: IpAddr,
    candidates: impl Iterator<Item = &'b Candidate<'a>>,
    lease_holder: Option<&str>,
) -> Option<&'a str>
where
    'a: 'b,
{
    let all: Vec<&Candidate<'a>> = candidates.collect();
    if let Some(holder) = lease_holder
        && let Some(c) = all.iter().find(|c| c.node == holder)
    {
        return Some(c.node);
    }
    all.into_iter()
        .max_by_key(|c| (c.priority, rendezvous(vip, c.node), c.node))
        .map(|c| c.node)
}

/// FNV-1a of the VIP and the name: stable across builds and Rust versions, since directors of
/// different versions (a rolling upgrade) must agree.
pub fn rendezvous(vip: IpAddr, node: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in vip.to_string().bytes().chain([0]).chain(node.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIP: &str = "10.10.24.88";

    fn c(node: &str) -> Candidate<'_> {
        Candidate {
            node,
            priority: 100,
            active: false,
            term: 0,
            ready: true,
            leaving: false,
        }
    }

    fn active(node: &str) -> Candidate<'_> {
        Candidate {
            active: true,
            ..c(node)
        }
    }

    fn view<'a>(me: Candidate<'a>, peers: Vec<Candidate<'a>>) -> View<'a> {
        View {
            vip: VIP.parse().unwrap(),
            me,
            peers,
            lease_holder: None,
            fenced: false,
        }
    }

    /// Which of `names` holds the VIP once each decides on the others' claims, starting with
    /// nobody active.
    fn elected<'a>(names: &[&'a str]) -> Vec<&'a str> {
        names
            .iter()
            .filter(|me| {
                let peers = names.iter().filter(|n| n != me).map(|n| c(n)).collect();
                should_hold(&view(c(me), peers))
            })
            .copied()
            .collect()
    }

    #[test]
    fn with_nobody_active_exactly_one_director_takes_the_vip() {
        assert_eq!(elected(&["director", "director2"]).len(), 1);
        assert_eq!(elected(&["a", "b", "c", "d"]).len(), 1);
        assert_eq!(elected(&["alone"]), ["alone"]);
    }

    #[test]
    fn equal_priorities_spread_vips_over_the_directors() {
        let names = ["director", "director2", "director3"];
        let mut winners = std::collections::BTreeSet::new();
        for i in 1..=30 {
            let vip: IpAddr = format!("10.10.24.{i}").parse().unwrap();
            for me in names {
                let peers = names.iter().filter(|n| **n != me).map(|n| c(n)).collect();
                if should_hold(&View {
                    vip,
                    ..view(c(me), peers)
                }) {
                    winners.insert(me);
                }
            }
        }
        assert_eq!(winners.len(), 3, "30 VIPs over 3 directors: each gets some");
    }

    #[test]
    fn the_higher_priority_wins_an_election() {
        let high = Candidate {
            priority: 150,
            ..c("b")
        };
        assert!(should_hold(&view(high.clone(), vec![c("a")])));
        assert!(!should_hold(&view(c("a"), vec![high])));
    }

    #[test]
    fn a_returning_director_becomes_standby_even_with_a_higher_priority() {
        let back = Candidate {
            priority: 200,
            ..c("director")
        };
        assert!(!should_hold(&view(back, vec![active("director2")])));
        assert!(should_hold(&view(active("director2"), vec![c("director")])));
    }

    #[test]
    fn a_standby_that_is_not_ready_takes_nothing_and_is_not_counted() {
        let unready = Candidate {
            ready: false,
            priority: 200,
            ..c("b")
        };
        assert!(!should_hold(&view(unready.clone(), vec![c("a")])));
        assert!(should_hold(&view(c("a"), vec![unready])));
    }

    #[test]
    fn a_leaving_director_keeps_the_vip_until_a_standby_claims_it() {
        let leaving = Candidate {
            leaving: true,
            ..active("director")
        };
        // The standby sees no active claim it may respect: it takes over.
        let mut peer = leaving.clone();
        peer.node = "director";
        assert!(should_hold(&view(c("director2"), vec![peer])));
        // The leaving one holds on while nobody else claims...
        assert!(should_hold(&view(leaving.clone(), vec![c("director2")])));
        // ...and lets go once the standby does.
        assert!(!should_hold(&view(leaving, vec![active("director2")])));
    }

    #[test]
    fn two_active_directors_keep_the_lease_holder_else_the_higher_rank() {
        let mut v = view(active("a"), vec![active("b")]);
        let mut w = view(active("b"), vec![active("a")]);
        assert_ne!(should_hold(&v), should_hold(&w), "exactly one keeps it");
        v.lease_holder = Some("b");
        w.lease_holder = Some("b");
        assert!(!should_hold(&v));
        assert!(should_hold(&w));
    }

    #[test]
    fn of_two_claims_the_newer_term_wins_whatever_the_rank() {
        let old = Candidate {
            priority: 250,
            term: 1,
            ..active("director")
        };
        let new = Candidate {
            term: 2,
            ..active("director2")
        };
        let mut v = view(old.clone(), vec![new.clone()]);
        v.lease_holder = Some("director");
        assert!(!should_hold(&v), "the newer term beats rank and Lease");
        assert!(should_hold(&view(new, vec![old])));
    }

    #[test]
    fn a_director_whose_lease_was_taken_lets_go() {
        let mut v = view(active("a"), vec![]);
        assert!(should_hold(&v));
        v.fenced = true;
        assert!(!should_hold(&v));
    }

    #[test]
    fn the_rank_hash_is_fnv1a_and_stable_across_builds() {
        // Directors of different versions must pick the same winner: the value is FNV-1a 64 of
        // "10.10.24.88\0director", computed once outside Rust.
        assert_eq!(
            rendezvous("10.10.24.88".parse().unwrap(), "director"),
            0xb8de_30dd_3aec_f3cf
        );
    }
}
