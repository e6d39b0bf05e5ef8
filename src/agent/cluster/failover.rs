//! The in-cluster agent's side of director failover: where its peers are (their heartbeat
//! Leases), which VIPs it holds (the failover's choice, recorded in the VIP Leases), what it tells
//! its peers after a resync, and who else answers for its VIPs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{Agent, Object};
use crate::agent::converge::Resynced;
use crate::agent::roles::{NodeInfo, Roles};
use crate::agent::vip_leases;
use crate::core::VirtualService;
use crate::ha::holders::{Watch, format_mac};

/// A director takes a VIP Lease at most this often while another holder stays named: the API
/// writes of failover are one per takeover, and at most one per VIP per this period.
const LEASE_REWRITE: Duration = Duration::from_secs(10);

impl Agent {
    /// Where the other directors are (their heartbeat Leases) and who the API server says holds
    /// each VIP (the VIP Leases); and what this node publishes for them.
    pub(super) fn follow_peers(&mut self, node: &NodeInfo, objects: &[Object], roles: &[Roles]) {
        // The VIPs this node may direct: the VIP Leases of the others are none of its business
        // (a real server of a thousand VIPs would read a thousand Leases at every resync).
        let vips: Vec<IpAddr> = objects
            .iter()
            .zip(roles)
            .filter(|(_, r)| r.director)
            .filter_map(|(o, _)| o.service().map(|s| s.vip))
            .collect();
        let leases = self.leases.state();
        // Agents alive by their heartbeat Lease (renewed within three periods).
        let fresh = self.opts.heartbeat_period * 3;
        let live: BTreeSet<String> = leases
            .iter()
            .filter_map(|l| crate::heartbeat::read(l))
            .filter(|(_, at)| {
                let age = k8s_openapi::jiff::Timestamp::now().duration_since(*at);
                age.unsigned_abs() < fresh
            })
            .map(|(node, _)| node)
            .collect();
        let mut targets = Vec::new();
        for lease in &leases {
            if let Some((peer, addr)) = crate::heartbeat::peer(lease)
                && peer != self.opts.node
            {
                targets.push(addr);
            }
            if !vips.is_empty()
                && let Some((vip, holder)) = vip_leases::holder(lease, &vips)
            {
                let alive = live.contains(&holder);
                self.ha.set_lease(vip, Some(holder), alive);
            }
        }
        targets.sort();
        targets.dedup();
        if targets != self.known_peers {
            let saved = serde_json::to_vec(&targets)
                .map_err(std::io::Error::other)
                .and_then(|bytes| std::fs::write(&self.peers_file, bytes));
            if let Err(e) = saved {
                debug!("saving the peers to {}: {e}", self.peers_file.display());
            }
            self.known_peers = targets.clone();
        }
        self.ha.peers().set_targets(targets);
        // A director publishes where its peers reach it: its node's address (IPv4 first). One
        // that no longer directs but still holds a VIP is handing it over: the taker must go on
        // hearing it, and it the taker, until it lets go.
        let directs = roles.iter().any(|r| r.director) || !self.ha.held().is_empty();
        let address = node
            .addresses
            .iter()
            .find(|a| a.is_ipv4())
            .or(node.addresses.first());
        let publish = address
            .filter(|_| directs)
            .map(|a| std::net::SocketAddr::new(*a, self.opts.failover.listen.port()));
        if publish != self.published_peer {
            self.published_peer = publish; // renewed now, with the new address
        }
    }

