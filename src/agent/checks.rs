//! The agent's side of the health checks: which checks the objects it directs call for, and what
//! their verdicts mean for the weights it programs and the status it reports.
//!
//! After each resync [`HealthChecks::follow`] works out one [`Check`] per real server and
//! checked port of every object this node directs (through the VIP with the resync's firewall
//! mark and this director's own address as the source, or straight to the real server) and hands
//! the distinct ones to the [`Engine`]. Before the next resync [`HealthChecks::admissions`] turns
//! the verdicts into what the planner needs: an ejected real server gets weight 0; one that came
//! back ramps up over `slowStart`. A new check starts Healthy (a new real server keeps its weight
//! until the checks say otherwise, as keepalived does), except for a real server the kernel
//! holds at weight 0 though configured higher: a previous run of the agent ejected it, and it
//! stays out until it passes `successThreshold` checks.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use prometheus_client::registry::Registry;

use crate::api::RealServerCheck;
use crate::core::{Admission, Assignment, Probe, source_for};
use crate::health::{Check, CheckKind, Engine, Health, Verdict, Via};
use crate::ipvs::{DestKey, ServiceKey};

use super::converge::Resynced;

/// Which check judges a real server of an object on a checked port.
type Target = (String, IpAddr, u16);

pub struct HealthChecks {
    engine: Engine,
    /// The check of each (object, real server, checked port), as of the last resync.
    targets: BTreeMap<Target, Check>,
    /// Checks seen Unhealthy, so that their next Healthy verdict is a re-admission (which ramps
    /// up), not the first one (which does not).
    ejected: HashSet<Check>,
    /// The slow start of each check, for the ramp.
    slow_start: HashMap<Check, Duration>,
}

impl HealthChecks {
    pub fn new(registry: &mut Registry) -> Self {
        Self {
            engine: Engine::new(registry),
            targets: BTreeMap::new(),
            ejected: HashSet::new(),
            slow_start: HashMap::new(),
        }
    }

    /// Completes when a verdict changed: time to resync.
    pub async fn changed(&self) {
        self.engine.changed().await;
    }

    /// What the checks say of each real server of `object` (its id) on each checked port.
    pub fn admissions(&mut self, object: &str) -> BTreeMap<(IpAddr, u16), Admission> {
        let verdicts = self.engine.verdicts();
        let mine: Vec<((IpAddr, u16), Check)> = self
            .targets
            .iter()
            .filter(|((id, ..), _)| id == object)
            .map(|((_, addr, port), check)| ((*addr, *port), check.clone()))
            .collect();
        let mut out = BTreeMap::new();
        for (at, check) in mine {
            if let Some(verdict) = verdicts.get(&check) {
                out.insert(at, self.admission(&check, verdict));
            }
        }
        out
    }

    fn admission(&mut self, check: &Check, verdict: &Verdict) -> Admission {
        match verdict.health {
            Health::Unhealthy => {
                self.ejected.insert(check.clone());
                Admission::Ejected
            }
            Health::Healthy if self.ejected.contains(check) => {
                let slow = self.slow_start.get(check).copied().unwrap_or_default();
                let elapsed = verdict.since.elapsed();
                if elapsed >= slow {
                    self.ejected.remove(check);
                    Admission::Full
                } else {
                    let per_mille = elapsed.as_millis() * 1000 / slow.as_millis().max(1);
                    Admission::Ramping(u16::try_from(per_mille).unwrap_or(1000))
                }
            }
            Health::Healthy => Admission::Full,
        }
    }

    /// When a ramp in progress next needs a resync (a twentieth of its slow start), if any.
    pub fn next_ramp_step(&self) -> Option<Duration> {
        self.ejected
            .iter()
            .filter_map(|c| self.slow_start.get(c))
            .filter(|d| !d.is_zero())
            .map(|d| (*d / 20).max(Duration::from_millis(100)))
            .min()
    }

