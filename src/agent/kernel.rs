//! The real [`DataPlane`]: IPVS over generic netlink, addresses over rtnetlink, /proc/sys.
//!
//! Observing costs one IPVS service dump, one destination dump per service that is ours or
//! wanted (never for the others: kube-proxy's thousands of services are not ours to read), one
//! link and one address dump, and a read per sysctl. Applying batches consecutive IPVS operations
//! into as few sendmsg calls as the socket buffer allows; each result is matched to its request.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Context;
use tracing::{debug, warn};

use crate::core::{
    Counters, DestKey, DestState, HostAddress, NodeState, Op, Protocol, ServiceConfig, ServiceKey,
    ServiceState, ServiceStats,
};
use crate::ipvs::{self, IpvsError, IpvsHandle};
use crate::netdev::{Addresses, Sysctls, announce, sysctl::split_conf_name};

use super::converge::DataPlane;

pub struct Kernel {
    ipvs: Option<IpvsHandle>,
    addrs: Addresses,
    sysctls: Sysctls,
    /// Gratuitous ARP / unsolicited NA count after a director takes a VIP.
    announcements: u32,
    /// For `--dry-run` only: where ip_vs is not loaded, plan against an empty IPVS table instead
    /// of failing, so an admin sees the whole plan before loading anything.
    pub empty_ipvs_when_missing: bool,
}

impl Kernel {
    /// Connects rtnetlink now and IPVS when first needed: a real server has no use for ip_vs,
    /// and must work where the module is absent.
    pub fn connect() -> anyhow::Result<Self> {
        Ok(Self {
            ipvs: None,
            addrs: Addresses::connect()?,
            sysctls: Sysctls::system(),
            announcements: 3,
            empty_ipvs_when_missing: false,
        })
    }

    fn ipvs(&mut self) -> Result<&mut IpvsHandle, IpvsError> {
        if self.ipvs.is_none() {
            let handle = match IpvsHandle::connect() {
                Err(IpvsError::NotLoaded) if try_modprobe() => IpvsHandle::connect(),
                other => other,
            }?;
            self.ipvs = Some(handle);
        }
        Ok(self.ipvs.as_mut().expect("connected above"))
    }

    fn observe_ipvs(
        &mut self,
        dests_of: &BTreeSet<ServiceKey>,
        state: &mut NodeState,
    ) -> Result<(), IpvsError> {
        let ipvs = self.ipvs()?;
        for observed in ipvs.services()? {
            let Some(svc) = observed.service().cloned() else {
                continue;
            };
            let Some(key) = core_key(&svc) else { continue };
            let config = ServiceConfig {
                scheduler: svc.scheduler.clone(),
                // The dump parser already dropped the kernel's own HASHED bit.
                flags: svc.flags,
                timeout: svc.timeout,
                netmask: svc.netmask,
            };
            let mut dests = std::collections::BTreeMap::new();
            if dests_of.contains(&key) {
                let s = &observed.stats;
                let mut stats = ServiceStats {
                    service: counters(s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes),
                    ..Default::default()
                };
                for d in ipvs.dests(&svc)? {
                    let dest = DestKey {
                        addr: d.dest.addr,
                        port: d.dest.port,
                    };
                    let t = &d.stats;
                    let c = counters(t.conns, t.inpkts, t.outpkts, t.inbytes, t.outbytes);
                    stats
                        .dests
                        .insert(dest, (c, t.active_conns, t.inactive_conns));
                    dests.insert(
                        dest,
                        DestState {
                            weight: d.dest.weight,
                            active_conns: d.stats.active_conns,
                            direct_route: d.dest.fwd == ipvs::Forward::DirectRoute,
                        },
                    );
                }
                state.stats.insert(key, stats);
            }
            state.services.insert(key, ServiceState { config, dests });
        }
        Ok(())
    }

    async fn apply_one(&mut self, op: &Op) -> anyhow::Result<()> {
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
            _ => unreachable!("IPVS operations are applied in batches"),
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
            match self.observe_ipvs(dests_of, &mut state) {
                Err(IpvsError::NotLoaded) if self.empty_ipvs_when_missing => {
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
                .take_while(|op| ipvs_op(op).is_some())
                .count();
            if run > 0 {
                let batch: Vec<ipvs::Op> = ops[i..i + run].iter().filter_map(ipvs_op).collect();
                match self.ipvs() {
                    Ok(handle) => results.extend(
                        handle
                            .apply(&batch)
                            .into_iter()
                            .map(|r| r.map_err(anyhow::Error::from)),
                    ),
                    Err(e) => {
                        let msg = e.to_string();
                        results.extend((0..run).map(|_| Err(anyhow::anyhow!("{msg}"))));
                    }
                }
                i += run;
            } else {
                results.push(self.apply_one(&ops[i]).await);
                i += 1;
            }
        }
        results
    }
}

fn counters(
    connections: u64,
    in_packets: u64,
    out_packets: u64,
    in_bytes: u64,
    out_bytes: u64,
) -> Counters {
    Counters {
        connections,
        in_packets,
        out_packets,
        in_bytes,
        out_bytes,
    }
}

fn core_key(svc: &ipvs::Service) -> Option<ServiceKey> {
    let protocol = match svc.protocol {
        ipvs::Protocol::Tcp => Protocol::Tcp,
        ipvs::Protocol::Udp => Protocol::Udp,
        ipvs::Protocol::Sctp => Protocol::Sctp,
    };
    Some(ServiceKey {
        vip: svc.addr,
        protocol,
        port: svc.port,
    })
}

fn ipvs_service(key: &ServiceKey, config: Option<&ServiceConfig>) -> ipvs::Service {
    let protocol = match key.protocol {
        Protocol::Tcp => ipvs::Protocol::Tcp,
        Protocol::Udp => ipvs::Protocol::Udp,
        Protocol::Sctp => ipvs::Protocol::Sctp,
    };
    let mut svc = ipvs::Service::new(
        key.vip,
        protocol,
        key.port,
        config.map(|c| c.scheduler.as_str()).unwrap_or(""),
    );
    if let Some(c) = config {
        svc.flags = c.flags;
        svc.timeout = c.timeout;
        svc.netmask = c.netmask;
    }
    svc
}

fn dr(dest: &DestKey, weight: u32) -> ipvs::Destination {
    ipvs::Destination::direct_route(dest.addr, dest.port, weight)
}

/// The IPVS request for an operation, or `None` for address and sysctl operations.
fn ipvs_op(op: &Op) -> Option<ipvs::Op> {
    Some(match op {
        Op::AddService { key, config } => ipvs::Op::NewService(ipvs_service(key, Some(config))),
        Op::EditService { key, config } => ipvs::Op::SetService(ipvs_service(key, Some(config))),
        Op::DelService { key } => ipvs::Op::DelService(ipvs_service(key, None)),
        Op::AddDest {
            service,
            dest,
            weight,
        } => ipvs::Op::NewDest(ipvs_service(service, None), dr(dest, *weight)),
        Op::EditDest {
            service,
            dest,
            weight,
        } => ipvs::Op::SetDest(ipvs_service(service, None), dr(dest, *weight)),
        Op::DrainDest { service, dest } => {
            ipvs::Op::SetDest(ipvs_service(service, None), dr(dest, 0))
        }
        Op::DelDest { service, dest } => {
            ipvs::Op::DelDest(ipvs_service(service, None), dr(dest, 0))
        }
        _ => return None,
    })
}

/// `modprobe ip_vs`, where the agent may load modules (a privileged container with /lib/modules).
fn try_modprobe() -> bool {
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
