//! Standalone mode: LvsService objects from YAML files, no cluster.
//!
//! `lvs-operator agent --standalone PATH --role director|backend [--once] [--dry-run] ...`.
//! Every resync re-reads PATH; an object that left it has its state removed (only what we made).
//! Invalid objects are reported by name and field and change nothing; the valid ones are served.
//! If PATH cannot be read at all, the resync is skipped and the data plane stays as it is: a
//! missing file is far more likely a deploy in progress than a wish to tear everything down.
//!
//! A long-running director runs two things beside its resyncs ([`Beside`]): the health checks of
//! its real servers, and with `--peer` the failover between directors ([`crate::ha`]), which
//! decides before each resync which VIPs this director holds.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{error, info};

use crate::api::{manifest, validate};
use crate::core::{Assignment, DirectorRole, VirtualService, selfcheck};
use crate::ha::Ha;
use crate::ha::announcer::Announcer;
use crate::ha::holders::{Holders, Watch, format_mac};

use super::checks::HealthChecks;
use super::converge::{self, Converged, DataPlane, ProblemLog, Resynced};
use super::ledger::LedgerStore;
use super::metrics::AgentMetrics;

/// What this machine is for every object in PATH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Holds the VIPs and runs IPVS (`ip addr add VIP/32 dev IF`, `ipvsadm -A/-a ... -g`).
    Director,
    /// A real server: VIPs on `lo` and the ARP sysctls.
    Backend,
}

/// Settings of a standalone run.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    pub path: &'a Path,
    pub role: Role,
    pub interface: Option<String>,
    pub dry_run: bool,
    pub drain_timeout: Duration,
    /// The firewall marks the health checks may use, first and last.
    pub marks: (u32, u32),
    /// With peers: the `--syncid` of the connection-sync daemons.
    pub sync_id: u8,
}

/// The outcome of one standalone resync, for `--once`'s exit code.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Objects rejected (invalid, or not placeable on this machine) and what keeps this machine
    /// from serving one, one line each.
    pub rejected: Vec<String>,
    /// What the real server's self-check finds would keep clients from being served (the VIP
    /// missing from `lo`, nothing listening): logged like the rejections, but the resync itself
    /// did its work, so `--once` still succeeds (an agent may well start before the service).
    pub unready: Vec<String>,
    pub resynced: Resynced,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.rejected.is_empty() && self.converged().ok()
    }

    pub fn converged(&self) -> &Converged {
        &self.resynced.converged
    }
}

/// A manifest modified less than this long ago may be half written (`cat > web.yaml` empties
/// it first): it is read once it has been left alone this long. Read at once, an empty file had
/// removed its objects' services for one resync.
const SETTLE: Duration = Duration::from_millis(200);

/// Waits, a second at most, until no file under PATH was modified in the last [`SETTLE`].
async fn settled(path: &Path) {
    for _ in 0..5 {
        match manifest::youngest(path) {
            Some(age) if age < SETTLE => tokio::time::sleep(SETTLE - age).await,
            _ => return,
        }
    }
}

/// Reads PATH and keeps the valid objects; the invalid ones become one message per field.
fn load(path: &Path) -> std::io::Result<(Vec<VirtualService>, Vec<String>)> {
    let mut valid = Vec::new();
    let mut rejected = Vec::new();
    for doc in manifest::read_path(path)? {
        match doc.and_then(|o| validate(&o)) {
            Ok(service) => valid.push(service),
            Err(e) => rejected.extend(e.to_string().lines().map(str::to_string)),
        }
    }
    Ok((valid, rejected))
}

/// What a long-running director runs beside its resyncs.
#[derive(Default)]
pub struct Beside {
    pub checks: Option<HealthChecks>,
    pub ha: Option<Ha>,
    /// With `ha`: the probes for a second holder of the VIPs.
    pub holders: Option<Holders>,
    /// With `ha`: the periodic announcements of the VIPs it holds.
    pub announcer: Option<Announcer>,
}