    /// The checks the assignments call for after `resynced`, handed to the engine.
    pub fn follow(&mut self, assignments: &[Assignment<'_>], resynced: &Resynced) {
        let mut targets = BTreeMap::new();
        let mut slow_start = HashMap::new();
        // Real servers the kernel holds at weight 0 though configured higher: ejected by an
        // earlier run of the agent (or by an earlier form of the check). Their new checks start
        // Unhealthy, so a restart never sends clients back to a dead real server.
        let mut held_out: HashSet<Check> = HashSet::new();
        for a in assignments {
            let (Some(role), Some(health)) = (&a.director, &a.service.health) else {
                continue;
            };
            let service = a.service;
            let kind = match &health.probe {
                Probe::Tcp => CheckKind::Tcp,
                Probe::Http { path } => CheckKind::Http { path: path.clone() },
                Probe::Https { path } => CheckKind::Https { path: path.clone() },
            };
            // The interface the VIP is (or would be) on: the probes leave from this director's
            // own address there.
            let ifname = role
                .interface
                .clone()
                .or_else(|| service.interface.clone())
                .or_else(|| resynced.lans.interface_for(service.vip));
            let source = ifname
                .as_deref()
                .and_then(|i| source_for(service.vip, i, &resynced.lans));
            let ports: BTreeSet<u16> = service
                .ports
                .iter()
                .filter_map(|p| service.checked_port(*p))
                .collect();
            for b in &a.backends {
                let mark = resynced.marks.get(&b.addr).filter(|_| health.through_vip);
                for port in &ports {
                    let (target, via) = match mark {
                        Some(mark) => (
                            SocketAddr::new(service.vip, *port),
                            Some(Via {
                                mark: mark.mark,
                                real_server: b.addr,
                            }),
                        ),
                        None => (SocketAddr::new(b.addr, *port), None),
                    };
                    let check = Check {
                        kind: kind.clone(),
                        target,
                        via,
                        source,
                        interval: health.interval,
                        timeout: health.timeout,
                        fall: health.fall,
                        rise: health.rise,
                    };
                    let at_zero = service.ports.iter().any(|p| {
                        let key = ServiceKey {
                            vip: service.vip,
                            protocol: p.protocol,
                            port: p.port,
                        };
                        service.checked_port(*p) == Some(*port)
                            && resynced
                                .after
                                .services
                                .get(&key)
                                .and_then(|s| {
                                    s.dests.get(&DestKey {
                                        addr: b.addr,
                                        port: p.port,
                                    })
                                })
                                .is_some_and(|d| d.weight == 0)
                    });
                    if at_zero && b.weight > 0 {
                        held_out.insert(check.clone());
                    }
                    slow_start.insert(check.clone(), health.slow_start);
                    targets.insert((service.id.clone(), b.addr, *port), check);
                }
            }
        }
        self.engine
            .set_starting(targets.values().cloned(), |check| {
                held_out.contains(check).then(|| {
                    "found at weight 0 (ejected before); waiting for passing checks".into()
                })
            });
        self.ejected.retain(|c| slow_start.contains_key(c));
        self.targets = targets;
        self.slow_start = slow_start;
    }

    /// This director's verdict on each real server of `object`: unhealthy when any of its
    /// checked ports fails, with that check's reason.
    pub fn reports(&self, object: &str) -> Vec<RealServerCheck> {
        let verdicts = self.engine.verdicts();
        let mut by_server: BTreeMap<IpAddr, Option<String>> = BTreeMap::new();
        for ((id, addr, port), check) in &self.targets {
            if id != object {
                continue;
            }
            let failing = verdicts
                .get(check)
                .filter(|v| v.health == Health::Unhealthy)
                .map(|v| {
                    let why = v.reason.as_deref().unwrap_or("no answer");
                    format!("port {port}: {why}")
                });
            let entry = by_server.entry(*addr).or_default();
            if entry.is_none() {
                *entry = failing;
            }
        }
        by_server
            .into_iter()
            .map(|(addr, failing)| RealServerCheck {
                address: addr.to_string(),
                healthy: failing.is_none(),
                reason: failing,
            })
            .collect()
    }
}
