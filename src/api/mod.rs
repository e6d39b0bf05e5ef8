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
//! ## Status and its several writers
//! The controller and every agent write into the same status, so each owns a disjoint part of it
//! through server-side apply with its own field manager:
//! - the controller (manager `lvs-operator-controller`) owns `conditions`, `observedGeneration`,
//!   `director`, `backends` and `backendSummary`;
//! - the agent of node N (manager `lvs-operator-agent-N`) owns the single entry of `nodes` whose
//!   key `node` is N. `nodes` is a list-map keyed by `node`, so one agent's apply never replaces
//!   another's entry, and the controller's apply (which omits `nodes`) never removes them.
//!
//! The controller aggregates `nodes` into the conditions users see.

pub mod manifest;
pub mod pool;
pub mod selector;
mod spec;
mod status;
mod unknown_fields;
pub mod validate;

pub use pool::{LvsAddressPool, LvsAddressPoolSpec, Pools};
pub use spec::*;
pub use status::*;
pub use validate::{FieldError, InvalidObject, validate};

/// API group of every kind this operator defines.
pub const GROUP: &str = "lvs-operator.io";
