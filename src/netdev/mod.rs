//! Address, sysctl and neighbour-announcement side of the LVS-DR data plane.
//!
//! A director holds each VIP as a host route (`/32`, `/128`) on its LAN
//! interface and announces it with a gratuitous ARP / unsolicited neighbour
//! advertisement; a real server holds the VIP on `lo` and silences ARP for it
//! through `arp_ignore`/`arp_announce`. This module provides those three
//! pieces: [`Addresses`] (rtnetlink, like `ip addr`), [`Sysctls`] (like
//! `sysctl -w net.ipv4.conf.*`) and [`announce`] (like `arping -U` /
//! `ndisend`), with the wire formats kept in the pure [`frames`] module.
//! A fourth, [`who_has`] (like `arping`/`ndisc6` listening for every
//! answer), lets a director find a second holder of its VIP; its frames and
//! parsers are the pure [`probe_frames`].

pub mod addr;
pub mod announce;
pub mod error;
pub mod frames;
pub mod probe;
pub mod probe_frames;
pub mod sysctl;

#[cfg(test)]
mod kernel_tests;
#[cfg(test)]
mod probe_kernel_tests;

pub use crate::netdev::addr::{AddrEntry, Addresses, LinkEntry};
pub use crate::netdev::announce::announce;
pub use crate::netdev::error::NetdevError;
pub use crate::netdev::probe::{sender_for, who_has};
pub use crate::netdev::sysctl::Sysctls;
