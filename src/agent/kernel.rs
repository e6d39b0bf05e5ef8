//! The real [`DataPlane`]: IPVS over generic netlink, addresses over rtnetlink, /proc/sys.
//!
//! Observing costs one IPVS service dump, one destination dump per service that is ours or
//! wanted (never for the others: kube-proxy's thousands of services are not ours to read), one
//! link and one address dump, and a read per sysctl. Applying sends consecutive IPVS operations in
//! batches, each result matched to its request. IPVS work runs on its own thread
//! ([`IpvsWorker`]), so a slow or silent kernel never stalls the agent's runtime; a call that
//! times out fails this resync, and the next one retries.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use tracing::{debug, warn};

use crate::core::{
    AF_INET6, DestState, HostAddress, MarkState, NodeState, Op, Protocol, Scheduler, ServiceKey,
    ServiceState, ServiceStats,
};
use crate::ipvs::handle::BATCH;
use crate::ipvs::{
    Dest, DestKey, IpvsError, IpvsHandle, IpvsWorker, Request, ServiceConfig, ServiceEntry,
    worker::Connect,
};
use crate::netdev::{Addresses, Repeats, Sysctls, announce};

use super::converge::{DataPlane, Scope, expand_sysctls};

/// Destination dumps per job of the IPVS worker.
const DUMPS_PER_JOB: usize = 256;

pub struct Kernel {
    ipvs: IpvsWorker,
    addrs: Addresses,
    sysctls: Sysctls,
    /// Gratuitous ARP / unsolicited NA count after a director takes a VIP.
    announcements: u32,
    /// The repeats of each address's last announcement still to go out; removing the address
    /// stops them.
    repeats: BTreeMap<HostAddress, Repeats>,
    /// For `--dry-run`: where ip_vs is not loaded, plan against an empty IPVS table instead of
    /// failing (and never load it: a dry run changes nothing), so an admin sees the whole plan.
    dry_run: bool,
}

impl Kernel {
    /// Connects rtnetlink now and IPVS when first needed: a real server has no use for ip_vs,
    /// and must work where the module is absent. `dry_run` never loads a module.
    pub fn connect(dry_run: bool) -> anyhow::Result<Self> {
        let connect: Connect = if dry_run {
            IpvsHandle::connect
        } else {
            connect_loading_ip_vs
        };
        Ok(Self {
            ipvs: IpvsWorker::new(connect),
            addrs: Addresses::connect()?,
            sysctls: Sysctls::system(),
            announcements: 3,
            repeats: BTreeMap::new(),
            dry_run,
        })
    }

    async fn observe_ipvs(
        &mut self,
        scope: &Scope,
        state: &mut NodeState,
    ) -> Result<(), IpvsError> {
        let dests_of = &scope.dests_of;
        if scope.daemons {
            let daemons = self.ipvs.run(|h| h.daemons()).await?;
            state.daemons = daemons.into_iter().map(|d| (d.role, d)).collect();
        }
        let services = self.ipvs.run(|h| h.services()).await?;
        let mut dumped = Vec::new();
        for entry in services {
            match entry {
                ServiceEntry::Service {
                    key,
                    config,
                    counters,
                } => dumped.push((key, config, counters)),
                ServiceEntry::Mark { key, .. } => {
                    state.marks.insert(key, MarkState::default());
                }
                ServiceEntry::Foreign(_) => {}
            }
        }
        let owned_marks: Vec<_> = state
            .marks
            .keys()
            .copied()
            .filter(|k| scope.marks_of.contains(k))
            .collect();
        if !owned_marks.is_empty() {
            let got = self
                .ipvs
                .run(move |h| {
                    owned_marks
                        .into_iter()
                        .map(|key| Ok((key, h.dests(key)?)))
                        .collect::<Result<Vec<_>, IpvsError>>()
                })
                .await?;
            for (key, dests) in got {
                if let Some(m) = state.marks.get_mut(&key) {
                    m.dests = dests.into_iter().map(|d| d.key.addr).collect();
                }
            }
        }
        let wanted: Vec<ServiceKey> = dumped
            .iter()
            .map(|(key, ..)| *key)
            .filter(|key| dests_of.contains(key))
            .collect();
        // One job per chunk of destination dumps: each job stays short, so the worker's timeout
        // can be short too and still never cut a healthy dump of a large table.
        let mut dests = BTreeMap::new();
        for chunk in wanted.chunks(DUMPS_PER_JOB) {
            let chunk = chunk.to_vec();
            let got = self
                .ipvs
                .run(move |h| {
                    chunk
                        .into_iter()
                        .map(|key| Ok((key, h.dests(key)?)))
                        .collect::<Result<Vec<_>, IpvsError>>()
                })
                .await?;
            dests.extend(got);
        }
        for (key, config, counters) in dumped {
            let mut service = ServiceState {
                config,
                dests: BTreeMap::new(),
            };
            if let Some(entries) = dests.remove(&key) {
                let mut stats = ServiceStats {
                    service: counters,
                    ..Default::default()
                };
                for d in entries {
                    stats.dests.insert(d.key, d.stats);
                    service.dests.insert(
                        d.key,
                        DestState {
                            weight: d.dest.weight,
                            active_conns: d.stats.active_conns,
                            forward: d.dest.forward,
                        },
                    );
                }
                state.stats.insert(key, stats);
            }
            state.services.insert(key, service);
        }
        Ok(())
    }

