//! Standalone mode: LvsService objects from YAML files, no cluster.
//!
//! `lvs-operator agent --standalone PATH --role director|backend [--once] [--dry-run] ...`.
//! Every resync re-reads PATH; an object that left it has its state removed (only what we made).
//! Invalid objects are reported by name and field and change nothing; the valid ones are served.
//! If PATH cannot be read at all, the resync is skipped and the data plane stays as it is: a
//! missing file is far more likely a deploy in progress than a wish to tear everything down.

use std::path::Path;
use std::time::Duration;

use tracing::error;

use crate::api::{manifest, validate};
use crate::core::{Assignment, DirectorRole, VirtualService, selfcheck};

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

/// One resync against `dp`, with the health checks' verdicts when they run (`checks`), which
/// then follow the objects the resync directs.
pub async fn resync<D: DataPlane>(
    dp: &mut D,
    store: &LedgerStore,
    opts: &Options<'_>,
    mut checks: Option<&mut HealthChecks>,
) -> anyhow::Result<Outcome> {
    let (services, mut rejected) = load(opts.path).map_err(|e| {
        anyhow::anyhow!(
            "reading {}: {e}; leaving the data plane as it is",
            opts.path.display()
        )
    })?;
    let director = opts.role == Role::Director;
    let assignments: Vec<Assignment<'_>> = services
        .iter()
        .map(|service| Assignment {
            service,
            backends: service.backends.clone().unwrap_or_default(),
            director: director.then(|| DirectorRole {
                holds_vip: true,
                interface: opts.interface.clone(),
            }),
            real_server: opts.role == Role::Backend,
            health: match checks.as_deref_mut() {
                Some(c) if director => c.admissions(&service.id),
                _ => Default::default(),
            },
        })
        .collect();
    let settings = converge::Settings {
        now: converge::now(),
        drain_timeout: opts.drain_timeout.as_secs(),
        dry_run: opts.dry_run,
        // A real server checks its own setup after the resync; a director reports nothing from it.
        observe_after: opts.role == Role::Backend,
        marks: opts.marks,
    };
    let resynced = converge::resync(dp, store, &assignments, settings).await?;
    if let Some(c) = checks {
        c.follow(&assignments, &resynced);
    }
    rejected.extend(
        resynced
            .desired
            .errors
            .iter()
            .map(|p| format!("{}: {}", p.object, p.message)),
    );
    let mut unready = Vec::new();
    if opts.role == Role::Backend && !opts.dry_run {
        // What would keep this machine from answering clients through each VIP.
        let after = &resynced.after;
        unready.extend(services.iter().filter_map(|s| {
            let problem = selfcheck::verify(s, after, &after.listeners)?;
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

/// Runs until SIGTERM/SIGINT (or once). Stopping leaves the data plane as it is. A director runs
/// its health checks (`checks`) unless it converges once: a verdict that changes starts a resync
/// at once.
pub async fn run<D: DataPlane>(
    dp: &mut D,
    store: &LedgerStore,
    opts: &Options<'_>,
    once: bool,
    period: Duration,
    metrics: &AgentMetrics,
    mut checks: Option<HealthChecks>,
) -> bool {
    let stop = crate::shutdown::requested();
    tokio::pin!(stop);
    let mut log = ProblemLog::default();
    let mut retry = converge::Retry::new(period);
    loop {
        let (ok, resynced) = match resync(dp, store, opts, checks.as_mut()).await {
            Ok(outcome) => {
                report(&outcome, opts.dry_run, &mut log);
                metrics.record(&outcome.resynced);
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
        let mut wait = retry.after(resynced);
        if let Some(step) = checks.as_ref().and_then(HealthChecks::next_ramp_step) {
            wait = wait.min(step);
        }
        let verdicts = async {
            match &checks {
                Some(c) => c.changed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            () = verdicts => {}
            () = &mut stop => {
                tracing::info!("the data plane stays as it is");
                return true;
            }
        }
    }
}
