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
use crate::core::{Assignment, DirectorRole, VirtualService};

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
}

/// The outcome of one standalone resync, for `--once`'s exit code.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Objects rejected (invalid, or not placeable on this machine), one line each.
    pub rejected: Vec<String>,
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

/// One resync against `dp`.
pub async fn resync<D: DataPlane>(
    dp: &mut D,
    store: &LedgerStore,
    opts: &Options<'_>,
) -> anyhow::Result<Outcome> {
    let (services, mut rejected) = load(opts.path).map_err(|e| {
        anyhow::anyhow!(
            "reading {}: {e}; leaving the data plane as it is",
            opts.path.display()
        )
    })?;
    let assignments: Vec<Assignment<'_>> = services
        .iter()
        .map(|service| Assignment {
            service,
            backends: service.backends.clone().unwrap_or_default(),
            director: (opts.role == Role::Director).then(|| DirectorRole {
                holds_vip: true,
                interface: opts.interface.clone(),
            }),
            real_server: opts.role == Role::Backend,
        })
        .collect();
    let settings = converge::Settings {
        now: converge::now(),
        drain_timeout: opts.drain_timeout.as_secs(),
        dry_run: opts.dry_run,
        observe_after: false,
    };
    let resynced = converge::resync(dp, store, &assignments, settings).await?;
    rejected.extend(
        resynced
            .desired
            .errors
            .iter()
            .map(|p| format!("{}: {}", p.object, p.message)),
    );
    Ok(Outcome { rejected, resynced })
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
        converge::log_outcome(outcome.converged(), &outcome.rejected, log);
    }
}

/// Runs until SIGTERM/SIGINT (or once). Stopping leaves the data plane as it is.
pub async fn run<D: DataPlane>(
    dp: &mut D,
    store: &LedgerStore,
    opts: &Options<'_>,
    once: bool,
    period: Duration,
    metrics: &AgentMetrics,
) -> bool {
    let stop = crate::shutdown::requested();
    tokio::pin!(stop);
    let mut log = ProblemLog::default();
    let mut retry = converge::Retry::new(period);
    loop {
        let (ok, resynced) = match resync(dp, store, opts).await {
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
        tokio::select! {
            _ = tokio::time::sleep(retry.after(resynced)) => {}
            () = &mut stop => {
                tracing::info!("the data plane stays as it is");
                return true;
            }
        }
    }
}
