//! One resync: observe, plan, apply, record. The same for both agent modes.

use std::collections::BTreeSet;
use std::future::Future;

use crate::core::{Ledger, NodeState, Op, Plan, ServiceKey, plan};

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

/// The services whose destinations the planner needs: ours and the ones we want.
pub fn dests_needed(desired: &NodeState, ledger: &Ledger) -> BTreeSet<ServiceKey> {
    desired
        .services
        .keys()
        .chain(ledger.services.iter())
        .copied()
        .collect()
}

/// The sysctls the planner needs: the ones we want and the ones we may have to restore.
pub fn sysctls_needed(desired: &NodeState, ledger: &Ledger) -> BTreeSet<String> {
    desired
        .sysctls
        .keys()
        .chain(ledger.sysctls.keys())
        .cloned()
        .collect()
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
