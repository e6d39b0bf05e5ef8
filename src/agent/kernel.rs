//! The real [`DataPlane`]: IPVS over generic netlink, addresses over rtnetlink, /proc/sys.
//!
//! Observing costs one IPVS service dump, one destination dump per service that is ours or
//! wanted (never for the others: kube-proxy's thousands of services are not ours to read), one
//! link and one address dump, and a read per sysctl. Applying sends consecutive IPVS operations in
//! batches, each result matched to its request. IPVS work runs on its own thread
//! ([`IpvsWorker`]), so a slow or silent kernel never stalls the agent's runtime; a call that
//! times out fails this resync, and the next one retries.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Context;
use tracing::{debug, warn};

use crate::core::{DestState, HostAddress, NodeState, Op, ServiceKey, ServiceState, ServiceStats};
use crate::ipvs::handle::BATCH;
use crate::ipvs::{
    Dest, IpvsError, IpvsHandle, IpvsWorker, Request, ServiceEntry, worker::Connect,
};
use crate::netdev::{Addresses, Sysctls, announce, sysctl::split_conf_name};

use super::converge::DataPlane;

/// Destination dumps per job of the IPVS worker.
const DUMPS_PER_JOB: usize = 256;

pub struct Kernel {
    ipvs: IpvsWorker,
    addrs: Addresses,
    sysctls: Sysctls,
    /// Gratuitous ARP / unsolicited NA count after a director takes a VIP.
    announcements: u32,
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
            dry_run,
        })
    }

    async fn observe_ipvs(
        &mut self,
        dests_of: &BTreeSet<ServiceKey>,
        state: &mut NodeState,
    ) -> Result<(), IpvsError> {
        let services = self.ipvs.run(|h| h.services()).await?;
        let mut dumped = Vec::new();
        for entry in services {
            let ServiceEntry::Service {
                key,
                config,
                counters,
            } = entry
            else {
                continue;
            };
            dumped.push((key, config, counters));
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
                        .map(|key| Ok((key, h.dests(&key)?)))
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

    async fn apply_other(&mut self, op: &Op) -> anyhow::Result<()> {
        match op {
            Op::AddAddress {
                address,
                announce: send,
            } => {
                self.addrs
                    .add(&address.ifname, address.addr, address.prefix_len)
                    .await?;
                if *send
                    && let Err(e) = announce(
                        &self.addrs,
                        &address.ifname,
                        address.addr,
                        self.announcements,
                        Duration::from_millis(100),
                    )
                    .await
                {
                    // The VIP works without it; neighbours just learn it on their next ARP.
                    warn!("announcing {} on {}: {e}", address.addr, address.ifname);
                }
                Ok(())
            }
            Op::DelAddress { address } => Ok(self
                .addrs
                .del(&address.ifname, address.addr, address.prefix_len)
                .await?),
            Op::SetSysctl { name, value, .. } | Op::RestoreSysctl { name, value } => {
                let (ifname, key) =
                    split_conf_name(name).with_context(|| format!("unsupported sysctl {name}"))?;
                Ok(self.sysctls.set(ifname, key, value)?)
            }
            _ => unreachable!("IPVS operations go through apply_ipvs"),
        }
    }
}

impl DataPlane for Kernel {
    async fn observe(
        &mut self,
        dests_of: &BTreeSet<ServiceKey>,
        sysctls: &BTreeSet<String>,
    ) -> anyhow::Result<NodeState> {
        let mut state = NodeState::default();
        if !dests_of.is_empty() {
            match self.observe_ipvs(dests_of, &mut state).await {
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
        for name in sysctls {
            let Some((ifname, key)) = split_conf_name(name) else {
                continue;
            };
            match self.sysctls.get(ifname, key) {
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
    Some(match op {
        Op::AddService { key, config } => Request::NewService(*key, config.clone()),
        Op::EditService { key, config } => Request::SetService(*key, config.clone()),
        Op::DelService { key } => Request::DelService(*key),
        Op::AddDest {
            service,
            dest,
            weight,
        } => Request::NewDest(*service, *dest, Dest::direct_route(*weight)),
        Op::EditDest {
            service,
            dest,
            weight,
        } => Request::SetDest(*service, *dest, Dest::direct_route(*weight)),
        Op::DrainDest { service, dest } => Request::SetDest(*service, *dest, Dest::direct_route(0)),
        Op::DelDest { service, dest } => Request::DelDest(*service, *dest),
        _ => return None,
    })
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
