//! One resync: observe, plan, apply, record. The same for both agent modes.

use std::collections::BTreeSet;
use std::future::Future;

use crate::core::{
    Assignment, Desired, Ledger, NodeState, Op, Plan, REAL_SERVER_SYSCTLS, ServiceKey, desired,
    interface_for, plan, wanted_services,
};

use super::ledger::LedgerStore;

/// The kernel, as the agent sees it. The real one speaks netlink and writes /proc/sys; tests use
/// an in-memory one.
pub trait DataPlane {
    /// What the node holds now: every IPVS service, the destinations of the services listed in
    /// `dests_of` (the others are not ours to look into), every address, and the sysctls named.
    fn observe(
        &mut self,
        dests_of: &BTreeSet<ServiceKey>,
        sysctls: &BTreeSet<String>,
    ) -> impl Future<Output = anyhow::Result<NodeState>>;

    /// Carries out operations in order, batching what it can; one result per operation.
    fn apply(&mut self, ops: &[Op]) -> impl Future<Output = Vec<anyhow::Result<()>>>;
}

/// What one resync did.
#[derive(Debug, Default)]
pub struct Converged {
    pub plan: Plan,
    /// Operations the kernel refused, with the reason.
    pub failed: Vec<(Op, String)>,
}

impl Converged {
    pub fn ok(&self) -> bool {
        self.failed.is_empty() && self.plan.conflicts.is_empty()
    }
}

/// One whole resync of this node, the same in both modes.
#[derive(Debug, Default)]
pub struct Resynced {
    pub desired: Desired,
    pub converged: Converged,
    /// The kernel after the resync: observed again when something was applied and
    /// [`Settings::observe_after`] asks for it, else the observation the plan was made from.
    pub after: NodeState,
}

/// How one resync runs.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Seconds since the Unix epoch.
    pub now: u64,
    /// Seconds a removed real server may drain.
    pub drain_timeout: u64,
    /// Plan only; change nothing.
    pub dry_run: bool,
    /// Dump the kernel again after applying, to report what really holds (the cluster agent's
    /// status). A second dump of a large table costs as much as the first, so the standalone
    /// agent, which reports nothing from it, skips it.
    pub observe_after: bool,
}

/// Observes, computes the desired state of `assignments`, plans, applies (unless `dry_run`),
/// and saves the ledger when it changed.
pub async fn resync<D: DataPlane>(
    dp: &mut D,
    store: &LedgerStore,
    assignments: &[Assignment<'_>],
    settings: Settings,
) -> anyhow::Result<Resynced> {
    let Settings {
        now,
        drain_timeout,
        dry_run,
        observe_after,
    } = settings;
    let mut ledger = store.load()?;
    // The destinations of ours and of the ones we want; not of the other services on the node.
    let mut dests_of: BTreeSet<ServiceKey> = wanted_services(assignments);
    dests_of.extend(ledger.services.iter().copied());
    let mut sysctls: BTreeSet<String> = ledger.sysctls.keys().cloned().collect();
    if assignments.iter().any(|a| a.real_server) {
        sysctls.extend(REAL_SERVER_SYSCTLS.iter().map(|(n, _)| n.to_string()));
    }
    let observed = dp.observe(&dests_of, &sysctls).await?;
    let desired = desired(assignments, &|vip| interface_for(vip, &observed.addresses));
    let before = ledger.clone();
    let converged = converge(
        dp,
        &desired.state,
        &observed,
        &mut ledger,
        now,
        drain_timeout,
        dry_run,
    )
    .await;
    if ledger != before {
        store.save(&ledger)?;
    }
    let after = if dry_run || !observe_after || converged.plan.ops.is_empty() {
        observed
    } else {
        dp.observe(&dests_of, &sysctls).await?
    };
    Ok(Resynced {
        desired,
        converged,
        after,
    })
}

/// Plans from an observation and applies the plan (unless `dry_run`), recording in the ledger
/// what the kernel accepted.
pub async fn converge<D: DataPlane>(
    dp: &mut D,
    desired: &NodeState,
    observed: &NodeState,
    ledger: &mut Ledger,
    now: u64,
    drain_timeout: u64,
    dry_run: bool,
) -> Converged {
    let plan = plan(desired, observed, ledger, now, drain_timeout);
    let mut failed = Vec::new();
    if !dry_run && !plan.ops.is_empty() {
        let results = dp.apply(&plan.ops).await;
        for (op, result) in plan.ops.iter().zip(results) {
            match result {
                Ok(()) => ledger.record(op, now),
                Err(e) => failed.push((op.clone(), format!("{e:#}"))),
            }
        }
    }
    Converged { plan, failed }
}
