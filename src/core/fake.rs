//! An in-memory kernel (the agent's `--memory-data-plane`, and the tests): what an operation
//! does to a [`NodeState`].

use super::model::*;
use super::op::Op;

/// The effect the kernel gives `op`, without its refusals (a fake never says no).
pub fn apply_op(s: &mut NodeState, op: &Op) {
    match op {
        Op::AddService { key, config } | Op::EditService { key, config } => {
            let dests = s
                .services
                .get(key)
                .map(|x| x.dests.clone())
                .unwrap_or_default();
            s.services.insert(
                *key,
                ServiceState {
                    config: config.clone(),
                    dests,
                },
            );
        }
        Op::DelService { key } => {
            s.services.remove(key);
        }
        Op::AddDest {
            service,
            dest,
            weight,
        }
        | Op::EditDest {
            service,
            dest,
            weight,
        } => {
            if let Some(svc) = s.services.get_mut(service) {
                svc.dests.insert(*dest, DestState::dr(*weight));
            }
        }
        Op::DrainDest { service, dest } => {
            if let Some(d) = s
                .services
                .get_mut(service)
                .and_then(|svc| svc.dests.get_mut(dest))
            {
                d.weight = 0;
            }
        }
        Op::DelDest { service, dest } => {
            if let Some(svc) = s.services.get_mut(service) {
                svc.dests.remove(dest);
            }
        }
        Op::AddMark { key } => {
            s.marks.entry(*key).or_default();
        }
        Op::AddMarkDest { key, dest } => {
            if let Some(m) = s.marks.get_mut(key) {
                m.dests.insert(*dest);
            }
        }
        Op::DelMarkDest { key, dest } => {
            if let Some(m) = s.marks.get_mut(key) {
                m.dests.remove(dest);
            }
        }
        Op::DelMark { key } => {
            s.marks.remove(key);
        }
        Op::AddAddress { address, .. } => {
            s.addresses.insert(address.clone());
        }
        Op::DelAddress { address } => {
            s.addresses.remove(address);
        }
        Op::Announce { .. } => {}
        Op::SetSysctl { name, value, .. } | Op::RestoreSysctl { name, value } => {
            s.sysctls.insert(name.clone(), value.clone());
        }
        Op::StartDaemon { daemon } => {
            s.daemons.insert(daemon.role, daemon.clone());
        }
        Op::StopDaemon { role } => {
            s.daemons.remove(role);
        }
    }
}
