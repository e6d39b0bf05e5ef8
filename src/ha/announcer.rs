//! Gratuitous ARP (unsolicited NA for IPv6) again and again for the VIPs this director holds.
//!
//! Taking a VIP already announces it (three frames, `Op::AddAddress`). A switch or router that
//! missed them, or that ages its entries, keeps sending to the old director's MAC until it asks
//! again; repeating the announcement every `--garp-refresh` (30 s by default, as keepalived's
//! `garp_master_refresh` allows) heals it. The task runs on the agent's runtime; each send is
//! one non-blocking write.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::AbortHandle;
use tracing::debug;

use crate::core::HostAddress;
use crate::netdev::{Addresses, announce};

pub struct Announcer {
    held: Arc<Mutex<Vec<(IpAddr, String)>>>,
    task: AbortHandle,
}

impl Announcer {
    /// The announcer of both modes: none when `every` is zero, and none (with a warning) when
    /// rtnetlink cannot be reached.
    pub fn every(every: Duration) -> Option<Self> {
        if every.is_zero() {
            return None;
        }
        Self::start(every)
            .map_err(|e| tracing::warn!("cannot announce the VIPs periodically: {e:#}"))
            .ok()
    }

    /// Announces every `every` the VIPs last given to [`Announcer::hold`].
    pub fn start(every: Duration) -> anyhow::Result<Self> {
        let addrs = Addresses::connect()?;
        let held: Arc<Mutex<Vec<(IpAddr, String)>>> = Arc::default();
        let shared = held.clone();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await; // the takeover itself has just announced
            loop {
                ticks.tick().await;
                let now = shared.lock().expect("announcer lock").clone();
                for (vip, ifname) in now {
                    if let Err(e) = announce(&addrs, &ifname, vip, 1, Duration::ZERO).await {
                        debug!("announcing {vip} on {ifname}: {e}");
                    }
                }
            }
        })
        .abort_handle();
        Ok(Self { held, task })
    }

    /// The VIPs this director holds now: those of the node's desired `addresses` (not on `lo`)
    /// that `holds` says it holds, each on its interface.
    pub fn hold<'a>(
        &self,
        addresses: impl IntoIterator<Item = &'a HostAddress>,
        holds: impl Fn(IpAddr) -> bool,
    ) {
        let vips = addresses
            .into_iter()
            .filter(|a| a.ifname != "lo" && holds(a.addr))
            .map(|a| (a.addr, a.ifname.clone()))
            .collect();
        *self.held.lock().expect("announcer lock") = vips;
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
