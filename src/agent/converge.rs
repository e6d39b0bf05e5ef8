//! One resync: observe, settle the ledger, plan, write ahead, apply, confirm. The same for both
//! agent modes.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::IpAddr;

use crate::core::{
    Assignment, CHECKED_DIRECTOR_SYSCTLS, Desired, Intent, Lans, Ledger, MarkKey, NodeState, Op,
    Plan, REAL_SERVER_SYSCTLS, SLOPPY_TCP, ServiceKey, assign_marks, desired, hold_ejected, linger,
    plan, sync_daemons, wanted_marks, wanted_services,
};
use crate::ipvs::{SyncDaemon, SyncRole};

use super::ledger::LedgerStore;

/// What a resync needs to read of the node beyond the lists the kernel gives whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Services whose destinations to dump: ours and the ones we want.
    pub dests_of: BTreeSet<ServiceKey>,
    /// Firewall-mark services whose destinations to dump: ours.
    pub marks_of: BTreeSet<MarkKey>,
    /// Sysctls to read: ours and the ones we need. An interface of `*` stands for every
    /// interface of the node (`net.ipv4.conf.*.arp_ignore`).
    pub sysctls: BTreeSet<String>,
    /// Read the listening sockets (a real server's self-check).
    pub listeners: bool,
    /// Read the IPVS connection-sync daemons.
    pub daemons: bool,
}

/// The kernel, as the agent sees it. The real one speaks netlink and writes /proc/sys; tests use
/// an in-memory one.
pub trait DataPlane {
    /// What the node holds now: every IPVS service (address and firewall-mark), the destinations
    /// of those in `scope` (the others are not ours to look into), every address, and the
    /// sysctls of `scope` (one that cannot be read is left out).
    fn observe(&mut self, scope: &Scope) -> impl Future<Output = anyhow::Result<NodeState>>;

    /// Carries out operations in order, batching what it can; one result per operation.
    fn apply(&mut self, ops: &[Op]) -> impl Future<Output = Vec<anyhow::Result<()>>>;
}

/// What one resync changed, or would change in a dry run.
#[derive(Debug, Default)]
pub struct Converged {
    pub plan: Plan,
    /// Operations the kernel refused, with the reason.
    pub failed: Vec<(Op, String)>,
}

impl Converged {
    pub fn ok(&self) -> bool {
        self.failed.is_empty() && self.plan.blocked.is_empty()
    }

    /// The operations the kernel carried out (all of them in a dry run, which carries out none).
    pub fn applied(&self) -> impl Iterator<Item = &Op> {
        self.plan
            .ops
            .iter()
            .filter(|op| !self.failed.iter().any(|(f, _)| f == *op))
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
    /// The firewall mark that probes of each real server through a VIP carry.
    pub marks: BTreeMap<IpAddr, MarkKey>,
    /// The VIPs kept on `lo` while clients are still connected to them: the agent looks again
    /// every [`LINGER_POLL`], so that each goes as soon as its clients are done.
    pub lingering: Vec<IpAddr>,
    /// The subnets of `after`: which interface each VIP is on.
    pub lans: Lans,
}

impl Resynced {
    /// The addresses on an interface other than `lo` after the resync (a director's VIPs): those
    /// the desired state holds, less those the kernel refused to add.
    pub fn on_interfaces(&self) -> BTreeSet<IpAddr> {
        let refused: BTreeSet<IpAddr> = self
            .converged
            .failed
            .iter()
            .filter_map(|(op, _)| match op {
                Op::AddAddress { address, .. } => Some(address.addr),
                _ => None,
            })
            .collect();
        self.desired
            .state
            .addresses
            .iter()
            .filter(|a| a.ifname != "lo" && !refused.contains(&a.addr))
            .map(|a| a.addr)
            .collect()
    }
}

/// How often a VIP that lingers on `lo` is looked at again.
pub const LINGER_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// How one resync runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Seconds since the Unix epoch.
    pub now: u64,
    /// Seconds a removed real server may drain.
    pub drain_timeout: u64,
    /// Plan only; change nothing (not even the ledger).
    pub dry_run: bool,
    /// Dump the kernel again after applying, to report what really holds (the cluster agent's
    /// status). A second dump of a large table costs as much as the first, so the standalone
    /// agent, which reports nothing from it, skips it.
    pub observe_after: bool,
    /// The firewall marks the health checks may use, first and last.
    pub marks: (u32, u32),
    /// A director with peers syncs its connections to them with this `--syncid`.
    pub sync_id: Option<u8>,
    /// Stop none of our sync daemons this time (a director that just took or let go of a VIP:
    /// see [`crate::ha::director::SYNC_GRACE`]); the ones it wants are started all the same.
    pub keep_sync_daemons: bool,
    /// A standby runs the backup daemon: some other director may send it connections. A sole
    /// director's backup would receive nothing, and it came and went with each VIP it had not
    /// taken yet, changing the `sync` every object reports.
    pub sync_backup: bool,
    /// The VIPs of every object that exists, when the agent sees them all (cluster mode): a
    /// real server's VIP outside them has no director left and does not linger on `lo`.
    pub directed: Option<BTreeSet<IpAddr>>,
    /// Director VIPs added without announcing them (taken while the old holder drains).
    pub unannounced: BTreeSet<IpAddr>,
    /// Director VIPs to announce now, already on their interface (see `crate::ha::director`).
    pub announce: BTreeSet<IpAddr>,
}

