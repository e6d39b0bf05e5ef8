//! Standalone mode: LvsService objects from YAML files, no cluster.
//!
//! `lvs-operator agent --standalone PATH --role director|backend [--once] [--dry-run] ...`.
//! Every resync re-reads PATH; an object that left it has its state removed (only what we made).
//! Invalid objects are reported by name and field and change nothing; the valid ones are served.
//! If PATH cannot be read at all, the resync is skipped and the data plane stays as it is: a
//! missing file is far more likely a deploy in progress than a wish to tear everything down.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{error, info, warn};

use crate::api::{LvsService, manifest, validate};
use crate::core::{Assignment, DirectorRole};

use super::converge::{self, Converged, DataPlane};
use super::ledger::LedgerStore;

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
    pub converged: Converged,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.rejected.is_empty() && self.converged.ok()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Reads PATH and keeps the valid objects; the invalid ones become one message per field.
fn load(path: &Path) -> std::io::Result<(Vec<LvsService>, Vec<String>)> {
    let mut valid = Vec::new();
    let mut rejected = Vec::new();
    for doc in manifest::read_path(path)? {
        match doc.and_then(|o| validate(&o).map(|()| o)) {
            Ok(o) => valid.push(o),
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
    let (objects, mut rejected) = load(opts.path).map_err(|e| {
        anyhow::anyhow!(
            "reading {}: {e}; leaving the data plane as it is",
            opts.path.display()
        )
    })?;
    let assignments: Vec<Assignment<'_>> = objects
        .iter()
        .map(|o| Assignment {
            object: o,
            backends: Assignment::explicit_backends(o),
            director: (opts.role == Role::Director).then(|| DirectorRole {
                holds_vip: true,
                interface: opts.interface.clone(),
            }),
            real_server: opts.role == Role::Backend,
        })
        .collect();
    let drain = opts.drain_timeout.as_secs();
    let settings = converge::Settings {
        now: now(),
        drain_timeout: drain,
        dry_run: opts.dry_run,
        observe_after: false,
    };
    let r = converge::resync(dp, store, &assignments, settings).await?;
    rejected.extend(
        r.desired
            .errors
            .iter()
            .map(|p| format!("{}: {}", p.object, p.message)),
    );
    Ok(Outcome {
        rejected,
        converged: r.converged,
    })
}

/// Prints what a resync did the way an admin reads it: the commands, then the problems.
pub fn report(outcome: &Outcome, dry_run: bool) {
    for line in &outcome.rejected {
        error!("{line}");
        eprintln!("error: {line}");
    }
    for key in &outcome.converged.plan.conflicts {
        warn!(
            "IPVS service {key} already exists and was not made by lvs-operator; leaving it alone"
        );
        eprintln!(
            "error: IPVS service {key} already exists and was not made by lvs-operator; leaving it alone"
        );
    }
    let failed: Vec<_> = outcome.converged.failed.iter().map(|(op, _)| op).collect();
    for op in &outcome.converged.plan.ops {
        if dry_run {
            println!("{op}");
        } else if !failed.contains(&op) {
            info!("applied: {op}");
        }
    }
    for (op, e) in &outcome.converged.failed {
        error!("failed: {op}: {e}");
        eprintln!("error: {op}: {e}");
    }
}

/// Runs until SIGTERM/SIGINT (or once). Stopping leaves the data plane as it is.
pub async fn run<D: DataPlane>(
    dp: &mut D,
    store: &LedgerStore,
    opts: &Options<'_>,
    once: bool,
    period: Duration,
) -> anyhow::Result<bool> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let ok = match resync(dp, store, opts).await {
            Ok(outcome) => {
                report(&outcome, opts.dry_run);
                outcome.ok()
            }
            Err(e) => {
                error!("{e:#}");
                eprintln!("error: {e:#}");
                false
            }
        };
        if once || opts.dry_run {
            return Ok(ok);
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = term.recv() => { info!("SIGTERM: exiting, the data plane stays as it is"); return Ok(true) }
            _ = tokio::signal::ctrl_c() => { info!("interrupted: exiting, the data plane stays as it is"); return Ok(true) }
        }
    }
}