/// One resync against `dp`, with the health checks' verdicts when they run, which then follow
/// the objects the resync directs, and with the failover's choice of VIPs to hold.
pub async fn resync<D: DataPlane>(
    dp: &mut D,
    store: &LedgerStore,
    opts: &Options<'_>,
    beside: &mut Beside,
) -> anyhow::Result<Outcome> {
    settled(opts.path).await;
    let (services, mut rejected) = load(opts.path).map_err(|e| {
        anyhow::anyhow!(
            "reading {}: {e}; leaving the data plane as it is",
            opts.path.display()
        )
    })?;
    let director = opts.role == Role::Director;
    let held: Option<BTreeSet<IpAddr>> = match &mut beside.ha {
        Some(ha) if director => Some(ha.decide(&services.iter().map(|s| s.vip).collect())),
        _ => None,
    };
    let assignments: Vec<Assignment<'_>> = services
        .iter()
        .map(|service| Assignment {
            service,
            backends: service.backends.clone().unwrap_or_default(),
            director: director.then(|| DirectorRole {
                holds_vip: held.as_ref().is_none_or(|h| h.contains(&service.vip)),
                interface: opts.interface.clone(),
                handover: beside.ha.as_ref().and_then(|ha| ha.handover(service.vip)),
            }),
            real_server: opts.role == Role::Backend,
            health: match beside.checks.as_mut() {
                Some(c) if director => c.admissions(&service.id),
                _ => Default::default(),
            },
        })
        .collect();
    let settings = converge::Settings {
        // Connections are synced between directors that fail over to each other.
        sync_id: (director && beside.ha.is_some()).then_some(opts.sync_id),
        keep_sync_daemons: beside.ha.as_ref().is_some_and(|ha| ha.keeps_sync_daemons()),
        // With `ha` there are peers (`--peer`); without, no daemon runs at all.
        sync_backup: true,
        now: converge::now(),
        drain_timeout: opts.drain_timeout.as_secs(),
        dry_run: opts.dry_run,
        // A real server checks its own setup after the resync; a director reports nothing from it.
        observe_after: opts.role == Role::Backend,
        marks: opts.marks,
        // The files here are this node's part only: a director elsewhere may still send it
        // clients of a VIP they no longer name.
        directed: None,
        unannounced: beside.ha.as_ref().map(Ha::unannounced).unwrap_or_default(),
        announce: beside
            .ha
            .as_mut()
            .map(Ha::take_announcements)
            .unwrap_or_default(),
    };
    let resynced = converge::resync(dp, store, &assignments, settings).await?;
    if let Some(c) = &mut beside.checks {
        c.follow(&assignments, &resynced);
    }
    if let Some(ha) = &mut beside.ha {
        // Ready to take a VIP: its objects placed here and the resync carried everything out.
        let ready = services
            .iter()
            .filter(|s| resynced.desired.parts.contains_key(&s.id))
            .filter(|_| resynced.converged.failed.is_empty())
            .map(|s| s.vip)
            .collect();
        let ifname = opts.interface.clone().or_else(|| {
            let vip = services.first()?.vip;
            resynced.lans.interface_for(vip)
        });
        ha.after_resync(
            ready,
            resynced.on_interfaces(),
            ifname.as_deref().and_then(crate::netdev::interface_mac),
        );
        ha.record_sync(&resynced.after.daemons.keys().copied().collect());
        if let Some(announcer) = &beside.announcer {
            announcer.hold(&resynced.desired.state.addresses, |vip| ha.announces(vip));
        }
    }
    let mut unready = Vec::new();
    if let (Some(ha), Some(holders)) = (&beside.ha, &beside.holders) {
        let interface_of = |s: &VirtualService| {
            opts.interface
                .clone()
                .or_else(|| s.interface.clone())
                .or_else(|| resynced.lans.interface_for(s.vip))
        };
        unready.extend(second_holders(ha, holders, &services, interface_of));
    }
    rejected.extend(
        resynced
            .desired
            .errors
            .iter()
            .map(|p| format!("{}: {}", p.object, p.message)),
    );
    if opts.role == Role::Backend && !opts.dry_run {
        // What would keep this machine from answering clients through each VIP.
        let after = &resynced.after;
        let selfcheck = selfcheck::SelfCheck::new(after, &after.listeners);
        unready.extend(services.iter().filter_map(|s| {
            let problem = selfcheck.verify(s)?;
            Some(format!(
                "{}: this real server cannot serve the VIP: {problem}",
                s.id
            ))
        }));
    }
    Ok(Outcome {
        rejected,
        unready,
        resynced,
    })
}

/// Hands the holder probes the VIPs to watch, and says which VIPs another machine answers for,
/// one problem line per foreign MAC.
fn second_holders(
    ha: &Ha,
    holders: &Holders,
    services: &[VirtualService],
    interface_of: impl Fn(&VirtualService) -> Option<String>,
) -> Vec<String> {
    let mut watches: Vec<Watch> = Vec::new();
    for s in services {
        if watches.iter().any(|w| w.vip == s.vip) {
            continue;
        }
        if let Some(ifname) = interface_of(s) {
            watches.push(Watch {
                vip: s.vip,
                ifname,
                // Where a peer holds the VIP, its answers are expected; where we do, none is
                // but the other side's of a handover.
                active_mac: ha.expected_mac(s.vip),
            });
        }
    }
    let vips = watches.iter().map(|w| w.vip).collect();
    holders.watch(watches);
    let foreign = holders.foreign();
    ha.record_foreign(&vips, &foreign.iter().map(|(v, m)| (*v, m.len())).collect());
    let names = ha.peer_macs();
    let mut problems = Vec::new();
    for (vip, macs) in &foreign {
        for mac in macs {
            let mac = format_mac(*mac);
            let who = names
                .get(&mac)
                .map(|node| format!(" (director {node})"))
                .unwrap_or_default();
            problems.push(format!(
                "{vip}: {mac}{who} also answers ARP for it, besides its active director: clients are split between two machines; remove the VIP there (ip addr del {vip}/32 dev ...)"
            ));
        }
    }
    problems
}

