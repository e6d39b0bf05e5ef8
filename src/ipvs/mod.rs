//! IPVS (Linux Virtual Server) client over generic netlink.
//!
//! This is how the operator reads and changes the kernel's virtual services
//! and real servers, without shelling out to ipvsadm. Layers, bottom up:
//!
//! * [`types`] — the objects ([`ServiceKey`], [`ServiceConfig`], [`DestKey`],
//!   [`Dest`], counters, the connection-sync [`SyncDaemon`]…) that every layer
//!   above speaks, from the spec down;
//! * [`error`] — errors naming the object, with errnos translated;
//! * [`wire`] — netlink/genl header and attribute byte layout;
//! * [`message`] — IPVS commands and attributes (`include/uapi/linux/ip_vs.h`)
//!   as a typed [`Request`] with an exact-bytes emitter, and the reply parser;
//! * [`handle`] — [`IpvsHandle`], the socket: family resolution, dumps and
//!   the batching [`IpvsHandle::apply`], none of which can hang;
//! * [`worker`] — [`IpvsWorker`], the handle on a thread of its own for async
//!   callers.
//!
//! The folder stands alone: it refers to nothing else in the crate, and uses
//! no `unsafe` (neli provides the socket).

pub mod error;
pub mod handle;
pub mod message;
pub mod types;
pub mod wire;
pub mod worker;

#[cfg(test)]
mod kernel_tests;
#[cfg(test)]
mod message_tests;
#[cfg(test)]
mod roundtrip_tests;

pub use error::{IpvsError, KernelError};
pub use handle::IpvsHandle;
pub use message::Request;
pub use types::{
    Counters, Dest, DestEntry, DestKey, DestStats, ForeignService, Forward, Info, MarkKey,
    Protocol, Scheduler, ServiceConfig, ServiceEntry, ServiceKey, SyncDaemon, SyncRole, Virtual,
};
pub use worker::IpvsWorker;
