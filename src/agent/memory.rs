//! A data plane that keeps the node's state in memory and touches no kernel: for benchmarks of
//! the cluster's control path (`lvs-operator agent --memory-data-plane eth0=10.30.0.2/16`, as
//! `make bench-cluster` runs fifty agents on one host) and for the agent's tests.

use std::net::SocketAddr;

use crate::core::{HostAddress, NodeState, Op, Protocol, fake::apply_op};

use super::converge::{DataPlane, Scope, expand_sysctls};

#[derive(Default)]
pub struct MemoryDataPlane {
    pub state: NodeState,
    /// Every batch `apply` was given, to count writes.
    pub batches: Vec<Vec<Op>>,
    /// Every sysctl reads 0 until set (as on a kernel); otherwise only those in `state` exist.
    pub every_sysctl: bool,
}

impl MemoryDataPlane {
    /// A node with one interface address (`IF=ADDR/PREFIX`) and something listening on every
    /// address of each TCP `port`, so that its real-server self-check passes.
    pub fn with_interface(spec: &str, ports: &[u16]) -> anyhow::Result<Self> {
        let (ifname, cidr) = spec.split_once('=').ok_or_else(|| {
            anyhow::anyhow!("{spec:?}: expected IF=ADDR/PREFIX, such as eth0=10.30.0.2/16")
        })?;
        let (addr, prefix) = cidr
            .split_once('/')
            .ok_or_else(|| anyhow::anyhow!("{cidr:?}: expected ADDR/PREFIX"))?;
        let mut state = NodeState::default();
        state.addresses.insert(HostAddress {
            ifname: ifname.to_string(),
            addr: addr.parse()?,
            prefix_len: prefix.parse()?,
        });
        for port in ports {
            let any: SocketAddr = ([0, 0, 0, 0], *port).into();
            state.listeners.insert((Protocol::Tcp, any));
        }
        Ok(Self {
            state,
            batches: Vec::new(),
            every_sysctl: true,
        })
    }
}

impl DataPlane for MemoryDataPlane {
    async fn observe(&mut self, scope: &Scope) -> anyhow::Result<NodeState> {
        let mut s = self.state.clone();
        for (key, svc) in s.services.iter_mut() {
            if !scope.dests_of.contains(key) {
                svc.dests.clear();
            }
        }
        for (key, mark) in s.marks.iter_mut() {
            if !scope.marks_of.contains(key) {
                mark.dests.clear();
            }
        }
        let interfaces: Vec<String> = s.addresses.iter().map(|a| a.ifname.clone()).collect();
        let names = expand_sysctls(&scope.sysctls, interfaces.iter().map(String::as_str));
        s.sysctls.retain(|k, _| names.contains(k));
        if self.every_sysctl {
            // Like a kernel: every sysctl asked for exists, 0 until set.
            for name in names {
                s.sysctls.entry(name).or_insert_with(|| "0".to_string());
            }
        }
        if !scope.listeners {
            s.listeners.clear();
            s.connected.clear();
        }
        Ok(s)
    }

    async fn apply(&mut self, ops: &[Op]) -> Vec<anyhow::Result<()>> {
        self.batches.push(ops.to_vec());
        ops.iter()
            .map(|op| {
                apply_op(&mut self.state, op);
                Ok(())
            })
            .collect()
    }
}