    /// One run of consecutive IPVS operations, in jobs of one netlink batch each.
    async fn apply_ipvs(&mut self, ops: &[Op]) -> Vec<anyhow::Result<()>> {
        let requests: Vec<Request> = ops.iter().filter_map(request).collect();
        let mut results = Vec::with_capacity(requests.len());
        for chunk in requests.chunks(BATCH) {
            let chunk = chunk.to_vec();
            let n = chunk.len();
            match self.ipvs.run(move |h| Ok(h.apply(&chunk))).await {
                Ok(done) => results.extend(done.into_iter().map(|r| r.map_err(Into::into))),
                Err(e) => {
                    let msg = e.to_string();
                    results.extend((0..n).map(|_| Err(anyhow::anyhow!("{msg}"))));
                }
            }
        }
        results
    }

    /// Gratuitous ARP / unsolicited NA for a director's VIP. The VIP works without it:
    /// neighbours just learn it on their next ARP, so a failure is only a warning.
    async fn announce(&mut self, address: &HostAddress) {
        let sent = announce(
            &self.addrs,
            &address.ifname,
            address.addr,
            self.announcements,
            Duration::from_millis(100),
        )
        .await;
        match sent {
            Ok(repeats) => {
                self.repeats.insert(address.clone(), repeats);
            }
            Err(e) => warn!("announcing {} on {}: {e}", address.addr, address.ifname),
        }
    }

    async fn apply_other(&mut self, op: &Op) -> anyhow::Result<()> {
        match op {
            Op::AddAddress {
                address,
                announce: send,
            } => {
                self.addrs
                    .add(&address.ifname, address.addr, address.prefix_len)
                    .await?;
                if *send {
                    self.announce(address).await;
                }
                Ok(())
            }
            Op::DelAddress { address } => {
                self.repeats.remove(address);
                Ok(self
                    .addrs
                    .del(&address.ifname, address.addr, address.prefix_len)
                    .await?)
            }
            Op::Announce { address } => {
                self.announce(address).await;
                Ok(())
            }
            Op::SetSysctl { name, value, .. } | Op::RestoreSysctl { name, value } => {
                Ok(self.sysctls.write(name, value)?)
            }
            _ => unreachable!("IPVS operations go through apply_ipvs"),
        }
    }
}

impl DataPlane for Kernel {
    async fn observe(&mut self, scope: &Scope) -> anyhow::Result<NodeState> {
        let mut state = NodeState::default();
        if !scope.dests_of.is_empty() || !scope.marks_of.is_empty() {
            match self.observe_ipvs(scope, &mut state).await {
                Err(IpvsError::NotLoaded) if self.dry_run => {
                    warn!("ip_vs is not loaded: planning against an empty IPVS table");
                }
                other => other?,
            }
        }
        for a in self.addrs.list().await? {
            state.addresses.insert(HostAddress {
                ifname: a.ifname,
                addr: a.addr,
                prefix_len: a.prefix_len,
            });
        }
        let interfaces: BTreeSet<&str> =
            state.addresses.iter().map(|a| a.ifname.as_str()).collect();
        let names = expand_sysctls(&scope.sysctls, interfaces.iter().copied());
        if scope.listeners {
            state.listeners = listeners();
            state.connected = connected();
        }
        for name in &names {
            match self.sysctls.read(name) {
                Ok(value) => {
                    state.sysctls.insert(name.clone(), value);
                }
                // Left out of the observation: the planner then never writes it.
                Err(e) => debug!("reading {name}: {e}"),
            }
        }
        Ok(state)
    }