/// Observes, computes the desired state of `assignments`, settles the ledger, plans, and (unless
/// `dry_run`) writes the plan's creations ahead into the ledger, applies, and confirms.
pub async fn resync<D: DataPlane>(
    dp: &mut D,
    store: &LedgerStore,
    assignments: &[Assignment<'_>],
    settings: Settings,
) -> anyhow::Result<Resynced> {
    let mut ledger = store.load()?;
    let scope = what_to_observe(&ledger, assignments, settings.sync_id);
    let observed = dp.observe(&scope).await?;
    let (first, last) = settings.marks;
    let marks = assign_marks(&wanted_marks(assignments), &ledger, &observed, first..=last);
    let lans = Lans::of(&observed.addresses);
    let mut desired = desired(assignments, &|vip| lans.interface_for(vip), &marks);
    hold_ejected(&mut desired, assignments, &observed);
    if let Some(id) = settings.sync_id {
        desired.state.daemons = sync_daemons(assignments, &|vip| lans.interface_for(vip), id);
    }
    wanted_daemons(
        &mut desired.state.daemons,
        (settings.sync_backup, settings.keep_sync_daemons),
        &ledger,
        &observed,
    );
    let before = ledger.clone();
    let lingering = linger(
        &mut desired,
        &mut ledger,
        &observed,
        settings.directed.as_ref(),
        settings.now,
        settings.drain_timeout,
    );
    if lingering != before.lingering.keys().copied().collect::<Vec<_>>() {
        if lingering.is_empty() {
            tracing::info!(
                "no VIP lingers on lo any more: their clients are done, or the drain timeout passed"
            );
        } else {
            tracing::info!(
                "keeping {} on lo while clients are still connected (at most {} s)",
                list_addrs(&lingering),
                settings.drain_timeout
            );
        }
    }
    ledger.settle(&observed, &desired.state);
    let mut plan = plan(
        &desired.state,
        &observed,
        &ledger,
        settings.now,
        settings.drain_timeout,
    );
    announcements(
        &mut plan,
        &desired.state,
        &observed,
        &settings.unannounced,
        &settings.announce,
    );
    if settings.dry_run {
        return Ok(Resynced {
            desired,
            converged: Converged {
                plan,
                failed: Vec::new(),
            },
            after: observed,
            marks,
            lingering,
            lans,
        });
    }
    if ledger.intend(&plan.ops) || ledger != before {
        // Write-ahead: from here on, whatever the kernel does is ours to find after a crash.
        store.save(&ledger)?;
    }
    let failed = apply(dp, &plan.ops, &mut ledger, settings.now).await;
    if ledger != before {
        store.save(&ledger)?;
    }
    let (after, lans) = if !settings.observe_after || plan.ops.is_empty() {
        (observed, lans)
    } else {
        let after = dp.observe(&scope).await?;
        let lans = Lans::of(&after.addresses);
        (after, lans)
    };
    Ok(Resynced {
        desired,
        converged: Converged { plan, failed },
        after,
        marks,
        lingering,
        lans,
    })
}

/// The sync daemons to run, from those the assignments ask for: no backup without a peer to
/// receive from (`backup` false), and during the grace after a take (`keep`) every one of ours
/// that runs is kept.
fn wanted_daemons(
    daemons: &mut BTreeMap<SyncRole, SyncDaemon>,
    (backup, keep): (bool, bool),
    ledger: &Ledger,
    observed: &NodeState,
) {
    if !backup {
        daemons.remove(&SyncRole::Backup);
    }
    if keep {
        for role in &ledger.daemons {
            if let Some(running) = observed.daemons.get(role) {
                daemons.entry(*role).or_insert_with(|| running.clone());
            }
        }
    }
}

/// A handover's announcements: a VIP taken quietly is added without one, and announced on its
/// own once the old holder has drained.
fn announcements(
    plan: &mut Plan,
    desired: &NodeState,
    observed: &NodeState,
    unannounced: &BTreeSet<IpAddr>,
    now: &BTreeSet<IpAddr>,
) {
    for op in &mut plan.ops {
        if let Op::AddAddress { address, announce } = op
            && unannounced.contains(&address.addr)
        {
            *announce = false;
        }
    }
    for address in &desired.addresses {
        if address.ifname != "lo"
            && now.contains(&address.addr)
            && observed.addresses.contains(address)
        {
            plan.ops.push(Op::Announce {
                address: address.clone(),
            });
        }
    }
}

/// The destinations of ours, of those we want and of those we were about to create (not of the
/// other services on the node), and the sysctls we own or may need.
fn what_to_observe(ledger: &Ledger, assignments: &[Assignment<'_>], sync: Option<u8>) -> Scope {
    let mut scope = Scope {
        dests_of: wanted_services(assignments),
        marks_of: ledger.marks.clone(),
        sysctls: ledger.sysctls.keys().cloned().collect(),
        // A VIP on lo lingers while clients are connected to it: read the connections.
        listeners: assignments.iter().any(|a| a.real_server)
            || ledger.addresses.iter().any(|a| a.ifname == "lo"),
        daemons: sync.is_some() || !ledger.daemons.is_empty(),
    };
    scope.dests_of.extend(ledger.services.iter().copied());
    for intent in &ledger.intents {
        match intent {
            Intent::AddService { key, .. } => {
                scope.dests_of.insert(*key);
            }
            Intent::AddMark { key } => {
                scope.marks_of.insert(*key);
            }
            Intent::SetSysctl { name, .. } => {
                scope.sysctls.insert(name.clone());
            }
            Intent::StartDaemon { .. } => scope.daemons = true,
            Intent::AddAddress { .. } => {}
        }
    }
    if assignments.iter().any(|a| a.real_server) {
        scope
            .sysctls
            .extend(REAL_SERVER_SYSCTLS.iter().map(|(n, _)| n.to_string()));
        // The self-check's effective ARP behaviour: every interface's own value.
        scope.sysctls.insert("net.ipv4.conf.*.arp_ignore".into());
        scope.sysctls.insert("net.ipv4.conf.*.arp_announce".into());
    }
    // A director checking through its VIP needs accept_local on the VIP's interface; which one is
    // only known after observing, so read every interface's that a director may use.
    for a in assignments.iter().filter(|a| a.director.is_some()) {
        if a.director.as_ref().is_some_and(|d| d.handover.is_some()) {
            scope.sysctls.insert(SLOPPY_TCP.0.to_string());
        }
        if a.service.health.is_some() {
            scope
                .sysctls
                .extend(CHECKED_DIRECTOR_SYSCTLS.iter().map(|(n, _)| n.to_string()));
        }
        if a.service.health.as_ref().is_some_and(|h| h.through_vip) {
            let ifname = a
                .director
                .as_ref()
                .and_then(|d| d.interface.clone())
                .or_else(|| a.service.interface.clone());
            match ifname {
                Some(ifname) => scope
                    .sysctls
                    .insert(format!("net.ipv4.conf.{ifname}.accept_local")),
                None => scope.sysctls.insert(ACCEPT_LOCAL_ANY.to_string()),
            };
        }
    }
    scope
}

/// Stands for "accept_local of whichever interface the VIP lands on" in a scope: every
/// interface's is read.
pub const ACCEPT_LOCAL_ANY: &str = "net.ipv4.conf.*.accept_local";

/// The sysctl names of `scope` with `*` for the interface expanded over `interfaces`.
pub fn expand_sysctls<'a>(
    names: &BTreeSet<String>,
    interfaces: impl Iterator<Item = &'a str> + Clone,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for name in names {
        match name.split_once(".*.") {
            Some((head, tail)) => {
                out.extend(interfaces.clone().map(|i| format!("{head}.{i}.{tail}")));
            }
            None => {
                out.insert(name.clone());
            }
        }
    }
    out
}