    /// Which VIPs this node holds (the failover's choice), writing the VIP Lease of each it took.
    pub(super) fn elect(&mut self, objects: &[Object], roles: &[Roles]) -> BTreeSet<IpAddr> {
        let vips: BTreeSet<IpAddr> = objects
            .iter()
            .zip(roles)
            .filter(|(_, r)| r.director)
            .filter_map(|(o, _)| o.service().map(|s| s.vip))
            .collect();
        let held = self.ha.decide(&vips);
        self.claimed.retain(|vip, _| held.contains(vip));
        for vip in &held {
            // A VIP held only since before a restart is not claimed: the Lease may name the
            // director that took it over meanwhile (and then this one lets go).
            if !self.ha.took(*vip) {
                continue;
            }
            let named = self.ha.lease_holder(*vip) == Some(self.opts.node.as_str());
            let recent = self
                .claimed
                .get(vip)
                .is_some_and(|at| at.elapsed() < LEASE_REWRITE);
            if named || recent {
                continue;
            }
            self.claimed.insert(*vip, Instant::now());
            // In the background: an API server that hangs must not hold up the takeover or the
            // next resync.
            let (client, namespace, node) = (
                self.client.clone(),
                self.opts.lease_namespace.clone(),
                self.opts.node.clone(),
            );
            let (vip, metrics) = (*vip, self.metrics.clone());
            tokio::spawn(async move {
                match vip_leases::claim(&client, &namespace, vip, &node).await {
                    Ok(()) => info!("{vip}: VIP Lease names this node"),
                    Err(e) => {
                        warn!(
                            "{vip}: writing the VIP Lease: {e}; holding the VIP all the same, will retry"
                        );
                        metrics.error("vip_lease");
                    }
                }
            });
        }
        held
    }

    /// Tells the peers which VIPs this node is ready to take; the MAC of each director VIP's
    /// interface, for the status.
    pub(super) fn after_election(
        &mut self,
        objects: &[Object],
        roles: &[Roles],
        r: &Resynced,
    ) -> BTreeMap<IpAddr, String> {
        let mut ready = BTreeSet::new();
        let mut macs = BTreeMap::new();
        for (o, role) in objects.iter().zip(roles) {
            let Some(s) = o.service().filter(|_| role.director) else {
                continue;
            };
            if r.desired.parts.contains_key(&s.id) && r.converged.failed.is_empty() {
                ready.insert(s.vip);
            }
            if let Some(mac) = self
                .vip_interface(s, r)
                .as_deref()
                .and_then(crate::netdev::interface_mac)
            {
                macs.insert(s.vip, mac);
            }
        }
        let mac = macs.values().next().cloned();
        self.ha.after_resync(ready, r.on_interfaces(), mac);
        if let Some(announcer) = &self.announcer {
            announcer.hold(&r.desired.state.addresses, |vip| self.ha.announces(vip));
        }
        self.ha
            .record_sync(&r.after.daemons.keys().copied().collect());
        macs
    }

    pub(super) fn vip_interface(&self, s: &VirtualService, r: &Resynced) -> Option<String> {
        self.opts
            .interface
            .clone()
            .or_else(|| s.interface.clone())
            .or_else(|| r.lans.interface_for(s.vip))
    }

    /// Hands the holder probes the VIPs this node directs; the foreign holders of each, named
    /// `MAC` or `MAC (node)`.
    pub(super) fn second_holders(
        &self,
        objects: &[Object],
        roles: &[Roles],
        r: &Resynced,
    ) -> BTreeMap<IpAddr, Vec<String>> {
        let Some(holders) = &self.holders else {
            return BTreeMap::new();
        };
        let mut watches: Vec<Watch> = Vec::new();
        for (o, role) in objects.iter().zip(roles) {
            let Some(s) = o.service().filter(|_| role.director) else {
                continue;
            };
            if watches.iter().any(|w| w.vip == s.vip) {
                continue;
            }
            if let Some(ifname) = self.vip_interface(s, r) {
                watches.push(Watch {
                    vip: s.vip,
                    ifname,
                    active_mac: self.ha.expected_mac(s.vip),
                });
            }
        }
        let vips = watches.iter().map(|w| w.vip).collect();
        holders.watch(watches);
        let found = holders.foreign();
        let counts = found.iter().map(|(v, m)| (*v, m.len())).collect();
        self.ha.record_foreign(&vips, &counts);
        let names = self.ha.peer_macs();
        found
            .into_iter()
            .map(|(vip, macs)| {
                let named = macs
                    .into_iter()
                    .map(|m| {
                        let mac = format_mac(m);
                        match names.get(&mac) {
                            Some(node) => format!("{mac} ({node})"),
                            None => mac,
                        }
                    })
                    .collect();
                (vip, named)
            })
            .collect()
    }
}
