//! The agent: makes this node's kernel hold what the LvsService objects ask of it.
//!
//! Both modes share everything here and differ only at the edges: `standalone` reads objects from
//! YAML files and prints results; `cluster` watches the API server and reports into status. Each
//! resync observes the kernel ([`DataPlane::observe`]), computes the desired state with the pure
//! core, plans, applies, and records in the [`ledger`] what the kernel accepted.

pub mod checks;
pub mod cluster;
pub mod converge;
#[cfg(test)]
mod fake;
pub mod kernel;
pub mod ledger;
pub mod memory;
pub mod metrics;
pub mod roles;
pub mod standalone;
pub mod vip_leases;

pub use converge::{Converged, DataPlane, Resynced};
