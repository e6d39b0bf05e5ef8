//! The pure core: what a node should hold, and the operations that get it there.
//!
//! Nothing here talks to the API server or the kernel, and nothing here knows a Kubernetes type.
//! [`desired()`] turns validated objects ([`VirtualService`]) and this node's roles into a
//! [`NodeState`]; the agent dumps the kernel into another [`NodeState`]; the [`Ledger`] settles
//! against it; [`plan()`] compares the two under the ledger of what this agent made and returns
//! the minimal [`Op`]s. The data-plane modules carry the ops out; the ledger records them.
//! The vocabulary of services and real servers is the IPVS module's own ([`crate::ipvs`]).

pub mod claims;
pub mod desired;
pub mod health;
pub mod ledger;
pub mod model;
pub mod op;
pub mod plan;
pub mod selfcheck;
pub mod service;

pub use claims::{Conflict, claims};
pub use desired::{
    Assignment, Desired, DirectorRole, Handover, PlacementError, SLOPPY_TCP, desired, hold_ejected,
    interface_for, linger, sync_daemons, wanted_marks, wanted_services,
};
pub use health::{Admission, DEFAULT_MARKS, assign_marks, source_for};
pub use ledger::{Drain, Intent, Ledger, SysctlRecord};
pub use model::*;
pub use op::Op;
pub use plan::{Blocked, Plan, covers, plan};
pub use service::{HealthSpec, Port, Probe, RealServer, VirtualService};

pub(crate) mod fake;
#[cfg(test)]
mod tests;
