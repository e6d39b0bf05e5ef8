//! What the health checks change in the desired state: real servers' weights, and the
//! firewall-mark services that let a director probe a real server through the VIP.
//!
//! The agent runs the probes (`crate::health`) and hands the verdicts in as an [`Admission`] per
//! real server and checked port; [`weight`] turns an admission into the weight IPVS gets (0 for
//! an ejected real server: established connections go on, new ones go elsewhere; a fraction of
//! the configured weight while a re-admitted one ramps up over `slowStart`).
//!
//! Probing through the VIP is Seesaw's way: for each real server checked so, a firewall-mark IPVS
//! service with that one Direct Routing destination (`ipvsadm -A -f MARK`, `-a -f MARK -r RIP -g`).
//! A probe to VIP:PORT carrying the mark (SO_MARK) is taken by IPVS on its way out of the director
//! and sent to that real server's MAC, exactly as a client's packet would be; it is answered only
//! if the real server holds the VIP on `lo` and serves the port there. [`assign_marks`] picks the
//! marks from a configured range: the ones it already owns first, never one someone else uses.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::ops::RangeInclusive;

use super::ledger::{Intent, Ledger};
use super::model::{AF_INET, AF_INET6, Lans, MarkKey, NodeState, same_subnet};

/// The marks the agent may use unless told otherwise (`--health-check-marks`): 0x4c56_0000 ("LV")
/// and the 65,535 above it, far from the small marks firewalls and kube-proxy use.
pub const DEFAULT_MARKS: RangeInclusive<u32> = 0x4c56_0001..=0x4c56_ffff;

/// What the health checks say of one real server on one checked port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Takes new connections at its configured weight.
    Full,
    /// Back after an ejection and ramping up: this many thousandths of its weight.
    Ramping(u16),
    /// Takes no new connections.
    Ejected,
}

/// The IPVS weight of a real server of configured weight `weight`.
pub fn weight(weight: u32, admission: Option<Admission>) -> u32 {
    match admission {
        None | Some(Admission::Full) => weight,
        Some(Admission::Ejected) => 0,
        // Never 0 while ramping: that would be an ejection.
        Some(Admission::Ramping(per_mille)) if weight > 0 => {
            (u64::from(weight) * u64::from(per_mille))
                .div_ceil(1000)
                .clamp(1, u64::from(weight)) as u32
        }
        Some(Admission::Ramping(_)) => 0,
    }
}

/// A mark for each real server of `wanted`: the mark service we own that already leads to it,
/// else the lowest mark of `range` that is free or ours and idle.
pub fn assign_marks(
    wanted: &BTreeSet<IpAddr>,
    ledger: &Ledger,
    observed: &NodeState,
    range: RangeInclusive<u32>,
) -> BTreeMap<IpAddr, MarkKey> {
    // Ours: the marks of the ledger and those a killed run had written ahead (the ledger adopts
    // them only when it settles, after the marks are assigned).
    let owned: BTreeSet<MarkKey> = ledger
        .marks
        .iter()
        .copied()
        .chain(ledger.intents.iter().filter_map(|i| match i {
            Intent::AddMark { key } => Some(*key),
            _ => None,
        }))
        .collect();
    let mut assigned: BTreeMap<IpAddr, MarkKey> = BTreeMap::new();
    for key in &owned {
        let Some(have) = observed.marks.get(key) else {
            continue;
        };
        if let [dest] = have.dests.iter().collect::<Vec<_>>()[..]
            && wanted.contains(dest)
            && family_of(*dest) == key.family
            && !assigned.contains_key(dest)
        {
            assigned.insert(*dest, *key);
        }
    }
    // A mark we own that leads nowhere wanted (a run stopped between creating it and adding its
    // real server, or a real server gone) is reused before a fresh one, so a restarted agent
    // ends where an uninterrupted run would have.
    let in_use: BTreeSet<u32> = observed.marks.keys().map(|k| k.mark).collect();
    let mut given: BTreeSet<u32> = assigned.values().map(|k| k.mark).collect();
    // Per family, the lowest mark not tried yet: marks are handed out in rising order.
    let mut next: BTreeMap<u16, Option<u32>> = BTreeMap::new();
    for dest in wanted {
        if assigned.contains_key(dest) {
            continue;
        }
        let family = family_of(*dest);
        let Some(start) = *next.entry(family).or_insert(Some(*range.start())) else {
            continue; // the range is exhausted: this real server is checked directly
        };
        let found = (start..=*range.end()).find(|&mark| {
            let key = MarkKey { mark, family };
            let ours_and_idle = owned.contains(&key) && observed.marks.contains_key(&key);
            !given.contains(&mark) && (!in_use.contains(&mark) || ours_and_idle)
        });
        next.insert(family, found.and_then(|m| m.checked_add(1)));
        if let Some(mark) = found {
            given.insert(mark);
            assigned.insert(*dest, MarkKey { mark, family });
        }
    }
    assigned
}

fn family_of(addr: IpAddr) -> u16 {
    if addr.is_ipv4() { AF_INET } else { AF_INET6 }
}

