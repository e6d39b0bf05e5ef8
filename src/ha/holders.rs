//! One holder per VIP: every director asks the LAN, every few seconds, which MACs answer for each
//! VIP it may direct ([`crate::netdev::who_has`], an ARP request or neighbour solicitation), and
//! keeps those that are neither its own nor the active director's. A second holder (the VIP
//! added by hand on another box, a partitioned director that kept it) splits the clients between
//! two machines and nothing else would notice: it is reported until it is gone.
//!
//! The probing runs as a task on the agent's runtime (each probe only waits on its socket); the
//! agent hands it the VIPs to watch after every resync and reads what it found.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::AbortHandle;
use tracing::debug;

use crate::netdev::{Addresses, sender_for, who_has};

/// A VIP to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    pub vip: IpAddr,
    /// The interface it is (or would be) on.
    pub ifname: String,
    /// The MAC of the director that holds it, when that is a peer: its answers are expected.
    pub active_mac: Option<[u8; 6]>,
}

#[derive(Default)]
struct Shared {
    watches: Vec<Watch>,
    /// The unexpected MACs each VIP's last probe heard.
    last: BTreeMap<IpAddr, BTreeSet<[u8; 6]>>,
    /// Those heard by the last two probes: a director that lets go of a VIP during a failover
    /// may answer once more, which is no second holder.
    foreign: BTreeMap<IpAddr, BTreeSet<[u8; 6]>>,
}

pub struct Holders {
    shared: Arc<Mutex<Shared>>,
    task: AbortHandle,
}

impl Holders {
    /// Probes every `every`, listening `wait` for answers. Needs `CAP_NET_RAW`.
    pub fn start(every: Duration, wait: Duration) -> anyhow::Result<Self> {
        let addrs = Addresses::connect()?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let task = tokio::spawn(probe_forever(addrs, shared.clone(), every, wait)).abort_handle();
        Ok(Self { shared, task })
    }

    pub fn watch(&self, watches: Vec<Watch>) {
        let mut shared = self.shared.lock().expect("holders lock");
        let keep: BTreeSet<IpAddr> = watches.iter().map(|w| w.vip).collect();
        shared.foreign.retain(|vip, _| keep.contains(vip));
        shared.last.retain(|vip, _| keep.contains(vip));
        shared.watches = watches;
    }

    /// The MACs other than ours and the active director's that answered for each VIP.
    pub fn foreign(&self) -> BTreeMap<IpAddr, BTreeSet<[u8; 6]>> {
        let shared = self.shared.lock().expect("holders lock");
        shared
            .foreign
            .iter()
            .filter(|(_, macs)| !macs.is_empty())
            .map(|(vip, macs)| (*vip, macs.clone()))
            .collect()
    }
}

impl Drop for Holders {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn probe_forever(
    addrs: Addresses,
    shared: Arc<Mutex<Shared>>,
    every: Duration,
    wait: Duration,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let watches = shared.lock().expect("holders lock").watches.clone();
        for w in watches {
            match probe(&addrs, &w, wait).await {
                Ok(found) => {
                    let now: BTreeSet<[u8; 6]> = found
                        .into_iter()
                        .filter(|mac| Some(*mac) != w.active_mac)
                        .collect();
                    let mut shared = shared.lock().expect("holders lock");
                    let before = shared.last.insert(w.vip, now.clone()).unwrap_or_default();
                    let twice = now.intersection(&before).copied().collect();
                    shared.foreign.insert(w.vip, twice);
                }
                Err(e) => debug!("probing who holds {} on {}: {e}", w.vip, w.ifname),
            }
        }
    }
}

async fn probe(addrs: &Addresses, w: &Watch, wait: Duration) -> anyhow::Result<BTreeSet<[u8; 6]>> {
    let link = addrs.link(&w.ifname).await?;
    let all = addrs.list().await?;
    let sender = sender_for(w.vip, link.ifindex, &all)
        .ok_or_else(|| anyhow::anyhow!("no address on {} to ask from", w.ifname))?;
    Ok(who_has(&link, w.vip, sender, wait).await?)
}

/// `02:00:0a:0a:18:0b`, as `ip link` prints a MAC.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// The inverse of [`format_mac`].
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_print_and_read_back_as_ip_link_shows_them() {
        let mac = [0x02, 0x00, 0x0a, 0x0a, 0x18, 0x0b];
        assert_eq!(format_mac(mac), "02:00:0a:0a:18:0b");
        assert_eq!(parse_mac("02:00:0a:0a:18:0b"), Some(mac));
        assert_eq!(parse_mac("02:00:0a:0a:18"), None);
        assert_eq!(parse_mac("02:00:0a:0a:18:0b:00"), None);
        assert_eq!(parse_mac("zz:00:0a:0a:18:0b"), None);
    }
}