/// Applies `ops` and confirms the kernel's answers in the ledger; returns the refused ones.
/// Takes away the addresses of `vips` that we made on an interface (not `lo`): a VIP this
/// director let go of before it could list its objects (its agent restarted while the API server
/// was away, and a standby had taken over meanwhile). Nothing else changes.
pub async fn drop_vips<D: DataPlane>(
    dp: &mut D,
    store: &LedgerStore,
    vips: &BTreeSet<IpAddr>,
) -> anyhow::Result<Vec<(Op, String)>> {
    let mut ledger = store.load()?;
    let ops: Vec<Op> = ledger
        .addresses
        .iter()
        .filter(|a| a.ifname != "lo" && vips.contains(&a.addr))
        .map(|a| Op::DelAddress { address: a.clone() })
        .collect();
    if ops.is_empty() {
        return Ok(Vec::new());
    }
    for op in &ops {
        tracing::info!("applied: {op}");
    }
    let failed = apply(dp, &ops, &mut ledger, now()).await;
    store.save(&ledger)?;
    Ok(failed)
}

async fn apply<D: DataPlane>(
    dp: &mut D,
    ops: &[Op],
    ledger: &mut Ledger,
    now: u64,
) -> Vec<(Op, String)> {
    if ops.is_empty() {
        return Vec::new();
    }
    let results = dp.apply(ops).await;
    let succeeded: Vec<bool> = results.iter().map(Result::is_ok).collect();
    ledger.confirm(ops, &succeeded, now);
    ops.iter()
        .zip(results)
        .filter_map(|(op, r)| r.err().map(|e| (op.clone(), format!("{e:#}"))))
        .collect()
}

