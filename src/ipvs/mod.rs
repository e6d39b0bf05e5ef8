//! IPVS (Linux Virtual Server) client over generic netlink.
//!
//! This is how the operator reads and changes the kernel's virtual services
//! and real servers, without shelling out to ipvsadm. Layers, bottom up:
//!
//! * [`wire`] — netlink/genl header and attribute byte layout;
//! * [`message`] — IPVS commands and attributes (`include/uapi/linux/ip_vs.h`)
//!   as typed requests/replies with an exact-bytes emitter and a parser;
//! * [`types`] — the domain values ([`Service`], [`Destination`], stats…);
//! * [`handle`] — [`IpvsHandle`], the socket: family resolution, dumps,
//!   single operations and the batching [`IpvsHandle::apply`];
//! * [`error`] — errors naming the object and translating errnos.
//!
//! The folder is self-contained (it only refers to `crate::ipvs::…`) and uses
//! no `unsafe`; neli provides the socket.

pub mod error;
pub mod handle;
pub mod message;
pub mod types;
pub mod wire;

#[cfg(test)]
mod message_tests;

pub use error::{IpvsError, KernelError};
pub use handle::{IpvsHandle, Op};
pub use types::{
    DestKey, DestStats, Destination, ForeignService, Forward, Info, ObservedDest, ObservedService,
    Protocol, Service, ServiceEntry, ServiceKey, Stats,
};