/// Says what a resync did, each thing once: in a dry run the commands on stdout and the problems
/// in the log, else the changes and the problems in the log.
pub fn report(outcome: &Outcome, dry_run: bool, log: &mut ProblemLog) {
    if dry_run {
        for op in &outcome.converged().plan.ops {
            println!("{op}");
        }
        let blocked = outcome
            .converged()
            .plan
            .blocked
            .iter()
            .map(ToString::to_string);
        log.update(outcome.rejected.iter().cloned().chain(blocked));
    } else {
        let problems: Vec<String> = outcome
            .rejected
            .iter()
            .chain(&outcome.unready)
            .cloned()
            .collect();
        converge::log_outcome(outcome.converged(), &problems, log);
    }
}

/// Runs until SIGTERM/SIGINT (or once). Stopping leaves the data plane as it is, except that a
/// director with peers first hands each VIP a ready standby can take over to it. A director runs
/// its health checks and failover (`beside`) unless it converges once: a verdict or a peer that
/// changes starts a resync at once.
pub async fn run<D: DataPlane>(
    dp: &mut D,
    store: &LedgerStore,
    opts: &Options<'_>,
    once: bool,
    period: Duration,
    metrics: &AgentMetrics,
    mut beside: Beside,
) -> bool {
    let stop = crate::shutdown::requested();
    tokio::pin!(stop);
    let mut log = ProblemLog::default();
    let mut retry = converge::Retry::new(period);
    if let (Some(ha), Ok(ledger)) = (&mut beside.ha, store.load()) {
        ha.adopt(
            ledger
                .addresses
                .iter()
                .filter(|a| a.ifname != "lo")
                .map(|a| a.addr),
        );
    }
    // Set once SIGTERM came and VIPs are being handed over: when to give up waiting.
    let mut handing_over: Option<Instant> = None;
    loop {
        let mut lingering = false;
        let (ok, resynced) = match resync(dp, store, opts, &mut beside).await {
            Ok(outcome) => {
                report(&outcome, opts.dry_run, &mut log);
                metrics.record(&outcome.resynced);
                lingering = !outcome.resynced.lingering.is_empty();
                (outcome.ok(), true)
            }
            Err(e) => {
                if once || opts.dry_run {
                    error!("{e:#}");
                } else {
                    log.update([format!("{e:#}")]);
                }
                metrics.error(converge::failure_category(&e));
                (false, false)
            }
        };
        if once || opts.dry_run {
            return ok;
        }
        if let Some(deadline) = handing_over {
            let done = beside.ha.as_ref().is_none_or(Ha::handed_over);
            if done || Instant::now() >= deadline {
                info!(
                    "{}; the data plane stays as it is",
                    if done {
                        "handed over"
                    } else {
                        "no standby took over in time"
                    }
                );
                return true;
            }
        }
        let mut wait = retry.after(resynced);
        if lingering {
            wait = wait.min(converge::LINGER_POLL);
        }
        if let Some(step) = beside
            .checks
            .as_ref()
            .and_then(HealthChecks::next_ramp_step)
        {
            wait = wait.min(step);
        }
        if let Some(quiet) = beside.ha.as_ref().and_then(Ha::next_wake) {
            wait = wait.min(quiet);
        }
        if handing_over.is_some() {
            wait = wait.min(Duration::from_millis(50));
        }
        let verdicts = async {
            match &beside.checks {
                Some(c) => c.changed().await,
                None => std::future::pending().await,
            }
        };
        let peers = async {
            match &beside.ha {
                Some(ha) => ha.changed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            () = verdicts => {}
            () = peers => {}
            () = &mut stop, if handing_over.is_none() => {
                let handed = beside.ha.as_mut().map_or(0, Ha::leave);
                if handed == 0 {
                    info!("the data plane stays as it is");
                    return true;
                }
                handing_over = Some(Instant::now() + crate::ha::director::HANDOVER_LIMIT);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manifest_just_written_is_read_once_it_has_been_left_alone() {
        let dir = std::env::temp_dir().join(format!("lvs-settle-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // What `cat > web.yaml` leaves for a moment.
        std::fs::write(dir.join("web.yaml"), "").unwrap();
        let t = std::time::Instant::now();
        settled(&dir).await;
        let waited = t.elapsed();
        assert!(waited >= SETTLE - Duration::from_millis(20), "{waited:?}");
        let t = std::time::Instant::now();
        settled(&dir).await;
        assert!(t.elapsed() < SETTLE, "left alone since: read at once");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