/// Seconds since the Unix epoch, the clock of drains.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Logs what a resync did in ipvsadm's words: every change as it is made, and each problem (a
/// refusal, something left alone, an object rejected) when it appears and when it clears, not at
/// every resync.
pub fn log_outcome(c: &Converged, extra_problems: &[String], log: &mut ProblemLog) {
    for op in c.applied() {
        tracing::info!("applied: {op}");
    }
    let problems = extra_problems
        .iter()
        .cloned()
        .chain(c.failed.iter().map(|(op, e)| format!("failed: {op}: {e}")))
        .chain(c.plan.blocked.iter().map(ToString::to_string));
    log.update(problems);
}

/// The problems logged last time, so that each is logged once while it lasts.
#[derive(Debug, Default)]
pub struct ProblemLog {
    current: BTreeSet<String>,
}

impl ProblemLog {
    /// Logs the problems that are new since the last call, and those that are gone.
    pub fn update(&mut self, problems: impl IntoIterator<Item = String>) {
        let now: BTreeSet<String> = problems.into_iter().collect();
        for p in now.difference(&self.current) {
            tracing::error!("{p}");
        }
        for p in self.current.difference(&now) {
            tracing::info!("resolved: {p}");
        }
        self.current = now;
    }
}

/// When to try again after a resync: at the resync period when it worked; sooner after a failure
/// (a kernel call that timed out, an unreadable file), 200 ms doubling up to the period, so that a
/// passing fault heals quickly and a lasting one is not hammered.
#[derive(Debug)]
pub struct Retry {
    period: std::time::Duration,
    next: std::time::Duration,
}

impl Retry {
    const FIRST: std::time::Duration = std::time::Duration::from_millis(200);

    pub fn new(period: std::time::Duration) -> Self {
        Self {
            period,
            next: Self::FIRST.min(period),
        }
    }

    /// The wait before the next resync, given how this one went.
    pub fn after(&mut self, ok: bool) -> std::time::Duration {
        if ok {
            self.next = Self::FIRST.min(self.period);
            return self.period;
        }
        let wait = self.next;
        self.next = (self.next * 2).min(self.period);
        wait
    }
}

/// The metric category of a failed resync: `kernel_timeout` when the kernel did not answer in
/// time, else `resync`.
pub fn failure_category(e: &anyhow::Error) -> &'static str {
    match e.downcast_ref::<crate::ipvs::IpvsError>() {
        Some(crate::ipvs::IpvsError::Timeout(_)) => "kernel_timeout",
        _ => "resync",
    }
}