/// The director's own address to send probes from: its address on `ifname` in the subnet of
/// `vip` (a real server answers a probe there, never to the VIP it holds itself), else another
/// of its addresses there. Never a link-local one: a probe bound to `fe80::…` without a scope
/// cannot reach a real server's global address.
pub fn source_for(vip: IpAddr, ifname: &str, lans: &Lans) -> Option<IpAddr> {
    let own = || {
        (lans.addresses().iter())
            .filter(move |a| a.ifname == ifname && a.addr.is_ipv4() == vip.is_ipv4())
            .filter(move |a| a.addr != vip && !link_local(a.addr))
    };
    own()
        .filter(|a| same_subnet(a.addr, vip, a.prefix_len))
        .max_by_key(|a| a.prefix_len)
        .or_else(|| own().max_by_key(|a| a.prefix_len))
        .map(|a| a.addr)
}

fn link_local(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => a.segments()[0] & 0xffc0 == 0xfe80,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{HostAddress, MarkState};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_ejected_real_server_gets_0_and_a_ramping_one_never_does() {
        assert_eq!(weight(5, None), 5);
        assert_eq!(weight(5, Some(Admission::Full)), 5);
        assert_eq!(weight(5, Some(Admission::Ejected)), 0);
        assert_eq!(weight(10, Some(Admission::Ramping(0))), 1);
        assert_eq!(weight(10, Some(Admission::Ramping(250))), 3);
        assert_eq!(weight(10, Some(Admission::Ramping(1000))), 10);
        assert_eq!(
            weight(0, Some(Admission::Ramping(500))),
            0,
            "0 configured stays 0"
        );
    }

    #[test]
    fn marks_we_own_are_kept_and_new_ones_skip_every_mark_in_use() {
        let range = 100..=105;
        let mut observed = NodeState::default();
        let mut ledger = Ledger::default();
        let ours = MarkKey {
            mark: 103,
            family: AF_INET,
        };
        observed.marks.insert(
            ours,
            MarkState {
                dests: [ip("10.0.0.2")].into(),
            },
        );
        ledger.marks.insert(ours);
        // Someone else's mark 100.
        observed.marks.insert(
            MarkKey {
                mark: 100,
                family: AF_INET,
            },
            MarkState::default(),
        );
        let wanted: BTreeSet<IpAddr> = [ip("10.0.0.1"), ip("10.0.0.2"), ip("fd00::1")].into();
        let marks = assign_marks(&wanted, &ledger, &observed, range);
        assert_eq!(marks[&ip("10.0.0.2")], ours, "kept");
        assert_eq!(marks[&ip("10.0.0.1")].mark, 101, "100 is someone else's");
        assert_eq!(
            marks[&ip("fd00::1")],
            MarkKey {
                mark: 102,
                family: AF_INET6
            }
        );
    }

    #[test]
    fn a_restart_reuses_our_idle_marks_as_an_uninterrupted_run_would() {
        // Killed after creating marks 1 and 2 but before giving mark 2 its real server.
        let mut observed = NodeState::default();
        let mut ledger = Ledger::default();
        let key = |mark| MarkKey {
            mark,
            family: AF_INET,
        };
        observed.marks.insert(
            key(1),
            MarkState {
                dests: [ip("10.0.0.1")].into(),
            },
        );
        observed.marks.insert(key(2), MarkState::default());
        ledger.marks.extend([key(1), key(2)]);
        let wanted: BTreeSet<IpAddr> = [ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3")].into();
        let marks = assign_marks(&wanted, &ledger, &observed, 1..=10);
        let got: Vec<u32> = wanted.iter().map(|a| marks[a].mark).collect();
        assert_eq!(got, [1, 2, 3]);
        // Only written ahead (killed before the ledger confirmed it): ours all the same.
        ledger.marks.remove(&key(2));
        ledger.intents.push(Intent::AddMark { key: key(2) });
        let marks = assign_marks(&wanted, &ledger, &observed, 1..=10);
        let got: Vec<u32> = wanted.iter().map(|a| marks[a].mark).collect();
        assert_eq!(got, [1, 2, 3]);
        // Without either, mark 2 is someone else's: skipped.
        ledger.intents.clear();
        let marks = assign_marks(&wanted, &ledger, &observed, 1..=10);
        let got: Vec<u32> = wanted.iter().map(|a| marks[a].mark).collect();
        assert_eq!(got, [1, 3, 4]);
    }

    #[test]
    fn probes_leave_from_the_directors_own_address_in_the_vips_subnet() {
        let addrs: BTreeSet<HostAddress> = [
            HostAddress {
                ifname: "eth0".into(),
                addr: ip("10.10.24.10"),
                prefix_len: 24,
            },
            HostAddress::vip("eth0", ip("10.10.24.88")),
            HostAddress {
                ifname: "eth0".into(),
                addr: ip("fd00:24::10"),
                prefix_len: 64,
            },
            // Sorts after fd00:24::10 with the same prefix length: never chosen.
            HostAddress {
                ifname: "eth0".into(),
                addr: ip("fe80::5054:ff:fe12:3456"),
                prefix_len: 64,
            },
            // Another subnet on the same interface: only when the VIP's has no address.
            HostAddress {
                ifname: "eth0".into(),
                addr: ip("192.168.7.10"),
                prefix_len: 25,
            },
        ]
        .into();
        let addrs = Lans::of(&addrs);
        assert_eq!(
            source_for(ip("10.10.24.88"), "eth0", &addrs),
            Some(ip("10.10.24.10"))
        );
        assert_eq!(
            source_for(ip("fd00:24::88"), "eth0", &addrs),
            Some(ip("fd00:24::10"))
        );
        assert_eq!(
            source_for(ip("172.16.0.88"), "eth0", &addrs),
            Some(ip("192.168.7.10"))
        );
        assert_eq!(source_for(ip("10.10.24.88"), "eth1", &addrs), None);
    }
}