    async fn apply(&mut self, ops: &[Op]) -> Vec<anyhow::Result<()>> {
        let mut results = Vec::with_capacity(ops.len());
        let mut i = 0;
        while i < ops.len() {
            let run = ops[i..]
                .iter()
                .take_while(|op| request(op).is_some())
                .count();
            if run > 0 {
                let done = self.apply_ipvs(&ops[i..i + run]).await;
                results.extend(done);
                i += run;
            } else {
                results.push(self.apply_other(&ops[i]).await);
                i += 1;
            }
        }
        results
    }
}

/// The IPVS request that carries out an operation, or `None` for address and sysctl operations.
pub fn request(op: &Op) -> Option<Request> {
    let dr = Dest::direct_route;
    Some(match op {
        Op::AddService { key, config } => Request::NewService((*key).into(), config.clone()),
        Op::EditService { key, config } => Request::SetService((*key).into(), config.clone()),
        Op::DelService { key } => Request::DelService((*key).into()),
        Op::AddDest {
            service,
            dest,
            weight,
        } => Request::NewDest((*service).into(), *dest, dr(*weight)),
        Op::EditDest {
            service,
            dest,
            weight,
        } => Request::SetDest((*service).into(), *dest, dr(*weight)),
        Op::DrainDest { service, dest } => Request::SetDest((*service).into(), *dest, dr(0)),
        Op::DelDest { service, dest } => Request::DelDest((*service).into(), *dest),
        // `-A -f MARK -s rr`: the scheduler does not matter with one real server.
        Op::AddMark { key } => {
            let any: IpAddr = if key.family == AF_INET6 {
                Ipv6Addr::UNSPECIFIED.into()
            } else {
                Ipv4Addr::UNSPECIFIED.into()
            };
            Request::NewService((*key).into(), ServiceConfig::new(Scheduler::Rr, any))
        }
        Op::AddMarkDest { key, dest } => Request::NewDest((*key).into(), mark_dest(*dest), dr(1)),
        Op::DelMarkDest { key, dest } => Request::DelDest((*key).into(), mark_dest(*dest)),
        Op::DelMark { key } => Request::DelService((*key).into()),
        Op::StartDaemon { daemon } => Request::NewDaemon(daemon.clone()),
        Op::StopDaemon { role } => Request::DelDaemon(*role),
        _ => return None,
    })
}

/// A firewall-mark service's real server: its address, port 0 (the packet keeps its own).
fn mark_dest(addr: IpAddr) -> DestKey {
    DestKey { addr, port: 0 }
}

/// The node's listening TCP and UDP sockets, from /proc/net (of this process's network
/// namespace). A table that cannot be read contributes nothing: the self-check then says nothing
/// listens, which is what it can tell.
fn listeners() -> BTreeSet<crate::core::selfcheck::Listener> {
    use crate::core::selfcheck::parse_proc_net;
    let mut out = BTreeSet::new();
    for (protocol, file) in [
        (Protocol::Tcp, "/proc/net/tcp"),
        (Protocol::Tcp, "/proc/net/tcp6"),
        (Protocol::Udp, "/proc/net/udp"),
        (Protocol::Udp, "/proc/net/udp6"),
    ] {
        match std::fs::read_to_string(file) {
            Ok(table) => out.extend(parse_proc_net(protocol, &table)),
            Err(e) => debug!("reading {file}: {e}"),
        }
    }
    out
}

/// The local addresses of this namespace's established TCP connections, from /proc/net.
fn connected() -> BTreeSet<IpAddr> {
    use crate::core::selfcheck::parse_proc_net_established;
    let mut out = BTreeSet::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        match std::fs::read_to_string(file) {
            Ok(table) => out.extend(parse_proc_net_established(&table)),
            Err(e) => debug!("reading {file}: {e}"),
        }
    }
    out
}

/// [`IpvsHandle::connect`], loading ip_vs first where it is missing and the agent may load
/// modules (a privileged container with /lib/modules).
fn connect_loading_ip_vs() -> Result<IpvsHandle, IpvsError> {
    match IpvsHandle::connect() {
        Err(IpvsError::NotLoaded) if modprobe_ip_vs() => IpvsHandle::connect(),
        other => other,
    }
}

fn modprobe_ip_vs() -> bool {
    match std::process::Command::new("modprobe").arg("ip_vs").status() {
        Ok(s) if s.success() => true,
        Ok(s) => {
            warn!("modprobe ip_vs exited with {s}");
            false
        }
        Err(e) => {
            debug!("modprobe ip_vs: {e}");
            false
        }
    }
}
