//! Controller tests without a cluster: pure status aggregation, and reconciles against the
//! mocked API server of the fixtures module.

mod conditions;
mod reconcile;
