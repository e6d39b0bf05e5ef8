//! lvs-operator: LVS Direct Routing load balancing, run declaratively from `LvsService` objects.
//!
//! `api` holds the types users write; `core` the pure logic from objects to kernel operations;
//! `ipvs` and `netdev` the kernel's side; `agent` the node agent; `health` its checks of real
//! servers; `controller` the cluster-wide controller.
#![forbid(unsafe_code)]

pub mod agent;
pub mod api;
pub mod controller;
pub mod core;
pub mod fingerprint;
pub mod ha;
pub mod health;
pub mod heartbeat;
pub mod http;
pub mod ipvs;
pub mod kube_client;
pub mod netdev;
pub mod shutdown;
pub mod watch;