/// `a, b, c`: the VIPs that linger.
fn list_addrs(addrs: &[IpAddr]) -> String {
    let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    addrs.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::HostAddress;
    use std::time::Duration;

    #[test]
    fn failures_are_retried_sooner_and_sooner_less_often_up_to_the_period() {
        let mut r = Retry::new(Duration::from_secs(2));
        let waits: Vec<u128> = [false, false, false, false, false, true, false]
            .iter()
            .map(|ok| r.after(*ok).as_millis())
            .collect();
        assert_eq!(waits, vec![200, 400, 800, 1600, 2000, 2000, 200]);
    }

    #[test]
    fn a_vip_taken_quietly_is_added_unannounced_and_announced_on_its_own_later() {
        let vip: IpAddr = "10.10.24.88".parse().unwrap();
        let on_eth0 = HostAddress::vip("eth0", vip);
        let on_lo = HostAddress::vip("lo", vip);
        let desired = NodeState {
            addresses: [on_eth0.clone(), on_lo].into(),
            ..Default::default()
        };
        let quiet: BTreeSet<IpAddr> = [vip].into();
        let add = |announce| Op::AddAddress {
            address: on_eth0.clone(),
            announce,
        };
        let mut plan = Plan {
            ops: vec![add(true)],
            ..Default::default()
        };
        let none = BTreeSet::new();
        announcements(&mut plan, &desired, &NodeState::default(), &quiet, &none);
        assert_eq!(plan.ops, vec![add(false)]);
        // Later, with the address in place: one announcement, on eth0 only.
        let mut plan = Plan::default();
        announcements(&mut plan, &desired, &desired, &none, &quiet);
        let ops: Vec<String> = plan.ops.iter().map(ToString::to_string).collect();
        assert_eq!(ops, ["arping -U -c 3 -I eth0 10.10.24.88"]);
    }

    #[test]
    fn a_backup_daemon_runs_only_with_a_peer_and_ours_are_kept_through_the_grace() {
        let master = SyncDaemon::new(SyncRole::Master, "eth0", 0);
        let backup = SyncDaemon::new(SyncRole::Backup, "eth0", 0);
        let asked: BTreeMap<_, _> = [
            (SyncRole::Master, master.clone()),
            (SyncRole::Backup, backup.clone()),
        ]
        .into();
        let none = (Ledger::default(), NodeState::default());
        let wanted = |flags, (ledger, observed): &(Ledger, NodeState)| {
            let mut d = asked.clone();
            wanted_daemons(&mut d, flags, ledger, observed);
            d.into_keys().collect::<Vec<_>>()
        };
        assert_eq!(
            wanted((true, false), &none),
            [SyncRole::Master, SyncRole::Backup]
        );
        assert_eq!(wanted((false, false), &none), [SyncRole::Master]);

        // Ours runs, a foreign backup does not count: the grace keeps only what the ledger owns.
        let mut ledger = Ledger::default();
        ledger.daemons.insert(SyncRole::Backup);
        let mut observed = NodeState::default();
        observed.daemons.insert(SyncRole::Backup, backup.clone());
        let ours = (ledger, observed.clone());
        let foreign = (Ledger::default(), observed);
        let mut d = BTreeMap::from([(SyncRole::Master, master.clone())]);
        wanted_daemons(&mut d, (true, true), &ours.0, &ours.1);
        assert_eq!(
            d.get(&SyncRole::Backup),
            Some(&backup),
            "kept through the grace"
        );
        let mut d = BTreeMap::from([(SyncRole::Master, master.clone())]);
        wanted_daemons(&mut d, (true, false), &ours.0, &ours.1);
        assert_eq!(
            d.get(&SyncRole::Backup),
            None,
            "stopped once the grace is over"
        );
        let mut d = BTreeMap::from([(SyncRole::Master, master)]);
        wanted_daemons(&mut d, (true, true), &foreign.0, &foreign.1);
        assert_eq!(d.get(&SyncRole::Backup), None, "not ours: not ours to keep");
    }

    #[test]
    fn a_kernel_timeout_has_its_own_metric_category() {
        let timeout = anyhow::Error::from(crate::ipvs::IpvsError::Timeout(Duration::from_secs(5)));
        assert_eq!(failure_category(&timeout), "kernel_timeout");
        assert_eq!(failure_category(&anyhow::anyhow!("no such file")), "resync");
    }
}
