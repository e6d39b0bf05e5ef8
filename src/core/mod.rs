//! The pure core: what a node should hold, and the operations that get it there.
//!
//! Nothing here talks to the API server or the kernel. [`desired`] turns validated LvsService
//! objects and this node's roles into a [`NodeState`]; the agent dumps the kernel into another
//! [`NodeState`]; [`plan()`] compares the two, under the [`Ledger`] of what this agent made, and
//! returns the minimal [`Op`]s. The data-plane modules carry the ops out; the ledger records them.

pub mod desired;
pub mod model;
pub mod plan;

pub use desired::{
    Assignment, Desired, DirectorRole, PlacementError, desired, desired_state, interface_for,
    service_config, wanted_services,
};
pub use model::*;
pub use plan::{Drain, Ledger, Op, Plan, SysctlRecord, covers, plan};

#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
mod tests;
