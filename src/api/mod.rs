//! The `LvsService` API (`lvs-operator.io/v1alpha1`): what users write and what they read back.
//!
//! Everything else in the crate reads these types: the controller resolves and reports on them,
//! the agent turns them into kernel state, and `lvs-operator crd` prints the CustomResourceDefinition
//! generated from them. Doc comments here become `kubectl explain` text, so they speak to users.
//!
//! Validation lives in two places that must agree: the CRD schema (OpenAPI ranges and enums plus
//! CEL `x-kubernetes-validations`, enforced by the API server) and [`validate`] (enforced by the
//! agent, which in standalone mode has no API server in front of it).
//!
//! ## Who writes what
//! - The controller (manager `lvs-operator-controller`) alone writes LvsService status:
//!   `conditions`, `observedGeneration`, `vip`, `director`, `directors`, `backends`, `ports` and
//!   `backendSummary`.
//! - The agent of node N writes one object, the `LvsNodeReport` named N ([`report`]): an entry
//!   per LvsService N has a part in. The controller aggregates the reports into the status.
//! - Administrators write the `LvsAddressPool`s ([`pool`]) that say which VIPs may be claimed.
//!
//! `status.nodes` is no longer written (the reports replaced it) and is ignored where an older
//! agent left it.

pub mod manifest;
pub mod pool;
pub mod report;
pub mod selector;
mod spec;
mod status;
mod unknown_fields;
pub mod validate;

pub use pool::{LvsAddressPool, LvsAddressPoolSpec, Pools};
pub use report::{LvsNodeReport, LvsNodeReportSpec, ServiceReport};
pub use spec::*;
pub use status::*;
pub use validate::{FieldError, InvalidObject, validate};

/// API group of every kind this operator defines.
pub const GROUP: &str = "lvs-operator.io";
